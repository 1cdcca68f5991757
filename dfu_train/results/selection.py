"""Selection rules: how configs are ranked, promoted and exported from their fold QWKs.

The fold spread of a config is often larger than the differences between configs, so the top
mean of a sweep is partly the luck of its folds. A rule turns each row's fold figures into an
order (best first):

* `mean`: the mean QWK over the folds.
* `mean_minus_std`: the earlier study's stability score, mean - 0.5 std: of two configs with
  the same mean, the steadier one.
* `one_se`: among the configs whose mean is within one standard error (std / sqrt(folds)) of
  the best mean, the simplest first (fewer trees, shallower, no resampling, no selection,
  fewer epochs: each parameter's `simpler` direction in the config schema); the others after
  them by mean.

A rule ranks the rows it is given; the leaderboard applies it within each group of comparable
rows (complete configs on the most folds first).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pandas as pd

from dfu_train.errors import ConfigError, did_you_mean

STD_WEIGHT = 0.5  # the study's stability score: mean - 0.5 std


@dataclass(frozen=True)
class SelectionRule:
    description: str
    order: Callable[[pd.DataFrame], pd.Series]  # rows -> sort key, smaller first


def _by_mean(rows: pd.DataFrame) -> pd.Series:
    return -rows["qwk_mean"]


def _by_mean_minus_std(rows: pd.DataFrame) -> pd.Series:
    return -stability_score(rows)


def stability_score(rows: pd.DataFrame) -> pd.Series:
    """mean - 0.5 std (a config on one fold has no spread to pay for)."""
    return rows["qwk_mean"] - STD_WEIGHT * rows["qwk_std"].astype(float).fillna(0.0)


def within_one_se(rows: pd.DataFrame) -> pd.Series:
    """Rows whose mean is within one standard error of the best row's mean (the best row's SE:
    its std over the square root of its folds)."""
    means = rows["qwk_mean"].astype(float)
    if means.notna().sum() == 0:
        return pd.Series(False, index=rows.index)
    best = means.idxmax()
    std, folds = rows.at[best, "qwk_std"], rows.at[best, "folds_done"]
    se = 0.0 if std is None or std != std or not folds else float(std) / math.sqrt(folds)
    return means >= means[best] - se - 1e-12


def complexity(params: pd.Series) -> pd.Series:
    """How complex each row's config is next to the others: for every swept parameter with a
    `simpler` direction, the row's rank among the rows (0 = simplest), summed. A parameter a
    config does not use (absent from its params) counts as simplest."""
    from dfu_train.config import simpler_direction

    total = pd.Series(0.0, index=params.index)
    names = sorted({name for row in params for name in row})
    for name in names:
        direction = simpler_direction(name)
        if direction is None:
            continue
        keys = params.map(lambda row, n=name, d=direction: _complexity_key(row, n, d))
        total += keys.rank(method="average") - keys.rank(method="average").min()
    return total


def _complexity_key(row: dict, name: str, direction: Any) -> float:
    if name not in row:
        return -math.inf
    value = row[name]
    if isinstance(direction, (list, tuple)):  # an order of values, simplest first
        return float(direction.index(value)) if value in direction else float(len(direction))
    if isinstance(value, (list, tuple)):  # widths: fewer, narrower layers; modalities: fewer
        value = sum(value) if all(isinstance(v, (int, float)) for v in value) else len(value)
    if isinstance(value, bool):
        value = float(value)
    if value is None:  # no limit (max_depth, select_k): the most complex
        return math.inf
    if not isinstance(value, (int, float)):
        return 0.0
    return float(value) if direction == "smaller" else -float(value)


def _by_one_se(rows: pd.DataFrame) -> pd.Series:
    inside = within_one_se(rows)
    simplest = complexity(rows["params"])
    # inside rows: by complexity then mean; outside rows after every inside row, by mean
    ranked = sorted(rows.index, key=lambda i: (not inside[i], simplest[i] if inside[i] else 0.0,
                                               -_number(rows.at[i, "qwk_mean"])))
    return pd.Series({index: position for position, index in enumerate(ranked)})


def _number(value) -> float:
    return -math.inf if value is None or value != value else float(value)


SELECTION_RULES = MappingProxyType({
    "mean": SelectionRule("mean QWK over the folds", _by_mean),
    "mean_minus_std": SelectionRule("mean - 0.5 std of QWK over the folds (the study's "
                                    "stability score)", _by_mean_minus_std),
    "one_se": SelectionRule("the simplest config within one standard error of the best mean",
                            _by_one_se),
})
DEFAULT_RULE = "mean_minus_std"


def checked_rule(name: str) -> str:
    if name not in SELECTION_RULES:
        raise ConfigError(f"unknown selection rule {name!r}{did_you_mean(name, SELECTION_RULES)}; "
                          f"choose from {', '.join(SELECTION_RULES)}")
    return name


def rank_by_rule(rows: pd.DataFrame, rule: str) -> pd.DataFrame:
    """`rows` best first under `rule` (rows without a mean last)."""
    if rows.empty:
        return rows
    scored = rows[rows["qwk_mean"].notna()]
    order = SELECTION_RULES[checked_rule(rule)].order(scored)
    ranked = scored.loc[order.sort_values(kind="stable").index]
    return pd.concat([ranked, rows[rows["qwk_mean"].isna()]])
