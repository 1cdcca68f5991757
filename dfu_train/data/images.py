"""Wound crops for the image branches: per-modality crop rules, resize and pad, a crop cache.

Crop rules (data-format.md section 4): depth_rgb and thermal_rgb use the box as is; thermal_map
grows the thermal box by 30 px on every side; depth_map scales the depth box by the
depth-to-colormap field of view. Scaled or grown corners are widened outwards (floor for the
minimum, ceil for the maximum), clipped to the frame and kept at least 1 px wide. Crops are then
resized on their longer side to the image size and centred on a zero-padded square. Values stay
uint8 in [0, 255]; normalisation belongs to the backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dfu_train.cache import ArtifactCache, dump_arrays, load_arrays
from dfu_train.data import schema
from dfu_train.data.check import open_frame
from dfu_train.data.cohort import Cohort
from dfu_train.errors import DataError

THERMAL_MAP_MARGIN = 30
DEPTH_MAP_FOV = (3 / 69, 3 / 42)  # (x, y) depth-to-colormap field-of-view ratios
CROP_RULES_VERSION = 1  # part of every cached crop's key: bump it when the rules above change
RESIZE_FILTERS = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "bicubic": Image.BICUBIC,
                  "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
DEFAULT_FILTER = "bilinear"


def crop_box(modality: str, box, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel box (x0, y0, x1, y1), x1/y1 exclusive, to cut from a `frame_size` (w, h) frame."""
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    if modality == "thermal_map":
        xmin, ymin = xmin - THERMAL_MAP_MARGIN, ymin - THERMAL_MAP_MARGIN
        xmax, ymax = xmax + THERMAL_MAP_MARGIN, ymax + THERMAL_MAP_MARGIN
    elif modality == "depth_map":
        fx, fy = DEPTH_MAP_FOV
        xmin, xmax = xmin * (1 - fx), xmax * (1 + fx)
        ymin, ymax = ymin * (1 - fy), ymax * (1 + fy)
    elif modality not in ("depth_rgb", "thermal_rgb"):
        raise ValueError(f"no crop rule for modality {modality!r}")
    width, height = frame_size
    x0 = min(max(math.floor(xmin), 0), width - 1)
    y0 = min(max(math.floor(ymin), 0), height - 1)
    x1 = max(min(math.ceil(xmax), width), x0 + 1)
    y1 = max(min(math.ceil(ymax), height), y0 + 1)
    return x0, y0, x1, y1


def resize_and_pad(crop: np.ndarray, size: int, resize_filter: str = DEFAULT_FILTER) -> np.ndarray:
    """Aspect-preserving resize of the longer side to `size` (with one of PIL's
    `RESIZE_FILTERS`), centred zero padding to a square."""
    height, width = crop.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = np.asarray(Image.fromarray(crop).resize((new_w, new_h),
                                                      RESIZE_FILTERS[resize_filter]))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top:top + new_h, left:left + new_w] = resized
    return out


def read_frame(path: Path) -> np.ndarray:
    """An RGB uint8 frame; grayscale, palette and RGBA frames are converted, 16-bit scaled down.
    A frame over the pixel cap is refused before decoding (`check.open_frame`)."""
    try:
        with open_frame(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float32)
                peak = max(float(array.max()), 1.0)
                image = Image.fromarray((array / peak * 255).astype(np.uint8))
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def modality_rows(cohort: Cohort, modality: str):
    """The image rows that have a frame of `modality` (its camera's file is known)."""
    camera = schema.IMAGE_FOLDERS[modality][1]
    return cohort.image_rows.dropna(subset=[f"{camera}_file"])


def build_crops(cohort: Cohort, modality: str, size: int,
                resize_filter: str = DEFAULT_FILTER) -> np.ndarray:
    """(n_rows, size, size, 3) uint8 crops, aligned with `modality_rows(cohort, modality)`."""
    if modality not in cohort.modalities:
        raise DataError(f"{cohort.root}: no {modality} images in this cohort")
    folder, camera = schema.IMAGE_FOLDERS[modality]
    rows = modality_rows(cohort, modality)
    crops = np.zeros((len(rows), size, size, 3), dtype=np.uint8)
    frames: dict[str, np.ndarray] = {}
    for i, row in enumerate(rows.itertuples(index=False)):
        name = getattr(row, f"{camera}_file")
        if name not in frames:
            frames = {name: read_frame(cohort.root / folder / name)}  # rows of a frame are adjacent
        frame = frames[name]
        box = [getattr(row, f"{camera}_{c}") for c in ("xmin", "ymin", "xmax", "ymax")]
        x0, y0, x1, y1 = crop_box(modality, box, (frame.shape[1], frame.shape[0]))
        crops[i] = resize_and_pad(frame[y0:y1, x0:x1], size, resize_filter)
    return crops


