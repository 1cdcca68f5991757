"""`dfu report`: PNG plots and one self-contained `index.html` for a sweep, read offline.

Reads only the sweep folder (the manifest, fold records, prune marks, Tune's per-trial
`result.json`), so it works on a laptop against a copied folder and while the sweep runs. Each
plot answers one question a researcher asks before trusting a winner: which configs win under
the sweep's selection rule and how much they vary over folds and fold seeds, whether they beat
the study's metadata-only recipe, whether fusion beats the forest alone, how the search went,
where training and the scheduler stopped, which parameters matter, and how the best config errs
(per class, and how well its probabilities rank and are calibrated).

Configs the scheduler stopped before any fold finished appear with their last reported value
(a red x); configs with missing folds are marked partial; configs run on fewer folds than the
best-covered (not promoted) are ranked and drawn apart from them.
"""

from __future__ import annotations

import html
import json
import math
import re
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster head or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, MaxNLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402
from sklearn.metrics import (average_precision_score, f1_score,  # noqa: E402
                             precision_recall_curve, roc_auc_score, roc_curve)

from dfu_train.data.schema import CLASS_NAMES  # noqa: E402
from dfu_train.errors import ConfigError  # noqa: E402
from dfu_train.location import Location, read_all  # noqa: E402
from dfu_train.results import store  # noqa: E402
from dfu_train.results.leaderboard import (BASELINE_TEST, build_leaderboard,  # noqa: E402
                                            query)
from dfu_train.results.selection import SELECTION_RULES  # noqa: E402
from dfu_train.training.decoding import Decoder  # noqa: E402

DPI = 110
PALETTE = [f"C{i}" for i in (0, 1, 2, 4, 5, 6, 8, 9)]  # tab10 without its grey and red (pruned)
SEED_MARKERS = ("o", "s", "^", "v", "P", "h", "<", ">")
SEED_COLOURS = ("0.35", "C1", "C2", "C4", "C5", "C6", "C8", "C9")
CLASS_COLOURS = ("C0", "C1", "C2")
PRUNED_COLOUR = "C3"
MIN_IMPORTANCE_CONFIGS = 4  # fewer configs with a mean: no importance is estimated
MAX_PRUNED_ROWS = 5  # configs stopped before any fold finished, shown under the top configs
IMPORTANCE_EVALUATOR = "fANOVA"
UNUSED = object()  # a swept parameter a config does not use (absent from its params)
NO_VALUE = ("final", "recorded", "stopped")  # report stages that are not a training step
PATIENT = re.compile(r"^(P\d+)")


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass(frozen=True)
class Figure:
    file: str
    title: str
    caption: str
    note: str = ""  # what this sweep's plot could not show, and why (shown under it)


@dataclass
class _Sweep:
    """What every plot reads, read once: the board ranked by the sweep's rule, the records,
    the prune marks of folds without a record, and the trials' curves."""

    name: str
    manifest: dict
    rule: str
    board: pd.DataFrame  # every config, ranked (rows without a mean last in their group)
    records: list[dict]
    marks: list[dict]
    curves: list[dict] = field(default_factory=list)

    @property
    def scored(self) -> pd.DataFrame:
        return self.board[self.board["qwk_mean"].notna()]

    @property
    def varying(self) -> list[str]:
        return _varying(self.board)

    def records_of(self, config_id: str) -> list[dict]:
        return sorted((r for r in self.records if r["config_id"] == config_id),
                      key=lambda r: (r["fold_seed"], r["fold"]))

    def marks_of(self, config_id: str) -> list[dict]:
        return [m for m in self.marks if m["config_id"] == config_id]

    def last_value(self, config_id: str) -> tuple[float | None, int]:
        """The best value a config's stopped trials last reported, and at which step."""
        marks = [m for m in self.marks_of(config_id) if m["val_qwk"] is not None]
        if not marks:
            return None, max((m["progress"] for m in self.marks_of(config_id)), default=0)
        best = max(marks, key=lambda m: m["val_qwk"])
        return best["val_qwk"], best["progress"]

    @property
    def pruned_only(self) -> pd.DataFrame:
        """Configs stopped by the scheduler before any of their folds finished."""
        stopped = {m["config_id"] for m in self.marks}
        rows = self.board.loc[self.board["qwk_mean"].isna()
                              & self.board["config_id"].isin(stopped)]
        values = [self.last_value(c)[0] for c in rows["config_id"]]
        return rows.assign(_last=np.array(values, dtype=float)).sort_values(
            "_last", ascending=False, na_position="last", kind="stable").drop(columns="_last")

    @property
    def baseline(self) -> pd.Series | None:
        rows = self.board[self.board["baseline"]]
        return rows.iloc[0] if len(rows) else None

    @property
    def seeds(self) -> list[int]:
        return sorted({r["fold_seed"] for r in self.records} | {m["fold_seed"] for m in self.marks})


