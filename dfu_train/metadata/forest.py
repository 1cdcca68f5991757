"""Forest probabilities for one fold: out-of-fold for training rows, full-fit for validation rows.

Fusion trains on the training rows' forest probabilities; in-sample ones would be near-perfect
(the forest memorises its rows) and teach the fusion head to trust the forest blindly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold

N_CLASSES = 3


@dataclass(frozen=True)
class ForestOutputs:
    train_proba: np.ndarray  # out-of-fold, (n_train, 3)
    val_proba: np.ndarray  # from the pipeline fitted on the whole training part, (n_val, 3)
    pipeline: object  # that fitted pipeline


def class_proba(pipeline, table: pd.DataFrame) -> np.ndarray:
    """predict_proba with one column per class 0..2, even if a class was absent when fitting."""
    proba = pipeline.predict_proba(table)
    out = np.zeros((len(table), N_CLASSES))
    out[:, pipeline.classes_.astype(int)] = proba
    return out


def fit_forest_outputs(pipeline, train: pd.DataFrame, y_train: np.ndarray, groups: np.ndarray,
                       val: pd.DataFrame, *, inner_folds: int, seed: int) -> ForestOutputs:
    """Fit clones of `pipeline` on inner patient-grouped folds of `train`, then on all of it."""
    n_splits = min(inner_folds, len(np.unique(groups)))
    oof = np.zeros((len(train), N_CLASSES))
    inner = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fit_rows, predict_rows in inner.split(train, y_train, groups):
        model = clone(pipeline).fit(train.iloc[fit_rows], y_train[fit_rows])
        oof[predict_rows] = class_proba(model, train.iloc[predict_rows])
    full = clone(pipeline).fit(train, y_train)
    return ForestOutputs(train_proba=oof, val_proba=class_proba(full, val), pipeline=full)
