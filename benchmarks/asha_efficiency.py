"""The same synthetic fusion sweep with and without ASHA: epochs spent and the winner found.

    python benchmarks/asha_efficiency.py [--configs 12] [--folds 1] [--patients 80]

Trials run inline (no Train worker start-up) on a private local Ray. Prints the epochs (progress
steps) each sweep spent, their ratio (goal: ASHA at most 40 %), and whether ASHA's best config is
within 0.01 QWK of the best config of the full run, judged on the full run's folds.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray

from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.results import store
from dfu_train.sweep.launch import run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.results.leaderboard import build_leaderboard
from dfu_train.sweep.local_ray import start_local_ray
from dfu_train.sweep.space import parse_sweep


def sweep_file(name: str, asha: bool, configs: int, folds: int) -> dict:
    return {
        "name": name, "cv": {"n_folds": 5, "run_folds": list(range(folds))},
        "search": {"algorithm": "random", "num_samples": configs, "seed": 0},
        "scheduler": {"type": "asha" if asha else "none", "grace_period": 4,
                      "reduction_factor": 3},
        "resources": {"cpus_per_trial": 1, "use_train": False},
        "cache": {"enabled": False},  # the two sweeps must not reuse each other's work
        "fixed": {"modalities": ["metadata", "thermal_map"], "forest.n_estimators": 60,
                  "forest.inner_folds": 3, "image.size": 16, "thermal_map.pretrain_epochs": 12,
                  "stage1.epochs": 12, "stage2.epochs": 0, "optim.early_stop_patience": 100,
                  "optim.checkpoint_every": 6},
        "space": {"thermal_map.pretrain_lr": {"loguniform": [1e-6, 1e-2]},
                  "stage1.lr": {"loguniform": [1e-6, 1e-2]},
                  "fusion.head": {"choice": ["residual", "feature_concat", "prob_concat"]},
                  "thermal_map.dropout": {"uniform": [0.0, 0.6]}},
    }


def epochs_spent(sweep_dir: Path) -> int:
    """The last `progress` each trial reported, summed: the schedule steps the sweep ran."""
    total = 0
    for result_file in (sweep_dir / store.TUNE_DIR).glob("*/result.json"):
        lines = [line for line in result_file.read_text().splitlines() if line.strip()]
        if lines:
            total += int(json.loads(lines[-1]).get("progress", 0))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--patients", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cohort(Path(tmp) / "cohort", SynthSpec(patients=args.patients))
        start_local_ray(os.cpu_count() or 2, log_to_driver=False)
        try:
            boards, spent, seconds = {}, {}, {}
            for asha in (False, True):
                name = "asha" if asha else "full"
                spec = parse_sweep(sweep_file(name, asha, args.configs, args.folds))
                started = time.perf_counter()
                sweep_dir = run_sweep(plan_sweep(spec, data_root=root, storage=Path(tmp)),
                                      on_event=lambda line: None)
                seconds[name] = time.perf_counter() - started
                spent[name] = epochs_spent(sweep_dir)
                boards[name] = build_leaderboard(sweep_dir)
        finally:
            ray.shutdown()
    full, asha = boards["full"], boards["asha"]
    full_best = full.iloc[0]
    # ASHA judges each (config, fold) trial alone, so a config may keep some folds only: its
    # pick is the best mean over the folds that finished
    asha_best = asha[asha["qwk_mean"].notna()].sort_values("qwk_mean", ascending=False).iloc[0]
    asha_pick = full[full["config_id"] == asha_best["config_id"]].iloc[0]
    gap = full_best["qwk_mean"] - asha_pick["qwk_mean"]
    print(f"{args.configs} configs x {args.folds} folds on {args.patients} patients")
    print(f"  without ASHA: {spent['full']} epochs, {seconds['full']:.0f} s; best "
          f"{full_best['config_id']} QWK {full_best['qwk_mean']:.3f}")
    print(f"  with ASHA:    {spent['asha']} epochs, {seconds['asha']:.0f} s; "
          f"{int(asha['pruned'].sum())} trials pruned; best {asha_best['config_id']} "
          f"(QWK {asha_pick['qwk_mean']:.3f} in the full run)")
    print(f"  compute ratio {spent['asha'] / max(spent['full'], 1):.0%} of the epochs (goal <= 40 %); "
          f"ASHA's best within 0.01 QWK of the full run's best: {'yes' if gap <= 0.01 else 'no'} "
          f"(gap {gap:.3f})")


if __name__ == "__main__":
    main()
