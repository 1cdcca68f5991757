"""What a Train trial starts: as few processes as its work needs, each importing no more than it
uses (`sweep.trainable`, `sweep.local_ray`, `sweep.launch.reuse_trial_actors`). Only the last
test starts Ray (one TorchTrainer trial)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dfu_train.results import store
from dfu_train.sweep import local_ray, trainable
from dfu_train.sweep.launch import reuse_trial_actors, run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.sweep.space import parse_sweep

PREEMPTION_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"

CONTROLLER_IMPORTS = """
import json, pickle, sys
import dfu_train.sweep.trainable as trainable
config = pickle.loads(pickle.dumps(trainable.OneWorkerConfig()))  # as the controller gets it
heavy = ("torch", "sklearn", "dfu_train.training.fold", "dfu_train.data.cohort")
print(json.dumps({"backend": type(config).__name__,
                  "imported": [m for m in heavy if m in sys.modules]}))
"""


def test_what_the_controller_unpickles_imports_neither_torch_nor_the_fold_code():
    """The controller of a CPU trial unpickles `OneWorkerConfig` (and with it this module): that
    must not import torch, scikit-learn or the fold code, which only the worker uses."""
    run = subprocess.run([sys.executable, "-c", CONTROLLER_IMPORTS], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found == {"backend": "OneWorkerConfig", "imported": []}


def _tune_config(tmp_path, gpus: float = 0.0) -> dict:
    return {"settings": {"sweep_dir": str(tmp_path / "sweep"), "cpus_per_trial": 2,
                         "gpus_per_trial": gpus, "max_failures": 3},
            "config_id": "c0ffee", "fold": 0}


def test_a_cpu_trial_gets_one_worker_without_a_process_group(tmp_path):
    from ray.train.backend import Backend

    trainer = trainable.build_trainer(_tune_config(tmp_path), trial_id="t1", trial_started=1.0,
                                      callbacks=[])
    assert isinstance(trainer, trainable.sweep_trainer())
    assert type(trainer.backend_config) is trainable.OneWorkerConfig
    assert trainer.backend_config.backend_cls is Backend  # Train's no-op backend: no gloo group
    assert trainer.scaling_config.num_workers == 1 and not trainer.scaling_config.use_gpu
    assert trainer.scaling_config.resources_per_worker == {"CPU": 2}
    assert trainer.train_loop_config["trial_id"] == "t1"
    assert trainer.train_loop_config["trial_started"] == 1.0
    assert trainer.run_config.name == "train-t1"
    assert trainer.run_config.failure_config.max_failures == 3


def test_a_gpu_trial_keeps_rays_torch_config(tmp_path):
    from ray.train.torch import TorchConfig

    trainer = trainable.build_trainer(_tune_config(tmp_path, gpus=0.5), trial_id="t2",
                                      trial_started=1.0, callbacks=[])
    assert isinstance(trainer.backend_config, TorchConfig)
    assert trainer.scaling_config.use_gpu
    assert trainer.scaling_config.resources_per_worker == {"CPU": 2, "GPU": 0.5}


def test_the_trial_trainer_leaves_out_the_train_actors_a_trial_never_uses(tmp_path):
    """Ray Train's dataset manager and placement-group cleaner each start an actor (a process)
    per run; a sweep trial has no datasets and the sweep releases orphaned reservations itself.
    Should a Ray upgrade rename them, this test fails rather than the trials slowing down."""
    from ray.train.v2._internal.callbacks import BackendSetupCallback, DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import (
        PlacementGroupCleanerCallback,
    )

    assert set(trainable._unused_train_callbacks()) == {DatasetsCallback,
                                                         PlacementGroupCleanerCallback}
    trainer = trainable.build_trainer(_tune_config(tmp_path), trial_id="t3", trial_started=1.0,
                                      callbacks=[])
    kinds = {type(c) for c in trainer._create_default_callbacks()}
    assert BackendSetupCallback in kinds
    assert not kinds & {DatasetsCallback, PlacementGroupCleanerCallback}


class _ListQueue:
    """Stands in for the trial's Ray queue: what `put` puts, `get` takes, in order."""

    def __init__(self):
        import queue

        self.items = queue.Queue()

    def put(self, item):
        self.items.put(item)

    def get(self):
        return self.items.get(timeout=30)


class _FakeTrainer:
    """Reports through the trial's callback from fit's thread, as the controller does."""

    def __init__(self, reports, error=None):
        self.callback = trainable.TrainReportsToQueue(reports)
        self.error = error

    def fit(self):
        for epoch in (1, 2):
            self.callback.after_report(None, [{"progress": epoch, "final": epoch == 2}], None)
        if self.error:
            raise self.error


