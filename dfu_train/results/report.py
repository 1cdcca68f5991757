"""`dfu report`: PNG plots and one self-contained `index.html` for a sweep, read offline.

Reads only the sweep folder (the manifest, fold records, Tune's per-trial `result.json`), so it
works on a laptop against a copied folder and while the sweep runs. Each plot answers one question
a researcher asks before trusting a winner: which configs win and how much they vary over folds,
whether fusion beats the forest alone, where training and ASHA stopped, which parameters matter,
and how the best config errs.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster head or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.ensemble import RandomForestRegressor  # noqa: E402
from sklearn.metrics import confusion_matrix, f1_score  # noqa: E402

from dfu_train.data.schema import CLASS_NAMES  # noqa: E402
from dfu_train.errors import ConfigError  # noqa: E402
from dfu_train.location import Location, read_all  # noqa: E402
from dfu_train.results import store  # noqa: E402
from dfu_train.results.leaderboard import build_leaderboard, query  # noqa: E402

DPI = 110
PALETTE = [f"C{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # tab10 without its grey


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass(frozen=True)
class Figure:
    file: str
    title: str
    caption: str


def write_report(sweep_dir: Location, out_dir: Path, *, top: int = 10) -> list[Figure]:
    """Render every plot and `index.html` into `out_dir`; returns the figures written."""
    manifest = store.read_manifest(sweep_dir)
    board = build_leaderboard(sweep_dir, manifest=manifest)
    ranked = query(board, rule=store.selection_rule(manifest), include_partial=True)
    ranked = ranked[ranked["qwk_mean"].notna()]
    if ranked.empty:
        raise ConfigError(f"{sweep_dir}: no finished fold yet, nothing to report")
    records = store.read_fold_results(sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best = ranked.iloc[:top]
    figures = [
        _top_configs(best, out_dir),
        _fusion_vs_metadata(best, records, out_dir),
        _learning_curves(sweep_dir, best, out_dir),
        _parallel_coordinates(ranked, out_dir),
        _importance(ranked, out_dir),
        _best_confusion(ranked.iloc[0]["config_id"], records, out_dir),
    ]
    (out_dir / "index.html").write_text(_html(sweep_dir.name, best, figures), encoding="utf-8")
    return figures


def _label(row) -> str:
    return f"{row['config_id']} ({row['folds_done']}/{row['folds_total']})"


def _save(fig, out_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=DPI)
    plt.close(fig)
    return name


def _top_configs(best: pd.DataFrame, out_dir: Path) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(best) + 1.5))
    rng = np.random.default_rng(0)
    for y, (_, row) in enumerate(best.iloc[::-1].iterrows()):
        qwks = [q for q in row["qwk_folds"] if q is not None]
        ax.scatter(qwks, y + rng.uniform(-0.12, 0.12, len(qwks)), s=18, color="0.55", zorder=2)
        std = row["qwk_std"] if row["qwk_std"] == row["qwk_std"] else 0.0
        ax.errorbar(row["qwk_mean"], y, xerr=std or 0.0, fmt="D", color="C0", capsize=4, zorder=3)
    ax.set_yticks(range(len(best)), [_label(r) for _, r in best.iloc[::-1].iterrows()])
    ax.set_xlabel("QWK (grey: one fold; blue: mean ± std over folds)")
    ax.set_title("Top configurations")
    ax.grid(axis="x", alpha=0.3)
    name = _save(fig, out_dir, "top_configs.png")
    return Figure(name, "Top configurations",
                  "Each grey point is one fold; the diamond and bar are the mean ± std over the "
                  "config's folds. Partial configs show (done/planned) folds.")


def _fusion_vs_metadata(best: pd.DataFrame, records: list[dict], out_dir: Path) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    chosen = list(best["config_id"])
    shown = 0
    for i, config_id in enumerate(chosen):
        pairs = [(r["meta_qwk"], r["metrics"]["qwk"]) for r in records
                 if r["config_id"] == config_id and r["meta_qwk"] is not None
                 and r["metrics"]["qwk"] is not None]
        if pairs:
            x, y = zip(*pairs)
            ax.scatter(x, y, s=24, color=_colour(i), label=config_id)
            shown += len(pairs)
    low, high = _limits(ax)
    ax.plot([low, high], [low, high], color="0.4", linestyle="--", linewidth=1)
    ax.set_xlabel("metadata-only QWK (the forest alone) on the fold")
    ax.set_ylabel("the config's QWK on the fold")
    ax.set_title("Fusion vs metadata alone, per fold")
    if shown:
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no config of the top ones uses metadata", ha="center",
                transform=ax.transAxes)
    name = _save(fig, out_dir, "fusion_vs_metadata.png")
    return Figure(name, "Fusion vs metadata alone",
                  "One point per (config, fold): above the dashed diagonal the config beat the "
                  "forest on the same fold; below it the images made the fold worse.")


def _limits(ax) -> tuple[float, float]:
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    return min(x0, y0), max(x1, y1)


def trial_curves(sweep_dir: Location) -> list[dict]:
    """Every Tune trial's reports: {trial_id, config_id, fold, status, points: [(progress,
    val_qwk, stage)]}, from the trial folders' `result.json` (unreadable lines skipped)."""
    seen: dict = {}  # the trials' params, read once for their states and their curves
    status = {t["trial_id"]: t["status"] for t in store.read_trial_states(sweep_dir, seen=seen)}
    curves = []
    params_files = [f for tune_dir in store.experiment_dirs(sweep_dir)
                    for f in tune_dir.glob("*/params.json")]
    all_params = store.read_json_files(params_files, seen)
    results = read_all([f.parent / "result.json" for f in params_files])
    for params, result_body in zip(all_params, results):
        try:
            config_id, _, fold = store.trial_key(params)
            lines = result_body.decode("utf-8")
        except (AttributeError, TypeError, ValueError, KeyError, ConfigError):
            continue
        points, trial_id = [], None
        for line in lines.splitlines():
            try:
                result = json.loads(line)
            except ValueError:
                continue
            trial_id = result.get("trial_id", trial_id)
            if result.get("progress") is not None and result.get("val_qwk") is not None:
                points.append((result["progress"], result["val_qwk"], result.get("stage")))
        if points:
            curves.append({"trial_id": trial_id, "config_id": config_id,
                           "fold": fold, "status": status.get(trial_id, "finished"),
                           "points": points})
    return curves


