"""Crop rules match hand-computed boxes; crops are square, uint8 and cached safely."""

from __future__ import annotations

import numpy as np
import pytest

from dfu_train.cache import ArtifactCache
from dfu_train.data.images import (build_crops, cached_crops, crop_box, modality_rows,
                                   resize_and_pad)

DEPTH_FRAME, THERMAL_FRAME = (1280, 720), (1080, 1440)


def test_rgb_crops_use_the_box_as_is():
    assert crop_box("depth_rgb", (650, 390, 692, 434), DEPTH_FRAME) == (650, 390, 692, 434)
    assert crop_box("thermal_rgb", (610, 834, 650, 891), THERMAL_FRAME) == (610, 834, 650, 891)


def test_thermal_map_grows_by_30_px_and_clips_to_the_frame():
    assert crop_box("thermal_map", (610, 834, 650, 891), THERMAL_FRAME) == (580, 804, 680, 921)
    assert crop_box("thermal_map", (10, 5, 1070, 1430), THERMAL_FRAME) == (0, 0, 1080, 1440)


def test_depth_map_scales_by_the_field_of_view():
    # x: 100*(1-3/69)=95.65 -> 95, 140*(1+3/69)=146.09 -> 147
    # y: 50*(1-3/42)=46.43 -> 46, 90*(1+3/42)=96.43 -> 97
    assert crop_box("depth_map", (100, 50, 140, 90), DEPTH_FRAME) == (95, 46, 147, 97)


def test_degenerate_boxes_keep_at_least_one_pixel():
    assert crop_box("depth_rgb", (1279, 719, 1279, 719), DEPTH_FRAME) == (1279, 719, 1280, 720)


def test_resize_keeps_aspect_and_pads_centred_with_zeros():
    crop = np.full((10, 40, 3), 200, dtype=np.uint8)
    out = resize_and_pad(crop, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    filled = np.flatnonzero(out[:, 16, 0])
    assert (filled.min(), filled.max()) == (12, 19)  # 8 rows of image, centred
    assert out[0].max() == 0 and out[-1].max() == 0


def test_crops_align_with_rows_and_show_the_wound(cohort):
    crops = build_crops(cohort, "depth_rgb", 32)
    assert crops.shape == (len(modality_rows(cohort, "depth_rgb")), 32, 32, 3)
    # the synthetic wound is darker red than the surrounding skin colour (196, 150, 128)
    assert crops[:, 12:20, 12:20, 1].mean() < 140


def test_cache_returns_identical_crops_and_recovers_from_truncation(cohort, tmp_path):
    first = cached_crops(cohort, "thermal_map", 24, ArtifactCache(tmp_path))
    files = list((tmp_path / "crops").glob("*.bin"))
    assert len(files) == 1
    again = ArtifactCache(tmp_path)
    assert np.array_equal(cached_crops(cohort, "thermal_map", 24, again), first)
    assert again.reused == ["crops:thermal_map 24px"]
    files[0].write_bytes(files[0].read_bytes()[:100])
    recovered = ArtifactCache(tmp_path)
    assert np.array_equal(cached_crops(cohort, "thermal_map", 24, recovered), first)
    assert recovered.computed == ["crops:thermal_map 24px"] and not recovered.reused


def test_unknown_modality_has_no_crop_rule():
    with pytest.raises(ValueError, match="no crop rule"):
        crop_box("ultrasound", (0, 0, 1, 1), DEPTH_FRAME)
