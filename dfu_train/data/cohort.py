"""Read a data root in the real clinical layout into a `Cohort` (samples + image rows).

Every problem is a `DataError` that names the file, the row (as a 1-based line of the file, the
header being line 1) and the column, so a user can open the file and fix it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dfu_train.data import schema
from dfu_train.errors import DataError, did_you_mean, quoted

MISSING_TOKENS = ("", "NA")
NUMBER_LIMIT = float(np.finfo(np.float32).max)  # scikit-learn's forest computes in float32
INTEGER_LIMIT = 2**31 - 1  # identifiers and pixel coordinates
IMAGE_ROW_COLUMNS = ("sample_id", "depth_file", "depth_xmin", "depth_ymin", "depth_xmax",
                     "depth_ymax", "thermal_file", "thermal_xmin", "thermal_ymin", "thermal_xmax",
                     "thermal_ymax")


@dataclass(frozen=True)
class Cohort:
    """A validated cohort. Treat the tables as read-only.

    samples: one row per (Patient#, Appt#, DFU#) with `sample_id`, `label` (0/1/2) and the metadata.
    image_rows: one row per matched depth/thermal frame set: `sample_id`, `depth_file`,
        `depth_box` corners, `thermal_file` and `thermal_box` corners (NaN where no thermal match).
    modalities: what this cohort can feed: "metadata" plus each image folder present with boxes.
    notes: what the loader did that a user should know (duplicates merged, rows dropped).
    """

    root: Path
    samples: pd.DataFrame
    image_rows: pd.DataFrame
    modalities: tuple[str, ...]
    notes: tuple[str, ...]
    fingerprint: str

    @property
    def labels(self) -> np.ndarray:
        return self.samples["label"].to_numpy()

    @property
    def groups(self) -> np.ndarray:
        return self.samples[schema.PATIENT].to_numpy()

    def with_labels(self, labels: np.ndarray) -> Cohort:
        """A copy with other labels (label-permutation checks); the fingerprint changes with them."""
        samples = self.samples.copy()
        samples["label"] = np.asarray(labels, dtype=int)
        digest = hashlib.sha256((self.fingerprint + str(samples["label"].tolist())).encode())
        return Cohort(self.root, samples, self.image_rows, self.modalities, self.notes,
                      digest.hexdigest()[:16])


def load_cohort(root: str | Path, *, metadata_csv: str = schema.METADATA_CSV,
                bbox_depth_csv: str = schema.BBOX_DEPTH_CSV,
                bbox_thermal_csv: str = schema.BBOX_THERMAL_CSV, labelled: bool = True) -> Cohort:
    """Read and validate a data root; a cohort without image folders is valid (metadata only).
    With `labelled` False (cohorts to predict), a metadata CSV without the label column is
    valid too: its samples get label -1."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root is not a directory")
    notes: list[str] = []
    meta_path = root / metadata_csv
    samples = _read_metadata(meta_path, notes, labelled=labelled)

    folders = [m for m, (folder, _) in schema.IMAGE_FOLDERS.items() if (root / folder).is_dir()]
    image_rows = pd.DataFrame(columns=IMAGE_ROW_COLUMNS)
    boxes: dict[str, pd.DataFrame] = {}
    for camera, name, letter in (("depth", bbox_depth_csv, "D"), ("thermal", bbox_thermal_csv, "T")):
        if (root / name).is_file():
            boxes[camera] = _read_boxes(root / name, letter)
            shared = int(boxes[camera]["other_wound"].sum())
            if shared:
                notes.append(f"{name}: {shared} of {len(boxes[camera])} box rows sit in a frame "
                             "named after another wound of the same visit (keyed by their DFU#)")
    if "depth" in boxes:
        image_rows = _match_frames(boxes["depth"], boxes.get("thermal"), samples, notes)
    elif folders:
        notes.append(f"image folders present but {bbox_depth_csv} is missing: images unused")
    modalities = ["metadata"]
    for modality in folders:
        camera = schema.IMAGE_FOLDERS[modality][1]
        column = f"{camera}_file"
        if column in image_rows and image_rows[column].notna().any():
            modalities.append(modality)
    return Cohort(root, samples, image_rows, tuple(modalities), tuple(notes),
                  _fingerprint(root, [meta_path, root / bbox_depth_csv, root / bbox_thermal_csv],
                               folders))


