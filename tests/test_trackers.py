"""The MLflow tracker, Ray-free: Tune's callback hooks called with stand-in trials, then the
runs read back with `MlflowClient` (parents per config, children per fold, tags, params,
recorded metrics, learning curves, pruned and failed trials, a resume finding its runs)."""

from __future__ import annotations

import pickle
import statistics
from dataclasses import dataclass, field

import pytest

from dfu_train.config import TrialConfig
from dfu_train.results import store
from dfu_train.sweep.trackers import MlflowTracker, create_trackers
from sweep_files import fold_record, manifest, write_sweep

mlflow = pytest.importorskip("mlflow")

PARAMS = {"forest.n_estimators": 100, "forest.max_depth": None}


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    last_result: dict = field(default_factory=dict)


def planned(trial_id: str, config_id: str, fold: int, seed: int = 42) -> FakeTrial:
    return FakeTrial(trial_id, {"settings": {"experiment": "tune"},
                                "trial": {"config_id": config_id, "params": PARAMS,
                                          "config": {"cv": {"seed": seed}}, "fold": fold}})


def run_fold(tracker, trial, curve, *, final: dict | None = None) -> None:
    """Start, report a learning curve, complete: with the fold's final report (one step past
    the curve, carrying the recorded QWK, as `run_fold` sends it), or stopped."""
    tracker.on_trial_start(0, [], trial)
    for step, qwk in enumerate(curve, start=1):
        result = {"progress": step, "stage": "stage1", "val_qwk": qwk, "fused_qwk": qwk}
        tracker.on_trial_result(0, [], trial, result)
        trial.last_result = result
    if final is not None:
        trial.last_result = {"progress": len(curve) + 1, "stage": "final", "final": 1,
                             "val_qwk": final["qwk"], "fused_qwk": final["qwk"],
                             "meta_qwk": 0.3, "fusion_gain": None,
                             **{f"final_{k}": v for k, v in final.items()}}
        tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_trial_complete(0, [], trial)


@pytest.fixture
def tracked(tmp_path):
    sweep_dir = store.storage_path(tmp_path / "s") / "tracked"
    write_sweep(sweep_dir, manifest("tracked", ["aaaaaa", "bbbbbb"], folds=(0, 1),
                                    baseline={"config_id": "bbbbbb", "params": {}}))
    uri = (tmp_path / "mlruns").as_uri()
    [tracker] = create_trackers("tracked", sweep_dir, mlflow=uri)
    return tracker, sweep_dir, mlflow.MlflowClient(tracking_uri=uri)


def runs_by_name(client) -> dict:
    experiment = client.get_experiment_by_name("tracked")
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}


def test_configs_are_parent_runs_and_trials_their_children(tracked):
    tracker, sweep_dir, client = tracked
    for fold, qwk in ((0, 0.6), (1, 0.4)):
        store.write_fold_result(sweep_dir, fold_record("aaaaaa", 42, fold, qwk))
        run_fold(tracker, planned(f"t{fold}", "aaaaaa", fold), [0.1, 0.3],
                 final={"qwk": qwk, "macro_f1": 0.4, "f1_R": 0.5})
    runs = runs_by_name(client)
    parent, child = runs["aaaaaa"], runs["aaaaaa-s42-f1"]
    assert set(runs) == {"aaaaaa", "aaaaaa-s42-f0", "aaaaaa-s42-f1"}
    assert parent.data.tags["kind"] == "config" and parent.data.tags["baseline"] == "false"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert {k: child.data.tags[k] for k in ("config_id", "fold_seed", "fold", "status")} == {
        "config_id": "aaaaaa", "fold_seed": "42", "fold": "1", "status": "finished"}
    assert parent.data.params == child.data.params == {"forest.n_estimators": "100",
                                                       "forest.max_depth": "null"}
    assert child.info.status == parent.info.status == "FINISHED"
    assert child.data.metrics["final_qwk"] == 0.4 and child.data.metrics["final_f1_R"] == 0.5
    curve = client.get_metric_history(child.info.run_id, "val_qwk")
    assert [(m.step, round(m.value, 6)) for m in curve] == [(1, 0.1), (2, 0.3), (3, 0.4)]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "fused_qwk")] == [1, 2, 3]
    # the parent: mean and std over the recorded folds, once both are done
    assert parent.data.metrics["qwk_mean"] == pytest.approx(0.5)
    assert parent.data.metrics["qwk_std"] == pytest.approx(statistics.stdev([0.6, 0.4]))
    assert parent.data.metrics["macro_f1_mean"] == pytest.approx(0.4)
    assert parent.data.tags["folds_done"] == "2" and parent.data.tags["complete"] == "true"
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "qwk_mean")] == [1, 2]


