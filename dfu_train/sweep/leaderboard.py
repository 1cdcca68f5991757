"""Aggregate fold records into one row per config: mean, std and the per-fold list of QWK.

Reads only `sweep.json` and `fold_results/` (no Ray), so it works offline and while a sweep runs.
A config with missing folds is marked partial and never ranked as if complete.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from dfu_train.errors import ConfigError, did_you_mean
from dfu_train.sweep import store

COLUMNS = ("config_id", "params", "folds_done", "folds_total", "complete", "qwk_mean", "qwk_std",
           "qwk_folds", "meta_qwk_mean", "fusion_gain_mean", "accuracy_mean", "macro_f1_mean",
           "wall_s", "compute_s")


def build_leaderboard(sweep_dir: Path) -> pd.DataFrame:
    """One row per planned config, best first (complete configs before partial ones)."""
    manifest = store.read_manifest(sweep_dir)
    folds = manifest["folds"]
    records = {}
    for record in store.read_fold_results(sweep_dir):
        key = (record["config_id"], record["fold_seed"], record["fold"])
        records.setdefault(key, record)  # de-duplicate: a fold counts once however often it ran
    rows = []
    for entry in manifest["configs"]:
        config_id = entry["config_id"]
        done = sorted((r for (cid, _, _), r in records.items() if cid == config_id),
                      key=lambda r: (r["fold_seed"], r["fold"]))
        qwks = [r["metrics"]["qwk"] for r in done]
        rows.append({
            "config_id": config_id,
            "params": entry["params"],
            "folds_done": len(done),
            "folds_total": len(folds),
            "complete": len(done) >= len(folds),
            "qwk_mean": _mean(qwks),
            "qwk_std": _std(qwks),
            "qwk_folds": qwks,
            "meta_qwk_mean": _mean([r["meta_qwk"] for r in done]),
            "fusion_gain_mean": _mean([r["fusion_gain"] for r in done]),
            "accuracy_mean": _mean([r["metrics"]["accuracy"] for r in done]),
            "macro_f1_mean": _mean([r["metrics"]["macro_f1"] for r in done]),
            "wall_s": round(sum(r.get("wall_s", 0.0) for r in done), 2),
            "compute_s": round(sum(r.get("compute_s", 0.0) for r in done), 2),
        })
    board = pd.DataFrame(rows, columns=list(COLUMNS))
    if board.empty:
        return board
    return board.sort_values(["complete", "qwk_mean"], ascending=[False, False],
                             na_position="last", kind="stable").reset_index(drop=True)


def query(board: pd.DataFrame, *, by: str = "qwk_mean", top: int | None = None,
          include_partial: bool = False, where: tuple[str, ...] = ()) -> pd.DataFrame:
    """Filter and rank. `where` items are FIELD=VALUE on a column or a swept dotted parameter,
    compared as text (no expression is evaluated)."""
    numeric = [c for c in COLUMNS if c not in ("config_id", "params", "qwk_folds", "complete")]
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


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def _std(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.stdev(values), 4) if len(values) > 1 else None