def write_report(sweep_dir: Location, out_dir: Path, *, top: int = 10) -> list[Figure]:
    """Render every plot and `index.html` into `out_dir`; returns the figures written."""
    manifest = store.read_manifest(sweep_dir)
    seen: dict = {}
    records = store.read_fold_results(sweep_dir, seen, manifest=manifest)
    board = build_leaderboard(sweep_dir, manifest=manifest, all_records=records, seen=seen)
    rule = store.selection_rule(manifest)
    ranked = query(board, rule=rule, include_partial=True)
    if ranked["qwk_mean"].notna().sum() == 0:
        raise ConfigError(f"{sweep_dir}: no finished fold yet, nothing to report")
    done = {(r["config_id"], r["fold_seed"], r["fold"]) for r in records}
    marks = [m for key, m in sorted(store.read_pruned(sweep_dir, seen).items())
             if key not in done]
    ranked = _with_stopped_proposals(ranked, marks, manifest)
    sweep = _Sweep(Location(sweep_dir).name, manifest, rule, ranked.reset_index(drop=True),
                   records, marks, trial_curves(sweep_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    best = sweep.scored.iloc[:top]
    best_id = best.iloc[0]["config_id"]
    figures = [
        _top_configs(sweep, best, out_dir),
        _fusion_vs_metadata(sweep, best, out_dir),
        _learning_curves(sweep, best, out_dir),
        _parallel_coordinates(sweep, out_dir),
        _importance(sweep, out_dir),
        _best_confusion(sweep, best_id, out_dir),
        _optimisation_history(sweep, out_dir),
        _class_metrics(sweep, best_id, out_dir),
        _roc_pr(sweep, best_id, out_dir),
        _calibration(sweep, best_id, out_dir),
    ]
    (out_dir / "index.html").write_text(_html(sweep, best, figures), encoding="utf-8")
    return figures


def _with_stopped_proposals(board: pd.DataFrame, marks: list[dict],
                            manifest: dict) -> pd.DataFrame:
    """The board and, after it, the configs a search proposed that were stopped before any
    fold finished: the board lists only planned configs and configs with a record."""
    known = set(board["config_id"])
    extra = []
    for mark in marks:
        if mark["config_id"] not in known:
            known.add(mark["config_id"])
            extra.append({**{c: None for c in board.columns}, "config_id": mark["config_id"],
                          "params": mark["params"], "baseline": False, "folds_done": 0,
                          "folds_total": len(store.screening_folds(manifest)),
                          "complete": False, "fewer_folds": False, "qwk_folds": [],
                          "qwk_by_fold": {}, "folds_screened": 0, "folds_confirmed": 0,
                          "pruned": sum(m["config_id"] == mark["config_id"] for m in marks),
                          "errors": 0, "wall_s": 0.0, "compute_s": 0.0, "reused": ""})
    if not extra:
        return board
    return pd.concat([board, pd.DataFrame(extra, columns=board.columns)], ignore_index=True)


# ---------------------------------------------------------------- values as text

def _num(value, digits: int = 3) -> str:
    """A figure of the report: n/a when missing, never `None` or 17 digits."""
    if value is None or isinstance(value, str):
        return "n/a" if value is None else value
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _value_text(value) -> str:
    """A parameter value as a sweep file writes it (null, true, [a, b]), numbers short."""
    if value is UNUSED:
        return "unused"
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return "null"
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            return f"{value:.2e}".replace("e-0", "e-").replace("e+0", "e+")
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _param(params: dict, name: str):
    return params.get(name, UNUSED)


def _swept_names(board: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(name for params in board["params"] for name in params))


def _varying(board: pd.DataFrame) -> list[str]:
    """Swept parameters whose value (null and unused included) differs between configs."""
    return [name for name in _swept_names(board)
            if len({_value_text(_param(p, name)) for p in board["params"]}) > 1]


def _short_names(names: list[str]) -> dict[str, str]:
    """A parameter by the last part of its dotted name where that is unambiguous."""
    last = Counter(name.rsplit(".", 1)[-1] for name in names)
    return {name: name.rsplit(".", 1)[-1] if last[name.rsplit(".", 1)[-1]] == 1 else name
            for name in names}


def _params_text(params: dict, names: list[str], *, width: int = 0) -> str:
    short = _short_names(names)
    text = ", ".join(f"{short[n]}={_value_text(params[n])}" for n in names if n in params)
    return textwrap.shorten(text, width, placeholder=" …") if width and text else text


def _config_label(row, names: list[str], *, width: int = 56) -> str:
    """The config's id (and its folds done/planned), then the swept values that differ between
    configs on at most two lines."""
    head = row["config_id"][:10]
    if row["baseline"]:
        head = f"study recipe {head}"
    done, total = int(row["folds_done"]), int(row["folds_total"])
    head += f" · {done}/{total} fold{'s' if total != 1 else ''}"
    text = _params_text(row["params"], names)
    lines = textwrap.wrap(text, width, max_lines=2, placeholder=" …") if text else []
    return "\n".join([head, *lines])


def _fold_qwks(row) -> list[tuple[int, int, float]]:
    """(fold seed, fold, QWK) of each finished fold of a board row."""
    out = []
    for key, qwk in (row["qwk_by_fold"] or {}).items():
        if qwk is not None:
            seed, fold = key.split("/")
            out.append((int(seed), int(fold), float(qwk)))
    return out


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Exact mean and standard deviation (the board's are rounded to 4 places)."""
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def _group(row) -> str:
    if row["qwk_mean"] != row["qwk_mean"] or row["qwk_mean"] is None:
        return "pruned"
    if not row["complete"]:
        return "partial"
    return "fewer" if row["fewer_folds"] else "complete"


GROUP_NAMES = {"complete": "complete, on the most folds",
               "fewer": "complete on fewer folds (not promoted)",
               "partial": "partial: folds missing (running or stopped)",
               "pruned": "stopped before any fold finished: x = last value"}


def _qwk_limits(values: list[float]) -> tuple[float, float]:
    """Axis limits around QWK values: never a range so narrow it needs an offset."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return -0.05, 1.0
    low, high = min(values), max(values)
    if high - low < 0.1:
        middle = (high + low) / 2
        low, high = middle - 0.05, middle + 0.05
    pad = max(0.02, 0.06 * (high - low))
    return max(low - pad, -1.05), min(high + pad, 1.05)


def _qwk_axis(axis) -> None:
    """QWK ticks as plain two-decimal values (never an offset like `1e-5+4.166e-1`), on steps
    that two decimals write exactly (no 0.275 shown as 0.28)."""
    axis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 5, 10]))
    axis.set_major_formatter(FormatStrFormatter("%.2f"))


def _save(fig, out_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _message(ax, text: str) -> None:
    """A readable panel instead of an empty or meaningless plot."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(text, 70), ha="center", va="center", fontsize=10,
            transform=ax.transAxes, color="0.25",
            bbox={"boxstyle": "round", "facecolor": "0.96", "edgecolor": "0.8"})


def _seed_styles(seeds: list[int]) -> dict[int, tuple[str, str, float]]:
    """Each fold seed's marker, colour and vertical offset within a config's row."""
    n = max(len(seeds), 1)
    step = min(0.18, 0.6 / n)
    return {seed: (SEED_MARKERS[i % len(SEED_MARKERS)], SEED_COLOURS[i % len(SEED_COLOURS)],
                   (i - (n - 1) / 2) * step) for i, seed in enumerate(seeds)}


# ---------------------------------------------------------------- top configs

def _reference(sweep: _Sweep, best: pd.DataFrame) -> tuple[float, float | None, str] | None:
    """The metadata-only reference: the study's recipe (the sweep's baseline) over its folds,
    else the forest alone inside the best config (its folds' meta QWK)."""
    baseline = sweep.baseline
    if baseline is not None:
        mean, std = _mean_std([q for _, _, q in _fold_qwks(baseline)])
        if mean is not None:
            n = int(baseline["folds_done"])
            return mean, std, (f"study recipe (metadata only) {baseline['config_id'][:10]}: "
                               f"{mean:.3f} over {n} fold{'s' if n != 1 else ''}")
    metas = [r["meta_qwk"] for r in sweep.records_of(best.iloc[0]["config_id"])
             if r["meta_qwk"] is not None and _uses_images(r)]
    if metas:
        mean, std = _mean_std(metas)
        return mean, std, f"forest alone inside the best config: {mean:.3f} (no study recipe run)"
    return None


def _top_configs(sweep: _Sweep, best: pd.DataFrame, out_dir: Path) -> Figure:
    pruned = sweep.pruned_only
    rows = [r for frame in (best, pruned.iloc[:MAX_PRUNED_ROWS]) for _, r in frame.iterrows()]
    names = sweep.varying
    seeds = sweep.seeds
    styles = _seed_styles(seeds)
    n = len(rows)
    fig, ax = plt.subplots(figsize=(10, 0.62 * n + 2.2))
    place = blended_transform_factory(ax.transAxes, ax.transData)
    xs: list[float] = []
    single = stopped = spread = False
    for i, row in enumerate(rows):
        y = n - 1 - i
        folds = _fold_qwks(row)
        for seed, fold, qwk in folds:
            marker, colour, offset = styles[seed]
            jitter = 0.04 * ((fold % 3) - 1)
            ax.scatter(qwk, y + offset + jitter, marker=marker, s=22, color=colour, alpha=0.85,
                       zorder=2, linewidths=0)
            xs.append(qwk)
        mean, std = _mean_std([q for _, _, q in folds])
        note = ""
        if mean is not None and std is not None:
            ax.errorbar(mean, y, xerr=std, fmt="D", color="C0", ms=7, capsize=4, zorder=3)
            spread = True
            xs += [mean - std, mean + std]
            note = f"{mean:.3f} ± {std:.3f}"
            if sweep.rule == "mean_minus_std":
                note += f", score {mean - 0.5 * std:.3f}"
        elif mean is not None:
            ax.plot(mean, y, "D", mfc="white", mec="C0", mew=1.5, ms=8, zorder=3)
            single = True
            note = f"{mean:.3f} (one fold: no spread)"
        for mark in sweep.marks_of(row["config_id"]):
            if mark["val_qwk"] is not None:
                offset = styles[mark["fold_seed"]][2]
                ax.scatter(mark["val_qwk"], y + offset, marker="x", s=45, color=PRUNED_COLOUR,
                           zorder=4)
                xs.append(mark["val_qwk"])
                stopped = True
        if mean is None:
            value, step = sweep.last_value(row["config_id"])
            note = (f"stopped at step {step}: {value:.3f}" if value is not None
                    else f"stopped at step {step}, no value")
        elif sweep.marks_of(row["config_id"]):
            note += f"; {len(sweep.marks_of(row['config_id']))} fold(s) stopped"
        ax.text(1.01, y, note, transform=place, fontsize=7.5, va="center", color="0.2")
    groups = [_group(r) for r in rows]
    if len(set(groups)) > 1:
        for i, group in enumerate(groups):
            if i == 0 or group != groups[i - 1]:
                y = n - 1 - i
                if i:
                    ax.axhline(y + 0.5, color="0.6", linewidth=0.8, linestyle=":")
                ax.text(0.005, y + 0.45, GROUP_NAMES[group], transform=place, fontsize=7,
                        va="top", color="0.35", style="italic")
    handles = [Line2D([], [], marker=styles[s][0], color=styles[s][1], linestyle="",
                      label=f"one fold, fold seed {s}") for s in seeds]
    if spread:
        handles.append(Line2D([], [], marker="D", color="C0", label="mean ± std over its folds"))
    if single:
        handles.append(Line2D([], [], marker="D", mfc="white", mec="C0", linestyle="",
                              label="one fold only: mean = that fold, no spread"))
    if stopped:
        handles.append(Line2D([], [], marker="x", color=PRUNED_COLOUR, linestyle="",
                              label="fold stopped early: its last reported value"))
    reference = _reference(sweep, best)
    if reference is not None:
        mean, std, label = reference
        ax.axvline(mean, color="k", linestyle="--", linewidth=1.2, zorder=1)
        if std is not None:
            ax.axvspan(mean - std, mean + std, color="0.5", alpha=0.12, zorder=0)
        handles.append(Line2D([], [], color="k", linestyle="--", label=label))
        xs.append(mean)
    elif sweep.baseline is not None:
        handles.append(Line2D([], [], color="none", label="study recipe: no finished fold yet"))
    else:
        handles.append(Line2D([], [], color="none",
                              label="no metadata-only reference (the sweep ran no study recipe)"))
    ax.set_xlim(*_qwk_limits(xs))
    _qwk_axis(ax.xaxis)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_yticks(range(n), [_config_label(r, names) for r in reversed(rows)], fontsize=7.5)
    ax.set_xlabel("validation QWK of a fold")
    ax.grid(axis="x", alpha=0.3)
    description = SELECTION_RULES[sweep.rule].description
    counts = sorted({int(r["folds_done"]) for r in rows if r["folds_done"]})
    subtitle = f"ranked by the sweep's rule `{sweep.rule}`: {description}"
    if len(counts) > 1:
        subtitle += f"\nconfigs on different numbers of folds ({counts[0]} to {counts[-1]}): " \
                    "compare within a group"
    ax.set_title(f"Top configurations ({len(best)} of {len(sweep.scored)} with a finished fold)"
                 f"\n{subtitle}", fontsize=9.5)
    if len(pruned) > MAX_PRUNED_ROWS:
        ax.text(0.5, -0.7, f"… and {len(pruned) - MAX_PRUNED_ROWS} more configs stopped before "
                "any fold finished", transform=place, ha="center", fontsize=7, color="0.35")
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=2 if len(handles) > 2 else len(handles), fontsize=7.5, frameon=False)
    name = _save(fig, out_dir, "top_configs.png")
    return Figure(name, "Top configurations",
                  "The best configs under the sweep's selection rule, best at the top, each "
                  "labelled with its id, folds done/planned and the swept values that differ "
                  "between configs. Each small marker is one fold (marker and colour: its fold "
                  "seed); the diamond and bar are the mean ± std over the config's folds (a "
                  "hollow diamond: one fold, no spread). Dotted lines separate configs on the "
                  "most folds from those on fewer (promotions add folds to some) and from "
                  "partial ones; a red x is a fold the scheduler stopped, at its last reported "
                  "value. The dashed line (and grey band, ± std) is the metadata-only reference: "
                  "the study's recipe run on the same folds.")


# ---------------------------------------------------------------- fusion vs metadata

def _uses_images(record: dict) -> bool:
    """Whether a fold's config fuses image branches with the forest (as it recorded)."""
    modalities = (record.get("config") or {}).get("modalities") or []
    return "metadata" in modalities and any(m != "metadata" for m in modalities)


def _fusion_vs_metadata(sweep: _Sweep, best: pd.DataFrame, out_dir: Path) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5.5))
    styles = _seed_styles(sweep.seeds)
    names = sweep.varying
    handles, xs = [], []
    for i, (_, row) in enumerate(best.iterrows()):
        pairs = [(r["meta_qwk"], r["metrics"]["qwk"], r["fold_seed"])
                 for r in sweep.records_of(row["config_id"]) if _uses_images(r)
                 and r["meta_qwk"] is not None and r["metrics"]["qwk"] is not None]
        for meta, qwk, seed in pairs:
            ax.scatter(meta, qwk, s=30, color=_colour(i), marker=styles[seed][0], alpha=0.85,
                       edgecolors="white", linewidths=0.4, zorder=3)
            xs += [meta, qwk]
        if pairs:
            handles.append(Line2D([], [], marker="o", color=_colour(i), linestyle="",
                                  label=_config_label(row, names, width=40)))
    note = ""
    if not xs:
        note = ("No config among the top ones fuses images with the forest, so there is "
                "nothing to compare: metadata-only configs are the forest itself.")
        _message(ax, note)
    else:
        low, high = _qwk_limits(xs)
        ax.plot([low, high], [low, high], color="0.4", linestyle="--", linewidth=1)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        _qwk_axis(ax.xaxis)
        _qwk_axis(ax.yaxis)
        ax.set_xlabel("metadata-only QWK on the fold (the config's own forest alone)")
        ax.set_ylabel("the config's QWK on the fold")
        ax.grid(alpha=0.25)
        if len(sweep.seeds) > 1:
            handles += [Line2D([], [], marker=styles[s][0], color="0.4", linestyle="",
                               label=f"fold seed {s}") for s in sweep.seeds]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7,
                  frameon=False, labelspacing=0.9)
    ax.set_title("Fusion vs metadata alone, per fold (above the diagonal: the images helped)",
                 fontsize=9.5)
    name = _save(fig, out_dir, "fusion_vs_metadata.png")
    return Figure(name, "Fusion vs metadata alone",
                  "One point per (config, fold) of the top configs that use images: the forest "
                  "inside the config alone on that fold (x) against the config (y), coloured by "
                  "config, shaped by fold seed. Above the dashed diagonal the images improved "
                  "the fold; below it they made it worse. Metadata-only configs are the forest "
                  "itself (on the diagonal by definition) and are left out.", note=note)


