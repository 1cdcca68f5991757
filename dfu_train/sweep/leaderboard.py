"""Aggregate fold records into one row per config: mean, std and the per-fold list of QWK.

Reads only `sweep.json` and `fold_results/` (no Ray), so it works offline and while a sweep runs.
A config with missing folds is marked partial and never ranked as if complete.
"""

from __future__ import annotations

import statistics

import pandas as pd
from scipy.stats import ttest_rel

from dfu_train.errors import ConfigError, did_you_mean
from dfu_train.location import Location
from dfu_train.sweep import store

COLUMNS = ("config_id", "params", "folds_done", "folds_total", "complete", "qwk_mean", "qwk_std",
           "qwk_folds", "qwk_by_fold", "meta_qwk_mean", "fusion_gain_mean", "accuracy_mean",
           "macro_f1_mean", "pruned", "errors", "last_error", "wall_s", "compute_s", "reused")
TEXT_COLUMNS = ("config_id", "params", "qwk_folds", "qwk_by_fold", "complete", "last_error",
                "reused")
TRIAL_COLUMNS = ("config_id", "fold_seed", "fold", "qwk", "meta_qwk", "trial_id", "node",
                 "wall_s", "startup_s", "compute_s", "reused", "computed")


def build_leaderboard(sweep_dir: Location) -> pd.DataFrame:
    """One row per planned config, best first (complete configs before partial ones)."""
    manifest = store.read_manifest(sweep_dir)
    plan = store.planned_folds(manifest)
    all_records = store.read_fold_results(sweep_dir)
    records = {}
    for record in all_records:
        key = (record["config_id"], record["fold_seed"], record["fold"])
        records.setdefault(key, record)  # de-duplicate: a fold counts once however often it ran
    states: dict[str, list[dict]] = {}
    for trial in store.read_trial_states(sweep_dir, all_records):
        states.setdefault(trial["config_id"], []).append(trial)
    planned = {entry["config_id"]: entry["params"] for entry in manifest["configs"]}
    for (config_id, _, _), record in records.items():  # proposed by a search algorithm
        planned.setdefault(config_id, record.get("params", {}))
    rows = []
    for config_id, params in planned.items():
        done = sorted((r for (cid, _, _), r in records.items() if cid == config_id),
                      key=lambda r: (r["fold_seed"], r["fold"]))
        qwks = [r["metrics"]["qwk"] for r in done]
        trials = states.get(config_id, [])
        folds_total = len(plan.get(config_id, manifest["folds"]))
        errors = [t["error"] for t in trials if t["status"] == "error"]
        rows.append({
            "config_id": config_id,
            "params": params,
            "folds_done": len(done),
            "folds_total": folds_total,
            "complete": len(done) >= folds_total,
            "qwk_mean": _mean(qwks),
            "qwk_std": _std(qwks),
            "qwk_folds": qwks,
            "qwk_by_fold": {f"{r['fold_seed']}/{r['fold']}": r["metrics"]["qwk"] for r in done},
            "meta_qwk_mean": _mean([r["meta_qwk"] for r in done]),
            "fusion_gain_mean": _mean([r["fusion_gain"] for r in done]),
            "accuracy_mean": _mean([r["metrics"]["accuracy"] for r in done]),
            "macro_f1_mean": _mean([r["metrics"]["macro_f1"] for r in done]),
            "pruned": sum(t["status"] == "pruned" for t in trials),
            "errors": len(errors),
            "last_error": errors[-1] if errors else None,
            "wall_s": round(sum(r.get("wall_s", 0.0) for r in done), 2),
            "compute_s": round(sum(r.get("compute_s", 0.0) for r in done), 2),
            "reused": _reuse_counts(done),
        })
    board = pd.DataFrame(rows, columns=list(COLUMNS))
    if board.empty:
        return board
    return board.sort_values(["complete", "qwk_mean"], ascending=[False, False],
                             na_position="last", kind="stable").reset_index(drop=True)


