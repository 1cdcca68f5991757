"""Tune function trainable -> TorchTrainer with one worker -> `run_fold`.

The science lives in `training.fold.run_fold`; this adapter only moves values between Ray and it.
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
from ray import tune
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from dfu_train.config import TrialConfig
from dfu_train.data.cohort import load_cohort
from dfu_train.sweep import store
from dfu_train.training.fold import run_fold
from dfu_train.training.stages import FoldCheckpoint

CHECKPOINT_FILE = "fold.pt"


def fold_trainable(tune_config: dict) -> None:
    """Run one (config, fold). A fold already recorded in the sweep folder is reported, not re-run."""
    settings = tune_config["settings"]
    sweep_dir = Path(settings["sweep_dir"])
    config_id, fold = tune_config["trial"]["config_id"], tune_config["fold"]
    fold_seed = tune_config["trial"]["config"]["cv"]["seed"]
    done = store.read_fold_result(sweep_dir, config_id, fold_seed, fold)
    if done is not None:
        tune.report({"progress": done["progress"], "val_qwk": done["metrics"]["qwk"],
                     "stage": "recorded"})
        return
    trial_id = tune.get_context().get_trial_id()
    use_gpu = settings["gpus_per_trial"] > 0
    per_worker = {"CPU": settings["cpus_per_trial"]}
    if use_gpu:
        per_worker["GPU"] = settings["gpus_per_trial"]
    trainer = TorchTrainer(
        fold_worker,
        train_loop_config={**tune_config, "trial_id": trial_id, "trial_started": time.time()},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        # The run name must stay a pure function of the trial id: restore finds runs by name.
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}", storage_path=str(sweep_dir / store.TRAIN_DIR),
            failure_config=ray.train.FailureConfig(max_failures=settings["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()]),
    )
    trainer.fit()


def fold_worker(loop_config: dict) -> None:
    """The Train worker: load the cohort, run (or continue) the fold, and write its record
    atomically before the fold's last report reaches the scheduler."""
    import torch

    started = time.time()
    settings = loop_config["settings"]
    sweep_dir = Path(settings["sweep_dir"])
    cpus = max(1, int(settings["cpus_per_trial"]))
    torch.set_num_threads(cpus)
    config = TrialConfig.from_dict(loop_config["trial"]["config"])
    cohort = load_cohort(settings["data_root"])
    compute_start = time.perf_counter()

    def record(result) -> None:
        compute_s = time.perf_counter() - compute_start
        store.write_fold_result(sweep_dir, {
            **result.to_dict(),
            "params": loop_config["trial"]["params"],
            "status": "finished",
            "trial_id": loop_config["trial_id"],
            "node": socket.gethostname(),
            "resumed_from": resume.progress if resume is not None else None,
            "compute_s": round(compute_s, 3),
            "worker_s": round(time.time() - started, 3),
            "wall_s": round(time.time() - loop_config["trial_started"], 3),
        })

    resume = _latest_checkpoint()
    run_fold(config, cohort, loop_config["fold"], report=_report_to_train, n_jobs=cpus,
             resume=resume, cache_dir=sweep_dir / store.CACHE_DIR,
             device=ray.train.torch.get_device(), on_result=record)


def _latest_checkpoint() -> FoldCheckpoint | None:
    """The checkpoint Train restored this worker from (a retry or a resumed sweep), if any."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return FoldCheckpoint.load(Path(folder) / CHECKPOINT_FILE)


def _report_to_train(metrics: dict, checkpoint: FoldCheckpoint | None) -> None:
    if checkpoint is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="fold-checkpoint-") as folder:
        checkpoint.save(Path(folder) / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
