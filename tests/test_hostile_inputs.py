"""A corpus of hostile inputs: values and files built to crash, hang or exhaust the loader rather
than honest mistakes (those are `test_broken_inputs.py`). Each is refused by the command a user
would run, before any Ray or training work, with exit code 2 and one bounded line that names the
file and the line, column or key."""

from __future__ import annotations

import fractions
import os
import pickle
import re
import struct
import zlib
from pathlib import Path

import pytest
import torch
import yaml

from dfu_train.cli import app
from dfu_train.config import TrialConfig
from dfu_train.data.check import MAX_FRAME_PIXELS
from dfu_train.errors import MESSAGE_LIMIT, ConfigError
from dfu_train.sweep.space import MAX_CONFIGS
from dfu_train.yaml_files import MAX_YAML_BYTES, MAX_YAML_NODES
from test_broken_inputs import (DEPTH, META, THERMAL, VALID_SWEEP, _assert_refused, _config_with,
                                _edit_box, _edit_meta_row, _first_image, _lines, _own_folder,
                                _sweep, _write_lines, runner)


def _refused(result, message: str) -> None:
    """`_assert_refused`, and the line stays short whatever the input held."""
    _assert_refused(result, message)
    assert len(result.stderr.strip()) <= MESSAGE_LIMIT + 100
    assert "weights_only=False" not in result.output


# ---------------------------------------------------------------------------------- cohorts

