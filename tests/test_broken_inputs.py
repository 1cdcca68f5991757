"""A corpus of broken inputs, each made from a valid synthetic cohort or sweep file: every one is
refused by the command a user would run, before any Ray or training work, with exit code 2 and one
message that names the file and the line, column or key."""

from __future__ import annotations

import csv
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import ray
import yaml
from PIL import Image
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.data import schema
from dfu_train.data.images import read_frame

runner = CliRunner()
META, DEPTH, THERMAL = schema.METADATA_CSV, schema.BBOX_DEPTH_CSV, schema.BBOX_THERMAL_CSV
VALID_SWEEP = {
    "name": "broken", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0]}, "search": {"algorithm": "random",
                                                                    "num_samples": 2},
    "scheduler": {"type": "none"}, "resources": {"use_train": False},
    "fixed": {"modalities": ["metadata", "thermal_map"], "image.size": 16,
              "forest.n_estimators": 10},
    "space": {"forest.max_depth": {"choice": [3, None]}},
}


def _lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n").rstrip("\n").split("\n")


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))


def _edit_meta_row(root: Path, row: int, column: str, value: str) -> None:
    path = root / META
    lines = _lines(path)
    header = next(csv.reader([lines[0]]))
    cells = next(csv.reader([lines[row]]))
    cells[header.index(column)] = value
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    lines[row] = buffer.getvalue()
    _write_lines(path, lines)


def _edit_box(root: Path, table: str, row: int, **values) -> None:
    path = root / table
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    for column, value in values.items():
        cells[header.index(column)] = str(value)
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def _own_folder(root: Path, modality: str) -> Path:
    """Replace the linked image folder by a private copy that the case may break."""
    folder = root / schema.IMAGE_FOLDERS[modality][0]
    source = folder.resolve()
    folder.unlink()
    shutil.copytree(source, folder)
    return folder


def _first_image(root: Path, modality: str) -> Path:
    folder = _own_folder(root, modality)
    camera = schema.IMAGE_FOLDERS[modality][1]
    table = DEPTH if camera == "depth" else THERMAL
    name = (root / table).read_text().splitlines()[1].split(",")[0]
    return folder / name


def _box_name(root: Path, table: str) -> str:
    """The first box's file name without its leading image number."""
    return (root / table).read_text().splitlines()[1].split(",")[0].split("_", 1)[1]


def _conflicting_duplicate(root: Path) -> None:
    lines = _lines(root / META)
    twin = lines[2].rsplit(",", 1)[0] + ("," + ("R" if lines[2].endswith("I") else "I"))
    _write_lines(root / META, [*lines[:3], twin, *lines[3:]])


