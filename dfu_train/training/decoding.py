"""From class probabilities to a phase: the rule a fold's recorded metrics use (`decode`).

The phase is ordinal (I < P < R) and scored by quadratic-weighted kappa, which punishes I<->R
confusions four times as much as neighbours; argmax ignores that order. `expected` and
`thresholds` cut the expected phase index sum_k k*p_k instead. `thresholds` learns its two cuts
on training samples only (their out-of-fold or in-sample probabilities), never on validation
rows, so the fold's score stays an honest held-out estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dfu_train.training.metrics import kappa

ROUNDING_CUTS = (0.5, 1.5)  # nearest class of the expected index (halves round up)
GRID = np.round(np.linspace(0.0, 2.0, 41), 2)  # candidate cuts, step 0.05


@dataclass(frozen=True)
class Decoder:
    """A fitted decoding rule: argmax (`cuts` None) or two cuts on the expected phase index."""

    rule: str
    cuts: tuple[float, float] | None = None
    fitted_on: int = 0  # training samples the cuts were learned from (0: a fixed rule)

    def predict(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, dtype=float)
        if self.cuts is None:
            return proba.argmax(axis=1)
        return cut(expected_index(proba), self.cuts)

    def describe(self) -> dict[str, Any]:
        """JSON-able, and enough for `from_description` to decode recorded probabilities."""
        return {"rule": self.rule, "cuts": None if self.cuts is None else list(self.cuts),
                "fitted_on": self.fitted_on}

    @classmethod
    def from_description(cls, described: dict | None) -> Decoder:
        """The decoder a fold recorded (`stages["decode"]`); argmax for records written before
        decoding was recorded, which all used argmax."""
        if not described:
            return cls("argmax")
        cuts = described.get("cuts")
        return cls(described["rule"], None if cuts is None else (float(cuts[0]), float(cuts[1])),
                   int(described.get("fitted_on", 0)))


@dataclass(frozen=True)
class DecodeRule:
    """One registry entry: `fit(train_proba, train_labels)` gives the cuts (None: argmax);
    `learns`: whether it reads training data (else the caller need not compute any)."""

    fit: Callable[[np.ndarray | None, np.ndarray | None], tuple[float, float] | None]
    learns: bool


def expected_index(proba: np.ndarray) -> np.ndarray:
    """The expected phase index sum_k k * p_k of each row, in [0, 2]."""
    proba = np.asarray(proba, dtype=float)
    return proba @ np.arange(proba.shape[1], dtype=float)


def cut(index: np.ndarray, cuts: tuple[float, float]) -> np.ndarray:
    """Class 0 below the first cut, 1 between, 2 at or above the second."""
    return (index >= cuts[0]).astype(int) + (index >= cuts[1]).astype(int)


def fit_thresholds(train_proba: np.ndarray, train_labels: np.ndarray) -> tuple[float, float]:
    """The cuts t1 <= t2 on a 0.05 grid that maximise kappa on the training samples. Ties go to
    the pair nearest plain rounding (0.5, 1.5), so flat stretches do not drift; deterministic.
    With fewer than two training classes kappa cannot rank cuts: plain rounding."""
    labels = np.asarray(train_labels)
    if len(np.unique(labels)) < 2:
        return ROUNDING_CUTS
    index = expected_index(train_proba)
    best, best_key = ROUNDING_CUTS, None
    for i, low in enumerate(GRID):
        for high in GRID[i:]:
            qwk = kappa(labels, cut(index, (low, high)))
            if qwk is None:
                continue
            key = (qwk, -abs(low - ROUNDING_CUTS[0]) - abs(high - ROUNDING_CUTS[1]))
            if best_key is None or key > best_key:
                best, best_key = (float(low), float(high)), key
    return best


DECODERS: dict[str, DecodeRule] = {
    "argmax": DecodeRule(lambda proba, labels: None, learns=False),
    "expected": DecodeRule(lambda proba, labels: ROUNDING_CUTS, learns=False),
    "thresholds": DecodeRule(fit_thresholds, learns=True),
}


def fit_decoder(rule: str, train_proba: np.ndarray | None = None,
                train_labels: np.ndarray | None = None) -> Decoder:
    """The decoder `rule` fitted on the training part of a fold (probabilities and labels of
    training samples only); rules that learn nothing ignore them."""
    entry = DECODERS[rule]
    if not entry.learns:
        return Decoder(rule, entry.fit(None, None))
    if train_proba is None or train_labels is None:
        raise ValueError(f"decode {rule!r} learns from the training samples: pass their "
                         "probabilities and labels")
    return Decoder(rule, entry.fit(train_proba, train_labels), fitted_on=len(train_labels))
