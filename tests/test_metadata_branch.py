"""The forest is fitted inside the fold only, sees no leakage, and its training probabilities are
out-of-fold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from dfu_train.config import ForestConfig, MetadataConfig, TrialConfig
from dfu_train.data import schema
from dfu_train.data.folds import assign_folds, split
from dfu_train.metadata.features import ENGINEERED, build_pipeline
from dfu_train.metadata.forest import class_proba, fit_forest_outputs
from dfu_train.training.fold import run_fold

SMALL = ForestConfig(n_estimators=40, inner_folds=3)


def _fold(cohort, fold=0):
    folds = assign_folds(cohort, n_folds=5, seed=42)
    train_idx, val_idx = split(folds, fold)
    return cohort.samples.iloc[train_idx], cohort.samples.iloc[val_idx], train_idx, val_idx


def _pipeline(cohort, metadata=MetadataConfig(), forest=SMALL):
    return build_pipeline(metadata, forest, columns=cohort.samples.columns, seed=0)


def test_leakage_columns_cannot_reach_the_forest(cohort):
    train, _, train_idx, _ = _fold(cohort)
    y = cohort.labels[train_idx]
    fitted = _pipeline(cohort).fit(train, y)
    leaky = train.copy()
    leaky["Phase Confidence (%)"] = y * 100.0
    leaky["Healing Phase"] = [schema.CLASS_NAMES[v] for v in y]
    leaky[schema.PATIENT] = y
    refitted = _pipeline(cohort).fit(leaky, y)
    n_expected = len([c for c in schema.FEATURES if c in train.columns]) + len(ENGINEERED)
    assert fitted.named_steps["forest"].n_features_in_ == n_expected
    assert np.array_equal(class_proba(fitted, train), class_proba(refitted, leaky))


def test_changing_validation_rows_does_not_change_what_was_fitted(cohort):
    train, val, train_idx, _ = _fold(cohort)
    y = cohort.labels[train_idx]
    groups = cohort.groups[train_idx]
    a = fit_forest_outputs(_pipeline(cohort), train, y, groups, val, inner_folds=3, seed=0)
    scrambled = val.copy()
    for column in ("Wound Centre Temperature (°C)", "Age", "Weight (Kg)"):
        scrambled[column] = scrambled[column].sample(frac=1, random_state=1).to_numpy() + 50
    b = fit_forest_outputs(_pipeline(cohort), train, y, groups, scrambled, inner_folds=3, seed=0)
    assert np.array_equal(a.train_proba, b.train_proba)
    for step in ("impute", "scale"):
        left, right = a.pipeline.named_steps[step], b.pipeline.named_steps[step]
        for attribute in ("mean_", "scale_", "_fit_X"):
            if hasattr(left, attribute):
                assert np.array_equal(getattr(left, attribute), getattr(right, attribute),
                                      equal_nan=True)
    assert not np.array_equal(a.val_proba, b.val_proba)  # validation rows were really changed


def test_training_probabilities_are_out_of_fold_not_in_sample(cohort):
    train, val, train_idx, _ = _fold(cohort)
    y = cohort.labels[train_idx]
    outputs = fit_forest_outputs(_pipeline(cohort), train, y, cohort.groups[train_idx], val,
                                 inner_folds=3, seed=0)
    in_sample = class_proba(outputs.pipeline, train)
    oof_accuracy = (outputs.train_proba.argmax(1) == y).mean()
    in_sample_accuracy = (in_sample.argmax(1) == y).mean()
    assert in_sample_accuracy > 0.95  # the forest memorises its rows ...
    assert oof_accuracy < in_sample_accuracy - 0.2  # ... which OOF probabilities do not show
    assert np.allclose(outputs.train_proba.sum(axis=1), 1.0)


def test_unknown_category_becomes_missing_not_a_number(cohort):
    train, _, train_idx, _ = _fold(cohort)
    fitted = _pipeline(cohort).fit(train, cohort.labels[train_idx])
    encode = fitted.named_steps["encode"]
    odd = train.head(3).copy()
    odd["Foot Aspect"] = "Sideways"
    encoded = encode.transform(fitted.named_steps["engineered"].transform(odd))
    column = len(encode.transformers_[0][2]) + encode.transformers_[1][2].index("Foot Aspect")
    assert np.isnan(encoded[:, column]).all()


@pytest.mark.parametrize("sampler", ["random_over", "random_under", "smote"])
def test_resampling_is_fitted_inside_the_pipeline_only(cohort, sampler):
    train, val, train_idx, _ = _fold(cohort)
    pipeline = _pipeline(cohort, MetadataConfig(sampler=sampler))
    fitted = clone(pipeline).fit(train, cohort.labels[train_idx])
    assert class_proba(fitted, val).shape == (len(val), 3)  # predicting never resamples
    assert "resample" in fitted.named_steps


def test_label_permuted_cohort_scores_near_zero(cohort):
    """Any leak of the label (or of patient identity) would show as clearly positive kappa."""
    config = TrialConfig().override({"forest.n_estimators": 40, "forest.inner_folds": 3})
    qwks = []
    for seed in range(3):
        shuffled = cohort.with_labels(np.random.default_rng(seed).permutation(cohort.labels))
        qwks += [run_fold(config, shuffled, fold).qwk for fold in range(5)]
    assert abs(float(np.mean(qwks))) < 0.1


def test_real_labels_score_well_above_permuted(cohort):
    config = TrialConfig().override({"forest.n_estimators": 40, "forest.inner_folds": 3})
    qwks = [run_fold(config, cohort, fold).qwk for fold in range(5)]
    assert float(np.mean(qwks)) > 0.25