# ---------------------------------------------------------------- learning curves

def trial_curves(sweep_dir: Location) -> list[dict]:
    """Every Tune trial's reports: {trial_id, config_id, fold_seed, fold, status, points:
    [(progress, val_qwk, stage)], fused: [(progress, fused_qwk, stage)], recorded: the fold's
    recorded QWK or None}, from the trial folders' `result.json` (unreadable lines skipped).
    `val_qwk` is the model the stage trains (an image branch alone while pretraining);
    `fused_qwk` the fold's fused prediction so far (the forest's until fusion starts)."""
    seen: dict = {}  # the trials' params, read once for their states and their curves
    status = {t["trial_id"]: t["status"] for t in store.read_trial_states(sweep_dir, seen=seen)}
    curves = []
    params_files = [f for tune_dir in store.experiment_dirs(sweep_dir)
                    for f in tune_dir.glob("*/params.json")]
    all_params = store.read_json_files(params_files, seen)
    results = read_all([f.parent / "result.json" for f in params_files])
    for params, result_body in zip(all_params, results):
        try:
            config_id, fold_seed, fold = store.trial_key(params)
            lines = result_body.decode("utf-8")
        except (AttributeError, TypeError, ValueError, KeyError, ConfigError):
            continue
        points, fused, recorded, trial_id = [], [], None, None
        for line in lines.splitlines():
            try:
                result = json.loads(line)
            except ValueError:
                continue
            if not isinstance(result, dict):
                continue
            trial_id = result.get("trial_id", trial_id)
            progress, stage = result.get("progress"), result.get("stage")
            if progress is None:
                continue
            if stage in ("final", "recorded") or result.get("final"):
                recorded = result.get("val_qwk", recorded)
                if stage in NO_VALUE:
                    continue  # else the fold's last step carries its final metrics: still a step
            if result.get("val_qwk") is not None:
                points.append((progress, result["val_qwk"], stage))
            value = result.get("fused_qwk")
            if value is None and stage in ("forest", "stage1", "stage2"):
                value = result.get("val_qwk")  # reports written before fused_qwk
            if value is not None and stage not in NO_VALUE:
                fused.append((progress, value, stage))
        if points or fused or recorded is not None:
            curves.append({"trial_id": trial_id, "config_id": config_id, "fold_seed": fold_seed,
                           "fold": fold, "status": status.get(trial_id, "finished"),
                           "points": points, "fused": fused, "recorded": recorded})
    return curves


def _pretraining(stage: str) -> bool:
    """A stage that trains an image branch alone: `pretrain:M`, or `pretrain-top:M` (the top of
    its backbone unfrozen, two-phase pretraining)."""
    return stage.startswith(("pretrain:", "pretrain-top:"))


STAGE_NAMES = {"forest": "forest", "stage1": "fusion stage 1", "stage2": "fusion stage 2"}


def _stage_name(stage: str) -> str:
    if _pretraining(stage):
        phase, modality = stage.split(":", 1)
        top = " top" if phase == "pretrain-top" else ""
        return f"pretrain{top} {modality} (branch alone)"
    return STAGE_NAMES.get(stage, stage)


def _stage_spans(curves: list[dict]) -> list[tuple[float, float, str]]:
    """(first step, last step, stage) of every training stage the curves went through."""
    spans: dict[str, list[float]] = {}
    for curve in curves:
        for progress, _, stage in curve["points"]:
            if stage and stage not in NO_VALUE:
                low, high = spans.get(stage, (progress, progress))
                spans[stage] = [min(low, progress), max(high, progress)]
    return sorted((low, high, stage) for stage, (low, high) in spans.items())


