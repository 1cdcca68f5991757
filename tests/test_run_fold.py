"""`run_fold` reports, records what produced it, and is reproducible."""

from __future__ import annotations

import numpy as np

from dfu_train.config import TrialConfig
from dfu_train.data.folds import assign_folds, split
from dfu_train.training.fold import run_fold

CONFIG = TrialConfig().override({"forest.n_estimators": 30, "forest.inner_folds": 3})


def test_run_fold_reports_progress_stage_and_qwk(cohort):
    reports = []
    result = run_fold(CONFIG, cohort, 1, report=lambda m, c: reports.append((m, c)))
    assert len(reports) == 1
    metrics, checkpoint = reports[0]
    assert metrics["progress"] == 1 and metrics["stage"] == "forest"
    assert metrics["val_qwk"] == result.qwk
    assert checkpoint is None


def test_result_holds_exactly_the_validation_samples_and_provenance(cohort):
    result = run_fold(CONFIG, cohort, 2)
    _, val = split(assign_folds(cohort, n_folds=5, seed=42), 2)
    assert [s["sample_id"] for s in result.val_samples] == list(cohort.samples["sample_id"].iloc[val])
    assert all(abs(sum(s["proba"]) - 1) < 1e-4 for s in result.val_samples)
    assert result.cohort_fingerprint == cohort.fingerprint
    assert len(result.fold_fingerprint) == 16
    assert {"torch", "scikit-learn", "ray", "git_revision", "dfu_train"} <= set(result.versions)
    assert set(result.metrics) == {
        "qwk", "row_qwk", "accuracy", "macro_f1", "f1_I", "f1_P", "f1_R", "weighted_f1",
        "sensitivity_I", "sensitivity_P", "sensitivity_R", "specificity_I", "specificity_P",
        "specificity_R", "roc_auc", "qwk_imaged", "n_imaged"}
    assert result.config_id == CONFIG.config_id


def test_same_config_fold_and_seed_give_identical_metrics(cohort):
    assert run_fold(CONFIG, cohort, 0).to_dict()["metrics"] == run_fold(CONFIG, cohort, 0).to_dict()["metrics"]


FUSION = TrialConfig().override({
    "modalities": ["metadata", "thermal_map"], "seed": 1, "cv.n_folds": 3,
    "forest.n_estimators": 30, "forest.inner_folds": 3, "image.size": 16,
    "thermal_map.pretrain_epochs": 3, "stage1.epochs": 3, "stage2.epochs": 1,
})


def test_label_permutation_through_forest_images_and_fusion_scores_near_zero(cohort):
    """The whole pipeline (forest, image branch, both fusion stages) on permuted labels: a leak
    anywhere (labels, patients, validation rows) would show as clearly positive kappa."""
    qwks = []
    for seed in range(2):
        shuffled = cohort.with_labels(np.random.default_rng(seed).permutation(cohort.labels))
        qwks += [run_fold(FUSION, shuffled, fold).qwk or 0.0 for fold in range(3)]
    assert abs(float(np.mean(qwks))) < 0.1


def test_a_fusion_fold_is_reproducible_on_cpu(cohort):
    first, second = run_fold(FUSION, cohort, 1), run_fold(FUSION, cohort, 1)
    assert first.metrics == second.metrics and first.val_samples == second.val_samples
    assert first.versions["git_revision"] and first.versions["torch"] != "absent"
    assert first.cohort_fingerprint == cohort.fingerprint and len(first.fold_fingerprint) == 16


def test_early_stopping_sees_the_fused_result_counted_in_fusion_epochs(cohort, tmp_path):
    """`fused_qwk` at `fusion_epochs`: the forest's during pretraining (no fusion epoch counted,
    a reused branch alike), the best fusion epoch so far in the fusion stages, and the restored
    result at the end."""
    from dfu_train.cache import ArtifactCache

    def reports_of(cache) -> list[dict]:
        reports = []
        run_fold(FUSION, cohort, 0, report=lambda m, c: reports.append(m), cache=cache)
        return reports

    cache = ArtifactCache(tmp_path / "cache")
    fresh, reused = reports_of(cache), reports_of(cache)
    for reports in (fresh, reused):
        before = [m for m in reports if m["stage"] in ("forest", "pretrain:thermal_map")]
        fusion = [m for m in reports if m["stage"] in ("stage1", "stage2")]
        assert all(m["fusion_epochs"] == 0 and m["fused_qwk"] == m["meta_qwk"] for m in before)
        assert [m["fusion_epochs"] for m in fusion] == list(range(1, len(fusion) + 1))
        best = np.maximum.accumulate([m["val_qwk"] for m in fusion if m["stage"] == "stage1"])
        assert [m["fused_qwk"] for m in fusion if m["stage"] == "stage1"] == list(best)
        assert all(b["fused_qwk"] >= a["fused_qwk"] for a, b in zip(fusion, fusion[1:]))
        final = reports[-1]
        assert final["final"] == 1 and final["fused_qwk"] == final["val_qwk"]
    assert sum(m["stage"] == "pretrain:thermal_map" for m in reused) == 1  # one step, no rung
    assert [m["fused_qwk"] for m in fresh if m["stage"] == "stage1"] == [
        m["fused_qwk"] for m in reused if m["stage"] == "stage1"]  # the same rungs, alike
