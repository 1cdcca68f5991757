"""Write a synthetic cohort in exactly the real layout (data-format.md), with controllable signal.

The phase is encoded twice, through independent noise: a metadata latent that mostly separates
Inflammatory from Proliferative (wound temperatures, exudate, onset), and an image latent that mostly
separates Remodelling from Proliferative (wound colour, depth and heat inside the boxes). So metadata
alone, images alone and both together reach distinguishable kappas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dfu_train.data import schema

CLASS_SHARES = (0.31, 0.56, 0.13)
META_MEANS = (1.3, 0.0, -0.5)   # per class I, P, R: metadata latent
IMAGE_MEANS = (-0.5, 0.0, 1.3)  # per class I, P, R: image latent
DEPTH_FRAME = (1280, 720)
THERMAL_FRAME = (1080, 1440)
ANGLES = ("LW", "MW", "RW", "MZ")


@dataclass(frozen=True)
class SynthSpec:
    """What to generate; `frame_scale` shrinks the real frame sizes so generation takes seconds."""

    patients: int = 120
    seed: int = 0
    meta_signal: float = 1.0
    image_signal: float = 1.0
    images: bool = True
    frame_scale: float = 0.125
    max_frames_per_sample: int = 2
    image_share: float = 0.8
    shared_frame_share: float = 0.3  # frames of a multi-wound visit that show 2-3 of its wounds


def write_synthetic_cohort(out: str | Path, spec: SynthSpec = SynthSpec()) -> Path:
    """Generate the cohort into `out` (created) and return it."""
    if not 3 <= spec.patients <= 999:
        raise ValueError("patients must be between 3 and 999 (Patient# has three digits)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    table, meta_latent, image_latent = _metadata(rng, spec)
    _write_metadata_csv(table, out / schema.METADATA_CSV, rng)
    if spec.images:
        _write_images(out, table, image_latent, rng, spec)
    return out


def _metadata(rng: np.random.Generator, spec: SynthSpec):
    rows, meta_latent, image_latent = [], [], []
    for patient in range(1, spec.patients + 1):
        person = _patient(rng)
        n_dfus = int(rng.choice([1, 1, 1, 2, 2, 3]))
        for dfu in range(1, n_dfus + 1):
            wound = _wound(rng)
            n_appts = int(min(1 + rng.geometric(0.55), 14)) if rng.random() < 0.75 else 1
            for appt in range(n_appts):
                label = int(rng.choice(3, p=CLASS_SHARES))
                z_meta = spec.meta_signal * META_MEANS[label] + rng.normal()
                z_image = spec.image_signal * IMAGE_MEANS[label] + rng.normal()
                meta_latent.append(z_meta)
                image_latent.append(z_image)
                rows.append({
                    "Patient#": patient, "DFU#": dfu, "Appt#": appt,
                    "Number of DFUs": n_dfus, **person, **wound,
                    **_assessment(rng, appt, label, z_meta),
                })
    table = pd.DataFrame(rows)
    table.insert(0, "ID", np.arange(1, len(table) + 1))
    return table.reindex(columns=schema.COLUMNS), np.array(meta_latent), np.array(image_latent)


def _patient(rng: np.random.Generator) -> dict:
    smoking, alcohol = int(rng.random() < 0.2), int(rng.random() < 0.25)
    heart, cancer, sensory = (int(rng.random() < p) for p in (0.35, 0.1, 0.7))
    diabetes = int(rng.choice([1, 2], p=[0.15, 0.85]))
    return {
        "Age": int(rng.integers(35, 90)), "Sex (F:0, M:1)": rng.choice(["F", "M"], p=[0.3, 0.7]),
        "Weight (Kg)": round(float(rng.normal(88, 18)), 1),
        "Height (cm)": round(float(rng.normal(172, 9)), 1),
        "Smoking": smoking, "Alcohol Consumption": alcohol, "Habits Score": smoking + alcohol,
        "Type of Diabetes": diabetes, "Heart Conditions": heart, "Cancer History": cancer,
        "Sensory Peripheral": sensory, "Clinical Score": heart + cancer + sensory + diabetes,
    }


def _wound(rng: np.random.Generator) -> dict:
    deformities = {name: int(rng.random() < 0.15) for name in (
        "Bunion", "Claw", "Hammer", "Charcot Arthropathy")}
    arches = {name: int(rng.random() < 0.12) for name in (
        "Flat (Pes Planus) Arch", "Abnormally High Arch")}
    location = rng.choice(schema.CATEGORIES["Location Grouped (Hallux:1,Toes,Middle,Heel,Ankle:5)"])
    aspect = rng.choice(schema.CATEGORIES["Foot Aspect"])
    return {
        "Side (Left:0, Right:1)": rng.choice(["Left", "Right"]), "Foot Aspect": aspect,
        "Location": f"{location} {aspect}".lower(),
        "Location Grouped (Hallux:1,Toes,Middle,Heel,Ankle:5)": location,
        "Onset (Days)": int(min(rng.lognormal(4.5, 1.3), 7071)),
        "No Toes Deformities": int(not any(deformities.values())), **deformities,
        **arches, "No Arch Deformities": int(not any(arches.values())),
        "Foot Score": sum(deformities.values()) + sum(arches.values()),
    }


def _assessment(rng: np.random.Generator, appt: int, label: int, z: float) -> dict:
    """Sample-level columns; temperatures and exudate carry the metadata latent `z`."""
    intact = float(rng.normal(28.0, 1.2))
    centre = 29.5 + 0.9 * z + rng.normal(0, 0.6)
    peri = 29.0 + 0.6 * z + rng.normal(0, 0.6)
    exudate = int(np.clip(np.round(1.2 + 0.6 * z + rng.normal(0, 0.7)), 0, 3))
    pain_grouped = rng.choice(schema.CATEGORIES["Type of Pain Grouped"])
    has_pain = pain_grouped != "NoPain"
    dressing = rng.choice(schema.CATEGORIES["Dressing Grouped"])
    flags = {name: int(rng.random() < p) for name, p in (
        ("Erythema at Peri-ulcer", 0.3), ("Edema at Peri-ulcer", 0.25),
        ("Pale Colour at Peri-ulcer", 0.15), ("Maceration at Peri-ulcer", 0.2))}
    offload = {name: int(rng.random() < (0.35 if label == 0 else 0.2))
               for name in schema.OFFLOADING if name != "Offloading Score"}
    foot = {name: int(rng.random() < 0.3) for name in (
        "Foot Hair Loss", "Foot Dry Skin", "Foot Fissure Cracks", "Foot Callus",
        "Thickened Toenail", "Foot Fungal Nails")}
    fine = schema.CLASS_NAMES[label] + rng.choice(["-", "", "+"])
    return {
        "Appt Days": appt * int(rng.integers(10, 30)),
        "Wound Centre Temperature (°C)": round(centre, 2),
        "Peri-Ulcer Temperature (°C)": round(peri, 2),
        "Intact Skin Temperature (°C)": round(intact, 2),
        "Wound Centre Temperature Normalized (°C)": round((centre - intact) / intact, 4),
        "Peri-Ulcer Temperature Normalized (°C)": round((peri - intact) / intact, 4),
        "Pain Level": int(rng.integers(1, 8)) if has_pain else 0,
        "Type of Pain": "throbbing" if has_pain else "0",
        "Type of Pain Grouped": pain_grouped,
        "Type of Pain2": "burning" if has_pain and rng.random() < 0.3 else None,
        "Type of Pain_Grouped2": "ShootingPain" if has_pain and rng.random() < 0.3 else None,
        "Wound Tunneling": int(rng.random() < 0.1 + 0.1 * (label == 0)),
        "Exudate Amount (None:0,Minor,Medium,Severe:3)": exudate,
        "Exudate Appearance (Serous:1,Haemoserous,Bloody,Thick:4)": (
            rng.choice(schema.CATEGORIES["Exudate Appearance (Serous:1,Haemoserous,Bloody,Thick:4)"])
            if exudate else None),
        "Odor": rng.choice(["NoOdor", "Unpleasant"], p=[0.85, 0.15]),
        "No Peri-ulcer Conditions (False:0, True:1)": int(not any(flags.values())), **flags,
        "Wound Score": exudate + sum(flags.values()),
        "Dressing": "0" if dressing == "NoDressing" else dressing.lower(),
        "Dressing Grouped": dressing,
        "No Foot Abnormalities": int(not any(foot.values())), **foot,
        "Leg Score": sum(foot.values()),
        "No Offloading": int(not any(offload.values())), **offload,
        "Offloading Score": sum(offload.values()),
        "Healing Phase": fine, "Phase Confidence (%)": int(rng.integers(30, 101)),
        "Healing Phase Abs": schema.CLASS_NAMES[label],
    }


def _write_metadata_csv(table: pd.DataFrame, path: Path, rng: np.random.Generator) -> None:
    """UTF-8 with BOM, CRLF, empty fields plus a few literal NA, as the real export."""
    out = table.astype(object)
    shares = {"Type of Pain2": 0.0, "Exudate Appearance (Serous:1,Haemoserous,Bloody,Thick:4)": 0.05,
              **{c: 0.05 for c in schema.TEMPERATURES}, "Onset (Days)": 0.03, "Weight (Kg)": 0.04,
              "Height (cm)": 0.04, "Pain Level": 0.02}
    for column, share in shares.items():
        out.loc[rng.random(len(out)) < share, column] = None
    na_cells = rng.random(len(out)) < 0.02
    out.loc[na_cells, "Odor"] = "NA"
    out.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")


def _write_images(out: Path, table: pd.DataFrame, latent: np.ndarray, rng: np.random.Generator,
                  spec: SynthSpec) -> None:
    folders = {m: out / folder for m, (folder, _) in schema.IMAGE_FOLDERS.items()}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    depth_size = tuple(max(32, int(v * spec.frame_scale)) for v in DEPTH_FRAME)
    thermal_size = tuple(max(32, int(v * spec.frame_scale)) for v in THERMAL_FRAME)
    backgrounds = {
        "depth_rgb": _skin_backgrounds(rng, depth_size), "thermal_rgb": _skin_backgrounds(rng, thermal_size),
        "depth_map": _map_backgrounds(rng, depth_size, border=0.0),
        "thermal_map": _map_backgrounds(rng, thermal_size, border=0.3),
    }
    depth_rows, thermal_rows, counter = [], [], 0
    pictured = [(p, a, d, z) for p, a, d, z in zip(table[schema.PATIENT], table[schema.APPT],
                                                    table[schema.DFU], latent)
                if rng.random() <= spec.image_share]
    visits: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for patient, appt, dfu, z in pictured:
        visits.setdefault((patient, appt), []).append((dfu, z))
    for (patient, appt), wounds in visits.items():
        for dfu, z in wounds:
            for _ in range(int(rng.integers(1, spec.max_frames_per_sample + 1))):
                counter += 1
                shown = [(dfu, z), *_other_wounds(rng, wounds, dfu, spec.shared_frame_share)]
                debri = str(rng.choice(["B", "A"], p=[0.7, 0.3]))
                angle = str(rng.choice(ANGLES))
                # Named after one wound; one box row per wound shown, each with its own DFU#.
                stem = f"{counter}_P{patient:03d}{appt:02d}{dfu}{debri}"
                names = {cam: f"{stem}{cam}{angle}.png" for cam in "DT"}
                boxes = {"D": _boxes(rng, depth_size, spec.frame_scale, (55, 56), len(shown)),
                         "T": _boxes(rng, thermal_size, spec.frame_scale, (63, 82), len(shown),
                                     centre_share=0.5)}
                frame_z = [wound_z + rng.normal(0, 0.3) for _, wound_z in shown]
                for modality, (_, camera) in schema.IMAGE_FOLDERS.items():
                    letter = camera[0].upper()
                    choices = backgrounds[modality]
                    frame = choices[int(rng.integers(len(choices)))].copy()
                    paint = _paint_rgb_wound if modality.endswith("rgb") else _paint_map_wound
                    for box, level in zip(boxes[letter], frame_z):
                        paint(rng, frame, box, level)
                    Image.fromarray(frame).save(folders[modality] / names[letter], compress_level=1)
                for rows, letter, pad in ((depth_rows, "D", True), (thermal_rows, "T", False)):
                    ids = (f"{patient:03d}", f"{appt:02d}") if pad else (str(patient), str(appt))
                    # Each camera numbers the wounds of its frame in its own order.
                    for number, k in enumerate(rng.permutation(len(shown)), start=1):
                        rows.append([names[letter], *ids, shown[k][0], debri, letter, angle,
                                     number, *boxes[letter][k]])
    for rows, path in ((depth_rows, schema.BBOX_DEPTH_CSV), (thermal_rows, schema.BBOX_THERMAL_CSV)):
        pd.DataFrame(rows, columns=schema.BBOX_COLUMNS).to_csv(out / path, index=False)


def _other_wounds(rng, wounds: list[tuple[int, float]], dfu: int,
                  share: float) -> list[tuple[int, float]]:
    """The other wounds of the visit that a frame named after `dfu` also shows (often none)."""
    others = [w for w in wounds if w[0] != dfu]
    if not others or rng.random() >= share:
        return []
    count = int(rng.integers(1, min(2, len(others)) + 1))
    return [others[i] for i in sorted(rng.choice(len(others), size=count, replace=False))]


def _boxes(rng, size, scale, median, count: int,
           centre_share: float = 0.9) -> list[tuple[int, int, int, int]]:
    """`count` boxes side by side in the frame's centre, one per wound, never overlapping."""
    width, height = size
    margin_x = int(width * (1 - centre_share) / 2)
    margin_y = int(height * (1 - centre_share) / 2)
    strip = (width - 2 * margin_x) // count
    boxes = []
    for k in range(count):
        left = margin_x + k * strip
        w = min(strip, max(8, int(rng.normal(median[0], 12) * scale)))
        h = max(8, int(rng.normal(median[1], 12) * scale))
        x0 = int(rng.integers(left, max(left + 1, left + strip - w)))
        y0 = int(rng.integers(margin_y, max(margin_y + 1, height - margin_y - h)))
        boxes.append((x0, y0, x0 + w, y0 + h))
    return boxes


