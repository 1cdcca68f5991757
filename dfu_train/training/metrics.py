"""One definition of every metric, from scikit-learn, used by folds, sweeps and the leaderboard."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import (accuracy_score, cohen_kappa_score, f1_score,
                             multilabel_confusion_matrix, recall_score, roc_auc_score)

from dfu_train.data.schema import CLASS_NAMES

if TYPE_CHECKING:
    from dfu_train.training.decoding import Decoder

LABELS = list(range(len(CLASS_NAMES)))
# every key `classification_metrics` returns, in order
METRIC_KEYS = ("qwk", "accuracy", "macro_f1", "weighted_f1",
               *(f"f1_{name}" for name in CLASS_NAMES),
               *(f"sensitivity_{name}" for name in CLASS_NAMES),
               *(f"specificity_{name}" for name in CLASS_NAMES), "roc_auc")


def kappa(y_true: np.ndarray, y_pred: np.ndarray,
          sample_weight: np.ndarray | None = None) -> float | None:
    """Quadratic-weighted kappa of predicted labels; None (not 0) where it is undefined, e.g. a
    single class in both truth and prediction."""
    with np.errstate(divide="ignore", invalid="ignore"):
        qwk = cohen_kappa_score(y_true, y_pred, labels=LABELS, weights="quadratic",
                                sample_weight=sample_weight)
    return None if math.isnan(qwk) else float(qwk)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, *,
                           y_pred: np.ndarray | None = None,
                           decoder: Decoder | None = None) -> dict[str, float | None]:
    """Kappa, accuracy, F1 (macro, weighted, per class) and one-vs-rest sensitivity and
    specificity of the predicted labels, and one-vs-rest macro ROC AUC of `proba`.

    The labels are `y_pred`, else `decoder.predict(proba)`, else the argmax: an ordinal decoder
    changes what is predicted, never the probabilities the AUC ranks. A figure that is undefined
    (a class absent from the truth, kappa of one class against itself) is None, not 0.
    """
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=float)
    if y_pred is None:
        y_pred = decoder.predict(proba) if decoder is not None else proba.argmax(axis=1)
    y_pred = np.asarray(y_pred)
    per_class = f1_score(y_true, y_pred, labels=LABELS, average=None, zero_division=0)
    sensitivity = recall_score(y_true, y_pred, labels=LABELS, average=None,
                               zero_division=np.nan)
    matrices = multilabel_confusion_matrix(y_true, y_pred, labels=LABELS)  # [[tn, fp], [fn, tp]]
    negatives = matrices[:, 0, :].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        specificity = np.where(negatives > 0, matrices[:, 0, 0] / np.maximum(negatives, 1), np.nan)
    return {
        "qwk": kappa(y_true, y_pred),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=LABELS, average="macro",
                                   zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=LABELS, average="weighted",
                                      zero_division=0)),
        **{f"f1_{name}": float(v) for name, v in zip(CLASS_NAMES, per_class)},
        **{f"sensitivity_{name}": _defined(v) for name, v in zip(CLASS_NAMES, sensitivity)},
        **{f"specificity_{name}": _defined(v) for name, v in zip(CLASS_NAMES, specificity)},
        "roc_auc": roc_auc(y_true, proba),
    }


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float | None:
    """One-vs-rest macro ROC AUC; None unless every class occurs in `y_true` (one-vs-rest has
    no negatives or no positives for a missing class)."""
    if set(np.unique(y_true)) != set(LABELS):
        return None
    return _defined(roc_auc_score(y_true, proba, multi_class="ovr", average="macro",
                                  labels=LABELS))


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
