"""The two-stage fold: what trains in each stage, what must not move, restore-if-worse, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dfu_train.cache import ArtifactCache
from dfu_train.config import TrialConfig
from dfu_train.data.images import augment, to_tensor
from dfu_train.training.fold import run_fold
from dfu_train.training.checkpoint import FoldCheckpoint
from dfu_train.training.model import build_model
from dfu_train.training.schedule import schedule_length

FUSION = TrialConfig().override({
    "modalities": ["metadata", "depth_rgb"], "seed": 3,
    "forest.n_estimators": 30, "forest.inner_folds": 3,
    "image.size": 16, "image.batch_size": 16,
    "depth_rgb.pretrain_epochs": 2, "stage1.epochs": 3, "stage2.epochs": 2,
    "stage2.unfreeze_pct": 0.3, "stage2.lr": 1e-3,
})


def _run(config, cohort, fold=0, **kwargs):
    reports = []
    result = run_fold(config, cohort, fold, report=lambda m, c: reports.append((m, c)), **kwargs)
    return result, reports


def _last_checkpoint(reports, stage) -> FoldCheckpoint:
    return [c for m, c in reports if m["stage"] == stage and c is not None][-1]


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if ".backbone." in k}


@pytest.fixture(scope="module")
def fusion_run(cohort, tmp_path_factory):
    cache = ArtifactCache(tmp_path_factory.mktemp("cache"))
    return _run(FUSION, cohort, cache=cache), cache


def test_every_epoch_reports_monotonic_progress_stage_and_losses(fusion_run):
    (result, reports), _ = fusion_run
    progress = [m["progress"] for m, _ in reports]
    assert progress == list(range(1, schedule_length(FUSION) + 1)) == list(range(1, 9))
    assert [m["stage"] for m, _ in reports] == (
        ["forest"] + ["pretrain:depth_rgb"] * 2 + ["stage1"] * 3 + ["stage2"] * 2)
    for metrics, _ in reports[1:]:
        assert {"val_qwk", "meta_qwk", "train_loss", "val_loss", "trainable_params"} <= set(metrics)
        assert metrics["meta_qwk"] == result.meta_qwk
    assert result.progress == 8 and len(result.val_samples) > 0


def test_stage1_trains_heads_only_and_leaves_backbones_bit_identical(fusion_run):
    (_, reports), _ = fusion_run
    pretrained = _last_checkpoint(reports, "pretrain:depth_rgb").model
    after_stage1 = _last_checkpoint(reports, "stage1").model
    for key, value in _backbone(pretrained).items():
        assert torch.equal(value, after_stage1[key]), key  # weights and BatchNorm statistics
    model = build_model(FUSION)
    head_params = sum(p.numel() for n, p in model.named_parameters() if ".backbone." not in n)
    stage1 = [m for m, _ in reports if m["stage"] == "stage1"]
    assert all(m["trainable_params"] == head_params > 0 for m in stage1)
    changed = [k for k in after_stage1 if not k.startswith("branches.depth_rgb.backbone.")
               and after_stage1[k].dtype.is_floating_point
               and not torch.equal(after_stage1[k], pretrained[k])]
    assert changed  # the heads did move


def test_stage2_changes_exactly_the_top_groups_and_no_batch_norm_statistics(fusion_run):
    (_, reports), _ = fusion_run
    before = _backbone(_last_checkpoint(reports, "stage1").model)
    after = _backbone(_last_checkpoint(reports, "stage2").model)
    groups = len(build_model(FUSION).branches["depth_rgb"].backbone.layer_groups)
    top = set(range(groups - math.ceil(groups * 0.3), groups))
    prefix = "branches.depth_rgb.backbone.layer_groups."
    for key, value in before.items():
        group = int(key.removeprefix(prefix).split(".")[0]) if key.startswith(prefix) else None
        moved = not torch.equal(value, after[key])
        batch_norm = any(s in key for s in ("running_", "num_batches")) or _is_bn(key)
        assert moved == (group in top and not batch_norm), key


def _is_bn(key: str) -> bool:
    model = build_model(FUSION)
    module_name = key.rsplit(".", 1)[0]
    return isinstance(dict(model.named_modules())[module_name], torch.nn.BatchNorm2d)


def test_stage2_that_does_not_beat_stage1_is_undone(cohort, fusion_run):
    _, cache = fusion_run
    timid = FUSION.override({"stage2.lr": 1e-6})  # moves weights, not predictions: no better
    result, reports = _run(timid, cohort, cache=cache)
    assert result.stages["stage2"]["kept"] is False
    trained = _last_checkpoint(reports, "stage2").model
    stage1 = _last_checkpoint(reports, "stage1").model
    assert any(not torch.equal(trained[k], stage1[k]) for k in trained)  # stage 2 did train
    without, _ = _run(FUSION.override({"stage2.epochs": 0}), cohort, cache=cache)
    assert result.val_samples == without.val_samples  # ...and the fold ended with stage 1
    assert result.qwk == result.stages["stage1"]["best_qwk"]


@pytest.mark.parametrize("stage", ["pretrain:depth_rgb", "stage1", "forest"])
def test_a_fold_continued_from_a_checkpoint_ends_like_the_uninterrupted_one(
        cohort, fusion_run, stage, tmp_path):
    (result, reports), _ = fusion_run
    checkpoint = next(c for m, c in reports if m["stage"] == stage and c is not None)
    checkpoint.save(tmp_path / "fold.pt")
    resumed, later = _run(FUSION, cohort, resume=FoldCheckpoint.load(tmp_path / "fold.pt"),
                          cache=ArtifactCache(tmp_path / "own"))  # nothing pretrained to reuse
    assert resumed.metrics == result.metrics and resumed.val_samples == result.val_samples
    assert [m["progress"] for m, _ in later] == list(range(checkpoint.progress + 1, 9))


def test_a_checkpoint_of_another_config_is_refused(cohort, fusion_run):
    (_, reports), _ = fusion_run
    checkpoint = reports[0][1]
    with pytest.raises(ValueError, match="cannot continue"):
        run_fold(FUSION.override({"seed": 4}), cohort, 0, resume=checkpoint)


def test_image_only_trial_has_no_forest_and_no_meta_qwk(cohort, fusion_run):
    _, cache = fusion_run
    config = FUSION.override({"modalities": ["thermal_map"], "thermal_map.pretrain_epochs": 1,
                              "stage1.epochs": 1, "stage2.epochs": 0})
    result, reports = _run(config, cohort, cache=cache)
    assert [m["stage"] for m, _ in reports] == ["pretrain:thermal_map", "stage1"]
    assert result.meta_qwk is None and result.fusion_gain is None and "forest" not in result.stages


def test_augmentation_is_a_function_of_its_seed_and_keeps_the_value_range(cohort):
    from dfu_train.data.images import build_crops

    crops = build_crops(cohort, "depth_rgb", 16)[:8]
    first = augment(to_tensor(crops), "depth_rgb", torch.Generator().manual_seed(5))
    again = augment(to_tensor(crops), "depth_rgb", torch.Generator().manual_seed(5))
    other = augment(to_tensor(crops), "depth_rgb", torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (8, 3, 16, 16) and first.min() >= 0 and first.max() <= 255
    maps = augment(to_tensor(crops), "thermal_map", torch.Generator().manual_seed(5))
    assert not torch.equal(maps, first)  # maps get brightness and noise instead of cutout
    assert np.isclose(float(maps.mean()), float(to_tensor(crops).mean()), atol=25)