def _learning_curves(sweep_dir: Location, best: pd.DataFrame, out_dir: Path) -> Figure:
    curves = trial_curves(sweep_dir)
    order = {cid: i for i, cid in enumerate(best["config_id"])}
    shown = [c for c in curves if c["config_id"] in order]
    pruned = [c for c in curves if c["status"] == "pruned"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for curve in shown + [c for c in pruned if c not in shown]:
        progress, qwk, _ = zip(*curve["points"])
        colour = _colour(order[curve["config_id"]]) if curve["config_id"] in order else "0.8"
        ax.plot(progress, qwk, color=colour, linewidth=1, alpha=0.85)
        if curve["status"] == "pruned":
            ax.scatter(progress[-1], qwk[-1], marker="x", color="C3", s=40, zorder=3)
    boundaries = _stage_starts(shown or curves)
    for start, stage in boundaries:
        ax.axvline(start - 0.5, color="0.85", linewidth=0.8)
        ax.text(start - 0.4, ax.get_ylim()[1], stage, fontsize=7, va="top", color="0.4")
    ax.set_xlabel("progress (forest = 1 step, then one per epoch of each stage)")
    ax.set_ylabel("validation QWK reported")
    ax.set_title("Learning curves (coloured: top configs; red x: stopped by ASHA)")
    name = _save(fig, out_dir, "learning_curves.png")
    return Figure(name, "Learning curves and ASHA stops",
                  "Validation QWK as each trial reported it, by progress step; vertical lines mark "
                  "where a stage starts. Grey curves ending in a red x are trials ASHA stopped.")


def _stage_starts(curves: list[dict]) -> list[tuple[int, str]]:
    starts: dict[str, int] = {}
    for curve in curves:
        for progress, _, stage in curve["points"]:
            if stage and stage not in ("recorded", "final"):
                starts[stage] = min(starts.get(stage, progress), progress)
    return sorted((p, s) for s, p in starts.items())


def _param_table(ranked: pd.DataFrame) -> pd.DataFrame:
    """Swept parameters as columns (values that vary between configs only)."""
    table = pd.DataFrame([{k: json.dumps(v) if isinstance(v, (list, dict)) else v
                           for k, v in p.items()} for p in ranked["params"]])
    return table.loc[:, [c for c in table.columns if _as_text(table[c]).nunique() > 1]]


def _as_text(column: pd.Series) -> pd.Series:
    """Values as text, a missing or null one as "null" (pandas keeps NaN through astype(str))."""
    return column.map(lambda v: "null" if v is None or v != v else str(v))


def _encoded(column: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Numbers in [0, 1] for an axis: log scale for wide positive ranges, codes for categories."""
    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().all():
        values = numeric.to_numpy(dtype=float)
        if (values > 0).all() and values.max() / values.min() > 20:
            values = np.log10(values)
        span = values.max() - values.min()
        return (values - values.min()) / (span or 1.0), None
    text = _as_text(column)
    categories = sorted(text.unique())
    codes = text.map({c: i for i, c in enumerate(categories)}).to_numpy(float)
    return codes / max(len(categories) - 1, 1), categories


def _parallel_coordinates(ranked: pd.DataFrame, out_dir: Path) -> Figure:
    params = _param_table(ranked)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * (len(params.columns) + 1)), 4.5))
    if params.empty:
        ax.text(0.5, 0.5, "no parameter varies between configs", ha="center",
                transform=ax.transAxes)
    else:
        axes = [_encoded(params[c]) for c in params.columns]
        qwk = ranked["qwk_mean"].to_numpy(dtype=float)
        norm = plt.Normalize(qwk.min(), qwk.max() if qwk.max() > qwk.min() else qwk.min() + 1e-9)
        cmap = plt.get_cmap("viridis")
        xs = np.arange(len(axes) + 1)
        for i in np.argsort(qwk):
            ys = [a[0][i] for a in axes] + [norm(qwk[i])]
            ax.plot(xs, ys, color=cmap(norm(qwk[i])), alpha=0.8, linewidth=1.2)
        for x, (_, categories) in enumerate(axes):
            ax.axvline(x, color="0.7", linewidth=0.8)
            if categories:
                for j, category in enumerate(categories):
                    ax.text(x + 0.03, j / max(len(categories) - 1, 1), category[:18], fontsize=6)
        ax.axvline(len(axes), color="0.7", linewidth=0.8)
        ax.set_xticks(xs, [*params.columns, "QWK mean"], rotation=20, ha="right", fontsize=8)
        ax.set_yticks([])
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="QWK mean")
    ax.set_title("Parameters of every config, coloured by mean QWK")
    name = _save(fig, out_dir, "parallel_coordinates.png")
    return Figure(name, "Parallel coordinates",
                  "One line per config through its swept parameter values (scaled to each axis; "
                  "wide positive ranges on a log scale, categories listed) to its mean QWK.")


def _importance(ranked: pd.DataFrame, out_dir: Path) -> Figure:
    params = _param_table(ranked)
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(params.columns), 2) + 1.5))
    if len(ranked) < 4 or params.empty:
        ax.text(0.5, 0.5, "too few configs (or no varying parameter) to estimate importance",
                ha="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
    else:
        features = np.column_stack([_encoded(params[c])[0] for c in params.columns])
        model = RandomForestRegressor(n_estimators=300, random_state=0, min_samples_leaf=1)
        model.fit(features, ranked["qwk_mean"].to_numpy(dtype=float))
        importance = pd.Series(model.feature_importances_, index=params.columns).sort_values()
        ax.barh(importance.index, importance.to_numpy(), color="C0")
        ax.set_xlabel("share of the variance in mean QWK explained (random-forest impurity)")
    ax.set_title(f"Parameter importance over {len(ranked)} configs")
    name = _save(fig, out_dir, "param_importance.png")
    return Figure(name, "Parameter importance",
                  "A random forest fitted on the configs' parameters to predict their mean QWK; "
                  "bars are its impurity importances. Few configs make this rough.")


def _best_confusion(config_id: str, records: list[dict], out_dir: Path) -> Figure:
    labels, predicted = [], []
    for record in records:
        if record["config_id"] == config_id:
            for sample in record["val_samples"]:
                labels.append(sample["label"])
                predicted.append(int(np.argmax(sample["proba"])))
    matrix = confusion_matrix(labels, predicted, labels=[0, 1, 2])
    f1 = f1_score(labels, predicted, labels=[0, 1, 2], average=None, zero_division=0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4), width_ratios=[1.1, 1])
    left.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        left.text(j, i, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    left.set_xticks(range(3), CLASS_NAMES)
    left.set_yticks(range(3), CLASS_NAMES)
    left.set_xlabel("predicted phase")
    left.set_ylabel("true phase")
    left.set_title(f"Confusion, config {config_id}")
    right.bar(CLASS_NAMES, f1, color=["C0", "C1", "C2"])
    right.set_ylim(0, 1)
    right.set_ylabel("F1 on validation samples")
    right.set_title("Per-class F1 (all its folds pooled)")
    name = _save(fig, out_dir, "best_confusion.png")
    return Figure(name, "The best config's errors",
                  f"Validation samples of config {config_id} over all its folds, predicted as the "
                  "most probable phase: the confusion matrix and the F1 of each phase.")


def _html(name: str, best: pd.DataFrame, figures: list[Figure]) -> str:
    rows = "".join(
        f"<tr><td>{i}</td><td><code>{html.escape(r['config_id'])}</code></td>"
        f"<td>{_num(r['qwk_mean'])} ± {_num(r['qwk_std'])}</td>"
        f"<td>{r['folds_done']}/{r['folds_total']}</td><td>{_num(r['meta_qwk_mean'])}</td>"
        f"<td>{html.escape(', '.join(f'{k}={v}' for k, v in r['params'].items()) or '-')}</td>"
        f"</tr>" for i, (_, r) in enumerate(best.iterrows(), start=1))
    sections = "".join(
        f"<section><h2>{html.escape(f.title)}</h2><img src=\"{html.escape(f.file)}\" "
        f"alt=\"{html.escape(f.title)}\"><p>{html.escape(f.caption)}</p></section>"
        for f in figures)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sweep {html.escape(name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
section {{ margin-top: 2em; }}
</style></head><body>
<h1>Sweep {html.escape(name)}</h1>
<p>QWK is the quadratic weighted kappa of the validation samples of a fold; the mean and standard
deviation are over the config's finished folds.</p>
<table><tr><th>#</th><th>config</th><th>QWK mean ± std</th><th>folds</th><th>meta QWK</th>
<th>params</th></tr>{rows}</table>
{sections}
</body></html>
"""


def _num(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:.3f}")