# (case id, how to break the cohort, what the message must say)
DATA_CASES = [
    ("empty-csv", lambda r: (r / META).write_bytes(b""), rf"{META}: file is empty"),
    ("header-only", lambda r: _write_lines(r / META, _lines(r / META)[:1]), rf"{META}: no data rows"),
    ("no-label-column", lambda r: _write_lines(r / META, [_lines(r / META)[0].replace(
        "Healing Phase Abs", "Phase"), *_lines(r / META)[1:]]),
     rf"{META}: column 'Healing Phase Abs' is missing"),
    ("unknown-label", lambda r: _edit_meta_row(r, 4, schema.LABEL, "X"),
     rf"{META}: line 5, column 'Healing Phase Abs': unknown label 'X'"),
    ("empty-label", lambda r: _edit_meta_row(r, 4, schema.LABEL, ""),
     rf"{META}: line 5, column 'Healing Phase Abs': label is missing"),
    ("fine-label", lambda r: _edit_meta_row(r, 4, schema.LABEL, "P+"),
     rf"{META}: line 5, column 'Healing Phase Abs': 'P\+' is a fine label"),
    ("non-numeric-patient", lambda r: _edit_meta_row(r, 1, schema.PATIENT, "abc"),
     rf"{META}: line 2, column 'Patient#': 'abc' is not a number"),
    ("conflicting-duplicate", _conflicting_duplicate, rf"{META}: lines 3, 4: .*conflicting labels"),
    ("semicolons", lambda r: _write_lines(r / META, [l.replace(",", ";") for l in _lines(r / META)]),
     rf"{META}: line 1: fields are separated by ';'"),
    ("latin-1", lambda r: (r / META).write_bytes(
        (r / META).read_bytes().decode("utf-8-sig").encode("latin-1")), rf"{META}: .*not UTF-8"),
    ("bbox-missing-column", lambda r: (r / THERMAL).write_text(
        (r / THERMAL).read_text().replace("DebriStat", "Debri")),
     rf"{THERMAL}: column 'DebriStat' is missing"),
    ("bbox-negative", lambda r: _edit_box(r, DEPTH, 1, Xmin=-5),
     rf"{DEPTH}: line 2, columns Xmin..Ymax: .*negative coordinate"),
    ("bbox-reversed", lambda r: _edit_box(r, DEPTH, 1, Xmin=50, Xmax=40),
     rf"{DEPTH}: line 2, columns Xmin..Ymax: Xmax must exceed Xmin"),
    ("bbox-zero-area", lambda r: _edit_box(r, THERMAL, 1, Ymin=50, Ymax=50),
     rf"{THERMAL}: line 2, columns Xmin..Ymax: Ymax must exceed Ymin"),
    ("bbox-outside-frame", lambda r: _edit_box(r, DEPTH, 1, Xmax=100000),
     r"Depth_RGB/[^ /]+\.png: box .* lies outside the \d+x\d+ frame"),
    ("bbox-unknown-file", lambda r: _edit_box(r, DEPTH, 1, Filename="9999_" + _box_name(r, DEPTH)),
     r"Depth_RGB/9999_[^ /]+\.png: image file named in the bounding-box CSV does not exist"),
    ("bbox-unparseable-name", lambda r: _edit_box(r, THERMAL, 1, Filename="thermal.png"),
     rf"{THERMAL}: line 2, column 'Filename': 'thermal.png'"),
    ("missing-png", lambda r: _first_image(r, "thermal_map").unlink(),
     r"Thermal_Map_IMG/[^ /]+\.png: image file named in the bounding-box CSV does not exist"),
    ("truncated-png", lambda r: (lambda p: p.write_bytes(p.read_bytes()[:60]))(
        _first_image(r, "depth_map")), r"Depth_Map_IMG/[^ /]+\.png: not a readable image"),
    ("text-as-png", lambda r: _first_image(r, "thermal_rgb").write_text("not a picture"),
     r"Thermal_RGB/[^ /]+\.png: not a readable image"),
]


@pytest.mark.parametrize(("case", "damage", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_broken_cohorts_are_refused_by_data_check_and_by_cv(editable_root, case, damage, message):
    damage(editable_root)
    config = _config_with(editable_root.parent, IMAGE_CASES[case]) if case in IMAGE_CASES else (
        "default")  # a metadata-only config reads no image: table cases suffice for it
    for command in (["data", "check"], ["cv", config, "--no-cache"]):
        result = runner.invoke(app, [*command, "--data-root", str(editable_root)])
        _assert_refused(result, message)


IMAGE_CASES = {"bbox-outside-frame": "depth_rgb", "bbox-unknown-file": "depth_rgb",
               "missing-png": "thermal_map", "truncated-png": "depth_map",
               "text-as-png": "thermal_rgb"}


def _config_with(folder: Path, modality: str) -> str:
    """A config that uses `modality`, so `dfu cv` must check its images before training."""
    path = folder / f"{modality}.yaml"
    path.write_text(yaml.safe_dump({"modalities": ["metadata", modality], "image": {"size": 16}}))
    return str(path)


def _assert_refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not ray.is_initialized()


def _sweep(**changes) -> dict:
    sweep = yaml.safe_load(yaml.safe_dump(VALID_SWEEP))
    for dotted, value in changes.items():
        node, *path = dotted.split("/")
        target = sweep
        for part in [node, *path][:-1]:
            target = target.setdefault(part, {})
        target[[node, *path][-1]] = value
    return sweep


SWEEP_CASES = [
    ("unknown-section", {"schedular": {"type": "asha"}}, r"unknown key 'schedular'.*'scheduler'"),
    ("misspelt-parameter", {"space/forest.n_estimator": {"choice": [10]}},
     r"unknown parameter 'forest.n_estimator'.*'forest.n_estimators'"),
    ("empty-choice", {"space/forest.max_depth": {"choice": []}},
     r"forest.max_depth: choice needs a non-empty list"),
    ("inverted-range", {"space/stage1.lr": {"loguniform": [1e-2, 1e-4]}},
     r"stage1.lr: loguniform range \[0.01, 0.0001\] is empty or inverted"),
    ("unknown-distribution", {"space/stage1.lr": {"normal": [0, 1]}},
     r"stage1.lr: unknown distribution 'normal'"),
    ("negative-epochs", {"fixed/stage1.epochs": -1}, r"stage1.epochs: .*greater than or equal to 0"),
    ("unknown-backbone", {"fixed/thermal_map.backbone": "resnet9000"},
     r"thermal_map.backbone: unknown backbone 'resnet9000'"),
    ("unknown-fusion-head", {"space/fusion.head": {"choice": ["residual", "gatted"]}},
     r"fusion.head: unknown fusion head 'gatted'.*'gated'"),
    ("leakage-feature", {"fixed/metadata.features": ["Age", "Healing Phase"]},
     r"metadata.features: 'Healing Phase' is .* never a feature"),
    ("fold-out-of-range", {"cv/run_folds": [5]}, r"cv.run_folds: .*fold 5 does not exist"),
    ("optuna-with-grid", {"search/algorithm": "optuna", "space/seed": {"grid": [0, 1]}},
     r"optuna cannot take grid values \('seed'\)"),
]


@pytest.mark.parametrize(("case", "changes", "message"), SWEEP_CASES,
                         ids=[c[0] for c in SWEEP_CASES])
def test_broken_sweep_files_are_refused_before_ray_starts(synthetic_root, tmp_path, case, changes,
                                                          message):
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(_sweep(**changes)))
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(synthetic_root),
                                 "--storage", str(tmp_path / "storage")])
    _assert_refused(result, rf"{path.name}: .*{message}" if case != "too-many-folds" else message)
    assert not (tmp_path / "storage" / "broken").exists()  # nothing written


