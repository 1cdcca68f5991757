"""Experiment trackers a sweep logs to while it runs: MLflow (our own Tune callback) and
TensorBoard (Ray's).

MLflow gets one experiment per sweep, one parent run per config and a child run per trial (one
config on one fold of one fold seed). Children hold the config's swept parameters, the fold's
learning curve (`val_qwk`, `fused_qwk` per `progress` step; its last point is the fold's final
report, which carries the recorded result: the restored best) and, once it finishes, the
recorded final metrics (`final_*`); a trial the scheduler stopped is a finished child tagged
`status: pruned` with its last QWK. Parents hold the same parameters and the mean and std over
the config's recorded folds (`fold_results/`), updated as each fold ends. Runs already in the
experiment are found again by their tags, so a resume or a promotion continues them instead of
starting new ones.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import statistics
import time

from ray import tune

from dfu_train.location import Location
from dfu_train.results import store

CURVE = ("val_qwk", "fused_qwk")  # a fold's learning curve, per `progress` step
log = logging.getLogger(__name__)


def _never_stops_the_sweep(hook):
    """A tracker hook that fails (the tracking server is down, the disk is full) is logged once
    and the tracker goes quiet for the rest of the run: the sweep and its records go on, since
    Tune ends the experiment on a callback's error."""

    @functools.wraps(hook)
    def guarded(self, *args, **kwargs):
        if self.failed is not None:
            return None
        try:
            return hook(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any tracker failure, never the sweep's
            self.failed = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("MLflow tracking at %s failed (%s); the sweep goes on without it, "
                        "and its results are in the sweep folder as always",
                        self.tracking_uri, self.failed)
            return None

    return guarded


def create_trackers(name: str, sweep_dir: Location, *, mlflow: str | None = None,
                    tensorboard: bool = False) -> list:
    """The Tune callbacks the command line asked for: MLflow runs under experiment `name` at the
    tracking URI `mlflow` (`MlflowTracker`), TensorBoard event files in each trial's folder."""
    trackers: list = []
    if mlflow:
        if mlflow.startswith("file:"):  # MLflow 3 asks for consent to its file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        trackers.append(MlflowTracker(mlflow, experiment=name, sweep_dir=sweep_dir))
    if tensorboard:
        from ray.tune.logger import TBXLoggerCallback

        trackers.append(TBXLoggerCallback())
    return trackers


class MlflowTracker(tune.Callback):
    """Logs a sweep to MLflow as parent runs (configs) with child runs (trials); see the module.

    Runs in Tune's driver; a failing tracking server stops the tracking, never the sweep. Tune pickles its callbacks with the experiment state, so the MLflow
    client is made on first use and left out of the pickle."""

    def __init__(self, tracking_uri: str, *, experiment: str, sweep_dir: Location | str):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.sweep_dir = Location(sweep_dir)
        self._client = None
        self._experiment_id: str | None = None
        self._manifest: dict | None = None
        self._parents: dict[str, str] = {}  # config_id -> run id
        self._children: dict[str, tuple[str, str]] = {}  # trial_id -> (run id, config_id)
        self._running: dict[str, set[str]] = {}  # config_id -> trial ids running now
        self.failed: str | None = None  # why tracking stopped, once a hook failed

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        """The sweep's MLflow experiment, made on first use."""
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            self._experiment_id = (found.experiment_id if found is not None
                                   else self.client.create_experiment(self.experiment))
        return self._experiment_id

    @property
    def manifest(self) -> dict:
        """The sweep's manifest, read when the first trial starts (a promotion records itself
        before Tune starts)."""
        if self._manifest is None:
            self._manifest = store.read_manifest(self.sweep_dir)
        return self._manifest

    # Tune's callback hooks

    @_never_stops_the_sweep
    def on_trial_start(self, iteration, trials, trial, **info):
        self._start(trial)

    @_never_stops_the_sweep
    def on_trial_restore(self, iteration, trials, trial, **info):
        self._start(trial)

    @_never_stops_the_sweep
    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._start(trial)
        step = int(result.get("progress") or 0)
        self._log(run_id, {key: result.get(key) for key in CURVE}, step=step)

    @_never_stops_the_sweep
    def on_trial_complete(self, iteration, trials, trial, **info):
        last = dict(trial.last_result or {})
        run_id = self._start(trial)
        step = int(last.get("progress") or 0)
        if last.get("final"):
            finals = {key: value for key, value in last.items() if key.startswith("final_")}
            self._log(run_id, {**finals, "meta_qwk": last.get("meta_qwk"),
                               "fusion_gain": last.get("fusion_gain")}, step=step)
            self._end(trial, "finished", "FINISHED")
        else:  # stopped by the scheduler (fold-asha, ASHA): finished, with its last value
            judged = last.get("fused_qwk", last.get("val_qwk"))
            self._log(run_id, {"last_qwk": judged}, step=step, tags={"pruned_at": step})
            self._end(trial, "pruned", "FINISHED")

    @_never_stops_the_sweep
    def on_trial_error(self, iteration, trials, trial, **info):
        self._start(trial)
        self._end(trial, "error", "FAILED")

    @_never_stops_the_sweep
    def on_experiment_end(self, trials, **info):
        """Runs Tune left unended (an interrupted sweep) are closed as killed."""
        for trial_id, (run_id, _) in list(self._children.items()):
            self.client.set_terminated(run_id, status="KILLED")
            del self._children[trial_id]
        for config_id, running in self._running.items():
            if running:
                self.client.set_terminated(self._parents[config_id], status="KILLED")
        self._running.clear()

    # runs

    def _start(self, trial) -> str:
        """The trial's child run (made, or found from an earlier run of the sweep), running."""
        if trial.trial_id in self._children:
            return self._children[trial.trial_id][0]
        config_id, fold_seed, fold = store.trial_key(trial.config)
        params = _params(trial.config)
        parent = self._parent(config_id, params)
        tags = {"kind": "fold", "config_id": config_id, "fold_seed": str(fold_seed),
                "fold": str(fold)}
        found = self._find(tags)
        if found is None:
            run_id = self.client.create_run(
                self.experiment_id, run_name=store.key_name((config_id, fold_seed, fold)),
                tags={**tags, "mlflow.parentRunId": parent, "sweep": self.experiment}).info.run_id
            self._log(run_id, {}, params=params)
        else:
            run_id = found
            self.client.update_run(run_id, status="RUNNING")
        experiment = trial.config.get("settings", {}).get("experiment", store.TUNE_DIR)
        self._log(run_id, {}, tags={"trial_id": trial.trial_id, "experiment": experiment,
                                    "status": "running"})
        self._children[trial.trial_id] = (run_id, config_id)
        running = self._running.setdefault(config_id, set())
        if not running:
            self.client.update_run(parent, status="RUNNING")
        running.add(trial.trial_id)
        return run_id

    def _parent(self, config_id: str, params: dict) -> str:
        if config_id in self._parents:
            return self._parents[config_id]
        tags = {"kind": "config", "config_id": config_id}
        found = self._find(tags)
        if found is None:
            baseline = (self.manifest.get("baseline") or {}).get("config_id") == config_id
            found = self.client.create_run(
                self.experiment_id, run_name=config_id,
                tags={**tags, "sweep": self.experiment,
                      "baseline": str(baseline).lower()}).info.run_id
            self._log(found, {}, params=params)
        self._parents[config_id] = found
        return found

    def _find(self, tags: dict) -> str | None:
        where = " and ".join(f"tags.{key} = '{value}'" for key, value in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=where,
                                       max_results=1)
        return runs[0].info.run_id if runs else None

    def _end(self, trial, status: str, run_status: str) -> None:
        run_id, config_id = self._children.pop(trial.trial_id)
        self._log(run_id, {}, tags={"status": status})
        self.client.set_terminated(run_id, status=run_status)
        parent = self._parents[config_id]
        self._aggregate(config_id, parent)
        running = self._running.get(config_id, set())
        running.discard(trial.trial_id)
        if not running:
            self.client.set_terminated(parent, status="FINISHED")

    def _aggregate(self, config_id: str, parent: str) -> None:
        """Mean and std over the config's recorded folds (step: how many), on its parent run."""
        planned = store.planned_folds(self.manifest).get(
            config_id, store.screening_folds(self.manifest))
        records = [record for seed, fold in sorted(planned) if (record := store.read_fold_result(
            self.sweep_dir, config_id, seed, fold)) is not None]
        values: dict[str, list[float]] = {}
        for record in records:
            for key, value in {**record["metrics"], "meta_qwk": record["meta_qwk"],
                               "fusion_gain": record["fusion_gain"]}.items():
                if _number(value) is not None:
                    values.setdefault(key, []).append(float(value))
        metrics = {"folds_done": len(records)}
        for key, seen in values.items():
            metrics[f"{key}_mean"] = statistics.fmean(seen)
            if len(seen) > 1:
                metrics[f"{key}_std"] = statistics.stdev(seen)
        self._log(parent, metrics, step=len(records), tags={
            "folds_done": len(records), "folds_total": len(planned),
            "complete": str(len(records) >= len(planned)).lower()})

    def _log(self, run_id: str, metrics: dict, *, step: int = 0, params: dict | None = None,
             tags: dict | None = None) -> None:
        """One call: the finite numbers of `metrics` at `step`, `params` and `tags` as text."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        logged = [Metric(key, number, now, step) for key, value in metrics.items()
                  if (number := _number(value)) is not None]
        given = [Param(key, _text(value)) for key, value in (params or {}).items()]
        marked = [RunTag(key, _text(value)) for key, value in (tags or {}).items()]
        if logged or given or marked:
            self.client.log_batch(run_id, metrics=logged, params=given, tags=marked)


def _params(tune_config: dict) -> dict:
    """The trial's swept parameters: the config's values of the sweep's `space` keys."""
    if "trial" in tune_config:
        return dict(tune_config["trial"].get("params", {}))
    return dict(tune_config.get("params", {}))


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
