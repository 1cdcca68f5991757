"""The earlier study's plain recipe and its combined resamplers: the forest options reach
scikit-learn, the combined samplers give the class counts they promise from the training part's
labels alone, and configs recorded before these options keep their ids."""

from __future__ import annotations

import pickle
import re
from collections import Counter

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE

import dfu_train.metadata.features as features_module
import dfu_train.metadata.forest as forest_module
from dfu_train.config import ForestConfig, MetadataConfig, TrialConfig
from dfu_train.data.folds import assign_folds, split
from dfu_train.data.sampling import majority_to_second, sampler_steps
from dfu_train.errors import ConfigError
from dfu_train.metadata.features import build_pipeline, check_parameters
from dfu_train.metadata.forest import class_proba, fit_forest_outputs
from dfu_train.sweep.space import parse_sweep

COMBINED = ["under_over", "under_smote"]
SMALL = ForestConfig(n_estimators=20, inner_folds=3)


def _table(counts, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    return rng.normal(size=(len(y), 4)) + y[:, None], y


def _resample(name, X, y, seed=0):
    steps = sampler_steps(name, seed=seed)
    for _, sampler in steps:
        X, y = sampler.fit_resample(X, y)
    return X, y, [step for step, _ in steps]


def _rows(X):
    return {tuple(row) for row in np.round(X, 12)}


@pytest.mark.parametrize("name", COMBINED)
def test_combined_samplers_take_the_majority_to_the_second_class_then_lift_the_rest(name):
    X, y = _table([60, 30, 10])
    X_res, y_res, steps = _resample(name, X, y)
    assert steps == ["resample_under", "resample_over"]
    assert Counter(y_res.tolist()) == {0: 30, 1: 30, 2: 30}
    original = _rows(X)
    kept = _rows(X_res[y_res == 1])
    assert kept == _rows(X[y == 1])  # the second class is neither cut nor grown
    assert _rows(X_res[y_res == 0]) < _rows(X[y == 0])  # 30 real majority rows, no new ones
    minority = _rows(X_res[y_res == 2])
    if name == "under_over":
        assert minority == _rows(X[y == 2])  # copies of real rows only
    else:
        assert _rows(X[y == 2]) < minority and len(minority - original) > 0  # synthetic rows


def test_the_under_sampling_target_comes_from_the_labels_it_is_fitted_on():
    assert majority_to_second(np.array([0] * 60 + [1] * 30 + [2] * 10)) == {0: 30}
    assert majority_to_second(np.array([2] * 7 + [0] * 3 + [1] * 5)) == {2: 5}
    X, y = _table([40, 5, 12])  # another table, the same sampler object: its own target
    under = sampler_steps("under_over", seed=0)[0][1]
    under.fit_resample(*_table([60, 30, 10]))
    assert Counter(under.fit_resample(X, y)[1].tolist()) == {0: 12, 1: 5, 2: 12}


@pytest.mark.parametrize("name", ["smote", "under_smote"])
@pytest.mark.parametrize("rare", [1, 2, 3])
def test_smote_works_for_a_class_with_k_rows_or_fewer(name, rare):
    """k drops to the class's rows - 1; a one-row class is copied, as random over-sampling
    does. Plain SMOTE (k=3) raises here."""
    X, y = _table([40, 20, rare])
    with pytest.raises(ValueError, match="n_neighbors"):
        SMOTE(k_neighbors=3, random_state=0).fit_resample(X, y)
    X_res, y_res, _ = _resample(name, X, y)
    target = 40 if name == "smote" else 20
    assert Counter(y_res.tolist()) == {0: target, 1: target, 2: target}
    made = X_res[y_res == 2]
    rows = X[y == 2]
    if rare == 1:
        assert np.array_equal(made, np.repeat(rows, target, axis=0))
    else:  # interpolated inside the class: within its bounding box
        assert (made >= rows.min(axis=0) - 1e-12).all() and (made <= rows.max(axis=0) + 1e-12).all()


def test_smote_is_plain_smote_when_every_class_has_enough_rows():
    """Configs that ran with `smote` before compute the same rows."""
    X, y = _table([60, 30, 10])
    ours = sampler_steps("smote", seed=5)[0][1].fit_resample(X, y)
    plain = SMOTE(k_neighbors=3, random_state=5).fit_resample(X, y)
    assert all(np.array_equal(a, b) for a, b in zip(ours, plain))


def _fold(cohort):
    folds = assign_folds(cohort, n_folds=5, seed=42)
    return split(folds, 0)


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


@pytest.mark.parametrize("name", COMBINED)
def test_combined_samplers_resample_training_rows_only(cohort, monkeypatch, name):
    train_idx, val_idx = _fold(cohort)
    samples = cohort.samples
    train, val = samples.iloc[train_idx], samples.iloc[val_idx]
    y_train = cohort.labels[train_idx]
    pipeline = build_pipeline(MetadataConfig(sampler=name), SMALL, columns=samples.columns, seed=0)
    names = [step for step, _ in pipeline.steps]
    assert names[-3:] == ["resample_under", "resample_over", "forest"]
    log: list[set] = []
    real_clone = forest_module.clone
    monkeypatch.setattr(forest_module, "clone", lambda p: _FitSpy(real_clone(p), log))
    outputs = fit_forest_outputs(pipeline, train, y_train, cohort.groups[train_idx], val,
                                 inner_folds=3, seed=0)
    train_rows = set(samples.index[train_idx])
    assert len(log) >= 3 and all(rows <= train_rows for rows in log)
    assert not set().union(*log) & set(samples.index[val_idx])
    assert log[-1] == train_rows
    assert outputs.val_proba.shape == (len(val), 3)
    assert np.allclose(outputs.val_proba.sum(axis=1), 1.0)
    assert np.array_equal(class_proba(outputs.pipeline, val), outputs.val_proba)  # no resampling
    # the full fit's under-sampler saw exactly the training part's labels
    counts = Counter(y_train.tolist())
    (_, largest), (_, second), *_ = counts.most_common()
    under = outputs.pipeline.named_steps["resample_under"]
    assert len(under.sample_indices_) == len(y_train) - (largest - second)
    assert under.sample_indices_.max() < len(y_train)
    pickle.loads(pickle.dumps(outputs.pipeline.inner))  # picklable, as Ray may ship it


def test_forest_options_reach_the_random_forest(cohort):
    def forest(**options):
        config = TrialConfig().override({f"forest.{k}": v for k, v in options.items()})
        pipeline = build_pipeline(config.metadata, config.forest,
                                  columns=cohort.samples.columns, seed=0)
        return pipeline.named_steps["forest"]

    assert forest().min_samples_split == 2 and forest().class_weight == "balanced"
    assert forest(min_samples_split=4).min_samples_split == 4
    assert forest(class_weight="balanced_subsample").class_weight == "balanced_subsample"
    assert forest(class_weight="none").class_weight is None


def test_configs_at_the_new_defaults_keep_their_ids():
    # literals computed before min_samples_split and the combined samplers existed: they guard
    # the ids of recorded sweeps, exports and cached artifacts
    assert TrialConfig().config_id == "a15dce4acf"
    assert TrialConfig(modalities=("metadata", "thermal_map")).config_id == "ddc9336aff"
    assert TrialConfig().override({"forest.min_samples_split": 2}).config_id == "a15dce4acf"


@pytest.mark.parametrize("values", [{"forest.min_samples_split": 4},
                                    {"forest.class_weight": "balanced_subsample"},
                                    {"metadata.sampler": "under_over"},
                                    {"metadata.sampler": "under_smote"}])
def test_new_values_change_the_id(values):
    changed = TrialConfig().override(values)
    assert changed.config_id != TrialConfig().config_id
    assert set(values) <= changed.used_names()


@pytest.mark.parametrize(("where", "value", "message"), [
    ("fixed", {"forest.min_samples_split": 1}, r"forest.min_samples_split: Input should be "
                                               r"greater than or equal to 2 \(got 1\)"),
    ("fixed", {"forest.min_samples_split": 2.5}, r"forest.min_samples_split: Input should be a "
                                                 r"valid integer"),
    ("space", {"forest.min_samples_split": {"choice": [2, 0]}},
     r"forest.min_samples_split: Input should be greater than or equal to 2 \(got 0\)"),
    ("fixed", {"forest.class_weight": "inverse_frequency"},
     r"forest.class_weight: Input should be 'balanced', 'balanced_subsample' or 'none'"),
    ("fixed", {"metadata.sampler": "under_smot"},
     r"metadata.sampler: unknown sampler 'under_smot' \(did you mean 'under_smote'\?\)"),
])
def test_sweep_files_refuse_bad_values_with_one_config_error(where, value, message):
    with pytest.raises(ConfigError, match=rf"^study.yaml: {message}") as caught:
        parse_sweep({"search": {"num_samples": 2}, where: value}, source="study.yaml")
    assert "\n" not in str(caught.value)


def test_library_refusals_name_the_key_for_the_new_parameter_and_steps(monkeypatch):
    """Behind the config's bounds: a value that slipped past them (built without validation)
    is refused with the key that set it, whichever resampling step holds it."""
    bad = ForestConfig.model_construct(**{**dict(ForestConfig()), "min_samples_split": 1})
    with pytest.raises(ConfigError, match=r"^forest.min_samples_split: The 'min_samples_split' "):
        check_parameters(MetadataConfig(sampler="under_smote"), bad)
    real = features_module.sampler_steps

    def broken(name, *, seed):
        steps = real(name, seed=seed)
        steps[-1][1].set_params(k_neighbors=0)
        return steps

    monkeypatch.setattr(features_module, "sampler_steps", broken)
    with pytest.raises(ConfigError, match=re.escape("metadata.sampler: The 'k_neighbors' ")):
        check_parameters(MetadataConfig(sampler="under_smote"), ForestConfig())