def test_more_folds_than_patients_per_class_is_refused(tmp_path):
    from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort

    root = write_synthetic_cohort(tmp_path / "small", SynthSpec(patients=12, seed=2))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_sweep(**{"cv/n_folds": 10})))
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(root),
                                 "--storage", str(tmp_path / "storage")])
    _assert_refused(result, r"sweep.yaml: cv.n_folds=10, but only \d+ patients have class '\w+'; use at most")


def test_a_modality_without_images_is_refused(tables_only_root, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(VALID_SWEEP))
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(tables_only_root),
                                 "--storage", str(tmp_path / "storage")])
    _assert_refused(result, r"sweep.yaml: modality 'thermal_map' requested, but the cohort at .* "
                            r"has only metadata")


def test_an_unwritable_storage_is_refused(synthetic_root, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(VALID_SWEEP))
    blocker = tmp_path / "storage"
    blocker.write_text("a file where the storage folder should be")
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(synthetic_root),
                                 "--storage", str(blocker)])
    _assert_refused(result, r"storage .*storage is not writable")


@pytest.mark.parametrize(("text", "message"), [
    ("fixed: [unclosed", r"bad.yaml: line 1, column 17: not valid YAML"),
    ("name: a\ncv:\n  seed: 1\n  seed: 2\n",
     r"bad.yaml: line 4, column 3: not valid YAML \(key 'seed' is given twice\)"),
    ("- a list\n- not a mapping", r"bad.yaml: a sweep file is a mapping"),
])
def test_a_sweep_file_that_is_not_a_mapping_is_refused(synthetic_root, tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(synthetic_root)])
    _assert_refused(result, message)


@pytest.mark.parametrize(("args", "message"), [
    (["fold", "CONFIG", "--fold", "7"], r"fold 7 does not exist; folds are 0..4"),
    (["cv", "CONFIG"], r"broken.yaml: unknown parameter 'forest.n_trees'"),
])
def test_broken_configs_for_fold_and_cv_are_refused(synthetic_root, tmp_path, args, message):
    config = tmp_path / "broken.yaml"
    bad = {"forest": {"n_trees": 5}} if args[0] == "cv" else {"forest": {"n_estimators": 5}}
    config.write_text(yaml.safe_dump(bad))
    args = [str(config) if a == "CONFIG" else a for a in args]
    result = runner.invoke(app, [*args, "--data-root", str(synthetic_root), "--no-cache"])
    _assert_refused(result, message)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_rgba_and_16_bit_frames_are_accepted_as_rgb(editable_root, mode):
    """Decided and documented (data-format, README): such frames are converted, not refused:
    grayscale repeats its channel, RGBA drops alpha, 16-bit is scaled to its own peak."""
    path = _first_image(editable_root, "thermal_map")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if mode == "I;16":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 200).save(path)
    else:
        Image.fromarray(rgb).convert(mode).save(path)
    frame = read_frame(path)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[:2] == rgb.shape[:2] and frame.max() > 0
    result = runner.invoke(app, ["data", "check", "--data-root", str(editable_root)])
    assert result.exit_code == 0, result.output