def cached_crops(cohort: Cohort, modality: str, size: int, cache: ArtifactCache,
                 resize_filter: str = DEFAULT_FILTER) -> np.ndarray:
    """`build_crops`, computed once per (cohort fingerprint, modality, size, crop rules, resize
    filter) for every trial and sweep that shares `cache`."""
    expected = (len(modality_rows(cohort, modality)), size, size, 3)

    def load(body: bytes) -> np.ndarray | None:
        crops = load_arrays(body)["crops"]
        return crops if crops.shape == expected and crops.dtype == np.uint8 else None

    parts = {"cohort": cohort.fingerprint, "modality": modality, "size": size,
             "rules": CROP_RULES_VERSION}
    if resize_filter != DEFAULT_FILTER:  # the keys crops had before the filter was a choice
        parts["filter"] = resize_filter
    return cache.fetch(
        "crops", parts, lambda: build_crops(cohort, modality, size, resize_filter),
        dump=lambda crops: dump_arrays({"crops": crops}), load=load,
        label=f"{modality} {size}px" + (f" {resize_filter}" if "filter" in parts else ""))


RGB_MODALITIES = ("depth_rgb", "thermal_rgb")
ZOOM_RANGE = (0.8, 1.0)
CUTOUT_SHARE = 0.25
MAP_BRIGHTNESS = 10.0  # max shift, in 0..255 units
MAP_NOISE = 3.0


def to_tensor(crops: np.ndarray):
    """(n, s, s, 3) uint8 -> (n, 3, s, s) float32 in [0, 255]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()


@dataclass(frozen=True)
class Augmentation:
    """How often (`*_p`: the share of crops) and how strongly each training transform acts.
    The defaults are the augmentation applied before these were choices, drawing exactly its
    random numbers; a probability below 1 draws one more number per crop after the transform's
    own."""

    flip_p: float = 0.5  # each of the horizontal and the vertical flip
    turn_p: float = 1.0  # a turn by 0-3 quarter turns, drawn uniformly
    zoom_p: float = 1.0  # a zoom-crop of scale in [zoom_min, 1], shifted within the frame
    zoom_min: float = ZOOM_RANGE[0]
    cutout_p: float = 1.0  # RGB: one zeroed square of side cutout_share x size
    cutout_share: float = CUTOUT_SHARE
    brightness_p: float = 1.0  # maps: a shift up to +-brightness (0..255 units)
    brightness: float = MAP_BRIGHTNESS
    noise_p: float = 1.0  # maps: Gaussian pixel noise of this standard deviation
    noise_std: float = MAP_NOISE


def augment(images, modality: str, generator, settings: Augmentation = Augmentation()):
    """Training-only augmentation of a float batch (n, 3, s, s) in [0, 255], drawn from
    `generator` alone so an epoch's augmentation is a function of its seed.

    Every modality: horizontal and vertical flips, 90-degree rotations and a zoom-crop (scale
    0.8-1 by default, shifted within the frame). RGB: one cutout square. Maps: a small brightness
    shift and pixel noise, since their colours encode depth or heat and must not change much.
    How often and how strongly each acts: `settings`.
    """
    import torch
    import torch.nn.functional as F

    def chosen(p: float):
        """Which crops a transform acts on: all at p = 1, without drawing."""
        return None if p >= 1 else torch.rand(n, generator=generator) < p

    n, _, size, _ = images.shape
    flip = torch.rand(n, 2, generator=generator) < settings.flip_p
    images = torch.where(flip[:, 0, None, None, None], images.flip(3), images)
    images = torch.where(flip[:, 1, None, None, None], images.flip(2), images)
    turns = torch.randint(0, 4, (n,), generator=generator)
    turned = chosen(settings.turn_p)
    if turned is not None:
        turns = torch.where(turned, turns, 0)
    rotated = images.clone()
    for k in (1, 2, 3):
        picked = turns == k
        if picked.any():
            rotated[picked] = torch.rot90(images[picked], k, dims=(2, 3))
    low, high = settings.zoom_min, ZOOM_RANGE[1]
    scale = low + (high - low) * torch.rand(n, generator=generator)
    shift = (1 - scale)[:, None] * (2 * torch.rand(n, 2, generator=generator) - 1)
    zoomed = chosen(settings.zoom_p)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(rotated.shape), align_corners=False)
    if zoomed is None:
        images = F.grid_sample(rotated, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
    else:  # crops left alone are not resampled
        images = rotated
        if zoomed.any():
            images[zoomed] = F.grid_sample(rotated[zoomed], grid[zoomed], mode="bilinear",
                                           padding_mode="zeros", align_corners=False)
    if modality in RGB_MODALITIES:
        side = max(1, round(size * settings.cutout_share))
        corner = torch.randint(0, size - side + 1, (n, 2), generator=generator)
        axis = torch.arange(size)
        rows = (axis[None, :] >= corner[:, :1]) & (axis[None, :] < corner[:, :1] + side)
        cols = (axis[None, :] >= corner[:, 1:]) & (axis[None, :] < corner[:, 1:] + side)
        hole = rows[:, None, :, None] & cols[:, None, None, :]
        cut = chosen(settings.cutout_p)
        if cut is not None:
            hole = hole & cut[:, None, None, None]
        images = images.masked_fill(hole, 0.0)
    else:
        shift = settings.brightness * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
        shifted = chosen(settings.brightness_p)
        if shifted is not None:
            shift = shift * shifted[:, None, None, None]
        noise = settings.noise_std * torch.randn(images.shape, generator=generator)
        noisy = chosen(settings.noise_p)
        if noisy is not None:
            noise = noise * noisy[:, None, None, None]
        images = images + shift + noise
    return images.clamp(0, 255)
