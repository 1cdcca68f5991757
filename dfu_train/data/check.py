"""`dfu data check`: verify image files and boxes, and summarise a cohort for a person."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from dfu_train.data import schema
from dfu_train.data.cohort import Cohort, load_cohort
from dfu_train.data.folds import check_fold_count
from dfu_train.errors import ConfigError, DataError


def check_images(cohort: Cohort, modalities=None) -> dict[str, int]:
    """Open every referenced frame of each available image modality (or of `modalities`) and
    check that it is a whole image and that its box lies inside it. Returns the number of image
    rows per modality. Run before any training: a broken file found after an hour of work
    wastes the hour."""
    wanted = cohort.modalities[1:] if modalities is None else [
        m for m in cohort.modalities[1:] if m in modalities]
    counts = {}
    for modality in wanted:
        folder_name, camera = schema.IMAGE_FOLDERS[modality]
        folder = cohort.root / folder_name
        rows = cohort.image_rows.dropna(subset=[f"{camera}_file"])
        sizes: dict[str, tuple[int, int]] = {}
        for row in rows.itertuples(index=False):
            name = getattr(row, f"{camera}_file")
            if name not in sizes:
                sizes[name] = _frame_size(folder / name)
            width, height = sizes[name]
            box = [getattr(row, f"{camera}_{c}") for c in ("xmin", "ymin", "xmax", "ymax")]
            if box[2] > width or box[3] > height:
                raise DataError(f"{folder / name}: box {tuple(int(v) for v in box)} lies outside "
                                f"the {width}x{height} frame")
        counts[modality] = len(rows)
    return counts


#: Pillow's default decompression-bomb limit (~89.5 million pixels; real frames have ~1.5
#: million), held whatever Pillow's global setting: a few-KB PNG may decode to gigabytes.
MAX_FRAME_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def open_frame(path: Path) -> Image.Image:
    """`Image.open` (which reads only the header), refusing a frame over MAX_FRAME_PIXELS
    before anything decodes it. Pillow's own warning above its limit is silenced (this check
    decides) and its error above twice the limit becomes the same refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            image = None
    if image is None or image.width * image.height > MAX_FRAME_PIXELS:
        size = "" if image is None else f" of {image.width}x{image.height}"
        if image is not None:
            image.close()
        raise DataError(f"{path}: image{size} has more than {MAX_FRAME_PIXELS} pixels, the cap "
                        "against decompression bombs")
    return image


def _frame_size(path: Path) -> tuple[int, int]:
    if not path.is_file():
        raise DataError(f"{path}: image file named in the bounding-box CSV does not exist")
    try:
        with open_frame(path) as image:
            image.verify()
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def summarize(cohort: Cohort, image_counts: dict[str, int]) -> dict:
    """Counts a person checks first: samples, patients, classes, images, missingness, notes."""
    samples = cohort.samples
    counts = samples["label"].value_counts()
    features = [c for c in schema.FEATURES if c in samples.columns]
    missing = samples[features].isna().mean().sort_values(ascending=False).head(8)
    with_images = cohort.image_rows.dropna(subset=["depth_file"])["sample_id"].nunique()
    return {
        "data_root": str(cohort.root),
        "fingerprint": cohort.fingerprint,
        "samples": len(samples),
        "patients": int(samples[schema.PATIENT].nunique()),
        "classes": {name: int(counts.get(code, 0)) for code, name in enumerate(schema.CLASS_NAMES)},
        "modalities": list(cohort.modalities),
        "image_rows": {m: n for m, n in image_counts.items()},
        "samples_with_images": int(with_images),
        "missing_share": {c: round(float(v), 3) for c, v in missing.items() if v > 0},
        "notes": list(cohort.notes),
    }


def check_cohort_for(data_root: str | Path, *, modalities, n_folds: int,
                     source: str = "") -> Cohort:
    """The cohort at `data_root`, refused before any training if it lacks a modality asked for,
    has too few patients per class for `n_folds`, or holds a broken image or box of those
    modalities. `source` (a file name) prefixes the configuration's errors."""
    prefix = f"{source}: " if source else ""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"data root {root} not found; pass --data-root, set data.root in the "
                        "sweep file, or create a synthetic cohort with `dfu data synth`")
    cohort = load_cohort(root)
    absent = sorted(set(modalities) - set(cohort.modalities))
    if absent:
        raise ConfigError(f"{prefix}modality {absent[0]!r} requested, but the cohort at {root} "
                          f"has only {', '.join(cohort.modalities)}")
    try:
        check_fold_count(cohort, n_folds)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}{exc}") from None
    check_images(cohort, modalities)
    return cohort
