"""One fusion sweep run twice on the same cohort, with the artifact cache off and on.

    python benchmarks/cache_speedup.py [--patients 80] [--pretrain-epochs 60] [--train]

Eight configs share the forest and the pretraining of their thermal-map branch and differ only in
the fusion head and its dropout, as a fusion sweep does. Both runs start from an empty storage
folder, so the cached run pays for computing every artifact once. Prints each run's wall time,
the speed-up (goal: at least 3x), what the cached run reused, and whether the two leaderboards
are identical (they must be). Trials run inline on a private local Ray unless --train is given.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray

from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.sweep.launch import run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.results.leaderboard import build_leaderboard, trial_table
from dfu_train.sweep.local_ray import start_local_ray
from dfu_train.sweep.space import parse_sweep
from dfu_train.results.store import read_fold_results


def sweep_file(cache: bool, args) -> dict:
    return {
        "name": "cached" if cache else "uncached",
        "cv": {"n_folds": 5, "run_folds": [0]},
        "search": {"algorithm": "grid"},
        "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1, "use_train": args.train},
        "cache": {"enabled": cache},
        "fixed": {"modalities": ["metadata", "thermal_map"], "forest.n_estimators": 300,
                  "image.size": args.size, "thermal_map.pretrain_epochs": args.pretrain_epochs,
                  "stage1.epochs": args.fusion_epochs, "stage2.epochs": 0,
                  "optim.early_stop_patience": 1000, "optim.checkpoint_every": 1000},
        "space": {"fusion.head": {"grid": ["residual", "feature_concat", "prob_concat",
                                           "fixed_blend"]},
                  "fusion.dropout": {"grid": [0.0, 0.3]}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=80)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=int, default=60)
    parser.add_argument("--fusion-epochs", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="TorchTrainer per trial")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cohort(Path(tmp) / "cohort", SynthSpec(patients=args.patients))
        start_local_ray(os.cpu_count() or 2, log_to_driver=False)
        try:
            boards, seconds, trials, first_start = {}, {}, {}, {}
            for cache in (False, True):
                spec = parse_sweep(sweep_file(cache, args))
                storage = Path(tmp) / ("on" if cache else "off")  # each starts with no cache
                started = time.time()
                sweep_dir = run_sweep(plan_sweep(spec, data_root=root, storage=storage),
                                      on_event=lambda line: None)
                seconds[cache] = time.time() - started
                starts = [r["timing"]["started_at"] for r in read_fold_results(sweep_dir)]
                first_start[cache] = min(starts) - started
                boards[cache] = build_leaderboard(sweep_dir)
                trials[cache] = trial_table(sweep_dir)
        finally:
            ray.shutdown()
    print(f"{len(boards[True])} configs x 1 fold, {args.patients} patients, thermal map "
          f"{args.size}px, pretraining {args.pretrain_epochs} epochs, fusion "
          f"{args.fusion_epochs} epochs, {'TorchTrainer' if args.train else 'inline'} trials")
    for cache in (False, True):
        t = trials[cache]
        print(f"  cache {'on ' if cache else 'off'}: sweep wall {seconds[cache]:6.1f} s, "
              f"trial compute mean {t['compute_s'].mean():5.1f} s, "
              f"trial wall mean {t['wall_s'].mean():5.1f} s, "
              f"first trial started {first_start[cache]:.1f} s after the sweep")
    print(f"  speed-up with the cache: {seconds[False] / seconds[True]:.2f}x (goal: >= 3x)")
    for row in trials[True].sort_values("wall_s").itertuples(index=False):
        print(f"    {row.config_id}: compute {row.compute_s:5.1f} s, "
              f"reused [{row.reused or '-'}]")
    columns = ["config_id", "qwk_by_fold", "meta_qwk_mean"]
    on, off = (boards[c][columns].sort_values("config_id").reset_index(drop=True)
               for c in (True, False))
    print(f"  identical leaderboard: {on.equals(off)}")


if __name__ == "__main__":
    main()
