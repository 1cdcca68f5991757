"""Property-based leakage checks over random synthetic cohorts: no patient is ever on both sides of
a split, and every fitted object (the inner out-of-fold fits and the full fit) saw training rows
only, never a row of a validation patient."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dfu_train.metadata.forest as forest_module
from dfu_train.config import ForestConfig, MetadataConfig
from dfu_train.data import schema
from dfu_train.data.cohort import load_cohort
from dfu_train.data.folds import assign_folds, split
from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.errors import ConfigError
from dfu_train.metadata.features import build_pipeline
from dfu_train.metadata.forest import fit_forest_outputs

PROPERTY = settings(max_examples=8, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _cohort(patients: int, seed: int):
    folder = Path(tempfile.mkdtemp(prefix="leak-"))
    return load_cohort(write_synthetic_cohort(folder, SynthSpec(patients=patients, seed=seed,
                                                                 images=False)))


class _FitSpy:
    """A pipeline that records the row labels of every table it is fitted on."""

    def __init__(self, inner, log: list):
        self.inner, self.log = inner, log

    def fit(self, table, y):
        self.log.append(set(table.index))
        self.inner.fit(table, y)
        return self

    def __getattr__(self, name):
        return getattr(self.inner, name)


@PROPERTY
@given(patients=st.integers(15, 70), seed=st.integers(0, 10_000), n_folds=st.integers(2, 5),
       fold_seed=st.integers(0, 10_000))
def test_no_patient_is_on_both_sides_of_any_split(patients, seed, n_folds, fold_seed):
    cohort = _cohort(patients, seed)
    try:
        folds = assign_folds(cohort, n_folds=n_folds, seed=fold_seed)
    except ConfigError:
        return  # too few patients of a class for this many folds: refused, which is correct
    groups = cohort.groups
    seen = np.zeros(len(groups), dtype=int)
    for fold in range(n_folds):
        train, val = split(folds, fold)
        assert not set(groups[train]) & set(groups[val])
        seen[val] += 1
    assert (seen == 1).all()  # every sample is validated exactly once


@PROPERTY
@given(patients=st.integers(20, 60), seed=st.integers(0, 10_000), sampler=st.sampled_from(
    ["none", "random_over", "smote"]))
def test_every_fit_sees_training_rows_only(patients, seed, sampler):
    cohort = _cohort(patients, seed)
    try:
        folds = assign_folds(cohort, n_folds=3, seed=seed)
    except ConfigError:
        return
    train_idx, val_idx = split(folds, 0)
    samples = cohort.samples
    log: list[set] = []
    pipeline = build_pipeline(MetadataConfig(sampler=sampler), ForestConfig(n_estimators=10),
                              columns=samples.columns, seed=0)
    with pytest.MonkeyPatch.context() as patch:  # one patch per generated example
        real_clone = forest_module.clone
        patch.setattr(forest_module, "clone", lambda p: _FitSpy(real_clone(p), log))
        fit_forest_outputs(pipeline, samples.iloc[train_idx], cohort.labels[train_idx],
                           cohort.groups[train_idx], samples.iloc[val_idx], inner_folds=3,
                           seed=seed)
    train_rows, val_rows = set(samples.index[train_idx]), set(samples.index[val_idx])
    val_patients = set(cohort.groups[val_idx])
    assert len(log) >= 3  # the inner fits and the full fit
    for fitted_on in log:
        assert fitted_on <= train_rows and not fitted_on & val_rows
        assert not set(samples.loc[sorted(fitted_on), schema.PATIENT]) & val_patients
    assert log[-1] == train_rows  # the full fit used every training row
    for inner in log[:-1]:  # each inner fit left out the patients it predicts
        assert inner < train_rows