def _ellipse(box) -> tuple[slice, slice, np.ndarray]:
    """The box's slices and the elliptic wound mask inside it."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0:y1 - y0, 0:x1 - x0]
    rx, ry = (x1 - x0) / 2, (y1 - y0) / 2
    mask = ((xx + 0.5 - rx) / rx) ** 2 + ((yy + 0.5 - ry) / ry) ** 2 <= 1.0
    return slice(y0, y1), slice(x0, x1), mask


def _skin_backgrounds(rng, size, count: int = 6) -> list[np.ndarray]:
    width, height = size
    base = np.array([196, 150, 128], dtype=np.float32)
    return [np.clip(base + rng.normal(0, 10, (height, width, 1)), 0, 255).astype(np.uint8)
            for _ in range(count)]


def _map_backgrounds(rng, size, border: float, count: int = 6) -> list[np.ndarray]:
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for _ in range(count):
        phase = rng.uniform(0, 6)
        level = 0.45 + 0.15 * np.sin(xx / width * 3 + yy / height * 2 + phase)
        frame = _colormap(np.clip(level + rng.normal(0, 0.03, level.shape), 0, 1))
        if border:
            bx, by = int(width * border / 2), int(height * border / 2)
            keep = np.zeros((height, width), dtype=bool)
            keep[by:height - by, bx:width - bx] = True
            frame[~keep] = 0
        frames.append(frame)
    return frames


def _colormap(level: np.ndarray) -> np.ndarray:
    return np.stack([255 * level, 255 * (1 - np.abs(2 * level - 1)), 255 * (1 - level)],
                    axis=-1).astype(np.uint8)


def _paint_rgb_wound(rng, frame: np.ndarray, box, z: float) -> None:
    """An elliptic wound whose colour follows the image latent."""
    rows, cols, mask = _ellipse(box)
    colour = np.array([150 + 25 * z, 45 + 30 * z, 50 + 28 * z], dtype=np.float32)
    patch = colour + rng.normal(0, 12, (int(mask.sum()), 3))
    frame[rows, cols][mask] = np.clip(patch, 0, 255).astype(np.uint8)


def _paint_map_wound(rng, frame: np.ndarray, box, z: float) -> None:
    """The wound's depth or heat level, shifted by the image latent."""
    rows, cols, mask = _ellipse(box)
    level = 0.55 + 0.12 * z + rng.normal(0, 0.05, int(mask.sum()))
    frame[rows, cols][mask] = _colormap(np.clip(level, 0, 1))