def _decode(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "export the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def _read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    text = _decode(path)
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).strip()})") from None
    _check_unique_header(text, path)
    table.columns = [c.strip() for c in table.columns]
    header = text.splitlines()[0]
    for column in required:
        if column not in table.columns:
            if ";" in header and "," not in header.replace('","', ""):
                raise DataError(f"{path}: line 1: fields are separated by ';'; expected ','")
            raise DataError(f"{path}: column {column!r} is missing"
                            f"{did_you_mean(column, table.columns)}")
    if table.empty:
        raise DataError(f"{path}: no data rows")
    table.index = pd.RangeIndex(2, len(table) + 2, name="line")
    return table


def _check_unique_header(text: str, path: Path) -> None:
    """Refuse two columns of one name: pandas renames the second `X.1` and the loader would read
    only the first, silently, whatever the second holds; names equal up to surrounding spaces
    are one column too, as the loader strips them."""
    names = pd.read_csv(io.StringIO(text), header=None, nrows=1, dtype=str,
                        keep_default_na=False, na_filter=False).iloc[0]
    first: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        key = name.strip()
        if key and key in first:
            earlier = names.iloc[first[key] - 1]
            same = (f"{quoted(name)} appears twice" if name == earlier else
                    f"{quoted(earlier)} and {quoted(name)} are one name up to spaces")
            raise DataError(f"{path}: line 1, columns {first[key]} and {position}: {same}; "
                            "rename or remove one")
        first.setdefault(key, position)


def _to_numbers(table: pd.DataFrame, path: Path, columns, *, integer: bool = False) -> None:
    """Columns of numbers, in place; a value that is not one is refused, and so is one beyond
    NUMBER_LIMIT (inf, 1e400, and values the forest's float32 cannot hold) or, in an integer
    column, beyond INTEGER_LIMIT."""
    limit = INTEGER_LIMIT if integer else NUMBER_LIMIT
    for column in columns:
        if column not in table.columns:
            continue
        text = table[column].str.strip()
        missing = text.isin(MISSING_TOKENS)
        values = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = values.isna() & ~missing
        if bad.any():
            line = bad.idxmax()
            raise DataError(f"{path}: line {line}, column {column!r}: "
                            f"{quoted(table.at[line, column])} is not a number")
        huge = values.abs() > limit
        if huge.any():
            line = huge.idxmax()
            raise DataError(f"{path}: line {line}, column {column!r}: "
                            f"{quoted(table.at[line, column])} is not a finite number within "
                            f"+-{limit:g}")
        if integer:
            if missing.any():
                raise DataError(f"{path}: line {missing.idxmax()}, column {column!r}: value missing")
            if (values != values.round()).any():
                line = (values != values.round()).idxmax()
                raise DataError(f"{path}: line {line}, column {column!r}: "
                                f"{quoted(table.at[line, column])} is not a whole number")
            values = values.astype(int)
        table[column] = values


def _read_metadata(path: Path, notes: list[str], *, labelled: bool = True) -> pd.DataFrame:
    table = _read_table(path, (*schema.SAMPLE_KEY, *((schema.LABEL,) if labelled else ())))
    _to_numbers(table, path, schema.SAMPLE_KEY, integer=True)
    _to_numbers(table, path, [c for c in schema.NUMERIC_COLUMNS if c not in schema.SAMPLE_KEY])
    for column in [*schema.CATEGORIES, *schema.TEXT_COLUMNS]:
        if column in table.columns:
            table[column] = table[column].str.strip().replace(list(MISSING_TOKENS), np.nan)
    if schema.LABEL not in table.columns:
        table["label"] = -1
        notes.append(f"no {schema.LABEL!r} column: an unlabelled cohort (label -1)")
        return _merge_duplicates(table, path, notes)

    label = table[schema.LABEL]
    unknown = ~label.isin(schema.CLASS_NAMES)
    if unknown.any():
        line = unknown.idxmax()
        value = table.at[line, schema.LABEL]
        if pd.isna(value):
            problem = "label is missing"
        elif isinstance(value, str) and value[:1] in schema.CLASS_NAMES:
            problem = f"{quoted(value)} is a fine label; this column needs the coarse phase"
        else:
            problem = f"unknown label {quoted(value)}"
        raise DataError(f"{path}: line {line}, column {schema.LABEL!r}: {problem} "
                        f"(expected one of {', '.join(schema.CLASS_NAMES)})")
    table["label"] = label.map(schema.LABEL_CODES).astype(int)
    missing_columns = [c for c in schema.FEATURES if c not in table.columns]
    if missing_columns:
        notes.append(f"{len(missing_columns)} feature columns absent, e.g. {missing_columns[0]!r}")
    return _merge_duplicates(table, path, notes)


