"""One definition of every metric, from scikit-learn, used by folds, sweeps and the leaderboard."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

from dfu_train.data.schema import CLASS_NAMES

LABELS = list(range(len(CLASS_NAMES)))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float | None]:
    """Quadratic-weighted kappa, accuracy, macro F1 and per-class F1 of argmax predictions.

    Kappa is None (not 0) where it is undefined, e.g. a single class in both truth and prediction.
    """
    y_pred = np.asarray(proba).argmax(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        qwk = cohen_kappa_score(y_true, y_pred, labels=LABELS, weights="quadratic")
    per_class = f1_score(y_true, y_pred, labels=LABELS, average=None, zero_division=0)
    return {
        "qwk": None if math.isnan(qwk) else float(qwk),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=LABELS, average="macro",
                                   zero_division=0)),
        **{f"f1_{name}": float(v) for name, v in zip(CLASS_NAMES, per_class)},
    }