def _learning_curves(sweep: _Sweep, best: pd.DataFrame, out_dir: Path) -> Figure:
    curves = sweep.curves
    order = {cid: i for i, cid in enumerate(best["config_id"])}
    drawn = [c for c in curves if c["config_id"] in order]
    drawn += [c for c in curves if c["config_id"] not in order and c["status"] == "pruned"]
    caption = ("Top panel: the fold's fused prediction so far as each trial reported it, by "
               "progress step: the forest's QWK until fusion starts (pretraining an image branch "
               "changes no fused output), then the best fusion epoch, which is what the fold "
               "keeps; a star is the QWK the fold recorded (after decoding). Bottom panel: the "
               "model each stage trains, alone: the image branch on its own while pretraining "
               "(dashed; it is expected to score below the forest), the fusion head after. "
               "Colours are the top configs (legend), grey the other configs' stopped trials; a "
               "red x marks the last report of a trial the scheduler stopped. Stage boundaries "
               "(vertical lines, shaded pretraining) are those of the best config drawn.")
    if not drawn:
        fig, ax = plt.subplots(figsize=(9, 3))
        _message(ax, "No Tune trial reports (tune/*/result.json) in this sweep folder: the "
                     "learning curves need the folder Ray Tune wrote, not just the fold records.")
        name = _save(fig, out_dir, "learning_curves.png")
        return Figure(name, "Learning curves and scheduler stops", caption,
                      note="No Tune trial reports in this sweep folder.")
    fig, (top_ax, low_ax) = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True,
                                         height_ratios=[1.15, 1])
    stopped = recorded = False
    for curve in drawn:
        colour = _colour(order[curve["config_id"]]) if curve["config_id"] in order else "0.7"
        width = 1.1 if curve["config_id"] in order else 0.8
        if curve["fused"]:
            progress, qwk, _ = zip(*curve["fused"])
            top_ax.plot(progress, qwk, color=colour, linewidth=width, alpha=0.85, marker="o",
                        markersize=2.5)
            if curve["status"] == "pruned":
                top_ax.scatter(progress[-1], qwk[-1], marker="x", color=PRUNED_COLOUR, s=45,
                               zorder=4)
                stopped = True
            if curve["recorded"] is not None:
                top_ax.scatter(progress[-1], curve["recorded"], marker="*", s=70, color=colour,
                               edgecolors="k", linewidths=0.5, zorder=5)
                recorded = True
        for stage, points in groupby(curve["points"], key=lambda p: p[2]):
            points = [p for p in points if stage not in NO_VALUE]
            if not points:
                continue
            progress, qwk, _ = zip(*points)
            dashed = bool(stage) and _pretraining(stage)
            low_ax.plot(progress, qwk, color=colour, linewidth=width, alpha=0.85, marker="o",
                        markersize=2.5, linestyle="--" if dashed else "-")
        if curve["status"] == "pruned" and curve["points"]:
            progress, qwk, _ = curve["points"][-1]
            low_ax.scatter(progress, qwk, marker="x", color=PRUNED_COLOUR, s=45, zorder=4)
            stopped = True
    first = next(c["config_id"] for c in sorted(drawn, key=lambda c: order.get(
        c["config_id"], len(order))))
    spans = _stage_spans([c for c in drawn if c["config_id"] == first])  # its schedule
    for index, (start, end, stage) in enumerate(spans):
        for ax in (top_ax, low_ax):
            if _pretraining(stage):
                ax.axvspan(start - 0.5, end + 0.5, color="0.93", zorder=0)
            ax.axvline(start - 0.5, color="0.75", linewidth=0.8)
        top_ax.text(start - 0.4, 0.97 - 0.075 * (index % 3), _stage_name(stage), fontsize=7,
                    va="top", color="0.3",
                    transform=blended_transform_factory(top_ax.transData, top_ax.transAxes),
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    for ax in (top_ax, low_ax):
        _qwk_axis(ax.yaxis)
        ax.grid(alpha=0.25)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    low, high = top_ax.get_ylim()
    top_ax.set_ylim(low, high + 0.3 * (high - low))  # room for the stage names
    top_ax.set_ylabel("fused QWK so far\n(forest, then best fusion epoch)", fontsize=8.5)
    low_ax.set_ylabel("QWK of the model the stage trains\n(dashed: image branch alone)",
                      fontsize=8.5)
    low_ax.set_xlabel("progress step (the forest is step 1, then one step per epoch)")
    top_ax.set_title("Learning curves: the fold's result so far (top) and each stage's own model "
                     "(bottom)", fontsize=9.5)
    with_curves = {c["config_id"] for c in drawn}
    handles = [Line2D([], [], color=_colour(order[row["config_id"]]),
                      label=_config_label(row, sweep.varying, width=36))
               for _, row in best.iterrows() if row["config_id"] in with_curves]
    if any(c["config_id"] not in order for c in drawn):
        handles.append(Line2D([], [], color="0.7", label="other configs' stopped trials"))
    if stopped:
        handles.append(Line2D([], [], marker="x", color=PRUNED_COLOUR, linestyle="",
                              label="stopped by the scheduler (last report)"))
    if recorded:
        handles.append(Line2D([], [], marker="*", color="0.5", markeredgecolor="k",
                              linestyle="", markersize=9, label="recorded QWK of the fold"))
    handles.append(Patch(facecolor="0.93", label="pretraining an image branch"))
    top_ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                  frameon=False, labelspacing=0.8)
    name = _save(fig, out_dir, "learning_curves.png")
    return Figure(name, "Learning curves and scheduler stops", caption)


# ---------------------------------------------------------------- parallel coordinates

@dataclass
class _Axis:
    """One parameter on a [0, 1] axis: each row's position and the labelled ticks."""

    name: str
    positions: np.ndarray
    ticks: list[tuple[float, str]]
    log: bool = False


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)) and math.isfinite(float(value))


def _encode(name: str, values: list) -> _Axis:
    """Numbers on a linear or (wide positive ranges) log scale with their values as ticks, and
    null / unused in their own slots below them; anything else as listed categories."""
    numbers = [float(v) for v in values if _is_number(v)]
    others = [v for v in values if not _is_number(v)]
    specials = sorted({_value_text(v) for v in others})
    if numbers and all(s in ("null", "unused") for s in specials):
        array = np.array(numbers)
        log = bool((array > 0).all() and array.max() / array.min() > 20)
        scale = np.log10 if log else (lambda x: np.asarray(x, dtype=float))
        low, high = float(scale(array.min())), float(scale(array.max()))
        floor = 0.25 if specials else 0.0  # null and unused below the numbers
        span = high - low

        def place(v: float) -> float:
            return 1.0 if span == 0 else floor + (1 - floor) * (float(scale(v)) - low) / span

        distinct = sorted(set(numbers))
        if len(distinct) <= 7:
            shown = distinct
        else:
            locator = MaxNLocator(5)
            shown = [10 ** t if log else t for t in locator.tick_values(low, high)
                     if low - 1e-9 <= t <= high + 1e-9]
            shown = sorted({distinct[0], *shown, distinct[-1]})
        ticks = [(place(v), _value_text(v)) for v in shown]
        slots = {s: (0.1 * i if len(specials) > 1 else 0.0) for i, s in enumerate(specials)}
        ticks += [(p, s) for s, p in slots.items()]
        positions = np.array([place(float(v)) if _is_number(v) else slots[_value_text(v)]
                              for v in values])
        return _Axis(name, positions, ticks, log)
    categories = sorted({_value_text(v) for v in values})
    slot = {c: i / max(len(categories) - 1, 1) for i, c in enumerate(categories)}
    return _Axis(name, np.array([slot[_value_text(v)] for v in values]),
                 [(p, c) for c, p in slot.items()])


