"""Ray's overhead per trial and how busy the cores stay during a 2-concurrent-trial sweep.

    python benchmarks/overhead.py [--configs 4] [--epochs 200] [--train]

Runs a sweep of `--configs` configs x 1 fold, two at a time, with the artifact cache off (every
trial computes everything), and samples system CPU use every half second. Prints per trial
(wall - compute) / wall, where wall runs from the Tune trial's start to its record and compute is
the time inside `run_fold` (goal: under 10 % for trials of about 60 s of compute), and the mean
CPU busy share of all cores between the first trial's compute start and the last trial's end
(goal: at least 85 %). Trials run inline unless --train (a TorchTrainer per trial).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
import ray

from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.results import store
from dfu_train.sweep.launch import run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.sweep.local_ray import start_local_ray
from dfu_train.sweep.space import parse_sweep


class CpuSampler(threading.Thread):
    """(time, busy %) of all cores every `interval` seconds until stopped."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval, self.samples, self._done = interval, [], threading.Event()

    def run(self) -> None:
        psutil.cpu_percent(interval=None)
        while not self._done.wait(self.interval):
            self.samples.append((time.time(), psutil.cpu_percent(interval=None)))

    def stop(self) -> None:
        self._done.set()
        self.join()


def sweep_file(args) -> dict:
    return {
        "name": "overhead", "cv": {"n_folds": 5, "run_folds": [0]},
        "search": {"algorithm": "random", "num_samples": args.configs, "seed": 0},
        "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1, "use_train": args.train, "max_concurrent": 2},
        "cache": {"enabled": False},
        "fixed": {"modalities": ["metadata", "thermal_map"], "image.size": 32,
                  "thermal_map.pretrain_epochs": args.epochs, "stage1.epochs": 5,
                  "stage2.epochs": 0, "optim.early_stop_patience": 1000},
        "space": {"fusion.dropout": {"uniform": [0.0, 0.5]}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=200, help="pretraining epochs per trial")
    parser.add_argument("--patients", type=int, default=80)
    parser.add_argument("--train", action="store_true", help="TorchTrainer per trial")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cohort(Path(tmp) / "cohort", SynthSpec(patients=args.patients))
        cores = os.cpu_count() or 2  # a Train trial's driver holds a quarter CPU beside its worker
        start_local_ray(cores + (1 if args.train else 0), log_to_driver=False)
        sampler = CpuSampler()
        try:
            plan = plan_sweep(parse_sweep(sweep_file(args)), data_root=root, storage=Path(tmp))
            sampler.start()
            started = time.time()
            sweep_dir = run_sweep(plan, on_event=lambda line: None)
            ended = time.time()
        finally:
            sampler.stop()
            ray.shutdown()
        records = store.read_fold_results(sweep_dir)
    print(f"{len(records)} trials ({'TorchTrainer' if args.train else 'inline'}), 2 at a time, "
          f"on {os.cpu_count()} cores; sweep wall {ended - started:.1f} s")
    shares = []
    for r in sorted(records, key=lambda r: r["timing"]["started_at"]):
        t = r["timing"]
        share = (t["wall_s"] - t["compute_s"]) / t["wall_s"]
        shares.append(share)
        print(f"  trial {r['trial_id']}: wall {t['wall_s']:6.1f} s, start-up {t['startup_s']:5.1f} s, "
              f"compute {t['compute_s']:6.1f} s -> overhead {share:6.1%}")
    print(f"  mean (wall - compute) / wall: {statistics.fmean(shares):.1%} (goal: < 10 %)")
    compute = sum(r["timing"]["compute_s"] for r in records)
    print(f"  sweep: {compute:.1f} s of compute in {ended - started:.1f} s x 2 slots -> "
          f"{1 - compute / (2 * (ended - started)):.1%} not computing (Ray start-up, actor "
          f"start, the last wave's imbalance)")
    first_compute = min(r["timing"]["started_at"] + r["timing"]["startup_s"] for r in records)
    last_end = max(r["timing"]["started_at"] + r["timing"]["wall_s"] for r in records)
    busy = [p for t, p in sampler.samples if first_compute <= t <= last_end]
    whole = [p for _, p in sampler.samples]
    print(f"  CPU busy after start-up: {statistics.fmean(busy):.0f} % "
          f"(goal: >= 85 %); over the whole sweep: {statistics.fmean(whole):.0f} %")


if __name__ == "__main__":
    main()
