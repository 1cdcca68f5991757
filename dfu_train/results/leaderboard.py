"""Aggregate fold records into one row per config: mean, std and the per-fold list of QWK.

Reads only `sweep.json` and `fold_results/` (no Ray), so it works offline and while a sweep runs.
A config with missing folds is marked partial and never ranked as if complete.
"""

from __future__ import annotations

import math
import statistics

import pandas as pd

from dfu_train.data.schema import CLASS_NAMES
from dfu_train.errors import ConfigError, did_you_mean
from dfu_train.location import Location
from dfu_train.results import store
from dfu_train.results.selection import STD_WEIGHT, checked_rule, rank_by_rule

# what clinicians report beside QWK; records written before they were recorded give None
CLINICAL = ("weighted_f1", "roc_auc", *(f"{kind}_{name}" for kind in ("sensitivity", "specificity")
                                        for name in CLASS_NAMES))
COLUMNS = ("config_id", "params", "baseline", "folds_done", "folds_total", "complete",
           "fewer_folds", "qwk_mean", "qwk_std", "qwk_mean_minus_std", "qwk_folds", "qwk_by_fold",
           "qwk_screen_mean", "qwk_screen_std", "folds_screened", "qwk_promoted_mean", "qwk_confirmed_mean", "qwk_confirmed_std", "folds_confirmed",
           "optimism", "meta_qwk_mean", "fusion_gain_mean", "qwk_imaged_mean", "row_qwk_mean",
           "accuracy_mean", "macro_f1_mean", *(f"{m}_mean" for m in CLINICAL),
           "pruned", "errors", "last_error", "wall_s", "compute_s", "reused")
TEXT_COLUMNS = ("config_id", "params", "qwk_folds", "qwk_by_fold", "complete", "fewer_folds",
                "last_error", "reused", "baseline")
BASELINE_TEST = "Nadeau-Bengio corrected resampled t-test"
TRIAL_COLUMNS = ("config_id", "fold_seed", "fold", "qwk", "meta_qwk", "trial_id", "node",
                 "wall_s", "startup_s", "compute_s", "reused", "computed")