def _parallel_coordinates(sweep: _Sweep, out_dir: Path) -> Figure:
    scored, pruned = sweep.scored, sweep.pruned_only
    rows = pd.concat([scored, pruned]) if len(pruned) else scored
    names = _varying(rows)
    caption = ("One line per config through its swept parameter values to its mean QWK "
               "(coloured by that mean); stopped configs without a finished fold are red dashed "
               "lines ending at their last reported value, the study's recipe a black line. "
               "Numeric axes are labelled with their values (log scale where the values span "
               "more than a factor of 20); `null` (no limit, none) and `unused` (a parameter "
               "the config does not use) have their own slots below the numbers.")
    if not names:
        fig, ax = plt.subplots(figsize=(9, 3))
        fixed = _params_text(rows.iloc[0]["params"], _swept_names(rows), width=200)
        if len(rows) == 1:
            text = "Only one config has results" + (f" ({fixed})" if fixed else "")
            text += ": there is nothing to compare across configs yet."
        else:
            text = (f"No swept parameter differs between the {len(rows)} configs with results"
                    + (f" (every one has {fixed})." if fixed else "."))
        _message(ax, text)
        name = _save(fig, out_dir, "parallel_coordinates.png")
        return Figure(name, "Parallel coordinates", caption,
                      note="No swept parameter differs between the configs with results.")
    axes = [_encode(n, [_param(p, n) for p in rows["params"]]) for n in names]
    values = [float(v) if v == v and v is not None else np.nan for v in rows["qwk_mean"]]
    is_pruned = np.array([v != v for v in values])
    lasts = [sweep.last_value(c)[0] for c in rows["config_id"]]
    qwk = np.array([lasts[i] if is_pruned[i] and lasts[i] is not None else values[i]
                    for i in range(len(values))], dtype=float)
    low, high = _qwk_limits([q for q in qwk if q == q])
    finite = qwk[(~is_pruned) & ~np.isnan(qwk)]
    norm = plt.Normalize(finite.min(), finite.max() if finite.max() > finite.min()
                         else finite.min() + 1e-3)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(min(16.0, max(7.0, 1.5 * (len(axes) + 1) + 1.5)), 5.2))
    xs = np.arange(len(axes) + 1)
    baseline = list(rows["baseline"])
    for i in sorted(range(len(rows)), key=lambda i: (bool(is_pruned[i]), bool(baseline[i]),
                                                       qwk[i] if qwk[i] == qwk[i] else -9)):
        level = (qwk[i] - low) / (high - low) if qwk[i] == qwk[i] else np.nan
        ys = [a.positions[i] for a in axes] + [level]
        if is_pruned[i]:
            ax.plot(xs, ys, color=PRUNED_COLOUR, alpha=0.55, linewidth=1, linestyle="--")
            if level == level:
                ax.scatter(xs[-1], level, marker="x", color=PRUNED_COLOUR, s=40, zorder=4)
        elif baseline[i]:
            ax.plot(xs, ys, color="k", linewidth=2.2, zorder=3)
        else:
            ax.plot(xs, ys, color=cmap(norm(qwk[i])), alpha=0.85, linewidth=1.4)
    short = _short_names(names)
    for x, axis in enumerate(axes):
        ax.axvline(x, color="0.6", linewidth=0.9, zorder=0)
        for position, label in axis.ticks:
            ax.plot([x - 0.03, x], [position, position], color="0.4", linewidth=0.8)
            ax.text(x - 0.05, position, textwrap.shorten(label, 24, placeholder="…"),
                    fontsize=6.5, ha="right", va="center",
                    color="0.15", bbox={"facecolor": "white", "edgecolor": "none",
                                        "alpha": 0.75, "pad": 0.5})
    ax.axvline(len(axes), color="0.6", linewidth=0.9, zorder=0)
    for q in MaxNLocator(5).tick_values(low, high):
        if low <= q <= high:
            level = (q - low) / (high - low)
            ax.plot([len(axes), len(axes) + 0.03], [level, level], color="0.4", linewidth=0.8)
            ax.text(len(axes) + 0.05, level, f"{q:.2f}", fontsize=6.5, va="center")
    labels = [short[n] + (" (log)" if a.log else "") for n, a in zip(names, axes)]
    ax.set_xticks(xs, [*labels, "QWK: mean\n(x: last value)"], rotation=15, ha="right",
                  fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.6, len(axes) + 0.4)
    ax.set_ylim(-0.05, 1.05)
    for spine in ax.spines.values():
        spine.set_visible(False)
    colorbar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                            label="mean QWK", pad=0.06)
    colorbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))
    extra = []
    if is_pruned.any():
        extra.append(Line2D([], [], color=PRUNED_COLOUR, linestyle="--",
                            label=f"stopped, no finished fold ({int(is_pruned.sum())})"))
    if any(baseline):
        extra.append(Line2D([], [], color="k", linewidth=2.2, label="study recipe"))
    if extra:
        ax.legend(handles=extra, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2,
                  fontsize=7.5, frameon=False)
    ax.set_title(f"Swept parameters of {len(rows)} configs, coloured by mean QWK", fontsize=9.5)
    name = _save(fig, out_dir, "parallel_coordinates.png")
    return Figure(name, "Parallel coordinates", caption)


# ---------------------------------------------------------------- parameter importance

def _distribution(values: list):
    """An Optuna distribution for a parameter's values across configs, and each config's value
    in it: int or float ranges (log for wide positive ones) for plain numbers; a categorical
    of the values as text where any is null, unused, a list or a word."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    if all(_is_number(v) for v in values):
        array = np.array(values, dtype=float)
        log = bool((array > 0).all() and array.max() / array.min() > 20)
        if all(isinstance(v, (int, np.integer)) for v in values):
            return IntDistribution(int(array.min()), int(array.max()),
                                   log=log and array.min() >= 1), [int(v) for v in values]
        return FloatDistribution(float(array.min()), float(array.max()), log=log), [
            float(v) for v in values]
    texts = [_value_text(v) for v in values]
    return CategoricalDistribution(sorted(set(texts))), texts


def param_importance(rows: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """Optuna's fANOVA importance of each parameter for the configs' mean QWK (normalised to
    sum to 1): an in-memory study with one finished trial per config, `null` and `unused` as
    categorical choices."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import create_trial

    columns = {n: _distribution([_param(p, n) for p in rows["params"]]) for n in names}
    columns = {n: c for n, c in columns.items() if not c[0].single()}
    if not columns:
        return {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        for i, value in enumerate(rows["_target"]):
            study.add_trial(create_trial(
                value=float(value), params={n: vals[i] for n, (_, vals) in columns.items()},
                distributions={n: dist for n, (dist, _) in columns.items()}))
        return get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                     params=list(columns))
    finally:
        optuna.logging.set_verbosity(verbosity)


def _importance(sweep: _Sweep, out_dir: Path) -> Figure:
    rows = sweep.scored[~sweep.scored["baseline"]]
    target = [s if s is not None and s == s else m
              for s, m in zip(rows["qwk_screen_mean"], rows["qwk_mean"])]
    rows = rows.assign(_target=target)
    names = _varying(rows)
    title = (f"Parameter importance ({IMPORTANCE_EVALUATOR}, Optuna) for the mean QWK of "
             f"{len(rows)} configs")
    fig, ax = plt.subplots(figsize=(8, 0.42 * max(len(names), 3) + 1.8))
    importance: dict[str, float] = {}
    problem = None
    if len(rows) < MIN_IMPORTANCE_CONFIGS:
        problem = (f"Not enough configs to estimate importance: {len(rows)} with a finished "
                   f"fold (at least {MIN_IMPORTANCE_CONFIGS} needed; the study's recipe is not "
                   "counted). Any number from so few configs would mean nothing.")
    elif not names:
        problem = "No swept parameter differs between the configs with a finished fold."
    else:
        try:
            importance = param_importance(rows, names)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            problem = f"Optuna could not estimate importance here: {str(exc)[:200]}"
        if not importance and problem is None:
            problem = "No swept parameter differs between the configs with a finished fold."
    if problem:
        _message(ax, problem)
        title = f"Parameter importance ({IMPORTANCE_EVALUATOR}, Optuna): not estimated"
    else:
        short = _short_names(list(importance))
        ordered = sorted(importance.items(), key=lambda item: item[1])
        ax.barh([short[n] for n, _ in ordered], [v for _, v in ordered], color="C0")
        for i, (_, value) in enumerate(ordered):
            ax.text(value + 0.01, i, f"{value:.0%}", va="center", fontsize=8)
        ax.set_xlim(0, max(1.0, max(importance.values()) + 0.12))
        ax.set_xlabel("share of the variance of the mean QWK (fANOVA; shares sum to 100 %)")
        ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title, fontsize=9.5)
    name = _save(fig, out_dir, "param_importance.png")
    return Figure(name, "Parameter importance",
                  f"Optuna's {IMPORTANCE_EVALUATOR} importance evaluator (FanovaImportance"
                  "Evaluator) on an in-memory study with one trial per config, valued by its "
                  "mean QWK over the screening folds every config ran: a random forest fitted "
                  "on the parameters, whose variance is split among them. `null` and `unused` "
                  "count as choices of their own. The study's recipe and configs without a "
                  "finished fold are left out; with fewer than "
                  f"{MIN_IMPORTANCE_CONFIGS} configs no importance is drawn. Few configs make "
                  "this rough.", note=problem or "")


# ---------------------------------------------------------------- the best config's errors