def _merge_duplicates(table: pd.DataFrame, path: Path, notes: list[str]) -> pd.DataFrame:
    """Keep the first row of a repeated key when labels agree; refuse when they conflict."""
    key = list(schema.SAMPLE_KEY)
    repeated = table[table.duplicated(key, keep=False)]
    for values, group in repeated.groupby(key):
        lines = ", ".join(str(i) for i in group.index)
        name = f"Patient# {values[0]}, Appt# {values[1]}, DFU# {values[2]}"
        if group["label"].nunique() > 1:
            raise DataError(f"{path}: lines {lines}: {name} appears twice with conflicting labels "
                            f"{sorted(group[schema.LABEL].unique())}; fix or remove one row")
        fine = group[schema.FINE_LABEL].nunique() if schema.FINE_LABEL in group else 1
        extra = " (fine labels differ)" if fine > 1 else ""
        notes.append(f"duplicate key {name} on lines {lines}{extra}: kept line {group.index[0]}")
    samples = table.drop_duplicates(key, keep="first").copy()
    samples.insert(0, "sample_id", [
        f"P{p:03d}A{a:02d}D{d}" for p, a, d in zip(samples[schema.PATIENT], samples[schema.APPT],
                                                   samples[schema.DFU])
    ])
    samples["source_line"] = samples.index
    return samples.reset_index(drop=True)


def _read_boxes(path: Path, camera: str) -> pd.DataFrame:
    table = _read_table(path, schema.BBOX_COLUMNS)
    integers = ("Patient#", "Appt#", "DFU#", "Bounding Box Number", "Xmin", "Ymin", "Xmax", "Ymax")
    _to_numbers(table, path, integers, integer=True)
    parsed = table["Filename"].str.strip().str.extract(schema.FILENAME_PATTERN)
    bad = parsed["patient"].isna()
    if bad.any():
        line = bad.idxmax()
        raise DataError(f"{path}: line {line}, column 'Filename': "
                        f"{quoted(table.at[line, 'Filename'])} does not match "
                        "{n}_P{patient:03d}{appt:02d}{dfu}{B|A}{D|T}{R|M|L}{Z|W}.png")
    # A frame may show several wounds of one visit and is named after one of them: each box row's
    # DFU# names its own wound, so only patient and appointment must agree with the name.
    for column, part in (("Patient#", "patient"), ("Appt#", "appt")):
        differs = parsed[part].astype(int) != table[column]
        if differs.any():
            line = differs.idxmax()
            raise DataError(f"{path}: line {line}, column {column!r}: {table.at[line, column]} "
                            f"disagrees with file name {quoted(table.at[line, 'Filename'])}")
    wrong_camera = parsed["camera"] != camera
    if wrong_camera.any():
        line = wrong_camera.idxmax()
        raise DataError(f"{path}: line {line}, column 'Filename': camera letter "
                        f"{parsed.at[line, 'camera']!r}, this file holds camera {camera!r} boxes")
    for problem, mask in (
        ("negative coordinate", (table[["Xmin", "Ymin"]] < 0).any(axis=1)),
        ("Xmax must exceed Xmin (reversed or zero-width box)", table["Xmax"] <= table["Xmin"]),
        ("Ymax must exceed Ymin (reversed or zero-height box)", table["Ymax"] <= table["Ymin"]),
    ):
        if mask.any():
            line = mask.idxmax()
            raise DataError(f"{path}: line {line}, columns Xmin..Ymax: {problem}")
    return pd.DataFrame({
        "file": table["Filename"].str.strip(),
        "patient": table["Patient#"], "appt": table["Appt#"], "dfu": table["DFU#"],
        "debri": parsed["debri"], "angle": parsed["side"] + parsed["zoom"],
        "box_number": table["Bounding Box Number"],
        "other_wound": parsed["dfu"].astype(int) != table["DFU#"],
        "xmin": table["Xmin"], "ymin": table["Ymin"], "xmax": table["Xmax"], "ymax": table["Ymax"],
        "line": table.index,
    })


