"""One fusion sweep run twice on the same cohort, with the artifact cache off and on.

    python benchmarks/cache_speedup.py [--patients 80] [--pretrain-epochs 60] [--lrs 6] [--train]

A fusion sweep's size (`sweeps/fusion.yaml` draws 24 configs): four fusion heads x `--lrs` stage-1
learning rates, plus the study's recipe, all on one fold. They share the forest and the
pretraining of their thermal-map branch and differ only in fusion settings, as a fusion sweep's
configs do. Both runs start from an empty storage folder, so the cached run pays for computing
every artifact once: trials that miss one artifact at the same time compute it once and the others
wait for it (single flight). Prints each run's wall time, the speed-up (goal: at least 5x), how
often the cached run computed each artifact (once each), what each trial reused, and whether the
two leaderboards are identical (they must be). Trials run inline on a private local Ray unless
--train is given.

The speed-up cannot pass the number of rounds the uncached run takes (the configs over the trials
at once), since the cached run still computes each artifact once, on one trial's cores, while the
trials that wait for it hold theirs: with the earlier 8 configs on 2 cores (4 rounds) the ceiling
was below 4x whatever the cache does; 25 trials on 2 cores make about 12 rounds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import ray

from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.sweep.launch import run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.results.leaderboard import build_leaderboard, trial_table
from dfu_train.sweep.local_ray import start_local_ray
from dfu_train.sweep.space import parse_sweep
from dfu_train.results.store import read_fold_results


LEARNING_RATES = [1e-3, 3e-4, 3e-3, 1e-4, 5e-4, 2e-3]


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
                  "stage1.lr": {"grid": LEARNING_RATES[:args.lrs]}},
    }


def stage_seconds(records: list[dict]) -> str:
    """'forest 12.0, pretrain:thermal_map 80.1, ...': each stage's seconds summed over the
    trials (a trial that waited for another's artifact counts its wait)."""
    total: Counter = Counter()
    for record in records:
        for name, seconds in record["timing"]["stages_s"].items():
            total[name] += seconds or 0.0
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in total.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=80)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=int, default=60)
    parser.add_argument("--fusion-epochs", type=int, default=2)
    parser.add_argument("--lrs", type=int, default=6, choices=range(1, len(LEARNING_RATES) + 1),
                        help="stage-1 learning rates per fusion head: 4 heads x this configs")
    parser.add_argument("--train", action="store_true", help="TorchTrainer per trial")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cohort(Path(tmp) / "cohort", SynthSpec(patients=args.patients))
        start_local_ray(os.cpu_count() or 2, log_to_driver=False)
        try:
            boards, seconds, trials, first_start, stages, made = {}, {}, {}, {}, {}, {}
            timeline: dict[str, float] = {}  # cached run: when each trial started, into the sweep
            steps: dict[str, str] = {}  # cached run: each trial's stage seconds
            for cache in (False, True):
                spec = parse_sweep(sweep_file(cache, args))
                storage = Path(tmp) / ("on" if cache else "off")  # each starts with no cache
                started = time.time()
                sweep_dir = run_sweep(plan_sweep(spec, data_root=root, storage=storage),
                                      on_event=lambda line: None)
                seconds[cache] = time.time() - started
                records = read_fold_results(sweep_dir)
                starts = [r["timing"]["started_at"] for r in records]
                first_start[cache] = min(starts) - started
                if cache:
                    timeline = {r["config_id"]: r["timing"]["started_at"] - started
                                for r in records}
                    steps = {r["config_id"]: stage_seconds([r]) for r in records}
                stages[cache] = stage_seconds(records)
                made[cache] = Counter(a.split(":")[0] for r in records
                                      for a in r["artifacts"]["computed"])
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
        print(f"    stage seconds summed over trials: {stages[cache]}; artifacts computed: "
              f"{', '.join(f'{k} x{n}' for k, n in sorted(made[cache].items()))}")
    print(f"  speed-up with the cache: {seconds[False] / seconds[True]:.2f}x (goal: >= 5x)")
    table = trials[True].assign(start=trials[True]["config_id"].map(timeline))
    for row in table.sort_values("start").itertuples(index=False):
        print(f"    {row.config_id}: started at {row.start:5.1f} s, wall "
              f"{row.wall_s:5.1f} s, compute {row.compute_s:5.1f} s, "
              f"reused [{row.reused or '-'}]; {steps[row.config_id]}")
    columns = ["config_id", "qwk_by_fold", "meta_qwk_mean"]
    on, off = (boards[c][columns].sort_values("config_id").reset_index(drop=True)
               for c in (True, False))
    print(f"  identical leaderboard: {on.equals(off)}")


if __name__ == "__main__":
    main()