def _decoded(record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, probabilities, predictions) of a fold's validation samples, predicted with the
    decoding rule the fold recorded (as its metrics were)."""
    samples = record["val_samples"]
    labels = np.array([s["label"] for s in samples], dtype=int)
    proba = np.array([s["proba"] for s in samples], dtype=float).reshape(-1, 3)
    decoder = Decoder.from_description((record.get("stages") or {}).get("decode"))
    predicted = decoder.predict(proba) if len(proba) else np.zeros(0, dtype=int)
    return labels, proba, predicted


def _pooled(records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = [_decoded(r) for r in records]
    if not parts:
        return np.zeros(0, int), np.zeros((0, 3)), np.zeros(0, int)
    return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]


def _pooling_note(records: list[dict]) -> str:
    """How a plot pooled the folds: how many predictions of how many samples, which seeds."""
    seeds = sorted({r["fold_seed"] for r in records})
    folds = len(records)
    predictions = sum(len(r["val_samples"]) for r in records)
    samples = len({s["sample_id"] for r in records for s in r["val_samples"]})
    if len(seeds) > 1:
        return (f"{folds} folds pooled over {len(seeds)} fold seeds "
                f"({', '.join(map(str, seeds))}): {predictions} predictions of {samples} "
                "samples, each sample once per fold seed")
    return (f"{folds} fold{'s' if folds != 1 else ''} of fold seed {seeds[0]} pooled: "
            f"{predictions} samples")


def _decode_rules(records: list[dict]) -> str:
    rules = sorted({Decoder.from_description((r.get("stages") or {}).get("decode")).rule
                    for r in records})
    return "/".join(rules)


def _best_confusion(sweep: _Sweep, config_id: str, out_dir: Path) -> Figure:
    records = sweep.records_of(config_id)
    labels, _, predicted = _pooled(records)
    if not len(labels):
        return _no_samples(config_id, out_dir, "best_confusion.png", "The best config's errors")
    matrix = np.zeros((3, 3), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(totals > 0, matrix / np.maximum(totals, 1), np.nan)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    left.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    for (i, j), count in np.ndenumerate(matrix):
        left.text(j, i, str(count), ha="center", va="center", fontsize=10,
                  color="white" if count > matrix.max() / 2 else "black")
    right.imshow(np.nan_to_num(rates), cmap="Blues", vmin=0, vmax=1)
    for (i, j), rate in np.ndenumerate(rates):
        right.text(j, i, "n/a" if rate != rate else f"{rate:.0%}", ha="center", va="center",
                   fontsize=10, color="white" if rate == rate and rate > 0.5 else "black")
    for ax, what in ((left, "counts"), (right, "rates: each true phase's row sums to 100 %")):
        ax.set_xticks(range(3), CLASS_NAMES)
        ax.set_yticks(range(3), [f"{c} (n={int(t)})" for c, t in zip(CLASS_NAMES, totals[:, 0])])
        ax.set_xlabel("predicted phase")
        ax.set_ylabel("true phase")
        ax.set_title(what, fontsize=9)
    fig.suptitle(f"Confusion of the best config {config_id[:10]} "
                 f"(decoded by `{_decode_rules(records)}`)\n{_pooling_note(records)}",
                 fontsize=9.5)
    name = _save(fig, out_dir, "best_confusion.png")
    return Figure(name, "The best config's errors",
                  f"Validation samples of config {config_id} over its folds, each predicted as "
                  "its fold recorded it (the fold's decoding rule): counts on the left, "
                  "row-normalised rates (the share of each true phase predicted as each phase; "
                  "the diagonal is the sensitivity) on the right. With several fold seeds each "
                  "sample appears once per seed, so counts add up to samples x seeds.")


def _no_samples(config_id: str, out_dir: Path, file: str, title: str) -> Figure:
    note = (f"The folds of config {config_id} stored no validation samples, so there is nothing "
            "to draw here.")
    fig, ax = plt.subplots(figsize=(8, 2.5))
    _message(ax, note)
    return Figure(_save(fig, out_dir, file), title, "", note=note)


def _fold_class_metrics(record: dict) -> dict[str, float | None]:
    """Per-class sensitivity, specificity and F1 of a fold: as recorded, else from its samples."""
    metrics = record["metrics"]
    labels, _, predicted = _decoded(record)
    out: dict[str, float | None] = {}
    for k, name in enumerate(CLASS_NAMES):
        positive, called = labels == k, predicted == k
        computed = {
            "sensitivity": (called & positive).sum() / positive.sum() if positive.any() else None,
            "specificity": ((~called) & (~positive)).sum() / (~positive).sum()
            if (~positive).any() else None,
            "f1": float(f1_score(labels, predicted, labels=[k], average="macro",
                                 zero_division=0)) if len(labels) else None,
        }
        for kind, value in computed.items():
            recorded = metrics.get(f"{kind}_{name}")
            out[f"{kind}_{name}"] = recorded if recorded is not None else (
                None if value is None else float(value))
    return out


def _class_metrics(sweep: _Sweep, config_id: str, out_dir: Path) -> Figure:
    configs = [(config_id, f"best {config_id[:10]}", "C0")]
    baseline = sweep.baseline
    if baseline is not None and baseline["config_id"] != config_id and sweep.records_of(
            baseline["config_id"]):
        configs.append((baseline["config_id"], f"study recipe {baseline['config_id'][:10]}",
                        "0.45"))
    fig, axes = plt.subplots(1, 3, figsize=(11, 4), sharey=True)
    width = 0.8 / len(configs)
    for ax, kind in zip(axes, ("sensitivity", "specificity", "f1")):
        for c, (cid, _, colour) in enumerate(configs):
            per_fold = [_fold_class_metrics(r) for r in sweep.records_of(cid)]
            for k, name in enumerate(CLASS_NAMES):
                values = [m[f"{kind}_{name}"] for m in per_fold if m[f"{kind}_{name}"] is not None]
                x = k + (c - (len(configs) - 1) / 2) * width
                if values:
                    ax.bar(x, float(np.mean(values)), width=width * 0.92, color=colour,
                           alpha=0.75)
                    ax.scatter(np.full(len(values), x), values, s=10, color="k", alpha=0.6,
                               zorder=3, linewidths=0)
                else:
                    ax.text(x, 0.02, "n/a", ha="center", fontsize=7, rotation=90)
        ax.set_xticks(range(3), CLASS_NAMES)
        ax.set_ylim(0, 1.05)
        ax.set_title({"f1": "F1"}.get(kind, kind), fontsize=9)
        ax.grid(axis="y", alpha=0.25)
    axes[0].set_ylabel("per fold (dots) and mean over folds (bar)")
    fig.legend(handles=[Patch(facecolor=colour, alpha=0.75, label=label)
                        for _, label, colour in configs],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(configs), fontsize=7.5,
               frameon=False)
    fig.suptitle("Per-class sensitivity, specificity and F1 (one phase against the others)",
                 fontsize=9.5)
    name = _save(fig, out_dir, "class_metrics.png")
    return Figure(name, "Per-class sensitivity and specificity",
                  "For each phase against the other two: sensitivity (the share of that phase "
                  "found), specificity (the share of the others not called that phase) and F1, "
                  "as each fold recorded them (dots) and their mean over folds (bars), for the "
                  "best config and beside it the study's metadata-only recipe.")


def _roc_pr(sweep: _Sweep, config_id: str, out_dir: Path) -> Figure:
    records = sweep.records_of(config_id)
    labels, proba, _ = _pooled(records)
    if not len(labels):
        return _no_samples(config_id, out_dir, "best_roc_pr.png",
                           "ROC and precision-recall of the best config")
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10.5, 4.6))
    for k, name in enumerate(CLASS_NAMES):
        truth = (labels == k).astype(int)
        if truth.sum() == 0 or truth.sum() == len(truth):
            missing = "no sample of" if truth.sum() == 0 else "only samples of"
            for ax in (roc_ax, pr_ax):
                ax.plot([], [], color=CLASS_COLOURS[k], label=f"{name}: {missing} it, undefined")
            continue
        fpr, tpr, _ = roc_curve(truth, proba[:, k])
        auc = roc_auc_score(truth, proba[:, k])
        roc_ax.plot(fpr, tpr, color=CLASS_COLOURS[k], label=f"{name} vs rest: AUC {auc:.3f}")
        precision, recall, _ = precision_recall_curve(truth, proba[:, k])
        ap = average_precision_score(truth, proba[:, k])
        prevalence = truth.mean()
        pr_ax.plot(recall, precision, color=CLASS_COLOURS[k],
                   label=f"{name} vs rest: AP {ap:.3f} (chance {prevalence:.2f})")
        pr_ax.axhline(prevalence, color=CLASS_COLOURS[k], linestyle=":", linewidth=0.8)
    roc_ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=0.8)
    roc_ax.set_xlabel("false positive rate (1 - specificity)")
    roc_ax.set_ylabel("true positive rate (sensitivity)")
    roc_ax.set_title("ROC, one phase vs the rest", fontsize=9)
    pr_ax.set_xlabel("recall (sensitivity)")
    pr_ax.set_ylabel("precision")
    pr_ax.set_title("Precision-recall (dotted: chance = prevalence)", fontsize=9)
    for ax in (roc_ax, pr_ax):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7.5, loc="lower right" if ax is roc_ax else "lower left")
    fig.suptitle(f"The best config {config_id[:10]}: how its probabilities rank each phase\n"
                 f"{_pooling_note(records)}", fontsize=9.5)
    name = _save(fig, out_dir, "best_roc_pr.png")
    return Figure(name, "ROC and precision-recall of the best config",
                  "From the stored validation probabilities of the best config's folds, pooled: "
                  "one phase against the other two. The area under the ROC curve (AUC) is the "
                  "chance a sample of the phase gets a higher probability of it than one of "
                  "another phase; average precision (AP) weighs that by how rare the phase is "
                  "(its chance level is the phase's prevalence).")


def _calibration(sweep: _Sweep, config_id: str, out_dir: Path) -> Figure:
    records = sweep.records_of(config_id)
    labels, proba, _ = _pooled(records)
    if not len(labels):
        return _no_samples(config_id, out_dir, "best_calibration.png",
                           "Calibration of the best config")
    fig, (curve_ax, count_ax) = plt.subplots(2, 1, figsize=(6.5, 6.5), sharex=True,
                                             height_ratios=[3, 1])
    edges = np.linspace(0, 1, 11)
    for k, name in enumerate(CLASS_NAMES):
        truth = (labels == k).astype(float)
        p = proba[:, k] if len(proba) else np.zeros(0)
        which = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
        centres, observed = [], []
        for b in range(10):
            inside = which == b
            if inside.any():
                centres.append(float(p[inside].mean()))
                observed.append(float(truth[inside].mean()))
        brier = float(np.mean((p - truth) ** 2)) if len(p) else None
        curve_ax.plot(centres, observed, marker="o", color=CLASS_COLOURS[k],
                      label=f"{name}: Brier {_num(brier)}")
        count_ax.hist(p, bins=edges, histtype="step", color=CLASS_COLOURS[k])
    curve_ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=0.8,
                  label="perfectly calibrated")
    curve_ax.set_ylabel("observed share of the phase")
    curve_ax.set_ylim(-0.02, 1.02)
    curve_ax.legend(fontsize=7.5, loc="upper left")
    curve_ax.grid(alpha=0.25)
    curve_ax.set_title(f"Calibration of the best config {config_id[:10]}\n"
                       f"{_pooling_note(records)}", fontsize=9.5)
    count_ax.set_xlabel("predicted probability of the phase (10 bins)")
    count_ax.set_ylabel("samples")
    count_ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    name = _save(fig, out_dir, "best_calibration.png")
    return Figure(name, "Calibration of the best config",
                  "For each phase, validation samples binned by the probability the best config "
                  "gave that phase (x: the bin's mean probability) against the share of them "
                  "that were that phase (y); on the diagonal a probability of 0.7 comes true 70 % "
                  "of the time. The Brier score is the mean squared error of the probability "
                  "(0 is perfect). Below: how many samples fall in each bin.")


# ---------------------------------------------------------------- optimisation history

def _run_order(sweep: _Sweep) -> dict[str, tuple]:
    """A config's place in the order the sweep started them: the manifest's order (the order
    Tune starts planned trials), else the Tune trial number, else the start time."""
    planned = {c["config_id"]: i for i, c in enumerate(sweep.manifest["configs"])}
    numbers: dict[str, int] = {}
    started: dict[str, float] = {}
    for item in [*sweep.records, *sweep.marks]:
        cid = item["config_id"]
        match = re.search(r"_(\d+)$", str(item.get("trial_id") or ""))
        if match:
            numbers[cid] = min(numbers.get(cid, 10**9), int(match.group(1)))
        start = (item.get("timing") or {}).get("started_at")
        if isinstance(start, (int, float)):
            started[cid] = min(started.get(cid, math.inf), float(start))
    return {cid: (planned.get(cid, 10**9), numbers.get(cid, 10**9), started.get(cid, math.inf),
                  cid) for cid in sweep.board["config_id"]}


def _optimisation_history(sweep: _Sweep, out_dir: Path) -> Figure:
    order = _run_order(sweep)
    rows = pd.concat([sweep.scored, sweep.pruned_only])
    rows = rows.assign(_order=rows["config_id"].map(order)).sort_values("_order")
    fig, ax = plt.subplots(figsize=(max(7.5, 0.28 * len(rows) + 4), 4.6))
    xs = np.arange(1, len(rows) + 1)
    running, best_so_far = [], -math.inf
    values: list[float] = []
    shown = set()
    for x, (_, row) in zip(xs, rows.iterrows()):
        screen = row["qwk_screen_mean"]
        value = screen if screen is not None and screen == screen else row["qwk_mean"]
        group = _group(row)
        if group == "pruned":
            last, _ = sweep.last_value(row["config_id"])
            if last is not None:
                ax.scatter(x, last, marker="x", color=PRUNED_COLOUR, s=45, zorder=3)
                values.append(last)
                shown.add("pruned")
            running.append(best_so_far if best_so_far > -math.inf else np.nan)
            continue
        value = float(value)
        values.append(value)
        screened_all = int(row["folds_screened"]) >= len(store.screening_folds(sweep.manifest))
        style = {"marker": "s" if row["baseline"] else "o", "s": 34, "zorder": 3,
                 "color": "k" if row["baseline"] else "C0"}
        if not screened_all:
            style.update(facecolors="white", edgecolors=style.pop("color"))
            shown.add("partial")
        ax.scatter(x, value, **style)
        if row["qwk_promoted_mean"] is not None and row["qwk_promoted_mean"] == row[
                "qwk_promoted_mean"]:
            ax.scatter(x, row["qwk_mean"], marker="D", s=26, color="C1", zorder=4)
            ax.plot([x, x], [value, row["qwk_mean"]], color="C1", linewidth=0.8)
            values.append(float(row["qwk_mean"]))
            shown.add("promoted")
        if screened_all and not row["baseline"]:
            best_so_far = max(best_so_far, value)
        running.append(best_so_far if best_so_far > -math.inf else np.nan)
    ax.step(xs, running, where="post", color="C2", linewidth=1.5, zorder=2)
    baseline = sweep.baseline
    handles = [Line2D([], [], marker="o", color="C0", linestyle="",
                      label="a config: mean QWK over the screening folds"),
               Line2D([], [], color="C2", linewidth=1.5, label="best complete config so far")]
    if "partial" in shown:
        handles.append(Line2D([], [], marker="o", mfc="white", mec="C0", linestyle="",
                              label="partial: screening folds missing"))
    if "promoted" in shown:
        handles.append(Line2D([], [], marker="D", color="C1", linestyle="",
                              label="promoted: its mean over every fold it ran"))
    if "pruned" in shown:
        handles.append(Line2D([], [], marker="x", color=PRUNED_COLOUR, linestyle="",
                              label="stopped before any fold finished: last value"))
    if baseline is not None and baseline["qwk_mean"] == baseline["qwk_mean"] and baseline[
            "qwk_mean"] is not None:
        screen = baseline["qwk_screen_mean"]
        level = screen if screen is not None and screen == screen else baseline["qwk_mean"]
        ax.axhline(level, color="k", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="k", linestyle="--", marker="s",
                              label="study recipe (metadata only)"))
        values.append(float(level))
    ax.set_ylim(*_qwk_limits(values))
    _qwk_axis(ax.yaxis)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(rows) <= 30:
        ax.set_xticks(xs, [c[:10] for c in rows["config_id"]], rotation=90, fontsize=6.5)
    ax.set_xlabel("configs in the order the sweep started them")
    ax.set_ylabel("validation QWK")
    ax.grid(alpha=0.25)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5,
              frameon=False)
    ax.set_title(f"Optimisation history: {len(rows)} config{'s' if len(rows) != 1 else ''} "
                 f"({sweep.manifest['spec'].get('search', {}).get('algorithm', 'search')} "
                 "search)", fontsize=9.5)
    name = _save(fig, out_dir, "optimisation_history.png")
    return Figure(name, "Optimisation history",
                  "Each config in the order the sweep started it, at its mean QWK over the "
                  "screening folds every config runs (so configs compare on the same folds); "
                  "the green step line is the best complete config so far. A hollow point is a "
                  "config with screening folds missing, an orange diamond a promoted config's "
                  "mean over all the folds it ran, a red x a config stopped before any fold "
                  "finished (its last reported value), the dashed line the study's recipe. A "
                  "line that stops rising early says more configs of this space add little.")


# ---------------------------------------------------------------- index.html

def _cohort_summary(sweep: _Sweep) -> dict:
    """What the records tell of the cohort: the validation samples of the fold seed with the
    most folds recorded (every sample once when all its folds ran), their patients and
    classes, and the modalities the configs used."""
    by_seed: dict[int, dict[str, int]] = {}
    folds: dict[int, set[int]] = {}
    for record in sweep.records:
        samples = by_seed.setdefault(record["fold_seed"], {})
        folds.setdefault(record["fold_seed"], set()).add(record["fold"])
        for sample in record["val_samples"]:
            samples[sample["sample_id"]] = sample["label"]
    seed = max(by_seed, key=lambda s: (len(folds[s]), len(by_seed[s])))
    samples = by_seed[seed]
    patients = {(PATIENT.match(sid) or re.match(r"(.*)", sid)).group(1) for sid in samples}
    classes = Counter(samples.values())
    modalities = set()
    for entry in [*sweep.manifest["configs"], *sweep.records]:
        modalities.update((entry.get("config") or {}).get("modalities") or [])
    n_folds = sweep.manifest["spec"]["cv"]["n_folds"]
    return {"samples": len(samples), "patients": len(patients),
            "classes": ", ".join(f"{name} {classes.get(k, 0)}"
                                 for k, name in enumerate(CLASS_NAMES)),
            "modalities": ", ".join(sorted(modalities)) or "n/a",
            "coverage": f"validation samples of {len(folds[seed])} of {n_folds} folds of fold "
                        f"seed {seed}" + ("" if len(folds[seed]) >= n_folds else
                                          "; samples of the other folds are not counted")}


def _versions(sweep: _Sweep, key: str) -> str:
    found = sorted({str((r.get("versions") or {}).get(key)) for r in sweep.records
                    if (r.get("versions") or {}).get(key)})
    return ", ".join(found) or "not recorded"


def _plain(value):
    """The sweep file with short numbers, for the header."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return _value_text(value)
    return value


