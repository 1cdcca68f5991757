"""Clinical metrics of a fold (sensitivity, specificity, weighted F1, ROC AUC, QWK on the imaged
samples), their records, and the patient bootstrap interval of `dfu cv`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, recall_score, roc_auc_score
from typer.testing import CliRunner

import dfu_train.training.cv as cv_module
from dfu_train.cli import app
from dfu_train.config import TrialConfig
from dfu_train.data import schema
from dfu_train.data.folds import assign_folds, split
from dfu_train.results.records import FoldRecord, validated
from dfu_train.training.cv import bootstrap_qwk_ci, run_cv, summarize_cv
from dfu_train.training.fold import run_fold
from dfu_train.training.metrics import METRIC_KEYS, classification_metrics, kappa

META = TrialConfig().override({"forest.n_estimators": 20, "forest.inner_folds": 3,
                               "cv.n_folds": 3})
FUSION = TrialConfig().override({
    "modalities": ["metadata", "thermal_map"], "seed": 1, "cv.n_folds": 3,
    "forest.n_estimators": 20, "forest.inner_folds": 3, "image.size": 16,
    "thermal_map.pretrain_epochs": 1, "stage1.epochs": 1, "stage2.epochs": 0,
})
NEW_KEYS = {"weighted_f1", "roc_auc", "qwk_imaged", "n_imaged",
            *(f"{kind}_{c}" for kind in ("sensitivity", "specificity") for c in schema.CLASS_NAMES)}


def test_metrics_are_scikit_learns():
    rng = np.random.default_rng(0)
    labels, proba = rng.integers(0, 3, 150), rng.dirichlet([1, 1, 1], 150)
    pred = proba.argmax(axis=1)
    metrics = classification_metrics(labels, proba)
    assert tuple(metrics) == METRIC_KEYS
    matrix = confusion_matrix(labels, pred, labels=[0, 1, 2])
    for k, name in enumerate(schema.CLASS_NAMES):
        negatives = np.delete(np.delete(matrix, k, axis=0), k, axis=1).sum()
        fp = np.delete(matrix[:, k], k).sum()
        assert metrics[f"specificity_{name}"] == pytest.approx(negatives / (negatives + fp))
        assert metrics[f"sensitivity_{name}"] == pytest.approx(
            recall_score(labels == k, pred == k))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(labels, pred, average="weighted"))
    assert metrics["roc_auc"] == pytest.approx(
        roc_auc_score(labels, proba, multi_class="ovr", average="macro"))


def test_undefined_metrics_are_none_not_zero():
    proba = np.array([[0.8, 0.2, 0], [0.3, 0.7, 0], [0.6, 0.4, 0], [0.1, 0.9, 0]])
    no_r = classification_metrics(np.array([0, 1, 0, 1]), proba)
    assert no_r["sensitivity_R"] is None and no_r["roc_auc"] is None
    assert no_r["specificity_R"] == 1.0 and no_r["sensitivity_I"] == 1.0
    only_i = classification_metrics(np.zeros(4, dtype=int), proba)
    assert only_i["specificity_I"] is None and only_i["roc_auc"] is None
    assert only_i["specificity_P"] == 0.5


def test_given_labels_change_the_label_metrics_not_the_auc():
    rng = np.random.default_rng(1)
    labels, proba = rng.integers(0, 3, 90), rng.dirichlet([1, 1, 1], 90)
    other = (proba.argmax(axis=1) + 1) % 3
    plain, given = classification_metrics(labels, proba), classification_metrics(
        labels, proba, y_pred=other)
    assert given["roc_auc"] == plain["roc_auc"]
    assert given["qwk"] == kappa(labels, other) and given["accuracy"] != plain["accuracy"]


def test_a_metadata_fold_records_every_metric_and_records_accept_them(cohort):
    result = run_fold(META, cohort, 0)
    assert NEW_KEYS <= set(result.metrics)
    assert result.metrics["qwk_imaged"] is None and result.metrics["n_imaged"] is None
    assert result.stages["decode"]["rule"] == "argmax"
    record, problem = validated(FoldRecord, json.loads(json.dumps(result.to_dict())))
    assert problem is None
    assert record["metrics"] == result.metrics  # extra metric keys kept as they are
    assert record["stages"]["decode"] == result.stages["decode"]


def test_qwk_imaged_scores_the_samples_with_every_image_modality(cohort):
    result = run_fold(FUSION, cohort, 2)
    _, val = split(assign_folds(cohort, n_folds=3, seed=FUSION.cv.seed), 2)
    rows = cohort.image_rows.dropna(subset=[f"{schema.IMAGE_FOLDERS['thermal_map'][1]}_file"])
    val_ids = cohort.samples["sample_id"].to_numpy()[val]
    imaged = np.isin(val_ids, rows["sample_id"].to_numpy())
    assert 0 < imaged.sum() < len(val)  # the cohort has samples without thermal frames
    assert result.metrics["n_imaged"] == int(imaged.sum())
    labels = np.array([s["label"] for s in result.val_samples])
    pred = np.array([s["proba"] for s in result.val_samples]).argmax(axis=1)
    assert result.metrics["qwk_imaged"] == pytest.approx(kappa(labels[imaged], pred[imaged]))
    assert result.qwk == pytest.approx(kappa(labels, pred))


def _folds(patients: dict[str, str], seed: int, accuracy: float = 0.7) -> list[dict]:
    """Fold summaries of one fold seed whose predictions are right with `accuracy`."""
    rng = np.random.default_rng(seed)
    preds = []
    for sid in patients:
        label = int(rng.integers(0, 3))
        pred = label if rng.random() < accuracy else int(rng.integers(0, 3))
        preds.append({"sample_id": sid, "label": label, "pred": pred})
    half = len(preds) // 2
    return [{"fold_seed": seed, "fold": 0, "predictions": preds[:half]},
            {"fold_seed": seed, "fold": 1, "predictions": preds[half:]}]


def _patients(counts: list[int]) -> dict[str, str]:
    return {f"s{p}-{k}": f"p{p}" for p, count in enumerate(counts) for k in range(count)}


def test_the_interval_holds_the_pooled_qwk_and_is_reproducible():
    patients = _patients([1, 2, 3] * 15)
    folds = _folds(patients, seed=0) + _folds(patients, seed=1)
    first = bootstrap_qwk_ci(folds, patients, n_resamples=300, seed=7)
    lo, hi = first["qwk_ci95"]
    assert lo <= first["qwk_pooled"] <= hi and lo < hi
    assert bootstrap_qwk_ci(folds, patients, n_resamples=300, seed=7) == first
    assert bootstrap_qwk_ci(folds, patients, n_resamples=300, seed=8)["qwk_ci95"] != [lo, hi]
    pooled = [kappa(np.array([p["label"] for f in pair for p in f["predictions"]]),
                    np.array([p["pred"] for f in pair for p in f["predictions"]]))
              for pair in (folds[:2], folds[2:])]
    assert first["qwk_pooled"] == pytest.approx(np.mean(pooled))  # pooled per seed, then mean
    assert first["bootstrap"] == {"unit": "patient", "patients": 45, "resamples": 300,
                                  "defined": 300, "seed": 7}


def test_the_bootstrap_draws_patients_with_all_their_samples(monkeypatch):
    """Every resample weighs the samples of one patient alike (drawn k times: all k times),
    and a patient with many samples widens the interval as a patient, not as many rows."""
    counts = [40] + [1] * 30
    patients = _patients(counts)
    folds = _folds(patients, seed=0)
    for fold in folds:  # the big patient is always right, the others at chance
        for p in fold["predictions"]:
            if patients[p["sample_id"]] == "p0":
                p["pred"] = p["label"]
    weights = []
    real = cv_module.kappa

    def spy(y, pred, sample_weight=None):
        if sample_weight is not None:
            weights.append(np.array(sample_weight))
        return real(y, pred, sample_weight=sample_weight)

    monkeypatch.setattr(cv_module, "kappa", spy)
    by_patient = bootstrap_qwk_ci(folds, patients, n_resamples=400, seed=0)
    order = [patients[p["sample_id"]] for f in folds for p in f["predictions"]]
    assert len(weights) == 400
    for w in weights:
        per_patient = {}
        for who, weight in zip(order, w):
            assert per_patient.setdefault(who, weight) == weight
        assert sum(per_patient.values()) == len(counts)  # len(patients) draws in all
    monkeypatch.setattr(cv_module, "kappa", real)
    by_row = bootstrap_qwk_ci(folds, {sid: sid for sid in patients}, n_resamples=400, seed=0)
    width = np.diff(by_patient["qwk_ci95"])[0]
    assert by_patient["qwk_pooled"] == by_row["qwk_pooled"]
    assert width > 1.5 * np.diff(by_row["qwk_ci95"])[0], (by_patient, by_row)


def test_summarize_cv_gives_the_interval_and_clinical_means_also_from_records(cohort):
    folds = run_cv(META, cohort, seeds=[0])
    summary = summarize_cv(META, [0], folds, cohort=cohort, n_resamples=200)
    lo, hi = summary["qwk_ci95"]
    assert lo <= summary["qwk_pooled"] <= hi
    assert summary["bootstrap"]["patients"] == len(set(cohort.groups))
    for key in ("weighted_f1_mean", "roc_auc_mean", "accuracy_mean", "macro_f1_mean",
                *(f"{k}_{c}_mean" for k in ("sensitivity", "specificity")
                  for c in schema.CLASS_NAMES)):
        assert summary[key] is not None, key
    assert summary["qwk_imaged_mean"] is None
    assert all("predictions" not in f for f in summary["folds"])
    assert summary["weighted_f1_mean"] == pytest.approx(np.mean([f["weighted_f1"] for f in folds]))
    json.dumps(summary)

    # folds recorded earlier (fold records read back from disk) summarize the same
    seeded = META.override({"cv.seed": 0})
    records = {fold: validated(FoldRecord, json.loads(json.dumps(
        run_fold(seeded, cohort, fold).to_dict())))[0] for fold in range(3)}
    again = run_cv(META, cohort, seeds=[0], done=lambda seed, fold: records[fold])
    assert summarize_cv(META, [0], again, cohort=cohort, n_resamples=200) == summary


def test_cv_command_prints_the_interval_and_clinical_metrics(tables_only_root, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("forest:\n  n_estimators: 15\n  inner_folds: 3\ncv:\n  n_folds: 3\n"
                      "decode: thresholds\n")
    args = ["cv", str(config), "--data-root", str(tables_only_root), "--no-cache"]
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout)
    lo, hi = summary["qwk_ci95"]
    assert lo <= summary["qwk_pooled"] <= hi and summary["roc_auc_mean"] is not None
    assert summary["config"]["decode"] == "thresholds"
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "95% CI" in text.stdout and "sensitivity: I" in text.stdout
    assert "ROC AUC" in text.stdout and "specificity: I" in text.stdout
