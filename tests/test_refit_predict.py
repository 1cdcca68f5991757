"""`dfu refit` and `dfu predict`: a config trained on every patient, saved without pickle, loaded
without running code from the folder, and refusing a cohort it cannot read (no Ray)."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.config import TrialConfig
from dfu_train.data import schema
from dfu_train.errors import DataError
from dfu_train.metadata.forest import class_proba
from dfu_train.training.refit import predict, refit, refit_epochs
from dfu_train.training.saved_model import PIPELINE_FILE, WEIGHTS_FILE, load_model, save_model

META = TrialConfig().override({"forest.n_estimators": 20, "forest.inner_folds": 3,
                               "metadata.sampler": "smote", "decode": "thresholds"})
FUSION = TrialConfig().override({
    "modalities": ["metadata", "thermal_map"], "seed": 1, "forest.n_estimators": 20,
    "forest.inner_folds": 3, "image.size": 16, "thermal_map.pretrain_epochs": 4,
    "stage1.epochs": 4, "stage2.epochs": 4})
PHASE_COLUMNS = ["sample_id", "p_I", "p_P", "p_R", "phase"]


@pytest.fixture(scope="module")
def meta_model(cohort, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "meta"
    save_model(folder, refit(META, cohort))
    return folder


class _Trap:
    """Unpickling this writes a marker file: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_epochs_come_from_the_folds_kept_epochs_else_the_config():
    records = [{"stages": {"pretrain:thermal_map": {"best_epoch": b}, "stage1": {"best_epoch": s},
                           "stage2": {"best_epoch": -1 if k is False else 1, "kept": k}}}
               for b, s, k in ((1, 0, False), (3, 2, True), (2, 3, False))]
    epochs, source = refit_epochs(FUSION, records)
    assert epochs == {"pretrain:thermal_map": 3, "stage1": 3, "stage2": 0}
    assert "3 cross-validated folds" in source
    assert refit_epochs(FUSION) == ({"pretrain:thermal_map": 4, "stage1": 4, "stage2": 4},
                                    "the config")
    assert refit_epochs(META) == ({}, "the config")


def test_a_metadata_refit_round_trips_and_predicts_as_its_pipeline(cohort, meta_model):
    loaded = load_model(meta_model)
    assert [name for name, _ in loaded.pipeline.steps][-1] == "forest"
    assert not {"resample", "resample_under", "resample_over"} & {
        name for name, _ in loaded.pipeline.steps}  # samplers act in fit only: not saved
    table = predict(loaded, cohort)
    assert list(table.columns) == PHASE_COLUMNS and len(table) == len(cohort.samples)
    expected = class_proba(loaded.pipeline, cohort.samples)
    assert np.allclose(table[["p_I", "p_P", "p_R"]].to_numpy(), expected, atol=1e-6)
    assert set(table["phase"]) <= set(schema.CLASS_NAMES)
    info = json.loads((meta_model / "model.json").read_text())
    assert info["cohort_fingerprint"] == cohort.fingerprint
    assert info["decoder"]["rule"] == "thresholds" and info["decoder"]["fitted_on"] == len(
        cohort.samples)
    assert info["versions"]["skops"] != "absent"


def test_a_fusion_refit_trains_the_given_epochs_and_reloads_identically(cohort, tmp_path):
    fitted = refit(FUSION, cohort, epochs={"pretrain:thermal_map": 2, "stage1": 2, "stage2": 1})
    assert fitted.info["refit_epochs"] == {"pretrain:thermal_map": 2, "stage1": 2, "stage2": 1}
    save_model(tmp_path / "fusion", fitted)
    loaded = load_model(tmp_path / "fusion")
    for name, tensor in fitted.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    pd.testing.assert_frame_equal(predict(fitted, cohort), predict(loaded, cohort))


def test_a_pickle_where_the_pipeline_belongs_is_refused_unrun(meta_model, tmp_path):
    folder = tmp_path / "trap"
    shutil.copytree(meta_model, folder)
    marker = tmp_path / "ran.txt"
    (folder / PIPELINE_FILE).write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(DataError, match="not a skops file"):
        load_model(folder)
    assert not marker.exists()


def test_a_skops_file_with_an_untrusted_type_is_refused(meta_model, tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    folder = tmp_path / "untrusted"
    shutil.copytree(meta_model, folder)
    sio.dump(FunctionTransformer(os.system), folder / PIPELINE_FILE)
    with pytest.raises(DataError, match="system"):
        load_model(folder)


def test_a_pickled_object_in_the_weights_is_refused_unrun(cohort, tmp_path):
    fitted = refit(FUSION.override({"forest.n_estimators": 5}), cohort,
                   epochs={"pretrain:thermal_map": 1, "stage1": 1, "stage2": 0})
    save_model(tmp_path / "model", fitted)
    marker = tmp_path / "ran.txt"
    buffer = io.BytesIO()
    torch.save({"x": _Trap(marker)}, buffer)
    (tmp_path / "model" / WEIGHTS_FILE).write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="refusing"):
        load_model(tmp_path / "model")
    assert not marker.exists()


def test_cli_refit_then_predict_csv_and_json(synthetic_root, tmp_path):
    runner = CliRunner()
    export = tmp_path / "best.json"
    export.write_text(json.dumps({"config_id": META.config_id, "config": META.to_dict()}))
    model = tmp_path / "model"
    made = runner.invoke(app, ["refit", str(export), "--data-root", str(synthetic_root),
                               "--out", str(model), "--jobs", "1"])
    assert made.exit_code == 0, made.output
    again = runner.invoke(app, ["refit", str(export), "--data-root", str(synthetic_root),
                                "--out", str(model)])
    assert again.exit_code == 2 and "holds a model already" in again.stderr
    as_csv = runner.invoke(app, ["predict", str(model), "--data-root", str(synthetic_root)])
    assert as_csv.exit_code == 0, as_csv.output
    table = pd.read_csv(io.StringIO(as_csv.stdout))
    assert list(table.columns) == PHASE_COLUMNS
    assert np.allclose(table[["p_I", "p_P", "p_R"]].sum(axis=1), 1.0, atol=1e-5)
    as_json = runner.invoke(app, ["predict", str(model), "--data-root", str(synthetic_root),
                                  "--format", "json"])
    rows = json.loads(as_json.stdout)
    assert [r["phase"] for r in rows] == list(table["phase"])


def test_cli_predict_refuses_a_cohort_whose_columns_differ(meta_model, editable_root):
    path = editable_root / schema.METADATA_CSV
    table = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    table.drop(columns=["Wound Centre Temperature (°C)"]).to_csv(
        path, index=False, encoding="utf-8-sig", lineterminator="\r\n")
    result = CliRunner().invoke(app, ["predict", str(meta_model), "--data-root",
                                      str(editable_root)])
    assert result.exit_code == 2
    assert "feature columns do not match" in result.stderr
    assert "Wound Centre Temperature" in result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1


def test_cli_predicts_a_cohort_without_labels(meta_model, synthetic_root, editable_root):
    path = editable_root / schema.METADATA_CSV
    table = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    table.drop(columns=[schema.LABEL, schema.FINE_LABEL]).to_csv(
        path, index=False, encoding="utf-8-sig", lineterminator="\r\n")
    runner = CliRunner()
    unlabelled = runner.invoke(app, ["predict", str(meta_model), "--data-root",
                                     str(editable_root)])
    labelled = runner.invoke(app, ["predict", str(meta_model), "--data-root",
                                   str(synthetic_root)])
    assert unlabelled.exit_code == 0, unlabelled.output
    assert unlabelled.stdout == labelled.stdout