def test_train_reports_reach_tune_from_the_trials_own_thread_in_order(monkeypatch):
    reported = []
    monkeypatch.setattr(trainable.tune, "report", reported.append)
    reports = _ListQueue()
    last = trainable._fit_reporting(_FakeTrainer(reports), reports)
    assert reported == [{"progress": 1, "final": False}, {"progress": 2, "final": True}]
    assert last == reported[-1]


def test_a_failed_fit_fails_the_trial_after_its_reports(monkeypatch):
    reported = []
    monkeypatch.setattr(trainable.tune, "report", reported.append)
    reports = _ListQueue()
    with pytest.raises(RuntimeError, match="worker died"):
        trainable._fit_reporting(_FakeTrainer(reports, RuntimeError("worker died")), reports)
    assert [r["progress"] for r in reported] == [1, 2]


def test_the_private_local_ray_starts_with_the_train_settings_of_one_machine(monkeypatch):
    seen = {}

    def fake_init(**options):
        seen.update(env={k: os.environ.get(k) for k in (PREEMPTION_ENV,
                                                        local_ray.SINGLE_MACHINE_ENV)},
                    options=options)

    monkeypatch.delenv(PREEMPTION_ENV, raising=False)
    monkeypatch.setattr(local_ray.ray, "init", fake_init)
    local_ray.start_local_ray(3, log_to_driver=False)
    assert seen["env"] == {PREEMPTION_ENV: "0", local_ray.SINGLE_MACHINE_ENV: "0"}
    assert seen["options"]["address"] == "local" and seen["options"]["num_cpus"] == 3
    assert PREEMPTION_ENV not in os.environ  # only Ray's processes keep it


def test_a_setting_given_by_the_user_wins_and_a_cluster_keeps_trains_defaults(monkeypatch):
    seen = []
    monkeypatch.setattr(local_ray.ray, "init", lambda **_: seen.append(
        os.environ.get(PREEMPTION_ENV)))
    monkeypatch.setenv(PREEMPTION_ENV, "1")
    local_ray.start_local_ray(1)
    assert os.environ[PREEMPTION_ENV] == "1"
    monkeypatch.delenv(PREEMPTION_ENV)
    local_ray.connect_ray("127.0.0.1:6379")
    assert seen == ["1", None]


def _spec(scheduler: str, use_train: bool = True, modalities=("metadata",)):
    return parse_sweep({"name": "s", "cv": {"n_folds": 3, "run_folds": [0]},
                        "search": {"algorithm": "grid"}, "scheduler": {"type": scheduler},
                        "resources": {"cpus_per_trial": 1, "use_train": use_train},
                        "fixed": {"modalities": list(modalities)}})


@pytest.mark.parametrize("scheduler,use_train,fusion,reuse", [
    ("none", True, 0, True),        # every trial runs to its end: its actor can take the next
    ("fold-asha", True, 0, True),   # nothing to judge without a fusion stage: FIFO
    ("fold-asha", True, 6, False),  # stops trials mid-run: their actors must end with them
    ("asha", True, 6, False),
    ("asha", False, 6, True),       # inline trials own no TorchTrainer
])
def test_train_trials_reuse_actors_only_where_no_trial_is_stopped_early(scheduler, use_train,
                                                                        fusion, reuse):
    spec = _spec(scheduler, use_train)
    built = spec.scheduler.build(8, fusion)
    assert reuse_trial_actors(spec, built) is reuse


@pytest.mark.ray
def test_a_train_trial_records_its_fold_and_starts_only_the_actors_it_uses(
        local_ray, tmp_path, tables_only_root):
    spec = parse_sweep({"name": "lean", "baseline": False, "cv": {"n_folds": 3, "run_folds": [1]},
                        "search": {"algorithm": "grid"}, "scheduler": {"type": "none"},
                        "resources": {"cpus_per_trial": 1, "use_train": True},
                        "fixed": {"forest.n_estimators": 20, "forest.inner_folds": 3}})
    assert spec.resources.trains
    plan = plan_sweep(spec, data_root=tables_only_root, storage=tmp_path)
    sweep_dir = run_sweep(plan, on_event=lambda line: None)

    (record,) = store.read_fold_results(sweep_dir)
    assert record["status"] == "finished" and record["fold"] == 1
    timing = record["timing"]
    assert 0 <= timing["waiting_s"] <= timing["startup_s"] <= timing["wall_s"]
    assert timing["compute_s"] > 0 and record["metrics"]["qwk"] is not None
    assert [s["status"] for s in store.read_trial_states(sweep_dir)] == ["finished"]
    assert len(list((sweep_dir / store.TRAIN_DIR).glob("train-*"))) == 1

    started = {a["ActorClassName"] for a in local_ray._private.state.actors().values()}
    assert {"TrainController", "RayTrainWorker", "SynchronizationActor"} <= started
    assert not started & {"DatasetManager", "PlacementGroupCleaner", "PreemptionWatcher"}