def _header(sweep: _Sweep) -> str:
    manifest, spec = sweep.manifest, sweep.manifest["spec"]
    cv, search = spec["cv"], spec.get("search") or {}
    scheduler = (spec.get("scheduler") or {}).get("type", "none")
    seeds = ", ".join(map(str, store.sweep_fold_seeds(manifest)))
    cohort = _cohort_summary(sweep)
    facts = [
        ("sweep file", f"name {spec.get('name') or sweep.name}; {search.get('algorithm', '?')} "
                       f"search, scheduler {scheduler}; {cv['n_folds']}-fold CV, folds "
                       f"{', '.join(map(str, manifest['folds']))} of fold seed(s) {seeds}; "
                       f"selection rule {sweep.rule}"
                       + (f"; hash {manifest['spec_hash'][:16]}" if manifest.get("spec_hash")
                          else "")),
        ("created", manifest.get("created") or "not recorded"),
        ("git revision", _versions(sweep, "git_revision")),
        ("dfu_train", _versions(sweep, "dfu_train")),
        ("data root", manifest["data_root"]),
        ("cohort fingerprint", manifest["cohort_fingerprint"]),
        ("cohort", f"{cohort['samples']} samples of {cohort['patients']} patients; classes "
                   f"{cohort['classes']}; modalities {cohort['modalities']} "
                   f"({cohort['coverage']})"),
        ("configs", f"{len(sweep.board)} planned or proposed, {len(sweep.scored)} with a "
                    f"finished fold, {len(sweep.pruned_only)} stopped before any; "
                    f"{len(sweep.records)} folds recorded, "
                    f"{len(manifest['promotions'])} promotion(s)"),
        ("report written", time.strftime("%Y-%m-%d %H:%M:%S %z")),
    ]
    import yaml

    spec_text = yaml.safe_dump(_plain(spec), sort_keys=False, default_flow_style=None,
                               width=100)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts)
    return (f"<table class=\"facts\">{rows}</table>\n<details><summary>the sweep file as "
            f"recorded in sweep.json</summary><pre>{html.escape(spec_text)}</pre></details>")


