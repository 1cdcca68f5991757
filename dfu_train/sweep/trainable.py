"""Tune function trainable -> TorchTrainer with one worker -> `run_fold`.

The science lives in `training.fold.run_fold`; this adapter only moves values between Ray and it.

A Train trial's start-up is mostly processes starting one after the other, each importing what it
needs: the Tune trial's actor, then the TorchTrainer's controller, then the worker (Ray Train gives
the controller and the workers a runtime environment of their own, so they never get one of the
worker processes Ray starts in advance). What this module does about it:

- it imports only Ray's Train and Tune APIs and the light parts of dfu_train; torch, scikit-learn
  and the fold code are imported where they run. The controller unpickles `OneWorkerConfig` from
  here, so it starts without torch;
- a CPU trial's single worker runs under `OneWorkerConfig`: no torch.distributed process group,
  as there is nobody to talk to;
- the trial's TorchTrainer (`sweep_trainer`) leaves out Train's parts that start an actor (a
  process) per run that a sweep trial never uses: the dataset manager (no Ray Datasets) and the
  detached placement-group cleaner (the sweep releases the reservations of dead controllers
  itself, `reservations.ReleaseOrphanedReservations`). The private local Ray also switches off
  the preemption watcher, another actor per run (`local_ray.LOCAL_TRAIN_ENV`);
- where no trial is stopped early, Tune runs the next trial in a finished trial's actor
  (`launch.reuse_trial_actors`): no actor start and no torch import for TorchTrainer.

Train's reports reach Tune through a queue the trial's function reads (`_fit_reporting`).
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ray
import ray.train
from ray import tune
from ray.train import ScalingConfig
from ray.train.backend import BackendConfig
from ray.util.queue import Queue

from dfu_train.errors import DataError
from dfu_train.location import Location
from dfu_train.results import store

if TYPE_CHECKING:
    from dfu_train.training.checkpoint import FoldCheckpoint

CHECKPOINT_FILE = "fold.pt"
# Train's controller takes a worker's report when it polls, every 2 s by default, and the worker
# blocks until then: with one report per epoch, short epochs would mostly wait. The controller
# reads this variable from the process that builds the trainer.
POLL_ENV, POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.05"


@dataclass
class OneWorkerConfig(BackendConfig):
    """The TorchTrainer backend of a trial's single CPU worker: Ray Train's base backend, which
    sets up no torch.distributed process group (one worker has nobody to talk to) and imports no
    torch where it is unpickled (the controller). GPU trials keep Ray's `TorchConfig`."""

    backend: str = "none"  # TorchTrainer fills in gloo/nccl when this is empty


def _unused_train_callbacks() -> tuple[type, ...]:
    """Ray Train's default callbacks that start an actor per run which a sweep trial never uses;
    none if this Ray has other ones (the trainer then runs with all of Train's defaults)."""
    try:
        from ray.train.v2._internal.callbacks import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import (
            PlacementGroupCleanerCallback,
        )
    except ImportError:
        return ()
    return DatasetsCallback, PlacementGroupCleanerCallback


@functools.cache
def sweep_trainer() -> type:
    """TorchTrainer for one sweep trial, without the callbacks of `_unused_train_callbacks` (made
    on first use: importing TorchTrainer imports torch, which the controller does not need)."""
    from ray.train.torch import TorchTrainer

    unused = _unused_train_callbacks()

    class SweepTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:  # never in a sweep; keep Train's data handling if ever given
                return callbacks
            return [c for c in callbacks if not isinstance(c, unused)]

    return SweepTorchTrainer


def _recorded(tune_config: dict) -> dict | None:
    config_id, seed, fold = store.trial_key(tune_config)
    return store.read_fold_result(Location(tune_config["settings"]["sweep_dir"]),
                                  config_id, seed, fold)


def _config_stopped(tune_config: dict) -> bool:
    """Whether the scheduler stopped this trial's config on another fold (fold-asha): the trial
    then ends at once, before any work, with an empty report the scheduler answers with STOP."""
    settings = tune_config["settings"]
    config_id = store.trial_key(tune_config)[0]
    marks = store.read_pruned(Location(settings["sweep_dir"]))
    if (settings.get("experiment", store.TUNE_DIR), config_id) not in store.stopped_configs(marks):
        return False
    tune.report({"stage": "stopped", "progress": 0, "fusion_epochs": 0, "val_qwk": None,
                 "fused_qwk": None})
    return True


def _report_recorded(record: dict) -> None:
    from dfu_train.training.fold import final_report

    tune.report({"stage": "recorded", **final_report(
        record["metrics"], meta_qwk=record["meta_qwk"], fusion_gain=record["fusion_gain"],
        progress=record["progress"])})