def test_pruned_and_failed_trials_and_a_resume_that_finds_its_runs(tracked):
    tracker, sweep_dir, client = tracked
    run_fold(tracker, planned("p0", "bbbbbb", 0), [0.1, 0.2])  # stopped by the scheduler
    failed = planned("e1", "bbbbbb", 1)
    tracker.on_trial_start(0, [], failed)
    tracker.on_trial_error(0, [], failed)
    runs = runs_by_name(client)
    pruned = runs["bbbbbb-s42-f0"]
    assert pruned.info.status == "FINISHED" and pruned.data.tags["status"] == "pruned"
    assert pruned.data.metrics["last_qwk"] == 0.2 and pruned.data.tags["pruned_at"] == "2"
    assert runs["bbbbbb-s42-f1"].info.status == "FAILED"
    assert runs["bbbbbb"].data.tags["baseline"] == "true"
    assert runs["bbbbbb"].data.tags["complete"] == "false"
    assert pickle.loads(pickle.dumps(tracker))._client is None  # Tune pickles its callbacks
    # a resume: a fresh tracker retries the failed fold
    resumed = MlflowTracker(tracker.tracking_uri, experiment="tracked", sweep_dir=sweep_dir)
    store.write_fold_result(sweep_dir, fold_record("bbbbbb", 42, 1, 0.7))
    run_fold(resumed, planned("r1", "bbbbbb", 1), [0.5], final={"qwk": 0.7})
    again = runs_by_name(client)
    assert set(again) == set(runs)  # the same parent and child, continued
    retried = again["bbbbbb-s42-f1"]
    assert retried.info.status == "FINISHED" and retried.data.tags["trial_id"] == "r1"
    assert retried.data.metrics["final_qwk"] == 0.7
    assert again["bbbbbb"].data.metrics["qwk_mean"] == pytest.approx(0.7)
    assert again["bbbbbb"].data.tags["folds_done"] == "1"


def test_a_proposed_config_is_named_by_its_id(tracked):
    tracker, _, client = tracked
    base = TrialConfig().to_dict()
    proposed = FakeTrial("o0", {"settings": {"base_config": base, "experiment": "tune"},
                                "params": {"forest.n_estimators": 300}, "fold": 0})
    config_id = TrialConfig.from_dict(base).override({"forest.n_estimators": 300}).config_id
    run_fold(tracker, proposed, [0.2, 0.1])
    runs = runs_by_name(client)
    assert set(runs) == {config_id, f"{config_id}-s42-f0"}
    assert runs[config_id].data.params == {"forest.n_estimators": "300"}
    assert runs[f"{config_id}-s42-f0"].data.tags["status"] == "pruned"


def test_an_interrupted_sweep_leaves_no_run_running(tracked):
    tracker, _, client = tracked
    trial = planned("k0", "aaaaaa", 0)
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, {"progress": 1, "val_qwk": 0.3, "fused_qwk": None})
    tracker.on_experiment_end([])
    runs = runs_by_name(client)
    assert runs["aaaaaa-s42-f0"].info.status == runs["aaaaaa"].info.status == "KILLED"
    assert "fused_qwk" not in runs["aaaaaa-s42-f0"].data.metrics


def test_tensorboard_is_ray_s_callback_and_installed():
    pytest.importorskip("tensorboardX")
    from ray.tune.logger import TBXLoggerCallback

    [callback] = create_trackers("tracked", store.storage_path("results") / "x",
                                 tensorboard=True)
    assert isinstance(callback, TBXLoggerCallback)


def test_a_tracking_server_that_fails_stops_the_tracking_not_the_sweep(tracked, caplog):
    tracker, _, _ = tracked
    calls = []

    class DownServer:
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                calls.append(name)
                raise ConnectionError("tracking server unreachable")
            return fail

    tracker._client = DownServer()
    with caplog.at_level("WARNING", logger="dfu_train.sweep.trackers"):
        run_fold(tracker, planned("t1", "aaaaaa", 0), [0.2, 0.3], final={"qwk": 0.3})
        tracker.on_trial_error(0, [], planned("t2", "aaaaaa", 1))
        tracker.on_experiment_end([])
    assert len(calls) == 1  # the first failure silences the tracker for the run
    assert "unreachable" in tracker.failed
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "goes on without it" in warning.getMessage()
