"""Patient-grouped stratified folds: every trial of a sweep sees exactly the same splits."""

from __future__ import annotations

import hashlib

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from dfu_train.data import schema
from dfu_train.data.cohort import Cohort
from dfu_train.errors import ConfigError


def assign_folds(cohort: Cohort, *, n_folds: int, seed: int) -> np.ndarray:
    """The validation fold of every sample (aligned with `cohort.samples`)."""
    check_fold_count(cohort, n_folds)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(cohort.samples), -1, dtype=int)
    for k, (_, val) in enumerate(splitter.split(cohort.samples, cohort.labels, cohort.groups)):
        folds[val] = k
    return folds


def check_fold_count(cohort: Cohort, n_folds: int) -> None:
    """Refuse more folds than the patients of the rarest class can fill."""
    patients = cohort.samples.groupby("label")[schema.PATIENT].nunique()
    for code, name in enumerate(schema.CLASS_NAMES):
        count = int(patients.get(code, 0))
        if count < n_folds:
            raise ConfigError(f"cv.n_folds={n_folds}, but only {count} patients have class "
                              f"{name!r}; use at most {max(count, 2)} folds")


def split(folds: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) of one fold."""
    n_folds = int(folds.max()) + 1
    if not 0 <= fold < n_folds:
        raise ConfigError(f"fold {fold} does not exist; folds are 0..{n_folds - 1}")
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)


def fold_fingerprint(cohort: Cohort, folds: np.ndarray) -> str:
    """Hash of (sample, fold) pairs: equal fingerprints mean identical splits."""
    pairs = sorted(zip(cohort.samples["sample_id"], folds.tolist()))
    return hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]