def fold_trainable(tune_config: dict) -> None:
    """Run one (config, fold) as a TorchTrainer with one worker (a GPU one when asked). A fold
    already recorded in the sweep folder is reported, not re-run."""
    trial_started = time.time()
    done = _recorded(tune_config)
    if done is not None:
        _report_recorded(done)
        return
    if _config_stopped(tune_config):
        return
    trial_id = tune.get_context().get_trial_id()
    os.environ.setdefault(POLL_ENV, POLL_S)
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = build_trainer(tune_config, trial_id=trial_id, trial_started=trial_started,
                            callbacks=[TrainReportsToQueue(reports)])
    last = _fit_reporting(trainer, reports)
    # Train can drop a worker's report when the worker ends right after it (seen on loaded
    # machines), leaving Tune a result without metrics: then report the recorded outcome.
    recorded = _recorded(tune_config) if not (last or {}).get("final") else None
    if recorded is not None:
        _report_recorded(recorded)


class TrainReportsToQueue(ray.train.UserCallback):
    """In the trial's Train controller: puts each report of the worker on the trial's queue,
    which the trial's function passes on to Tune (`_fit_reporting`)."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        report = dict(metrics[0])  # the one worker's
        if checkpoint is not None:
            report["checkpoint_path"] = checkpoint.path
        self.queue.put(report)


FIT_ENDED = "dfu_fit_ended"


def _fit_reporting(trainer, reports: Queue) -> dict | None:
    """`trainer.fit()` in a thread while this one passes Train's reports on to Tune with
    `tune.report`, as a function trainable reports; the last report, or fit's error. Ray's own
    `TuneReportCallback` hands reports to Tune's session from the session's other thread, which
    hangs the trial (Ray 2.60) when Train's last report is still being handed over as the
    function returns."""
    outcome: dict = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - raised again in the trial's thread
            outcome["error"] = exc
        finally:
            reports.put({FIT_ENDED: True})

    fitting = threading.Thread(target=fit, name="torchtrainer-fit", daemon=True)
    fitting.start()
    last = None
    while FIT_ENDED not in (report := reports.get()):
        tune.report(report)
        last = report
    fitting.join()
    if "error" in outcome:
        raise outcome["error"]
    return last


def build_trainer(tune_config: dict, *, trial_id: str, trial_started: float, callbacks: list):
    """The trial's TorchTrainer: one worker with the trial's CPUs (and GPU share), `fold_worker`
    as its loop, Train's runs under the sweep folder; `callbacks` report to Tune."""
    settings = tune_config["settings"]
    use_gpu = settings["gpus_per_trial"] > 0
    per_worker = {"CPU": settings["cpus_per_trial"]}
    if use_gpu:
        per_worker["GPU"] = settings["gpus_per_trial"]
    trainer_class = sweep_trainer()
    return trainer_class(
        fold_worker,
        train_loop_config={**tune_config, "trial_id": trial_id, "trial_started": trial_started},
        torch_config=None if use_gpu else OneWorkerConfig(),  # None: Ray's TorchConfig
        scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        # The run name must stay a pure function of the trial id: restore finds runs by name.
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",
            storage_path=str(Location(settings["sweep_dir"]) / store.TRAIN_DIR),
            failure_config=ray.train.FailureConfig(max_failures=settings["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks),
    )


def fold_worker(loop_config: dict) -> None:
    """The Train worker: run (or continue) the fold from Train's checkpoint."""
    from ray.train.torch import get_device

    _run_and_record(loop_config, trial_id=loop_config["trial_id"],
                    trial_started=loop_config["trial_started"], report=_report_to_train,
                    checkpoint=ray.train.get_checkpoint(), device=get_device())


def inline_fold_trainable(tune_config: dict) -> None:
    """Run one (config, fold) inside the Tune trial itself, without a Train worker: no start-up
    cost, for CPU machines and small trials (`resources.use_train: false`). Tune retries a failed
    trial from its last checkpoint."""
    trial_started = time.time()
    done = _recorded(tune_config)
    if done is not None:
        _report_recorded(done)
        return
    if _config_stopped(tune_config):
        return
    _run_and_record(tune_config, trial_id=tune.get_context().get_trial_id(),
                    trial_started=trial_started, report=_report_to_tune,
                    checkpoint=tune.get_checkpoint(), device="cpu")


def _run_and_record(tune_config: dict, *, trial_id: str, trial_started: float, report,
                    checkpoint, device) -> None:
    """Load the cohort, run the fold, and write its record atomically before the fold's last
    report reaches the scheduler (which may stop the trial on it).

    The record's timing splits the trial's wall time (from the start of the Tune trial's function)
    into start-up (Ray placing and starting the worker, imports, loading the cohort and
    checkpoint) and compute inside `run_fold` per stage, so Ray's own overhead is visible."""
    worker_started = time.time()
    import torch

    from dfu_train.cache import ArtifactCache
    from dfu_train.data.cohort import load_cohort
    from dfu_train.training.fold import run_fold

    settings = tune_config["settings"]
    sweep_dir = Location(settings["sweep_dir"])
    cpus = max(1, int(settings["cpus_per_trial"]))
    torch.set_num_threads(cpus)  # no oversubscription: torch and the forest use what was reserved
    config, params = store.trial_of(tune_config)
    key = store.trial_key(tune_config)  # the id as planned (also by earlier versions)
    cohort = load_cohort(settings["data_root"])
    planned = settings.get("cohort_fingerprint", cohort.fingerprint)
    if cohort.fingerprint != planned:  # its record would not belong to the sweep
        raise DataError(f"{settings['data_root']}: the cohort changed since the sweep was planned "
                        f"(fingerprint {cohort.fingerprint}, planned {planned}); run the sweep on "
                        "the cohort as it was, or the new one as a new sweep")
    resume = _load_checkpoint(checkpoint) or _earlier_checkpoint(settings, key)
    cache_settings = settings.get("cache", {"root": str(sweep_dir.parent / store.CACHE_DIR),
                                            "enabled": True})
    cache = ArtifactCache(cache_settings["root"], enabled=cache_settings["enabled"])
    compute_started = time.time()

    def record(result) -> None:
        now = time.time()
        wall, compute = round(now - trial_started, 3), round(now - compute_started, 3)
        store.write_fold_result(sweep_dir, {
            **result.to_dict(),
            "params": params,
            "status": "finished",
            "trial_id": trial_id,
            "node": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "resumed_from": resume.progress if resume is not None else None,
            "compute_s": compute,
            "wall_s": wall,
            "timing": {
                "started_at": round(trial_started, 3),
                "wall_s": wall,
                "waiting_s": round(worker_started - trial_started, 3),
                "startup_s": round(compute_started - trial_started, 3),
                "compute_s": compute,
                "stages_s": {name: stage.get("seconds") for name, stage in result.stages.items()},
            },
            "threads": {"torch": torch.get_num_threads(), "forest_jobs": cpus},
        })

    run_fold(config, cohort, key[2], report=report, n_jobs=cpus, resume=resume,
             cache=cache, device=device, on_result=record, config_id=key[0])


def _load_checkpoint(checkpoint) -> FoldCheckpoint | None:
    """The fold checkpoint a retry or a resumed sweep continues from, if any."""
    if checkpoint is None:
        return None
    from dfu_train.training.checkpoint import FoldCheckpoint

    with checkpoint.as_directory() as folder:
        return FoldCheckpoint.load(Path(folder) / CHECKPOINT_FILE)


def _earlier_checkpoint(settings: dict, key: tuple[str, int, int]) -> FoldCheckpoint | None:
    """The newest checkpoint an earlier run of the sweep left for this trial (`session`), read
    weights-only; one that is damaged or of another trial is ignored (the fold starts over)."""
    uri = settings.get("resume_from", {}).get(store.key_name(key))
    if uri is None:
        return None
    from dfu_train.training.checkpoint import FoldCheckpoint

    try:
        with tempfile.TemporaryDirectory(prefix="fold-resume-") as folder:
            path = Path(folder) / CHECKPOINT_FILE
            path.write_bytes(Location(uri).read_bytes())
            resume = FoldCheckpoint.load(path)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, the fold starts over
        print(f"dfu: not continuing from {uri} ({type(exc).__name__}); the fold starts over")
        return None
    return resume if (resume.config_id, resume.fold) == (key[0], key[2]) else None


def _report_to_train(metrics: dict, checkpoint: FoldCheckpoint | None) -> None:
    _report_with(ray.train.report, ray.train.Checkpoint, metrics, checkpoint)


def _report_to_tune(metrics: dict, checkpoint: FoldCheckpoint | None) -> None:
    _report_with(tune.report, tune.Checkpoint, metrics, checkpoint)


def _report_with(report, checkpoint_type, metrics: dict, checkpoint: FoldCheckpoint | None) -> None:
    if checkpoint is None:
        report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="fold-checkpoint-") as folder:
        checkpoint.save(Path(folder) / CHECKPOINT_FILE)
        report(metrics, checkpoint=checkpoint_type.from_directory(folder))