def trial_table(sweep_dir: Location) -> pd.DataFrame:
    """One row per recorded fold: where and how long it ran, and which artifacts it took from
    the cache (`reused`) or made (`computed`)."""
    rows = []
    for r in store.read_fold_results(sweep_dir):
        timing, artifacts = r.get("timing", {}), r.get("artifacts", {})
        rows.append({
            "config_id": r["config_id"], "fold_seed": r["fold_seed"], "fold": r["fold"],
            "qwk": r["metrics"]["qwk"], "meta_qwk": r["meta_qwk"], "trial_id": r.get("trial_id"),
            "node": r.get("node"), "wall_s": r.get("wall_s"), "startup_s": timing.get("startup_s"),
            "compute_s": r.get("compute_s"),
            "reused": ", ".join(artifacts.get("reused", [])),
            "computed": ", ".join(artifacts.get("computed", [])),
        })
    return pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))


def _reuse_counts(records: list[dict]) -> str:
    """'forest 3/5, branch 5/5': how many of the folds took each kind of artifact from the cache."""
    counts: dict[str, int] = {}
    for record in records:
        for kind in {a.split(":")[0] for a in record.get("artifacts", {}).get("reused", [])}:
            counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{kind} {n}/{len(records)}" for kind, n in sorted(counts.items()))


def query(board: pd.DataFrame, *, by: str = "qwk_mean", top: int | None = None,
          include_partial: bool = False, where: tuple[str, ...] = ()) -> pd.DataFrame:
    """Filter and rank. `where` items are FIELD=VALUE on a column or a swept dotted parameter,
    compared as text (no expression is evaluated)."""
    numeric = [c for c in board.columns if c not in TEXT_COLUMNS]
    if by not in numeric:
        raise ConfigError(f"--by {by!r}: not a sortable column{did_you_mean(by, numeric)}; "
                          f"choose from {', '.join(numeric)}")
    out = board if include_partial else board[board["complete"]]
    for clause in where:
        field, sep, value = clause.partition("=")
        if not sep:
            raise ConfigError(f"--where {clause!r}: expected FIELD=VALUE")
        field = field.strip()
        if field in board.columns:
            column = out[field].astype(str)
        else:
            names = {k for params in board["params"] for k in params}
            if field not in names:
                raise ConfigError(f"--where {field!r}: no such column or parameter"
                                  f"{did_you_mean(field, [*board.columns, *names])}")
            column = out["params"].map(lambda p: str(p.get(field)))
        out = out[column == value.strip()]
    ascending = by in ("wall_s", "compute_s")
    out = out.sort_values(["complete", by], ascending=[False, ascending], na_position="last",
                          kind="stable")
    return out.head(top) if top else out


def compare_to_baseline(board: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Paired comparison on the folds both configs finished: mean QWK difference and the
    paired t-test p-value (None with fewer than two shared folds)."""
    if baseline not in set(board["config_id"]):
        raise ConfigError(f"--baseline {baseline!r}: no such config in this sweep"
                          f"{did_you_mean(baseline, board['config_id'])}")
    reference = board.loc[board["config_id"] == baseline, "qwk_by_fold"].iloc[0]
    diffs, pvalues, shared_counts = [], [], []
    for by_fold in board["qwk_by_fold"]:
        shared = [k for k in by_fold if k in reference
                  and by_fold[k] is not None and reference[k] is not None]
        ours, theirs = [by_fold[k] for k in shared], [reference[k] for k in shared]
        diffs.append(_mean([a - b for a, b in zip(ours, theirs)]))
        pvalue = None
        if len(shared) > 1 and any(a != b for a, b in zip(ours, theirs)):
            pvalue = round(float(ttest_rel(ours, theirs).pvalue), 4)
        pvalues.append(pvalue)
        shared_counts.append(len(shared))
    return board.assign(baseline_diff=diffs, baseline_p=pvalues, baseline_folds=shared_counts)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def _std(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.stdev(values), 4) if len(values) > 1 else None
