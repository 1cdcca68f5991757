"""Does the sweep's winner hold on fresh folds? Screening against confirmation, per selection rule.

    python benchmarks/selection_holdout.py [--sweep sweeps/metadata.yaml] [--patients 270]
                                           [--cohorts 0 1 2] [--fresh 100 101 102 103 104]
                                           [--jobs 2] [--decoders argmax expected thresholds]

For each synthetic cohort (generator seed), the metadata sweep file is planned as `dfu sweep run`
plans it (its configs, its fold seeds, the study's recipe beside them) and every trial is run
with `run_fold` in a process pool (the records a sweep writes, without Ray's start-up), with the
sweep file's own decoder as the sweep runs it, or crossed with each of `--decoders` (crossing
draws other configs). Then, per decoder and per selection rule, the leaderboard's winner is taken
as `--export-best` takes it and re-scored with `run_cv` (what `dfu cv` runs) on the fresh fold
seeds, as is the study's recipe (a candidate too, as on the leaderboard). Prints per cohort, decoder and rule: screening QWK (the
winner's mean on the sweep's folds), confirmed QWK, optimism (screening - confirmed), and the
recipe's confirmed QWK. Goal for the default rule: confirmed QWK at least the recipe's in every
cohort, mean optimism at most 0.02.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from dfu_train.cache import ArtifactCache
from dfu_train.config import TrialConfig
from dfu_train.data.cohort import load_cohort
from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.results import store
from dfu_train.results.leaderboard import build_leaderboard, query
from dfu_train.results.selection import DEFAULT_RULE, SELECTION_RULES
from dfu_train.sweep.plan import plan_sweep, write_manifest
from dfu_train.sweep.space import load_sweep
from dfu_train.training.cv import run_cv
from dfu_train.training.fold import run_fold

_STATE: dict = {}


def _start(root: str, cache_root: str) -> None:
    _STATE.update(cohort=load_cohort(root), cache=ArtifactCache(cache_root))


def _fold(task: tuple[dict, int, dict]) -> dict:
    config, fold, params = TrialConfig.from_dict(task[0]), task[1], task[2]
    result = run_fold(config, _STATE["cohort"], fold, cache=_STATE["cache"])
    return {**result.to_dict(), "params": params}


def _confirm(task: tuple[dict, tuple[int, ...]]) -> float:
    config = TrialConfig.from_dict(task[0])
    folds = run_cv(config, _STATE["cohort"], seeds=task[1], cache=_STATE["cache"])
    return statistics.fmean(f["qwk"] for f in folds if f["qwk"] is not None)


def one_cohort(seed: int, args, tmp: Path) -> list[dict]:
    root = write_synthetic_cohort(tmp / f"cohort-{seed}", SynthSpec(
        patients=args.patients, seed=seed, images=False))
    spec = load_sweep(args.sweep)
    own = spec.base_config().decode
    if args.decoders != [own]:
        spec = spec.model_copy(update={"space": {**spec.space,
                                                 "decode": {"grid": list(args.decoders)}}})
    plan = plan_sweep(spec, data_root=root, storage=tmp / f"results-{seed}", name="holdout")
    write_manifest(plan)
    tasks = [(config.override({"cv.seed": fold_seed}).to_dict(), fold, params)
             for config, params in plan.configs for fold_seed in spec.cv.fold_seeds()
             for fold in spec.cv.folds()]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, initializer=_start,
                             initargs=(str(root), str(tmp / f"cache-{seed}"))) as pool:
        for record in pool.map(_fold, tasks, chunksize=4):
            store.write_fold_result(plan.sweep_dir, record)
        swept = time.perf_counter() - started
        board = build_leaderboard(plan.sweep_dir)
        picks = {}
        for decoder in args.decoders:
            for rule in SELECTION_RULES:
                # the recipe is a candidate, as on the leaderboard: a floor for the pick
                mine = board["params"].map(lambda p, d=decoder: p.get("decode", own) == d)
                picks[decoder, rule] = query(board[mine | board["baseline"]], rule=rule).iloc[0]
        recipe = board[board["baseline"]].iloc[0]
        to_confirm = {row["config_id"] for row in picks.values()} | {recipe["config_id"]}
        configs = {cid: store.recorded_config(plan.sweep_dir, cid) for cid in to_confirm}
        fresh = tuple(args.fresh)
        confirmed = dict(zip(configs, pool.map(
            _confirm, [(config.to_dict(), fresh) for config in configs.values()])))
    print(f"cohort {seed}: {len(plan.configs)} configs x {len(tasks) // len(plan.configs)} "
          f"folds swept in {swept:.0f} s; recipe screened {recipe['qwk_mean']:.3f}, confirmed "
          f"{confirmed[recipe['config_id']]:.3f}", flush=True)
    rows = []
    for (decoder, rule), pick in picks.items():
        row = {"cohort": seed, "decoder": decoder, "rule": rule,
               "config_id": pick["config_id"], "screened": pick["qwk_mean"],
               "confirmed": confirmed[pick["config_id"]],
               "recipe": confirmed[recipe["config_id"]], "is_recipe": bool(pick["baseline"])}
        row["optimism"] = row["screened"] - row["confirmed"]
        rows.append(row)
        print(f"  {decoder:10} {rule:15} {row['config_id']}"
              f"{' (recipe)' if pick['baseline'] else '         '}  screened {row['screened']:.3f}  "
              f"confirmed {row['confirmed']:.3f}  optimism {row['optimism']:+.3f}  "
              f"recipe {row['recipe']:.3f}  {'>=' if row['confirmed'] >= row['recipe'] else '< '}"
              " recipe", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="sweeps/metadata.yaml")
    parser.add_argument("--patients", type=int, default=270)
    parser.add_argument("--cohorts", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fresh", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    parser.add_argument("--decoders", nargs="+",
                        help="decoders to cross the space with (default: the sweep file's own)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    args.decoders = args.decoders or [load_sweep(args.sweep).base_config().decode]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.cohorts:
            rows += one_cohort(seed, args, Path(tmp))
    print(f"mean over cohorts (goal for the default rule, {DEFAULT_RULE}: confirmed >= recipe in "
          "every cohort, optimism <= 0.02)")
    for decoder in args.decoders:
        for rule in SELECTION_RULES:
            mine = [r for r in rows if r["decoder"] == decoder and r["rule"] == rule]
            beats = sum(r["confirmed"] >= r["recipe"] for r in mine)
            print(f"  {decoder:10} {rule:15} screened {statistics.fmean(r['screened'] for r in mine):.3f}"
                  f"  confirmed {statistics.fmean(r['confirmed'] for r in mine):.3f}  optimism "
                  f"{statistics.fmean(r['optimism'] for r in mine):+.3f}  recipe "
                  f"{statistics.fmean(r['recipe'] for r in mine):.3f}  >= recipe in "
                  f"{beats}/{len(mine)} cohorts (the recipe itself picked in "
                  f"{sum(r['is_recipe'] for r in mine)})")


if __name__ == "__main__":
    main()
