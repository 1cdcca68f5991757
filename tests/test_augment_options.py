"""The study's image options: per-transform chances and strengths of augmentation, mixup alpha,
resize filter. Their defaults compute what dfu_train computed before they existed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfu_train.cache import ArtifactCache, cache_key
from dfu_train.config import AUGMENT_SETTINGS, TrialConfig
from dfu_train.data.images import (CROP_RULES_VERSION, Augmentation, augment, build_crops,
                                   cached_crops)
from dfu_train.data.rows import RowSet
from dfu_train.errors import ConfigError
from dfu_train.training.stages import ImageStages, stage_table

IMAGES = TrialConfig().override({"modalities": ["metadata", "depth_rgb"]})
NOTHING = Augmentation(flip_p=0, turn_p=0, zoom_p=0, cutout_p=0, brightness_p=0, noise_p=0)


def _batch(n=16, size=12, value=None):
    torch.manual_seed(0)
    if value is not None:
        return torch.full((n, 3, size, size), float(value))
    return (torch.rand(n, 3, size, size) * 255).round()


def test_defaults_keep_config_ids_and_settings_act_only_where_used():
    base = IMAGES.config_id
    assert (base, IMAGES.earlier_config_id) == ("af7a1d93e6", "f8392dfb29")  # as recorded before
    assert IMAGES.override({"depth_rgb.mixup": True}).config_id == "2e9bd0500a"
    explicit = IMAGES.override({"image.resize_filter": "bilinear", "image.flip_p": 0.5,
                                "image.turn_p": 1.0, "image.zoom_min": 0.8,
                                "image.cutout_share": 0.25, "image.brightness": 10.0,
                                "image.noise_std": 3.0, "depth_rgb.mixup_alpha": 0.4})
    assert explicit.config_id == base
    assert IMAGES.override({"image.flip_p": 0.2}).config_id != base
    assert IMAGES.override({"image.resize_filter": "nearest"}).config_id != base
    plain = IMAGES.override({"image.augment": False})
    assert plain.override({"image.flip_p": 0.2}).config_id == plain.config_id  # no augmentation
    assert not {f"image.{name}" for name in AUGMENT_SETTINGS} & plain.used_names()
    assert IMAGES.override({"depth_rgb.mixup_alpha": 1.0}).config_id == base  # no mixup
    mixup = IMAGES.override({"depth_rgb.mixup": True})
    assert mixup.override({"depth_rgb.mixup_alpha": 1.0}).config_id != mixup.config_id


def test_out_of_range_settings_are_one_config_error():
    with pytest.raises(ConfigError, match="image.flip_p"):
        IMAGES.override({"image.flip_p": 1.5})
    with pytest.raises(ConfigError, match="image.resize_filter"):
        IMAGES.override({"image.resize_filter": "sinc"})
    with pytest.raises(ConfigError, match="depth_rgb.mixup_alpha"):
        IMAGES.override({"depth_rgb.mixup_alpha": 0})


@pytest.mark.parametrize("modality", ["depth_rgb", "thermal_map"])
def test_every_transform_off_leaves_the_crops_as_they_are(modality):
    images = _batch()
    out = augment(images, modality, torch.Generator().manual_seed(1), NOTHING)
    assert torch.equal(out, images)


def test_certain_flips_flip_every_crop():
    images = _batch()
    out = augment(images, "depth_rgb", torch.Generator().manual_seed(1),
                  Augmentation(**{**NOTHING.__dict__, "flip_p": 1.0}))
    assert torch.equal(out, images.flip(3).flip(2))


def test_turn_and_zoom_chances_act_on_about_that_share_of_crops():
    images = _batch(n=400)
    for field in ("turn_p", "zoom_p"):
        settings = Augmentation(**{**NOTHING.__dict__, field: 0.5, "zoom_min": 0.5})
        out = augment(images, "thermal_map", torch.Generator().manual_seed(2), settings)
        changed = (out != images).flatten(1).any(dim=1).float().mean().item()
        share = 0.5 * (0.75 if field == "turn_p" else 1.0)  # a quarter of turns are by 0
        assert abs(changed - share) < 0.1, field


def test_cutout_share_sets_the_square_and_its_chance_the_crops_cut():
    size = 20
    images = _batch(n=200, size=size, value=200)
    settings = Augmentation(**{**NOTHING.__dict__, "cutout_p": 0.5, "cutout_share": 0.3})
    out = augment(images, "depth_rgb", torch.Generator().manual_seed(3), settings)
    zeros = (out[:, 0] == 0).flatten(1).sum(dim=1)
    assert set(zeros.tolist()) == {0, 6 * 6}
    assert 0.35 < (zeros > 0).float().mean().item() < 0.65


def test_brightness_and_noise_strengths():
    images = _batch(n=300, value=100)
    bright = augment(images, "thermal_map", torch.Generator().manual_seed(4),
                     Augmentation(**{**NOTHING.__dict__, "brightness_p": 1.0, "brightness": 50}))
    shift = bright[:, 0, 0, 0] - 100
    assert torch.equal(bright, 100 + shift[:, None, None, None].expand_as(bright))  # per crop
    assert shift.abs().max() <= 50 and shift.abs().max() > 40
    noisy = augment(images, "thermal_map", torch.Generator().manual_seed(4),
                    Augmentation(**{**NOTHING.__dict__, "noise_p": 1.0, "noise_std": 20}))
    assert abs((noisy - 100).std().item() - 20) < 1
    rgb = augment(images, "depth_rgb", torch.Generator().manual_seed(4),
                  Augmentation(**{**NOTHING.__dict__, "noise_p": 1.0, "brightness_p": 1.0}))
    assert torch.equal(rgb, images)  # maps only


def test_config_settings_reach_the_augmentation():
    settings = IMAGES.override({"image.flip_p": 0.1, "image.noise_std": 7.0}).image
    assert settings.augmentation() == Augmentation(flip_p=0.1, noise_std=7.0)
    assert TrialConfig().image.augmentation() == Augmentation()


def test_resize_filter_changes_the_crops_and_keeps_the_bilinear_key(cohort, tmp_path):
    bilinear = build_crops(cohort, "depth_rgb", 16)
    nearest = build_crops(cohort, "depth_rgb", 16, "nearest")
    assert bilinear.shape == nearest.shape and not np.array_equal(bilinear, nearest)
    cache = ArtifactCache(tmp_path)
    assert np.array_equal(cached_crops(cohort, "depth_rgb", 16, cache, "nearest"), nearest)
    assert np.array_equal(cached_crops(cohort, "depth_rgb", 16, cache), bilinear)
    keys = {e.key for e in cache.entries("crops")}
    recorded = cache_key("crops", {"cohort": cohort.fingerprint, "modality": "depth_rgb",
                                   "size": 16, "rules": CROP_RULES_VERSION})
    assert len(keys) == 2 and recorded in keys  # the bilinear entry an earlier version wrote


def _stages(config, rows=64, size=8):
    rng = np.random.default_rng(0)
    crops = {"depth_rgb": rng.integers(0, 256, (rows, size, size, 3), dtype=np.uint8)}
    part = RowSet(crops, torch.full((rows, 3), 1 / 3), torch.as_tensor(rng.integers(0, 3, rows)),
                  np.arange(rows))
    return ImageStages(config=config, train=part, val=part, val_fallback=np.full((rows, 3), 1 / 3),
                       val_labels=part.labels.numpy(), report=lambda m, c: None, fold=0,
                       forest_state=None, meta_qwk=None)


@pytest.mark.parametrize(("alpha", "low", "high"), [(0.05, 0.0, 0.2), (10.0, 0.3, 0.5)])
def test_mixup_draws_its_weight_from_beta_alpha(alpha, low, high):
    config = IMAGES.override({"depth_rgb.mixup": True, "depth_rgb.mixup_alpha": alpha,
                              "image.batch_size": 2})
    stage = stage_table(config)["pretrain:depth_rgb"]
    assert stage.mixup and stage.mixup_alpha == alpha
    runner = _stages(config)
    lams = [lam for _, (_, _, lam) in runner._train_batches(
        stage.name, 0, ("depth_rgb",), False, stage.mixup_alpha)]
    near_edge = np.mean([min(lam, 1 - lam) for lam in lams])
    assert low <= near_edge <= high


def test_stage_batches_use_the_configured_augmentation():
    off = {f"image.{name}": 0.0 for name in ("flip_p", "turn_p", "zoom_p", "cutout_p")}
    config = IMAGES.override({**off, "image.flip_p": 1.0, "image.batch_size": 64})
    runner = _stages(config)
    (inputs, _), = runner._train_batches("pretrain:depth_rgb", 0, ("depth_rgb",), False, None)
    images = torch.from_numpy(runner.train.crops["depth_rgb"]).permute(0, 3, 1, 2).float()
    flipped = images.flip(3).flip(2)
    assert inputs[0].shape == (64, 3, 8, 8)
    assert all(any(torch.equal(x, f) for f in flipped) for x in inputs[0])  # every crop flipped
    assert not any(any(torch.equal(x, i) for i in images) for x in inputs[0])