def _match_frames(depth: pd.DataFrame, thermal: pd.DataFrame | None, samples: pd.DataFrame,
                  notes: list[str]) -> pd.DataFrame:
    """Join each depth box to the thermal box of the same wound (Patient#, Appt#, DFU# of the box
    rows, not the file names): same angle, then any angle, then either debridement state
    (data-format.md section 4). Box numbers are not part of the key: they order the wounds of one
    frame and need not agree between the two cameras."""
    lookups: list[dict] = [{}, {}, {}]
    if thermal is not None:
        for row in thermal.itertuples(index=False):
            base = (row.patient, row.appt, row.dfu)
            for table, key in zip(lookups, ((*base, row.debri, row.angle), (*base, row.debri), base)):
                table.setdefault(key, row)
    known = dict(zip(zip(samples[schema.PATIENT], samples[schema.APPT], samples[schema.DFU]),
                     samples["sample_id"]))
    rows, unmatched, orphans = [], 0, 0
    for row in depth.itertuples(index=False):
        sample_id = known.get((row.patient, row.appt, row.dfu))
        if sample_id is None:
            orphans += 1
            continue
        base = (row.patient, row.appt, row.dfu)
        match = None
        for table, key in zip(lookups, ((*base, row.debri, row.angle), (*base, row.debri), base)):
            match = table.get(key)
            if match is not None:
                break
        unmatched += match is None
        rows.append({
            "sample_id": sample_id, "depth_file": row.file, "depth_xmin": row.xmin,
            "depth_ymin": row.ymin, "depth_xmax": row.xmax, "depth_ymax": row.ymax,
            "thermal_file": None if match is None else match.file,
            **{f"thermal_{c}": (np.nan if match is None else getattr(match, c))
               for c in ("xmin", "ymin", "xmax", "ymax")},
        })
    if orphans:
        notes.append(f"{orphans} depth boxes belong to no metadata row: ignored")
    if unmatched and thermal is not None:
        notes.append(f"{unmatched} depth boxes have no thermal box: thermal modalities absent there")
    return pd.DataFrame(rows, columns=IMAGE_ROW_COLUMNS)


def _fingerprint(root: Path, files: list[Path], folders: list[str]) -> str:
    """Content hash of the tables plus the names and sizes of the image files."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        if path.is_file():
            digest.update(path.read_bytes())
    for modality in folders:
        for name, size in _folder_entries(root / schema.IMAGE_FOLDERS[modality][0]):
            digest.update(f"{modality}/{name}:{size}".encode())
    return digest.hexdigest()[:16]


def _folder_entries(folder: Path):
    """(name, size) of every entry of an image folder, sorted. The fingerprint covers them all,
    so an entry without a size (a broken or looping symbolic link) or a name that is not UTF-8
    (no box CSV can name it, and it cannot be hashed as text) is refused, even if no box row
    names it."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{folder}: image folder cannot be listed ({exc.strerror})") from None
    for entry in entries:
        try:
            entry.name.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(entry.name).decode("utf-8", "backslashreplace")
            raise DataError(f"{folder / shown}: file name is not valid UTF-8; rename or remove "
                            "the file") from None
        try:
            size = entry.stat().st_size
        except OSError as exc:
            problem = ("a symbolic link loop" if exc.errno == errno.ELOOP else
                       "a broken symbolic link" if entry.is_symlink() else exc.strerror)
            raise DataError(f"{entry}: {problem}; fix or remove it") from None
        yield entry.name, size
