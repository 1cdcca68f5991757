"""The loader reads the real layout exactly and refuses broken files with file, line and column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dfu_train.data import schema
from dfu_train.data.cohort import load_cohort
from dfu_train.errors import DataError


def _rewrite_csv(path, edit):
    text = path.read_bytes().decode("utf-8-sig")
    path.write_bytes(("\ufeff" + edit(text)).encode("utf-8"))


def test_synthetic_metadata_file_has_the_real_encoding(synthetic_root):
    raw = (synthetic_root / schema.METADATA_CSV).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in raw
    assert b'"Sex (F:0, M:1)"' in raw  # embedded comma -> quoted header
    header = pd.read_csv(synthetic_root / schema.METADATA_CSV, encoding="utf-8-sig", nrows=0)
    assert tuple(header.columns) == schema.COLUMNS


def test_cohort_has_one_row_per_assessment_and_all_modalities(cohort):
    samples = cohort.samples
    assert not samples.duplicated(list(schema.SAMPLE_KEY)).any()
    assert set(samples["label"]) == {0, 1, 2}
    assert cohort.modalities == ("metadata", *schema.IMAGE_MODALITIES)
    assert set(cohort.image_rows["sample_id"]) <= set(samples["sample_id"])
    assert cohort.image_rows["thermal_file"].notna().all()


def test_missing_tokens_and_zero_meaning_none(cohort):
    samples = cohort.samples
    assert samples["Odor"].isna().any()  # literal NA in the file
    assert not samples["Odor"].isin(["NA"]).any()
    assert (samples["Type of Pain"] == "0").any()  # "0" means no pain, not missing
    assert samples["Wound Centre Temperature (°C)"].dtype.kind == "f"


def test_label_shares_follow_the_real_imbalance(cohort):
    shares = np.bincount(cohort.labels, minlength=3) / len(cohort.labels)
    assert shares[1] > shares[0] > shares[2]
    assert 0.05 < shares[2] < 0.25


def test_padded_depth_ids_match_plain_thermal_ids(synthetic_root, cohort):
    depth = pd.read_csv(synthetic_root / schema.BBOX_DEPTH_CSV, dtype=str)
    thermal = pd.read_csv(synthetic_root / schema.BBOX_THERMAL_CSV, dtype=str)
    assert depth["Patient#"].str.len().eq(3).all()
    assert not thermal["Patient#"].str.startswith("0").any()
    row = cohort.image_rows.iloc[0]
    assert row["depth_file"].split("_P")[1][:6] == row["thermal_file"].split("_P")[1][:6]


def test_tables_without_image_folders_are_a_metadata_cohort(tables_only_root):
    cohort = load_cohort(tables_only_root)
    assert cohort.modalities == ("metadata",)
    assert len(cohort.samples) > 100


def test_duplicate_key_with_same_label_is_kept_once_and_reported(editable_root):
    path = editable_root / schema.METADATA_CSV
    lines = path.read_bytes().decode("utf-8-sig").split("\r\n")
    _rewrite_csv(path, lambda text: "\r\n".join([*lines[:3], lines[2], *lines[3:]]))
    cohort = load_cohort(editable_root)
    assert any("duplicate key" in note and "lines 3, 4" in note for note in cohort.notes)
    assert not cohort.samples.duplicated(list(schema.SAMPLE_KEY)).any()


def test_duplicate_key_with_conflicting_labels_is_refused(editable_root):
    path = editable_root / schema.METADATA_CSV
    lines = path.read_bytes().decode("utf-8-sig").split("\r\n")
    label = lines[2].rsplit(",", 1)[1]
    other = "R" if label != "R" else "I"
    twin = lines[2].rsplit(",", 1)[0] + "," + other
    _rewrite_csv(path, lambda text: "\r\n".join([*lines[:3], twin, *lines[3:]]))
    with pytest.raises(DataError, match=r"lines 3, 4: .*conflicting labels"):
        load_cohort(editable_root)


def _break_label(text, value):
    lines = text.split("\r\n")
    lines[4] = lines[4].rsplit(",", 1)[0] + "," + value
    return "\r\n".join(lines)


@pytest.mark.parametrize("edit, message", [
    (lambda t: _break_label(t, "P+"), r"line 5, column 'Healing Phase Abs': 'P\+' is a fine label"),
    (lambda t: _break_label(t, "X"), r"line 5, column 'Healing Phase Abs': unknown label 'X'"),
    (lambda t: _break_label(t, ""), r"line 5, column 'Healing Phase Abs': label is missing"),
    (lambda t: t.replace("Healing Phase Abs", "Phase"), r"column 'Healing Phase Abs' is missing"),
    (lambda t: t.replace(",", ";"), r"line 1: fields are separated by ';'"),
    (lambda t: t.split("\r\n")[0], r"no data rows"),
    (lambda t: "\r\n".join([t.split("\r\n")[0], "1,abc" + t.split("\r\n")[1][3:]][:2]),
     r"line 2, column 'Patient#': 'abc' is not a number"),
])
def test_broken_metadata_is_refused_with_line_and_column(editable_root, edit, message):
    _rewrite_csv(editable_root / schema.METADATA_CSV, edit)
    with pytest.raises(DataError, match=message):
        load_cohort(editable_root)


def test_latin1_and_empty_files_are_refused(editable_root):
    path = editable_root / schema.METADATA_CSV
    text = path.read_bytes().decode("utf-8-sig")
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_cohort(editable_root)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="file is empty"):
        load_cohort(editable_root)


@pytest.mark.parametrize("edit, message", [
    (lambda row: row.replace(row.split(",")[0], "P003.png"), r"line 2, column 'Filename'.*does not match"),
    (lambda row: ",".join(row.split(",")[:8] + ["50", "10", "40", "20"]), r"line 2.*Xmax must exceed Xmin"),
    (lambda row: ",".join(row.split(",")[:8] + ["-5", "10", "40", "20"]), r"line 2.*negative coordinate"),
    (lambda row: ",".join(row.split(",")[:8] + ["5", "10", "40", "10"]), r"line 2.*Ymax must exceed Ymin"),
])
def test_broken_boxes_are_refused_with_line(editable_root, edit, message):
    path = editable_root / schema.BBOX_DEPTH_CSV
    lines = path.read_text().splitlines()
    lines[1] = edit(lines[1])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_cohort(editable_root)


def test_bbox_file_missing_a_column_is_refused(editable_root):
    path = editable_root / schema.BBOX_THERMAL_CSV
    path.write_text(path.read_text().replace("DebriStat", "Debri"))
    with pytest.raises(DataError, match=r"column 'DebriStat' is missing \(did you mean 'Debri'\?\)"):
        load_cohort(editable_root)


def test_a_frame_showing_several_wounds_gives_each_box_to_its_own_wound(synthetic_root, cohort):
    """data-format.md section 2: a frame named after one wound may box others of the visit;
    each box row's DFU# names its wound, and the loader keys the row by it."""
    depth = pd.read_csv(synthetic_root / schema.BBOX_DEPTH_CSV, dtype=str)
    named = depth["Filename"].str.extract(schema.FILENAME_PATTERN)
    other = depth[named["dfu"].astype(int) != depth["DFU#"].astype(int)]
    assert len(other) > 0  # the generator exercises it in every test cohort
    note = next(n for n in cohort.notes if n.startswith(schema.BBOX_DEPTH_CSV))
    assert f"{len(other)} of {len(depth)} box rows" in note
    rows = cohort.image_rows
    for row in other.itertuples(index=False):
        sample_id = f"P{int(row[1]):03d}A{int(row[2]):02d}D{int(row[3])}"
        match = rows[(rows["depth_file"] == row.Filename) & (rows["sample_id"] == sample_id)]
        assert len(match) == 1
        assert match.iloc[0]["depth_xmin"] == int(row.Xmin)  # its own box, not the named wound's
        assert match["thermal_file"].notna().all()  # matched to the same wound's thermal box
    assert len(rows) == len(depth)


def test_box_rows_must_agree_with_their_file_on_patient_and_appointment(editable_root):
    path = editable_root / schema.BBOX_DEPTH_CSV
    lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[1] = f"{int(fields[1]) % 900 + 1:03d}"
    lines[1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 2, column 'Patient#'.*disagrees with file name"):
        load_cohort(editable_root)
