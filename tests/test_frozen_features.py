"""Stage 1 on frozen features: each frozen backbone's features computed once per fold (cached),
the same fold as training on images when augmentation is off, pre-drawn views when it is on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfu_train.cache import ArtifactCache, load_arrays
from dfu_train.config import TrialConfig
from dfu_train.models.backbones import create_backbone
from dfu_train.training.checkpoint import FoldCheckpoint
from dfu_train.training.fold import run_fold
from dfu_train.training.freezing import keep_batch_norm_frozen, set_trainable
from dfu_train.training.model import state_fingerprint

PLAIN = TrialConfig().override({
    "modalities": ["metadata", "depth_rgb", "thermal_map"], "seed": 3,
    "forest.n_estimators": 30, "forest.inner_folds": 3,
    "image.size": 16, "image.batch_size": 16, "image.augment": False,
    "depth_rgb.pretrain_epochs": 1, "thermal_map.pretrain_epochs": 1,
    "stage1.epochs": 4, "stage1.lr": 1e-2, "stage2.epochs": 1, "stage2.lr": 1e-3,
})
FROZEN = PLAIN.override({"stage1.frozen_features": True})


def _run(config, cohort, **kwargs):
    reports = []
    result = run_fold(config, cohort, 0, report=lambda m, c: reports.append((m, c)), **kwargs)
    return result, reports


def _stage(reports, stage):
    return [(m, c) for m, c in reports if m.get("stage") == stage]


@pytest.fixture(scope="module")
def both(cohort, tmp_path_factory):
    cache = ArtifactCache(tmp_path_factory.mktemp("cache"))
    return _run(PLAIN, cohort, cache=cache), _run(FROZEN, cohort, cache=cache), cache


def test_default_is_off_and_leaves_config_ids_unchanged():
    assert TrialConfig().stage1.frozen_features is False
    assert TrialConfig().config_id == "a15dce4acf"
    assert TrialConfig(modalities=("metadata", "thermal_map")).config_id == "ddc9336aff"
    # ids of the version before these settings, current and earlier
    assert TrialConfig(modalities=("metadata", "thermal_map")).earlier_config_id == "aa78a8379d"
    assert TrialConfig(modalities=("depth_rgb",)).config_id == "a1ae89c397"
    assert TrialConfig(modalities=("depth_rgb",)).earlier_config_id == "9a2a2a6d54"
    assert FROZEN.config_id != PLAIN.config_id
    # views act only with frozen features and augmentation: elsewhere they are dropped
    assert PLAIN.override({"stage1.augment_views": 4}).config_id == PLAIN.config_id
    assert FROZEN.override({"stage1.augment_views": 4}).config_id == FROZEN.config_id
    augmented = FROZEN.override({"image.augment": True})
    assert augmented.override({"stage1.augment_views": 4}).config_id != augmented.config_id
    assert "stage1.augment_views" not in FROZEN.used_names()
    assert "stage1.augment_views" in augmented.used_names()


def test_without_augmentation_the_fold_is_the_one_trained_on_images(both):
    (plain, plain_reports), (frozen, frozen_reports), _ = both
    assert frozen.stages["stage1"]["feature_views"] == 1
    assert frozen.metrics == plain.metrics and frozen.val_samples == plain.val_samples
    assert frozen.stages["stage1"]["best_epoch"] == plain.stages["stage1"]["best_epoch"]
    for (a, ca), (b, cb) in zip(_stage(plain_reports, "stage1"), _stage(frozen_reports, "stage1"),
                                strict=True):
        for key in ("val_qwk", "val_loss", "train_loss", "trainable_params"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
        for key, value in ca.model.items():  # heads trained alike, backbones untouched
            assert torch.allclose(value.float(), cb.model[key].float(), atol=1e-5), key
    losses = [m["train_loss"] for m, _ in _stage(frozen_reports, "stage1")]
    assert len(set(losses)) > 1  # the heads did train


def test_features_are_cached_per_fold_and_backbone_weights(both, cohort):
    _, (frozen, _), cache = both
    assert sorted(a.split()[0] for a in frozen.artifacts["computed"]
                  if a.startswith("features:")) == ["features:depth_rgb", "features:thermal_map"]
    other_head = FROZEN.override({"fusion.residual_bound": 0.5, "stage2.epochs": 0})
    again, _ = _run(other_head, cohort, cache=cache)
    assert [a for a in again.artifacts["reused"] if a.startswith("features:")] == [
        a for a in frozen.artifacts["computed"] if a.startswith("features:")]
    assert not [a for a in again.artifacts["computed"] if a.startswith("features:")]


def test_the_features_key_holds_the_backbone_weights():
    first, second = create_backbone("simple_cnn"), create_backbone("simple_cnn")
    second.load_state_dict(first.state_dict())
    assert state_fingerprint(first) == state_fingerprint(second)
    with torch.no_grad():
        second.layer_groups[-1][0].weight[0, 0, 0, 0] += 1e-6
    assert state_fingerprint(first) != state_fingerprint(second)
    second.load_state_dict(first.state_dict())
    second.layer_groups[0][1].running_mean[0] += 1e-6  # BatchNorm statistics count too
    assert state_fingerprint(first) != state_fingerprint(second)


def test_a_fold_continued_in_stage1_ends_like_the_uninterrupted_one(both, cohort, tmp_path):
    _, (frozen, reports), _ = both
    checkpoint = _stage(reports, "stage1")[1][1]
    checkpoint.save(tmp_path / "fold.pt")
    resumed, _ = _run(FROZEN, cohort, resume=FoldCheckpoint.load(tmp_path / "fold.pt"),
                      cache=ArtifactCache(tmp_path / "own"))
    assert resumed.metrics == frozen.metrics and resumed.val_samples == frozen.val_samples


def test_with_augmentation_stage1_draws_among_pre_drawn_views(cohort, tmp_path):
    config = FROZEN.override({"modalities": ["metadata", "depth_rgb"], "image.augment": True,
                              "stage1.augment_views": 3, "stage1.epochs": 2, "stage2.epochs": 0})
    cache = ArtifactCache(tmp_path / "cache")
    result, _ = _run(config, cohort, cache=cache)
    assert result.stages["stage1"]["feature_views"] == 3
    (entry,) = cache.entries("features")
    train = load_arrays(cache.read("features", entry.key))["train"]
    assert train.shape[0] == 3 and not np.allclose(train[0], train[1])


@pytest.mark.parametrize("name", ["simple_cnn", "efficientnet-b0", "mobilenet_v3_large",
                                  "resnet50", "densenet121"])
def test_a_frozen_backbone_trains_as_it_evaluates(name):
    """Why the features can be computed once: in stage 1 every backbone parameter is frozen,
    so its BatchNorm stays in eval mode while the heads train, and no registered backbone has
    dropout or stochastic depth in its layers; its output in training equals its eval output."""
    torch.manual_seed(0)
    backbone = create_backbone(name)
    images = torch.rand(4, 3, 32, 32) * 255
    backbone.eval()
    with torch.no_grad():
        expected = backbone(images)
    set_trainable(backbone, False)
    backbone.train()
    keep_batch_norm_frozen(backbone)
    with torch.no_grad():
        assert torch.equal(backbone(images), expected)
        assert torch.equal(backbone(images), expected)  # no random draw either
