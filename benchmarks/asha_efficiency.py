"""Early stopping against the full run: epochs spent and whether the right winner survives.

    python benchmarks/asha_efficiency.py [--configs 16] [--folds 3] [--seeds 0 1 2]
                                         [--patients 90] [--workers 4] [--jobs 2]
                                         [--grace 4] [--reduction 3.5] [--curves runs.json]

For each search seed, `--configs` configs are drawn from a space of fusion and stage settings
(the branch and the forest are fixed, so every config shares them through the artifact cache)
and every config runs every fold to the end with `run_fold` (the full run), recording the fused
QWK after each fusion epoch. Each scheduler then replays those curves (`sweep.replay`: the real
scheduler objects, `--workers` trials at a time in the sweep's trial order), and the benchmark
prints per seed: fusion epochs used as a share of the full run's, the regret (full-run mean QWK of
the full run's best config minus that of the scheduler's pick, the best of the configs it
completed), whether the pick is in the full run's top 3, how many configs it completed and the
Spearman agreement of their means with the full run's (and over its whole leaderboard: means over
the folds it finished), and the share of its ranked configs that are complete. Goals for fold-asha: at most 40 % of the epochs, mean
regret at most 0.01, the pick in the top 3 for every seed, every ranked config complete.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from ray.tune.schedulers import ASHAScheduler
from scipy.stats import spearmanr

from dfu_train.cache import ArtifactCache
from dfu_train.config import TrialConfig
from dfu_train.data.cohort import load_cohort
from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.sweep.fold_asha import FoldAwareASHA
from dfu_train.sweep.replay import replay
from dfu_train.sweep.search import SCHEDULERS
from dfu_train.sweep.space import expand_configs, parse_sweep
from dfu_train.training.fold import run_fold
from dfu_train.training.schedule import fusion_length

GRACE, REDUCTION = 4, 3.5  # the scheduler section's defaults
FIXED = {"modalities": ["metadata", "thermal_map"], "forest.n_estimators": 60,
         "forest.inner_folds": 3, "image.size": 16, "thermal_map.pretrain_epochs": 8,
         "stage1.epochs": 16, "stage2.epochs": 4, "optim.early_stop_patience": 6,
         "optim.checkpoint_every": 100}
SPACE = {"fusion.head": {"choice": ["residual", "feature_concat", "prob_concat", "gated"]},
         "fusion.hidden": {"choice": [[], [32]]},
         "fusion.dropout": {"uniform": [0.0, 0.5]},
         "stage1.lr": {"loguniform": [3e-5, 3e-3]},
         "stage2.lr": {"loguniform": [1e-5, 3e-4]},
         "loss.label_smoothing": {"uniform": [0.0, 0.15]}}

_STATE: dict = {}


def _start(root: str, cache_root: str) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core
    _STATE.update(cohort=load_cohort(root), cache=ArtifactCache(cache_root))


def _full_fold(task: tuple[dict, int]) -> tuple[list[float], float]:
    """One (config, fold) run to the end: its fused QWK per fusion epoch and its final QWK."""
    config, fold = TrialConfig.from_dict(task[0]), task[1]
    curve: list[float] = []

    def report(metrics: dict, _checkpoint) -> None:
        if metrics.get("stage") in ("stage1", "stage2") and not metrics.get("final"):
            curve.append(metrics["fused_qwk"])

    result = run_fold(config, _STATE["cohort"], fold, report=report, cache=_STATE["cache"])
    return curve or [result.qwk], result.qwk


def judge(ran: dict, curves: dict, fold_qwk: dict, full: dict[str, float], folds: int,
          stopped: set[str] = frozenset()) -> dict:
    """What a scheduler's replay gives a user: its leaderboard (means over the folds it ran to
    the end), its pick, and how they compare with the full run. A config the scheduler stopped
    is listed as stopped, not ranked, even if one of its folds ended before the stop reached it
    (its last report was already on its way)."""
    finished: dict[str, list[float]] = {}
    for key, epochs in ran.items():
        complete = all(ran[k] >= len(curves[k]) for k in ran if k[0] == key[0])
        if epochs >= len(curves[key]) and (key[0] not in stopped or complete):
            finished.setdefault(key[0], []).append(fold_qwk[key])
    board = {c: statistics.fmean(q) for c, q in finished.items()}
    complete = [c for c, q in finished.items() if len(q) == folds]
    pick = max(complete or board, key=board.get)
    ranking = sorted(full, key=full.get, reverse=True)
    return {"epochs": sum(ran.values()), "regret": full[ranking[0]] - full[pick],
            "top3": pick in ranking[:3], "completed": len(complete),
            "spearman": _spearman(complete, board, full),
            "board_spearman": _spearman(list(board), board, full),
            "complete": len(complete) / max(len(board), 1)}


def _spearman(configs: list[str], board: dict, full: dict) -> float:
    """Rank agreement of the scheduler's means with the full run's over `configs` (n/a below 3)."""
    if len(configs) < 3:
        return float("nan")
    return float(spearmanr([board[c] for c in configs], [full[c] for c in configs]).statistic)


def full_runs(args) -> dict:
    """seed -> the full run: each (config, fold)'s fused-QWK curve and final QWK, the horizon."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cohort(Path(tmp) / "cohort", SynthSpec(
            patients=args.patients, seed=3, image_signal=1.5))
        with ProcessPoolExecutor(args.jobs, initializer=_start,
                                 initargs=(str(root), str(Path(tmp) / "cache"))) as pool:
            for seed in args.seeds:
                spec = parse_sweep({"name": "bench", "cv": {"n_folds": 5},
                                    "search": {"algorithm": "random",
                                               "num_samples": args.configs, "seed": seed},
                                    "fixed": FIXED, "space": SPACE})
                configs = [config for config, _ in expand_configs(spec)]
                keys = [(c.config_id, 42, fold) for c in configs for fold in range(args.folds)]
                started = time.perf_counter()
                outcomes = list(pool.map(_full_fold, [(c.to_dict(), fold) for c in configs
                                                      for fold in range(args.folds)]))
                runs[str(seed)] = {
                    "keys": keys, "curves": [curve for curve, _ in outcomes],
                    "qwk": [qwk for _, qwk in outcomes],
                    "horizon": max(fusion_length(c) for c in configs),
                    "seconds": round(time.perf_counter() - started, 1)}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=16)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--patients", type=int, default=90)
    parser.add_argument("--workers", type=int, default=4, help="trials at a time in the replay")
    parser.add_argument("--jobs", type=int, default=2, help="processes for the full run")
    parser.add_argument("--grace", type=int, default=GRACE)
    parser.add_argument("--reduction", type=float, default=REDUCTION)
    parser.add_argument("--curves", type=Path, help="keep the full runs here (JSON): read them "
                                                     "if the file exists, else write it")
    args = parser.parse_args()
    if args.curves is not None and args.curves.is_file():
        runs = json.loads(args.curves.read_text())
    else:
        runs = full_runs(args)
        if args.curves is not None:
            args.curves.write_text(json.dumps(runs))
    schedulers = {
        "fold-asha": lambda horizon: FoldAwareASHA(max_t=horizon + 1, grace_period=args.grace,
                                                   reduction_factor=args.reduction),
        "asha": lambda horizon: ASHAScheduler(time_attr="fusion_epochs", metric="fused_qwk",
                                              mode="max", max_t=horizon + 1,
                                              grace_period=args.grace,
                                              reduction_factor=args.reduction),
    }
    rows: dict[str, list[dict]] = {name: [] for name in schedulers}
    print(f"{args.configs} configs x {args.folds} folds, grace {args.grace} fusion epochs, "
          f"reduction factor {args.reduction:g}, {args.workers} trials at a time")
    for seed, run in runs.items():
        keys = [tuple(key) for key in run["keys"]]
        curves = dict(zip(keys, run["curves"]))
        fold_qwk = dict(zip(keys, run["qwk"]))
        folds = len({key[2] for key in keys})
        full: dict[str, list[float]] = {}
        for key, qwk in fold_qwk.items():
            full.setdefault(key[0], []).append(qwk)
        full = {config_id: statistics.fmean(qwks) for config_id, qwks in full.items()}
        total = sum(len(curve) for curve in curves.values())
        print(f"seed {seed}: full run {total} fusion epochs in {run['seconds']:.0f} s; best "
              f"{max(full.values()):.3f}, spread {max(full.values()) - min(full.values()):.3f}")
        for name, make in schedulers.items():
            order = curves
            if SCHEDULERS[name].folds_first:  # the order a sweep runs its trials in (`session`)
                order = {key: curves[key] for key in sorted(curves, key=lambda k: k[1:])}
            scheduler = make(run["horizon"])
            ran = replay(scheduler, order, workers=args.workers)
            row = judge(ran, curves, fold_qwk, full, folds, getattr(scheduler, "stopped", set()))
            row["share"] = row["epochs"] / total
            rows[name].append(row)
            print(f"  {name:9} {row['share']:5.0%} of the epochs, regret "
                  f"{row['regret']:.3f}, pick in top 3: {'yes' if row['top3'] else 'no'}, "
                  f"{row['completed']} configs complete (Spearman {row['spearman']:.2f}; "
                  f"over its board {row['board_spearman']:.2f}), ranked complete "
                  f"{row['complete']:.0%}")
    print("mean over seeds (goals for fold-asha: <= 40 %, regret <= 0.01, top 3 every seed, "
          "100 % complete)")
    for name, seed_rows in rows.items():
        print(f"  {name:9} {np.mean([r['share'] for r in seed_rows]):5.0%} of the epochs, regret "
              f"{np.mean([r['regret'] for r in seed_rows]):.3f}, top 3 in "
              f"{sum(r['top3'] for r in seed_rows)}/{len(seed_rows)} seeds, Spearman over its "
              f"board {_nanmean([r['board_spearman'] for r in seed_rows]):.2f}, ranked complete "
              f"{np.mean([r['complete'] for r in seed_rows]):.0%}")


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


if __name__ == "__main__":
    main()
