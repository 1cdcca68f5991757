"""Folds are patient-grouped and fixed; configs are validated, frozen and refuse leakage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dfu_train.config import TrialConfig, load_trial_config
from dfu_train.data import schema
from dfu_train.data.folds import assign_folds, check_fold_count, fold_fingerprint, split
from dfu_train.errors import ConfigError


def test_no_patient_on_both_sides_of_any_split(cohort):
    folds = assign_folds(cohort, n_folds=5, seed=42)
    assert set(folds) == set(range(5))
    patients = cohort.samples[schema.PATIENT].to_numpy()
    for fold in range(5):
        train, val = split(folds, fold)
        assert not set(patients[train]) & set(patients[val])
        assert len(train) + len(val) == len(patients)
        assert set(cohort.labels[val]) == {0, 1, 2}


def test_folds_are_identical_for_a_seed_and_change_with_it(cohort):
    a = assign_folds(cohort, n_folds=5, seed=42)
    b = assign_folds(cohort, n_folds=5, seed=42)
    c = assign_folds(cohort, n_folds=5, seed=7)
    assert np.array_equal(a, b)
    assert fold_fingerprint(cohort, a) == fold_fingerprint(cohort, b)
    assert fold_fingerprint(cohort, a) != fold_fingerprint(cohort, c)


def test_more_folds_than_patients_of_a_class_is_refused(cohort):
    rare = cohort.samples.loc[cohort.labels == 2, schema.PATIENT].nunique()
    with pytest.raises(ConfigError, match="only .* patients have class 'R'"):
        check_fold_count(cohort, rare + 1)


def test_missing_fold_index_is_refused(cohort):
    folds = assign_folds(cohort, n_folds=3, seed=0)
    with pytest.raises(ConfigError, match="fold 3 does not exist"):
        split(folds, 3)


def test_config_id_ignores_evaluation_but_not_model_parameters():
    base = TrialConfig()
    assert base.config_id == TrialConfig().config_id
    assert base.override({"cv.seed": 1}).config_id == base.config_id
    assert base.override({"forest.n_estimators": 10}).config_id != base.config_id


def test_configs_are_frozen():
    with pytest.raises(Exception):
        TrialConfig().forest.n_estimators = 3  # type: ignore[misc]


@pytest.mark.parametrize("column", ["Phase Confidence (%)", "Healing Phase", "Patient#",
                                    "Healing Phase Abs", "Offloading Score", "ID"])
def test_leakage_columns_are_refused_as_features(column):
    with pytest.raises(ConfigError, match="never a feature"):
        TrialConfig().override({"metadata.features": ["Age", column]})


def test_misspelt_parameter_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"did you mean 'forest.n_estimators'"):
        TrialConfig().override({"forest.n_estimator": 5})
    with pytest.raises(ConfigError, match=r"unknown parameter 'forest.n_estimatorz'"):
        TrialConfig.from_dict({"forest": {"n_estimatorz": 5}})


def test_invalid_values_name_the_dotted_key():
    with pytest.raises(ConfigError, match=r"^forest.n_estimators: .*greater than or equal to 1"):
        TrialConfig().override({"forest.n_estimators": 0})
    with pytest.raises(ConfigError, match=r"unknown sampler 'smot' \(did you mean 'smote'\?\)"):
        TrialConfig().override({"metadata.sampler": "smot"})


def test_config_id_ignores_sections_the_trial_does_not_use():
    meta = TrialConfig()
    assert meta.override({"depth_rgb.backbone": "resnet50", "stage1.lr": 0.01}).config_id == meta.config_id
    assert meta.override({"forest.n_estimators": 7}).config_id != meta.config_id
    fusion = meta.override({"modalities": ["metadata", "depth_rgb"]})
    assert fusion.config_id != meta.config_id
    assert fusion.override({"thermal_map.backbone": "resnet50"}).config_id == fusion.config_id
    assert fusion.override({"depth_rgb.backbone": "resnet50"}).config_id != fusion.config_id
    image_only = meta.override({"modalities": ["depth_rgb"]})
    assert image_only.override({"fusion.head": "gated"}).config_id == image_only.config_id


def test_image_sections_are_validated_with_suggestions():
    with pytest.raises(ConfigError, match=r"unknown backbone 'efficientnet-b7'.*did you mean"):
        TrialConfig().override({"depth_rgb.backbone": "efficientnet-b7"})
    with pytest.raises(ConfigError, match=r"unknown fusion head 'residuel' \(did you mean 'residual'"):
        TrialConfig().override({"fusion.head": "residuel"})
    with pytest.raises(ConfigError, match="modality is listed twice"):
        TrialConfig().override({"modalities": ["depth_rgb", "depth_rgb"]})
    with pytest.raises(ConfigError, match="nothing to train"):
        TrialConfig().override({"modalities": ["thermal_map"], "thermal_map.pretrain_epochs": 0,
                                "stage1.epochs": 0, "stage2.epochs": 0})


def test_exported_config_round_trips_and_tampering_is_caught(tmp_path):
    config = TrialConfig().override({"forest.n_estimators": 42})
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"config_id": config.config_id, "config": config.to_dict()}))
    assert load_trial_config(str(path)) == config
    data = json.loads(path.read_text())
    data["config"]["forest"]["n_estimators"] = 43
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="edited after export"):
        load_trial_config(str(path))


FUSION = {"modalities": ["metadata", "thermal_map"]}


def test_config_id_hashes_only_what_the_trial_uses():
    base = TrialConfig().override(FUSION)
    same = [base.override({"fusion.blend_weight": 0.1}),  # residual head: not its option
            base.override({"fusion.projection": 16}),
            base.override({"optim.checkpoint_every": 7}),  # a run-time setting
            base.override({"stage2.epochs": 0}).override({"stage2.lr": 0.05})
            .override({"stage2.epochs": 0})]
    assert all(c.config_id == base.config_id for c in same[:3])
    assert same[3].config_id == base.override({"stage2.epochs": 0}).config_id
    assert base.override({"fusion.residual_bound": 2.0}).config_id != base.config_id
    assert base.override({"stage2.lr": 0.05}).config_id != base.config_id  # stage 2 runs here
    blend = base.override({"fusion.head": "fixed_blend"})
    assert blend.override({"fusion.blend_weight": 0.1}).config_id != blend.config_id
    assert "fusion.blend_weight" not in base.used_names()
    assert "optim.checkpoint_every" not in base.used_names()
    assert TrialConfig().config_id == TrialConfig().earlier_config_id  # metadata ids unchanged


def test_unused_parameters_are_neither_kept_nor_multiplied():
    from dfu_train.sweep.space import expand_configs, parse_sweep

    spec = parse_sweep({"search": {"algorithm": "grid"}, "fixed": {**FUSION, "stage2.epochs": 0},
                        "space": {"fusion.blend_weight": {"grid": [0.1, 0.3, 0.5]},
                                  "stage2.lr": {"grid": [1e-4, 1e-3]},
                                  "fusion.residual_bound": {"grid": [0.5, 1.0]}}})
    configs = expand_configs(spec)
    assert len(configs) == 2  # only residual_bound acts on these trials
    assert [sorted(params) for _, params in configs] == [["fusion.residual_bound"]] * 2


def test_an_export_made_by_an_earlier_version_is_still_accepted(tmp_path):
    config = TrialConfig().override(FUSION)
    assert config.config_id != config.earlier_config_id
    export = tmp_path / "old.json"
    export.write_text(json.dumps({"config_id": config.earlier_config_id,
                                  "config": config.to_dict()}))
    assert load_trial_config(str(export)) == config
    export.write_text(json.dumps({"config_id": "0123456789", "config": config.to_dict()}))
    with pytest.raises(ConfigError, match="edited after export"):
        load_trial_config(str(export))