def _status(row, sweep: _Sweep) -> str:
    parts = {"complete": "complete", "fewer": "complete, fewer folds", "partial": "partial",
             "pruned": "stopped"}[_group(row)]
    if row["baseline"]:
        parts = f"study recipe; {parts}"
    if row["pruned"]:
        parts += f"; {int(row['pruned'])} fold(s) stopped"
    if row["errors"]:
        parts += f"; {int(row['errors'])} error(s)"
    return parts


def _table(sweep: _Sweep, best: pd.DataFrame) -> str:
    names = sweep.varying
    rows = list(best.iterrows())
    baseline = sweep.baseline
    if baseline is not None and baseline["config_id"] not in set(best["config_id"]):
        rows.append((None, baseline))
    rows += list(sweep.pruned_only.iloc[:MAX_PRUNED_ROWS].iterrows())
    ranks = {cid: i for i, cid in enumerate(sweep.scored["config_id"], start=1)}
    body = []
    for _, r in rows:
        mean, std = _mean_std([q for _, _, q in _fold_qwks(r)])
        last = sweep.last_value(r["config_id"])[0] if mean is None else None
        qwk = (f"{_num(mean)} ± {_num(std)}" if std is not None else
               f"{_num(mean)} (one fold)" if mean is not None else f"last value {_num(last)}")
        params = _params_text(r["params"], names) or "-"
        cells = [str(ranks.get(r["config_id"], "-")), f"<code>{html.escape(r['config_id'])}</code>",
                 html.escape(params), f"{int(r['folds_done'])}/{int(r['folds_total'])}",
                 html.escape(qwk), _num(r["qwk_mean_minus_std"]), _num(r["macro_f1_mean"]),
                 _num(r["weighted_f1_mean"]), _num(r["roc_auc_mean"]), _num(r["meta_qwk_mean"]),
                 _num(r["fusion_gain_mean"]), html.escape(_status(r, sweep))]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ("<tr><th>#</th><th>config</th><th>swept values</th><th>folds</th>"
            "<th>QWK mean ± std</th><th>mean − 0.5 std</th><th>macro F1</th>"
            "<th>weighted F1</th><th>ROC AUC</th><th>forest alone QWK</th>"
            "<th>fusion gain</th><th>status</th></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _ablation(sweep: _Sweep) -> str:
    """The modality ablation (`results.ablation.modality_board`, as `dfu leaderboard
    --by-modalities` gives it), when the complete configs differ in their modalities; empty
    otherwise."""
    from dfu_train.results.ablation import modality_board

    table = modality_board(sweep.board, sweep.manifest, rule=sweep.rule)
    if len(table) < 2:
        return ""
    body = []
    for _, r in table.iterrows():
        mean, std = _mean_std([q for q in r["qwk_folds"] if q is not None])
        gain = r["gain_vs_metadata"]
        paired = ("-" if gain is None or gain != gain or r["modalities"] == ["metadata"] else
                  f"{gain:+.3f} (p {_num(r['gain_p'])}, {int(r['gain_folds'])} folds)")
        cells = [html.escape(" + ".join(r["modalities"])),
                 f"<code>{html.escape(r['config_id'])}</code>", str(int(r["configs"])),
                 f"{int(r['folds_done'])}/{int(r['folds_total'])}",
                 html.escape(f"{_num(mean)} ± {_num(std)}" if std is not None else _num(mean)),
                 _num(r["macro_f1_mean"]), html.escape(paired)]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ("<tr><th>modalities</th><th>best config</th><th>configs</th><th>folds</th>"
            "<th>QWK mean ± std</th><th>macro F1</th><th>Δ QWK vs metadata only</th></tr>")
    return ("<h2>Modality ablation</h2>\n<p>One row per set of modalities among the complete "
            "configs, best first: its best config under the rule, with that config's figures "
            "over its folds; Δ is its QWK minus the best metadata-only config's, paired over "
            f"the folds both ran ({html.escape(BASELINE_TEST)}).</p>\n"
            f"<table>{head}{''.join(body)}</table>")


def _best_summary(sweep: _Sweep, best: pd.DataFrame) -> str:
    """The best config's figures a clinician asks for, as means over its folds."""
    row = best.iloc[0]
    per_class = "; ".join(
        f"{kind} " + ", ".join(f"{name} {_num(row[f'{kind}_{name}_mean'])}"
                               for name in CLASS_NAMES)
        for kind in ("sensitivity", "specificity"))
    mean, std = _mean_std([q for _, _, q in _fold_qwks(row)])
    return (f"<p>Best under the rule: <code>{html.escape(row['config_id'])}</code>, QWK "
            f"{_num(mean)} ± {_num(std)} over {int(row['folds_done'])} fold(s); macro F1 "
            f"{_num(row['macro_f1_mean'])}, weighted F1 {_num(row['weighted_f1_mean'])}, ROC AUC "
            f"{_num(row['roc_auc_mean'])}, accuracy {_num(row['accuracy_mean'])}; "
            f"{html.escape(per_class)} (means over its folds, as recorded).</p>")


def _html(sweep: _Sweep, best: pd.DataFrame, figures: list[Figure]) -> str:
    name = sweep.name
    sections = "".join(
        f"<section id=\"{html.escape(Path(f.file).stem)}\"><h2>{html.escape(f.title)}</h2>"
        f"<img src=\"{html.escape(f.file)}\" alt=\"{html.escape(f.title)}\">"
        + (f"<p class=\"note\">{html.escape(f.note)}</p>" if f.note else "")
        + f"<p>{html.escape(f.caption)}</p></section>" for f in figures)
    contents = " · ".join(f"<a href=\"#{html.escape(Path(f.file).stem)}\">{html.escape(f.title)}"
                          f"</a>" for f in figures)
    rule = SELECTION_RULES[sweep.rule].description
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sweep {html.escape(name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left;
          vertical-align: top; }}
table.facts th {{ white-space: nowrap; color: #555; font-weight: normal; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
section {{ margin-top: 2em; }}
p.note {{ color: #8a4b00; }}
pre {{ background: #f6f6f6; padding: 0.8em; font-size: 0.8em; overflow-x: auto; }}
</style></head><body>
<h1>Sweep {html.escape(name)}</h1>
{_header(sweep)}
<h2>Ranking</h2>
<p>Ranked by the sweep's selection rule <code>{html.escape(sweep.rule)}</code>
({html.escape(rule)}); complete configs on the most folds first, then those on fewer folds,
then partial ones. QWK is the quadratic weighted kappa of the validation samples of a fold; the
mean, standard deviation and the other figures are over the config's finished folds. The forest
alone QWK is the config's own forest on the same folds; the fusion gain the difference.</p>
{_table(sweep, best)}
{_best_summary(sweep, best)}
{_ablation(sweep)}
<p>{contents}</p>
{sections}
</body></html>
"""