def build_leaderboard(sweep_dir: Location, *, manifest: dict | None = None,
                      trials: list[dict] | None = None, all_records: list[dict] | None = None,
                      seen: dict | None = None) -> pd.DataFrame:
    """One row per planned config, best first (complete configs before partial ones).
    `manifest`, `trials` and `all_records`: what the caller has read already; `seen`: the files
    read (`store.read_json_files`), shared with the caller's other reads."""
    manifest = store.read_manifest(sweep_dir) if manifest is None else manifest
    plan = store.planned_folds(manifest)
    if all_records is None:
        all_records = store.read_fold_results(sweep_dir, seen, manifest=manifest)
    if trials is None:
        trials = store.read_trial_states(sweep_dir, all_records, manifest=manifest, seen=seen)
    records = {}
    for record in all_records:
        key = (record["config_id"], record["fold_seed"], record["fold"])
        records.setdefault(key, record)  # de-duplicate: a fold counts once however often it ran
    states: dict[str, list[dict]] = {}
    for trial in trials:
        states.setdefault(trial["config_id"], []).append(trial)
    planned = {entry["config_id"]: entry["params"] for entry in manifest["configs"]}
    for (config_id, _, _), record in records.items():  # proposed by a search algorithm
        planned.setdefault(config_id, record.get("params", {}))
    baseline = (manifest.get("baseline") or {}).get("config_id")
    screening, promoted = store.screening_folds(manifest), store.promoted_folds(manifest)
    confirmed: dict[str, dict[tuple, dict]] = {}
    for record in store.read_confirmations(sweep_dir, manifest, seen):
        confirmed.setdefault(record["config_id"], {}).setdefault(
            (record["fold_seed"], record["fold"]), record)
    rows = []
    for config_id, params in planned.items():
        done = sorted((r for (cid, _, _), r in records.items() if cid == config_id),
                      key=lambda r: (r["fold_seed"], r["fold"]))
        qwks = [r["metrics"]["qwk"] for r in done]
        screened = [r["metrics"]["qwk"] for r in done if (r["fold_seed"], r["fold"]) in screening]
        screen_qwk = _mean(screened)
        confirmed_qwks = [r["metrics"]["qwk"] for r in confirmed.get(config_id, {}).values()]
        confirmed_qwk = _mean(confirmed_qwks)
        trials = states.get(config_id, [])
        folds_total = len(plan.get(config_id, screening))
        errors = [t["error"] for t in trials if t["status"] == "error"]
        rows.append({
            "config_id": config_id,
            "params": params,
            "baseline": config_id == baseline,
            "folds_done": len(done),
            "folds_total": folds_total,
            "complete": len(done) >= folds_total,
            "qwk_mean": _mean(qwks),
            "qwk_std": _std(qwks),
            "qwk_mean_minus_std": _stability(qwks),
            "qwk_folds": qwks,
            "qwk_by_fold": {f"{r['fold_seed']}/{r['fold']}": r["metrics"]["qwk"] for r in done},
            "qwk_screen_mean": screen_qwk,
            "qwk_screen_std": _std(screened),
            "folds_screened": len(screened),
            "qwk_promoted_mean": _mean([r["metrics"]["qwk"] for r in done if (
                r["fold_seed"], r["fold"]) in promoted.get(config_id, ())]),
            "qwk_confirmed_mean": confirmed_qwk,
            "qwk_confirmed_std": _std(confirmed_qwks),
            "folds_confirmed": len(confirmed_qwks),
            "optimism": (round(screen_qwk - confirmed_qwk, 4)
                         if screen_qwk is not None and confirmed_qwk is not None else None),
            "meta_qwk_mean": _mean([r["meta_qwk"] for r in done]),
            "fusion_gain_mean": _mean([r["fusion_gain"] for r in done]),
            "qwk_imaged_mean": _mean([r["metrics"].get("qwk_imaged") for r in done]),
            "row_qwk_mean": _mean([r["metrics"].get("row_qwk") for r in done]),
            "accuracy_mean": _mean([r["metrics"]["accuracy"] for r in done]),
            "macro_f1_mean": _mean([r["metrics"]["macro_f1"] for r in done]),
            **{f"{m}_mean": _mean([r["metrics"].get(m) for r in done]) for m in CLINICAL},
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
    # A mean over one screening fold is not comparable with a mean over every fold and seed.
    best_covered = board.loc[board["complete"], "folds_done"].max()
    board["fewer_folds"] = board["folds_done"] < (best_covered if best_covered == best_covered
                                                  else 0)
    return _ranked(board, "qwk_mean").reset_index(drop=True)


def screening_board(board: pd.DataFrame) -> pd.DataFrame:
    """The board as the screening folds alone give it (what promotion ranks by): configs
    compete on the folds every config ran, not on the folds some got from promotions."""
    return board.assign(qwk_mean=board["qwk_screen_mean"], qwk_std=board["qwk_screen_std"],
                        folds_done=board["folds_screened"])


def _ranked(board: pd.DataFrame, by: str | None, *, apart: bool = True,
            rule: str = "mean") -> pd.DataFrame:
    """Complete configs first; among them, those with fewer folds than the best-covered after
    the others (unless not `apart`); then by `by` (best first; times smallest first), or by the
    selection `rule` within each of those groups."""
    keys = ["complete", *(["fewer_folds"] if apart else [])]
    if by is not None:
        ascending = [False, *([True] if apart else []), by in ("wall_s", "compute_s", "qwk_std")]
        return board.sort_values([*keys, by], ascending=ascending, na_position="last",
                                 kind="stable")
    groups = sorted(board.groupby(keys, sort=False), key=lambda item: (not item[0][0],
                                                                       *item[0][1:]))
    return pd.concat([rank_by_rule(rows, rule) for _, rows in groups]) if groups else board


def sweep_status(sweep_dir: Location) -> dict:
    """Trial counts (finished, running, pending, pruned, error, planned), the best config so far,
    the failed trials and the files set aside (`store.rejected_files`), from one read of the
    sweep folder."""
    manifest, seen = store.read_manifest(sweep_dir), {}
    records = store.read_fold_results(sweep_dir, seen, manifest=manifest)
    trials = store.read_trial_states(sweep_dir, records, manifest=manifest, seen=seen)
    counts = {s: sum(t["status"] == s for t in trials)
              for s in ("finished", "running", "pending", "pruned", "error")}
    counts["planned"] = store.planned_trials(manifest)
    board = query(build_leaderboard(sweep_dir, manifest=manifest, trials=trials,
                                    all_records=records, seen=seen),
                  rule=store.selection_rule(manifest), include_partial=True)
    best = None
    if not board.empty and board.iloc[0]["qwk_mean"] == board.iloc[0]["qwk_mean"]:
        top = board.iloc[0]
        best = {"config_id": top["config_id"], "qwk_mean": top["qwk_mean"],
                "qwk_std": top["qwk_std"], "folds_done": int(top["folds_done"]),
                "folds_total": int(top["folds_total"])}
    return {"sweep": Location(sweep_dir).name, "trials": counts, "best": best,
            "errors": [t for t in trials if t["status"] == "error"],
            "rejected": [r.__dict__ for r in store.rejected_files(sweep_dir, manifest, seen)]}


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


def query(board: pd.DataFrame, *, by: str | None = None, rule: str = "mean",
          top: int | None = None, include_partial: bool = False, where: tuple[str, ...] = (),
          fewer_folds_apart: bool = True) -> pd.DataFrame:
    """Filter and rank by the selection `rule` (`results.selection`), or by the column `by`.
    `where` items are FIELD=VALUE on a column or a swept dotted parameter (`matches`). Configs
    run on fewer folds than the best-covered ones rank after them unless `fewer_folds_apart`
    is False."""
    if by is not None:
        _check_sortable(board, by)
    checked_rule(rule)
    out = board if include_partial else board[board["complete"]]
    out = filter_rows(out, where, params=True)
    out = _ranked(out, by, apart=fewer_folds_apart, rule=rule)
    return out.head(top) if top else out


def query_trials(trials: pd.DataFrame, *, by: str = "qwk", top: int | None = None,
                 where: tuple[str, ...] = ()) -> pd.DataFrame:
    """The per-fold table filtered by `where` and sorted by `by` (best QWK first, shortest
    times first)."""
    _check_sortable(trials, by, text=("config_id", "trial_id", "node", "reused", "computed"))
    out = filter_rows(trials, where, params=False)
    ascending = by.endswith("_s")
    return out.sort_values(by, ascending=ascending, na_position="last", kind="stable").head(
        top or len(out))


def _check_sortable(frame: pd.DataFrame, by: str, text=TEXT_COLUMNS) -> None:
    numeric = [c for c in frame.columns if c not in text]
    if by not in numeric:
        raise ConfigError(f"--by {by!r}: not a sortable column{did_you_mean(by, numeric)}; "
                          f"choose from {', '.join(numeric)}")


def filter_rows(frame: pd.DataFrame, where: tuple[str, ...], *, params: bool) -> pd.DataFrame:
    """Rows whose FIELD equals VALUE for every FIELD=VALUE; VALUE is read as YAML
    (`forest.max_depth=null`, `fusion.hidden=[64, 32]`); nothing is evaluated."""
    import yaml

    names = {k for p in frame["params"] for k in p} if params and "params" in frame else set()
    for clause in where:
        field, sep, text = clause.partition("=")
        field = field.strip()
        if not sep:
            raise ConfigError(f"--where {clause!r}: expected FIELD=VALUE")
        if field not in frame.columns and field not in names:
            raise ConfigError(f"--where {field!r}: no such column or parameter"
                              f"{did_you_mean(field, [*frame.columns, *names])}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text.strip()
        column = frame[field] if field in frame.columns else frame["params"].map(
            lambda p, f=field: p.get(f))
        frame = frame[column.map(lambda cell, v=value, t=text.strip(): _matches(cell, v, t))]
    return frame


def _matches(cell, value, text: str) -> bool:
    """A cell equals the value given as YAML, or reads as the same text."""
    if isinstance(cell, (list, tuple)) and isinstance(value, list):
        return list(cell) == value
    if cell is None or (isinstance(cell, float) and cell != cell):
        return value is None
    return cell == value or str(cell) == text


def compare_to_baseline(board: pd.DataFrame, baseline: str, *, n_folds: int) -> pd.DataFrame:
    """Paired comparison on the folds both configs finished: mean QWK difference and the p-value
    of the Nadeau-Bengio corrected resampled t-test (None with fewer than two shared folds).

    Folds of k-fold CV share most of their training patients, so a plain paired t-test over
    them is far too confident; the correction widens the variance by n_test/n_train."""
    if baseline not in set(board["config_id"]):
        raise ConfigError(f"--baseline {baseline!r}: no such config in this sweep"
                          f"{did_you_mean(baseline, board['config_id'])}")
    reference = board.loc[board["config_id"] == baseline, "qwk_by_fold"].iloc[0]
    diffs, pvalues, shared_counts = [], [], []
    for by_fold in board["qwk_by_fold"]:
        shared = [k for k in by_fold if k in reference
                  and by_fold[k] is not None and reference[k] is not None]
        paired = [by_fold[k] - reference[k] for k in shared]
        diffs.append(_mean(paired))
        pvalue = corrected_ttest_p(paired, test_train_ratio=1 / (n_folds - 1))
        pvalues.append(None if pvalue is None else round(pvalue, 4))
        shared_counts.append(len(shared))
    return board.assign(baseline_diff=diffs, baseline_p=pvalues, baseline_folds=shared_counts,
                        baseline_test=BASELINE_TEST)


def corrected_ttest_p(diffs: list[float], *, test_train_ratio: float) -> float | None:
    """Two-sided p of the corrected resampled t-test (Nadeau and Bengio, 2003) on paired
    per-fold differences: t = mean / sqrt((1/n + n_test/n_train) * variance), n - 1 d.o.f."""
    if len(diffs) < 2:
        return None
    variance = statistics.variance(diffs)
    if variance == 0:
        return None
    from scipy.stats import t as student_t  # only when asked: scipy.stats takes 0.7 s to import

    t = statistics.fmean(diffs) / math.sqrt((1 / len(diffs) + test_train_ratio) * variance)
    return float(2 * student_t.sf(abs(t), df=len(diffs) - 1))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def _stability(values) -> float | None:
    mean, std = _mean(values), _std(values)
    return None if mean is None else round(mean - STD_WEIGHT * (std or 0.0), 4)


def _std(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.stdev(values), 4) if len(values) > 1 else None
