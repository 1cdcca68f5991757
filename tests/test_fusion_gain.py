"""On a cohort whose metadata and images carry complementary signal, fusion beats both alone."""

from __future__ import annotations

import numpy as np

from dfu_train.cache import ArtifactCache
from dfu_train.config import TrialConfig
from dfu_train.data.cohort import load_cohort
from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.training.fold import run_fold

BASE = TrialConfig().override({
    "seed": 0, "forest.n_estimators": 100, "forest.inner_folds": 3,
    "image.size": 16, "depth_rgb.pretrain_epochs": 10, "stage1.epochs": 10, "stage2.epochs": 0,
    "fusion.head": "residual",
})


def _cv_qwk(config, cohort, cache) -> float:
    return float(np.mean([run_fold(config, cohort, fold, cache=cache).qwk
                          for fold in range(config.cv.n_folds)]))


def test_five_fold_fusion_beats_metadata_only_and_image_only_by_005(tmp_path):
    # metadata mostly separates Inflammatory from Proliferative, images Remodelling from it
    root = write_synthetic_cohort(tmp_path / "cohort", SynthSpec(
        patients=80, seed=7, meta_signal=1.3, image_signal=1.0))
    cohort, cache = load_cohort(root), ArtifactCache(tmp_path / "cache")
    meta = _cv_qwk(BASE.override({"modalities": ["metadata"]}), cohort, cache)
    image = _cv_qwk(BASE.override({"modalities": ["depth_rgb"]}), cohort, cache)
    fusion = _cv_qwk(BASE.override({"modalities": ["metadata", "depth_rgb"]}), cohort, cache)
    assert fusion >= meta + 0.05 and fusion >= image + 0.05, (meta, image, fusion)
