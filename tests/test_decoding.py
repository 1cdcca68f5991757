"""Decoding probabilities into an ordinal phase (`decode`): argmax is today's rule, `expected`
rounds the expected phase index, `thresholds` cuts it where kappa on the training part is best,
and the cuts never see a validation row."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

import dfu_train.training.fold as fold_module
from dfu_train.config import TrialConfig
from dfu_train.data import schema
from dfu_train.data.cohort import load_cohort
from dfu_train.data.folds import assign_folds, split
from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.training.decoding import (DECODERS, Decoder, expected_index, fit_decoder,
                                         fit_thresholds)
from dfu_train.training.fold import run_fold
from dfu_train.training.metrics import classification_metrics, kappa
from dfu_train.training.stages import ImageStages

META = TrialConfig().override({"forest.n_estimators": 20, "forest.inner_folds": 3,
                               "cv.n_folds": 3})
FUSION = TrialConfig().override({
    "modalities": ["metadata", "thermal_map"], "seed": 1, "cv.n_folds": 3,
    "forest.n_estimators": 20, "forest.inner_folds": 3, "image.size": 16,
    "thermal_map.pretrain_epochs": 1, "stage1.epochs": 2, "stage2.epochs": 0,
})


def _overconfident_in_p(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A model that always leans to P but keeps the order: I samples put 0.4 on I, R samples
    0.4 on R. Argmax says P for everyone; the expected index still separates the phases."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    lean = rng.uniform(0.3, 0.45, n)
    proba = np.zeros((n, 3))
    proba[labels == 0] = np.c_[lean, 1 - lean, np.zeros(n)][labels == 0]
    proba[labels == 1] = np.c_[lean / 3, 1 - 2 * lean / 3, lean / 3][labels == 1]
    proba[labels == 2] = np.c_[np.zeros(n), 1 - lean, lean][labels == 2]
    return proba, labels


def test_argmax_is_todays_rule():
    rng = np.random.default_rng(0)
    proba, labels = rng.dirichlet([1, 1, 1], 200), rng.integers(0, 3, 200)
    decoder = fit_decoder("argmax")
    assert (decoder.predict(proba) == proba.argmax(axis=1)).all()
    assert decoder.describe() == {"rule": "argmax", "cuts": None, "fitted_on": 0}
    plain = classification_metrics(labels, proba)
    assert classification_metrics(labels, proba, decoder=decoder) == plain
    assert plain["qwk"] == kappa(labels, proba.argmax(axis=1))


def test_expected_rounds_the_expected_phase_index():
    proba = np.array([[1, 0, 0], [0.6, 0.3, 0.1], [0.5, 0.5, 0], [0.3, 0.3, 0.4],
                      [0.1, 0.3, 0.6], [0, 0.5, 0.5], [0, 0, 1], [0.45, 0.1, 0.45]])
    index = expected_index(proba)
    assert np.allclose(index, [0, 0.5, 0.5, 1.1, 1.5, 1.5, 2, 1.0])
    # halves round up; the bimodal last row is P, the middle of the order, where argmax says I
    assert list(fit_decoder("expected").predict(proba)) == [0, 1, 1, 1, 2, 2, 2, 1]
    assert fit_decoder("expected").describe()["cuts"] == [0.5, 1.5]


def test_thresholds_beat_argmax_where_the_ordinal_cut_matters():
    train_proba, train_labels = _overconfident_in_p(300, seed=1)
    val_proba, val_labels = _overconfident_in_p(200, seed=2)
    decoder = fit_decoder("thresholds", train_proba, train_labels)
    low, high = decoder.cuts
    assert 0 <= low <= high <= 2 and decoder.fitted_on == 300
    argmax_qwk = classification_metrics(val_labels, val_proba)["qwk"]
    rounded_qwk = classification_metrics(val_labels, val_proba,
                                         decoder=fit_decoder("expected"))["qwk"]
    fitted = classification_metrics(val_labels, val_proba, decoder=decoder)
    assert argmax_qwk is None or argmax_qwk < 0.05  # argmax says P for every sample
    assert rounded_qwk is None or rounded_qwk < 0.05
    assert fitted["qwk"] > 0.9, decoder.describe()
    # the probabilities did not change: the AUC is the argmax one
    assert fitted["roc_auc"] == classification_metrics(val_labels, val_proba)["roc_auc"]


def test_thresholds_are_deterministic_json_and_round_trip():
    proba, labels = _overconfident_in_p(120, seed=3)
    first, again = (fit_decoder("thresholds", proba, labels) for _ in range(2))
    assert first == again
    described = json.loads(json.dumps(first.describe()))
    assert Decoder.from_description(described) == first
    assert (Decoder.from_description(described).predict(proba) == first.predict(proba)).all()
    assert Decoder.from_description(None) == Decoder("argmax")  # records from before decoding


def test_thresholds_fall_back_to_rounding_with_one_training_class():
    proba = np.random.default_rng(0).dirichlet([1, 1, 1], 30)
    assert fit_thresholds(proba, np.ones(30, dtype=int)) == (0.5, 1.5)
    with pytest.raises(ValueError, match="learns from the training samples"):
        fit_decoder("thresholds")


def test_the_config_offers_exactly_the_registered_decoders_and_ids_stay():
    assert get_args(TrialConfig.model_fields["decode"].annotation) == tuple(DECODERS)
    for base in (META, FUSION):
        assert base.decode == "argmax"
        assert base.override({"decode": "argmax"}).config_id == base.config_id
        assert "decode" not in base.identity()  # at its default: ids of recorded sweeps stay
        ids = {base.override({"decode": d}).config_id for d in DECODERS}
        assert len(ids) == 3  # a decoder changes the recorded metrics: part of the identity


def _fixed_split(monkeypatch, cohort, config):
    """Freeze the fold assignment of `cohort`, so a copy with other validation labels is split
    the same way (the folds are stratified by label)."""
    folds = assign_folds(cohort, n_folds=config.cv.n_folds, seed=config.cv.seed)
    monkeypatch.setattr(fold_module, "assign_folds", lambda c, n_folds, seed: folds)
    return split(folds, 0)


def _spy_fits(monkeypatch) -> list[tuple[np.ndarray, np.ndarray]]:
    seen = []
    real = fold_module.fit_decoder

    def spy(rule, proba=None, labels=None):
        seen.append((None if proba is None else np.array(proba), np.array(labels)))
        return real(rule, proba, labels)

    monkeypatch.setattr(fold_module, "fit_decoder", spy)
    return seen


def test_thresholds_never_see_validation_rows_metadata_only(monkeypatch):
    """Rewrite every validation label and metadata value: the cuts, and every row the fit was
    given, stay exactly the same, while the validation score moves."""
    root = write_synthetic_cohort(Path(tempfile.mkdtemp(prefix="decode-")),
                                  SynthSpec(patients=45, seed=5, images=False))
    cohort = load_cohort(root)
    config = META.override({"decode": "thresholds"})
    train_idx, val_idx = _fixed_split(monkeypatch, cohort, config)
    samples = cohort.samples.copy()
    rng = np.random.default_rng(0)
    samples.loc[samples.index[val_idx], "label"] = rng.integers(0, 3, len(val_idx))
    for column in schema.NUMERIC_FEATURES:
        if column in samples and samples[column].notna().any():
            samples[column] = samples[column].astype(float)
            values = samples[column].to_numpy()[val_idx]
            samples.loc[samples.index[val_idx], column] = values[::-1] * 3 + 1
    poisoned = dataclasses.replace(cohort, samples=samples, fingerprint="poisoned-copy")

    runs = []
    for data in (cohort, poisoned):
        seen = _spy_fits(monkeypatch)
        runs.append((run_fold(config, data, 0), seen))
    (clean, clean_seen), (dirty, dirty_seen) = runs
    for _, seen in runs:
        assert seen, "the decoder was never fitted"
        for proba, labels in seen:  # only the training part's samples, in order
            assert len(proba) == len(labels) == len(train_idx)
            assert (labels == cohort.labels[train_idx]).all()
    for (p1, y1), (p2, y2) in zip(clean_seen, dirty_seen):
        assert np.array_equal(p1, p2) and np.array_equal(y1, y2)
    assert clean.stages["decode"] == {**dirty.stages["decode"],
                                      "seconds": clean.stages["decode"]["seconds"]}
    assert clean.stages["decode"]["fitted_on"] == len(train_idx)
    assert clean.metrics != dirty.metrics  # the rewrite reached the validation score


def test_fusion_thresholds_are_fitted_on_training_samples_only(cohort, monkeypatch):
    """In a fusion trial the cuts are fitted on the final model's training-sample
    probabilities (every one from `train_predictions`) with the training labels, and the
    forest's cuts on its out-of-fold training probabilities."""
    config = FUSION.override({"decode": "thresholds"})
    train_idx, val_idx = _fixed_split(monkeypatch, cohort, config)
    seen = _spy_fits(monkeypatch)
    made = []
    real = ImageStages.train_predictions
    monkeypatch.setattr(ImageStages, "train_predictions",
                        lambda self, model: made.append(real(self, model)) or made[-1])
    result = run_fold(config, cohort, 0)
    assert len(made) == 1 and len(seen) == 2  # the fused model's cuts, then the forest's
    (fused_proba, fused_labels), (forest_proba, forest_labels) = seen
    assert np.array_equal(fused_proba, made[0])
    for proba, labels in seen:
        assert len(proba) == len(train_idx) and (labels == cohort.labels[train_idx]).all()
    assert not np.allclose(fused_proba, forest_proba)  # the model's, not the forest's
    decode = result.stages["decode"]
    assert decode["rule"] == "thresholds" and decode["fitted_on"] == len(train_idx)
    assert decode["meta"]["rule"] == "thresholds" and decode["meta"]["fitted_on"] == len(train_idx)
    # the recorded qwk is the recorded cuts applied to the recorded probabilities
    val_proba = np.array([s["proba"] for s in result.val_samples])
    labels = np.array([s["label"] for s in result.val_samples])
    assert result.qwk == pytest.approx(
        kappa(labels, Decoder.from_description(decode).predict(val_proba)), abs=1e-9)
    assert result.fusion_gain == pytest.approx(result.qwk - result.meta_qwk)


@pytest.mark.parametrize("config", [META, FUSION], ids=["metadata-only", "fusion"])
def test_decoding_changes_labels_never_probabilities(cohort, config):
    """Every rule runs on a metadata-only and a fusion trial; the trained model and its
    probabilities are the same under each (a decoder is fitted after training), and training
    reports stay argmax."""
    runs = {}
    for rule in DECODERS:
        reports = []
        runs[rule] = (run_fold(config.override({"decode": rule}), cohort, 1,
                               report=lambda m, c: reports.append(m)), reports)
    argmax, argmax_reports = runs["argmax"]
    for rule, (result, reports) in runs.items():
        assert result.val_samples == argmax.val_samples
        assert result.metrics["roc_auc"] == argmax.metrics["roc_auc"]
        assert result.metrics["row_qwk"] == argmax.metrics["row_qwk"]
        assert result.stages["decode"]["rule"] == rule
        assert [r["val_qwk"] for r in reports[:-1]] == [r["val_qwk"] for r in argmax_reports[:-1]]
        assert reports[-1]["val_qwk"] == result.qwk  # the final report is the recorded one
    assert argmax.stages["decode"]["cuts"] is None
    assert runs["expected"][0].stages["decode"]["cuts"] == [0.5, 1.5]