def _png(width: int, height: int) -> bytes:
    """A one-bit black PNG of any size: a few kilobytes that decode to width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = zlib.compress(bytes(((width + 7) // 8 + 1) * height), 9)  # filter byte + bits per row
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


def _replace_frame(modality: str, content):
    def damage(root: Path) -> None:
        path = _first_image(root, modality)
        path.unlink()
        content(path)
    return damage


def _stray(modality: str, make):
    def damage(root: Path) -> None:
        make(_own_folder(root, modality))
    return damage


def _non_utf8_name(folder: Path) -> None:
    with open(os.fsencode(folder) + b"/bad\xff.png", "wb") as handle:
        handle.write(b"not a frame")


def _duplicate_label_column(root: Path) -> None:
    """A second `Healing Phase Abs` column whose labels disagree with the first."""
    flip = {"I": "R", "P": "I", "R": "P"}
    lines = _lines(root / META)
    body = [f"{line},{flip[line.rsplit(',', 1)[1]]}" for line in lines[1:]]
    _write_lines(root / META, [lines[0] + ",Healing Phase Abs", *body])


def _rename_header(table: str, old: str, new: str):
    def damage(root: Path) -> None:
        lines = (root / table).read_bytes().decode("utf-8-sig").splitlines()
        header = lines[0].replace(old, new, 1)
        if table == META:
            _write_lines(root / META, [header, *lines[1:]])
        else:
            (root / table).write_text("\n".join([header, *lines[1:]]) + "\n")
    return damage


TEMPERATURE = "Wound Centre Temperature (°C)"
BAD_NUMBERS = ("inf", "-inf", "1e400", "nan")
NUMBER_TARGETS = {  # where the value goes -> (damage, file, line, column)
    "box-coordinate": (lambda r, v: _edit_box(r, DEPTH, 1, Xmin=v), DEPTH, 2, "Xmin"),
    "box-id": (lambda r, v: _edit_box(r, THERMAL, 1, **{"DFU#": v}), THERMAL, 2, "DFU#"),
    "meta-id": (lambda r, v: _edit_meta_row(r, 3, "Patient#", v), META, 4, "Patient#"),
    "meta-feature": (lambda r, v: _edit_meta_row(r, 3, TEMPERATURE, v), META, 4, TEMPERATURE),
}


def _number_case(target: str, value: str) -> tuple:
    edit, table, line, column = NUMBER_TARGETS[target]
    return (f"{value}-in-{target}", lambda r: edit(r, value), None,
            rf"{table}: line {line}, column {re.escape(repr(column))}: {re.escape(repr(value))} "
            r"is not a (finite )?number")


# (case id, how to break the cohort, the image modality `dfu cv` must use to meet it, message)
COHORT_CASES = [
    ("bomb-20000px", _replace_frame("depth_rgb", lambda p: p.write_bytes(_png(20000, 20000))),
     "depth_rgb", rf"Depth_RGB/[^ /]+\.png: image has more than {MAX_FRAME_PIXELS} pixels"),
    ("bomb-10000px", _replace_frame("thermal_map", lambda p: p.write_bytes(_png(10000, 10000))),
     "thermal_map",
     rf"Thermal_Map_IMG/[^ /]+\.png: image of 10000x10000 has more than {MAX_FRAME_PIXELS}"),
    ("named-dangling-link", _replace_frame("depth_map", lambda p: p.symlink_to("gone.png")),
     "depth_map", r"Depth_Map_IMG/[^ /]+\.png: a broken symbolic link"),
    ("named-link-loop", _replace_frame("thermal_rgb", lambda p: p.symlink_to(p.name)),
     "thermal_rgb", r"Thermal_RGB/[^ /]+\.png: a symbolic link loop"),
    ("stray-dangling-link", _stray("depth_rgb", lambda f: (f / "stray.png").symlink_to("gone.png")),
     None, r"Depth_RGB/stray\.png: a broken symbolic link"),
    ("stray-link-loop", _stray("thermal_map", lambda f: (f / "loop.png").symlink_to("loop.png")),
     None, r"Thermal_Map_IMG/loop\.png: a symbolic link loop"),
    ("non-utf8-file-name", _stray("depth_map", _non_utf8_name), None,
     r"Depth_Map_IMG/bad\\xff\.png: file name is not valid UTF-8"),
    *[_number_case(target, value) for target in NUMBER_TARGETS for value in BAD_NUMBERS],
    ("inf-in-appt", lambda r: _edit_meta_row(r, 5, "Appt#", "inf"), None,
     rf"{META}: line 6, column 'Appt#': 'inf' is not a finite number"),
    ("huge-dfu", lambda r: _edit_meta_row(r, 5, "DFU#", "1e30"), None,
     rf"{META}: line 6, column 'DFU#': '1e30' is not a finite number within"),
    ("float32-overflow-feature", lambda r: _edit_meta_row(r, 2, "Age", "1e39"), None,
     rf"{META}: line 3, column 'Age': '1e39' is not a finite number within"),
    ("columns-equal-after-strip", _rename_header(META, "Weight (Kg)", "Age "), None,
     rf"{META}: line 1, columns 3 and 5: 'Age' and 'Age ' are one name up to spaces"),
    ("duplicate-label-column", _duplicate_label_column, None,
     rf"{META}: line 1, columns 72 and 73: 'Healing Phase Abs' appears twice"),
    ("duplicate-box-column", _rename_header(THERMAL, "Ymax", "Xmax"), None,
     rf"{THERMAL}: line 1, columns 11 and 12: 'Xmax' appears twice"),
]


@pytest.mark.parametrize(("case", "damage", "modality", "message"), COHORT_CASES,
                         ids=[c[0] for c in COHORT_CASES])
def test_hostile_cohorts_are_refused_by_data_check_and_by_cv(editable_root, case, damage, modality,
                                                             message):
    damage(editable_root)
    config = _config_with(editable_root.parent, modality) if modality else "default"
    for command in (["data", "check"], ["cv", config, "--no-cache"]):
        result = runner.invoke(app, [*command, "--data-root", str(editable_root)])
        _refused(result, message)


# ---------------------------------------------------------------------------- sweep files

def _alias_bomb(depth: int) -> str:
    """A valid sweep with a billion-laughs bomb of `depth` levels under an extra key: 9**depth
    values from a few hundred bytes."""
    lines = [yaml.safe_dump(VALID_SWEEP).rstrip(), "laughs:",
             '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


def _padded(size: int) -> str:
    """A valid sweep file padded with a comment to `size` bytes."""
    text = yaml.safe_dump(VALID_SWEEP)
    return text + "#" * (size - len(text) - 1) + "\n"


def _bounded_value_bomb() -> str:
    """Under the alias cap (7381 values), but a value whose repr is ~50 kB: quoted in the
    message, it stays short."""
    value = '&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
    for level in (1, 2, 3):
        name = "l0" if level == 1 else f"l{level - 1}"
        value = (f"&l{level} " if level < 3 else "") + f"[{value}, " + ", ".join(
            [f"*{name}"] * 8) + "]"
    return f"name: a\nfixed: {{forest.n_estimators: {value}}}\n"


# (case id, the sweep file's text, message after the file name)
TEXT_CASES = [
    *[(f"alias-bomb-{depth}-levels", _alias_bomb(depth),
       rf"line \d+, column \d+: .*aliases expand to more than {MAX_YAML_NODES} values")
      for depth in (4, 6, 9)],
    ("alias-to-itself", "name: a\nfixed: &x {forest.n_estimators: *x}\n",
     r"line 2, column 8: .*an alias refers to its own anchor"),
    ("nested-too-deep", "fixed: " + "[" * 5000 + "]" * 5000 + "\n",
     r"line 1, column \d+: .*nested deeper than 100 levels"),
    ("quoted-value-bounded", _bounded_value_bomb(),
     r"forest.n_estimators: Input should be a valid integer \(got \[\[\[\[\.\.\.\], "),
    ("over-size-cap", _padded(MAX_YAML_BYTES + 1),
     rf"{MAX_YAML_BYTES + 1} bytes; a sweep or config file may have at most {MAX_YAML_BYTES}"),
    ("5000-digit-int", "name: a\nfixed: {forest.n_estimators: " + "9" * 5000 + "}\n",
     r"line 2, column \d+: .*'9999.*\.\.\..*9999' is not a valid int"),
    ("month-13", "name: a\nfixed: {seed: 2020-13-45}\n",
     r"line 2, column 15: .*'2020-13-45' is not a valid timestamp"),
    ("markup-in-key", "name: a\nspace: {'[/bold]x[red]': {choice: [1]}}\n",
     r"space: unknown parameter '\[/bold\]x\[red\]'"),
    ("long-key", "name: a\nfixed:\n  ? " + "k" * 100_000 + "\n  : 1\n",
     r"fixed: unknown parameter 'kkkk"),
]


@pytest.mark.parametrize(("case", "text", "message"), TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_hostile_sweep_files_are_refused_before_ray_starts(synthetic_root, tmp_path, case, text,
                                                           message):
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(synthetic_root),
                                 "--storage", str(tmp_path / "storage")])
    _refused(result, rf"{re.escape(path.name)}: {message}")
    assert not (tmp_path / "storage").exists()  # nothing written


def test_a_sweep_file_that_is_not_utf8_is_refused(synthetic_root, tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(yaml.safe_dump(VALID_SWEEP).encode() + "# café\n".encode("latin-1"))
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(synthetic_root),
                                 "--storage", str(tmp_path / "storage")])
    _refused(result, r"latin.yaml: not UTF-8 \(byte 0xe9 at offset \d+\)")
    assert not (tmp_path / "storage").exists()


def test_a_config_file_over_the_size_cap_is_refused_by_cv(synthetic_root, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("forest: {n_estimators: 10}\n" + "#" * MAX_YAML_BYTES + "\n")
    result = runner.invoke(app, ["cv", str(path), "--data-root", str(synthetic_root),
                                 "--no-cache"])
    _refused(result, rf"big.yaml: \d+ bytes; a sweep or config file may have at most "
                     rf"{MAX_YAML_BYTES}")


def _grid(*names: str, size: int = 100) -> dict:
    return {f"space/{name}": {"grid": list(range(1, size + 1))} for name in names}


# (case id, changes to the valid sweep, message after the file name)
VALUE_CASES = [
    ("grid-3x100", _grid("forest.n_estimators", "forest.max_depth", "metadata.imputer_neighbors"),
     rf"space: 100 \(forest.max_depth\) x 100 .* grid values x 2 draws \(search.num_samples\) "
     rf"= 2000000 configs, over the cap of {MAX_CONFIGS}"),
    ("grid-times-samples", {**_grid("forest.n_estimators", size=3), "search/num_samples": 4000},
     rf"space: 3 \(forest.n_estimators\) grid values x 4000 draws \(search.num_samples\) = "
     rf"12000 configs, over the cap of {MAX_CONFIGS}"),
    ("grid-just-over", {**_grid("forest.n_estimators", size=101), **_grid("forest.max_depth"),
                        "search/num_samples": 1}, r"space: .* = 10100 configs, over the cap"),
    *[(f"max-features-{value}", {"fixed/forest.max_features": value},
       rf"forest.max_features: use sqrt, log2 or a share of the features in \(0, 1\] "
       rf"\(got {re.escape(repr(value))}\)")
      for value in (-1.0, 0.0, 1.5, 3, float("inf"), "auto")],
    ("max-features-in-choice", {"space/forest.max_features": {"choice": [0.5, -0.5]}},
     r"forest.max_features: use sqrt, log2 or a share"),
    *[(f"{name}-{value}", {f"fixed/{name}": value}, rf"{re.escape(name)}: {message}")
      for name, value, message in [
          ("forest.n_estimators", 0, "Input should be greater than or equal to 1"),
          ("forest.max_depth", 0, "Input should be greater than or equal to 1"),
          ("forest.min_samples_leaf", 0, "Input should be greater than or equal to 1"),
          ("stage1.lr", 0.0, "Input should be greater than 0"),
          ("thermal_map.pretrain_lr", float("nan"), "Input should be a finite number"),
          ("optim.weight_decay", float("inf"), "Input should be a finite number"),
          ("optim.plateau_factor", 1.0, "Input should be less than 1"),
          ("thermal_map.dropout", 1.0, "Input should be less than 1"),
          ("loss.alpha_sum", float("inf"), "Input should be a finite number"),
      ]],
    ("uniform-to-inf", {"space/stage1.lr": {"uniform": [0.001, float("inf")]}},
     r"space: stage1.lr: uniform needs \[low, high\], two numbers within"),
    ("randint-beyond-int64", {"space/forest.n_estimators": {"randint": [1, 10**30]}},
     r"space: forest.n_estimators: randint needs \[low, high\], two numbers within"),
]


@pytest.mark.parametrize(("case", "changes", "message"), VALUE_CASES,
                         ids=[c[0] for c in VALUE_CASES])
def test_hostile_sweep_values_are_refused_before_ray_starts(synthetic_root, tmp_path, case,
                                                            changes, message):
    sweep = _sweep(**changes)
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(synthetic_root),
                                 "--storage", str(tmp_path / "storage")])
    _refused(result, rf"{re.escape(path.name)}: {message}")
    assert not (tmp_path / "storage").exists()


# --------------------------------------------------------------------- pretrained weights

WEIGHTS = {  # kind -> (how to write the file, message after "image.pretrained: <path>")
    "text": (lambda p: p.write_text("not weights"), "not a state-dict file torch can read"),
    "pickled-object": (lambda p: p.write_bytes(pickle.dumps({"w": fractions.Fraction(1, 3)})),
                       "not a state-dict file torch can read"),
    "torch-object": (lambda p: torch.save(fractions.Fraction(1, 3), p),
                     "not a state-dict file torch can read"),
    "tensor": (lambda p: torch.save(torch.zeros(3), p), "holds a Tensor, not a state dict"),
    "dict-of-lists": (lambda p: torch.save({"w": [1, 2]}, p), "holds a dict, not a state dict"),
    "empty-dict": (lambda p: torch.save({}, p), "holds a dict, not a state dict"),
    "missing": (lambda p: None, "weights file not found"),
    "folder": (lambda p: p.mkdir(), "weights file not found"),
}


@pytest.mark.parametrize("kind", list(WEIGHTS))
def test_pretrained_files_that_are_not_state_dicts_are_refused_by_sweep_run(synthetic_root,
                                                                          tmp_path, kind):
    write, message = WEIGHTS[kind]
    weights = tmp_path / "w.pt"
    write(weights)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_sweep(**{"fixed/image.pretrained": str(weights)})))
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(synthetic_root),
                                 "--storage", str(tmp_path / "storage")])
    _refused(result, rf"sweep.yaml: image.pretrained: .*w\.pt: {message}")
    assert not (tmp_path / "storage").exists()


@pytest.mark.parametrize("kind", ["pickled-object", "dict-of-lists", "missing"])
def test_pretrained_files_that_are_not_state_dicts_are_refused_by_cv(synthetic_root, tmp_path,
                                                                   kind):
    write, message = WEIGHTS[kind]
    weights = tmp_path / "w.pt"
    write(weights)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"modalities": ["metadata", "thermal_map"],
                                      "image": {"size": 16, "pretrained": str(weights)}}))
    result = runner.invoke(app, ["cv", str(config), "--data-root", str(synthetic_root),
                                 "--no-cache"])
    _refused(result, rf"config.yaml: image.pretrained: .*w\.pt: {message}")


@pytest.mark.parametrize("value", [-1.0, 0.0, 1e-9, 0.5, 1.0, 1.0000001, 3.0, "sqrt", "log2",
                                   "auto"])
def test_max_features_agrees_with_scikit_learn(value):
    """The config accepts a share or a name exactly when scikit-learn's own constraints do."""
    from sklearn.ensemble import RandomForestClassifier

    try:
        RandomForestClassifier(max_features=value)._validate_params()
        library = True
    except ValueError:
        library = False
    try:
        TrialConfig().override({"forest.max_features": value})
        ours = True
    except ConfigError:
        ours = False
    assert ours == library


@pytest.mark.parametrize(("section", "name", "value", "key"), [
    ("forest", "max_features", -1.0, "forest.max_features"),
    ("forest", "n_estimators", 0, "forest.n_estimators"),
    ("metadata", "imputer_neighbors", 0, "metadata.imputer_neighbors"),
])
def test_pipeline_values_are_checked_against_the_libraries_own_constraints(section, name, value,
                                                                           key):
    """The backstop behind the config's bounds: a value that slipped past them (built here
    without validation) is refused with the key that set it, as fitting would refuse it."""
    from dfu_train.config import ForestConfig, MetadataConfig
    from dfu_train.metadata.features import check_parameters

    sections = {"forest": ForestConfig(), "metadata": MetadataConfig()}
    model = type(sections[section])
    sections[section] = model.model_construct(**{**dict(sections[section]), name: value})
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: The '\w+' parameter of \w+ must"):
        check_parameters(sections["metadata"], sections["forest"])
