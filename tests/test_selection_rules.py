"""Selection rules rank configs by their fold figures; the study's recipe runs beside every
metadata and fusion sweep, paired on the same folds."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dfu_train.config import TrialConfig, load_trial_config, simpler_direction, study_recipe
from dfu_train.errors import ConfigError
from dfu_train.results import store
from dfu_train.results.leaderboard import build_leaderboard, query
from dfu_train.results.selection import complexity, rank_by_rule, within_one_se
from dfu_train.sweep.plan import plan_promotion, plan_sweep, write_manifest
from dfu_train.sweep.space import parse_sweep
from sweep_files import fold_record


def _row(config_id: str, qwks: list[float], params: dict) -> dict:
    mean = sum(qwks) / len(qwks)
    std = math.sqrt(sum((q - mean) ** 2 for q in qwks) / (len(qwks) - 1))
    return {"config_id": config_id, "qwk_mean": mean, "qwk_std": std,
            "folds_done": len(qwks), "params": params}


def _order(rows: list[dict], rule: str) -> list[str]:
    return list(rank_by_rule(pd.DataFrame(rows), rule)["config_id"])


def test_one_se_picks_the_simpler_of_two_configs_within_one_standard_error():
    deep = _row("deep", [0.50, 0.40, 0.45, 0.35, 0.55], {"forest.n_estimators": 500,
                                                           "forest.max_depth": None})
    shallow = _row("shallow", [0.46, 0.42, 0.44, 0.38, 0.45], {"forest.n_estimators": 100,
                                                                 "forest.max_depth": 5})
    assert deep["qwk_mean"] - shallow["qwk_mean"] < deep["qwk_std"] / math.sqrt(5)
    assert _order([deep, shallow], "mean") == ["deep", "shallow"]
    assert _order([deep, shallow], "one_se") == ["shallow", "deep"]


def test_one_se_keeps_the_best_when_the_simpler_config_is_clearly_worse():
    deep = _row("deep", [0.50, 0.49, 0.51, 0.50, 0.50], {"forest.max_depth": None})
    shallow = _row("shallow", [0.30, 0.31, 0.29, 0.30, 0.30], {"forest.max_depth": 3})
    board = pd.DataFrame([deep, shallow])
    assert list(within_one_se(board)) == [True, False]
    assert _order([shallow, deep], "one_se") == ["deep", "shallow"]


def test_mean_minus_std_prefers_the_steadier_of_two_equal_means():
    steady = _row("steady", [0.40, 0.41, 0.39], {})
    lucky = _row("lucky", [0.60, 0.20, 0.41], {})
    assert _order([lucky, steady], "mean_minus_std") == ["steady", "lucky"]


def test_simplicity_follows_each_parameters_direction_in_the_schema():
    assert simpler_direction("forest.n_estimators") == "smaller"
    assert simpler_direction("forest.min_samples_leaf") == "larger"
    assert simpler_direction("metadata.sampler") == ["none"]
    assert simpler_direction("forest.max_features") is None
    params = pd.Series([{"metadata.sampler": "smote", "forest.min_samples_leaf": 1},
                        {"metadata.sampler": "none", "forest.min_samples_leaf": 10}])
    assert complexity(params).idxmin() == 1
    depths = pd.Series([{"forest.max_depth": None}, {"forest.max_depth": 20}])
    assert complexity(depths).idxmin() == 1  # no limit is the most complex


def test_the_leaderboard_and_export_follow_the_rule(tmp_path, synthetic_root, cohort):
    spec = {"name": "rules", "cv": {"n_folds": 3}, "search": {"algorithm": "grid"},
            "baseline": False, "fixed": {"forest.n_estimators": 5},
            "space": {"forest.max_depth": {"grid": [2, 4]}}}
    plan = plan_sweep(parse_sweep(spec), data_root=synthetic_root, storage=tmp_path)
    write_manifest(plan)
    fingerprint = store.read_manifest(plan.sweep_dir)["fold_fingerprints"]["42"]
    (shallow, p2), (deep, p4) = plan.configs
    for config, params, qwks in ((shallow, p2, [0.40, 0.41, 0.42]),
                                 (deep, p4, [0.60, 0.20, 0.50])):
        for fold, qwk in enumerate(qwks):
            store.write_fold_result(plan.sweep_dir, fold_record(
                config.config_id, 42, fold, qwk, params=params,
                cohort_fingerprint=cohort.fingerprint, fold_fingerprint=fingerprint))
    board = build_leaderboard(plan.sweep_dir)
    assert query(board, rule="mean").iloc[0]["config_id"] == deep.config_id
    assert query(board, rule="mean_minus_std").iloc[0]["config_id"] == shallow.config_id
    assert query(board, by="qwk_mean").iloc[0]["config_id"] == deep.config_id
    with pytest.raises(ConfigError, match="unknown selection rule"):
        query(board, rule="median")
    promotion = plan_promotion(plan.sweep_dir, top=1, rule="mean_minus_std")
    assert promotion.promotion["configs"] == [shallow.config_id]
    assert plan_promotion(plan.sweep_dir, top=1, rule="mean").promotion["configs"] == [
        deep.config_id]


def test_a_metadata_sweep_runs_the_study_recipe_beside_its_configs(tmp_path, synthetic_root):
    spec = parse_sweep({"name": "meta", "cv": {"n_folds": 3}, "search": {"algorithm": "grid"},
                        "fixed": {"forest.n_estimators": 20, "forest.inner_folds": 3},
                        "space": {"metadata.sampler": {"grid": ["none", "smote"]}}})
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    recipe = study_recipe(spec.base_config())
    assert [c.config_id for c, _ in plan.configs][-1] == recipe.config_id
    assert plan.configs[-1][1] == {"metadata.sampler": "none"}  # its values of swept names
    assert recipe.forest.n_estimators == 300 and recipe.forest.inner_folds == 3
    assert plan.n_trials == 3 * 3  # on every fold the configs run on
    write_manifest(plan)
    manifest = store.read_manifest(plan.sweep_dir)
    assert manifest["baseline"]["config_id"] == recipe.config_id
    board = build_leaderboard(plan.sweep_dir)
    assert board.loc[board["baseline"], "config_id"].tolist() == [recipe.config_id]

    off = parse_sweep({**spec.model_dump(mode="json"), "baseline": False})
    assert len(plan_sweep(off, data_root=synthetic_root, storage=tmp_path).configs) == 2
    images = parse_sweep({"name": "img", "search": {"algorithm": "grid"},
                          "fixed": {"modalities": ["thermal_map"]}})
    assert images.baseline_config() is None  # an image-only sweep has no metadata recipe
    assert load_trial_config("baseline") == study_recipe(TrialConfig())
    # the floor stays the study's own recipe, argmax decoding, whatever the sweep decodes with
    thresholds = parse_sweep({**spec.model_dump(mode="json"),
                              "fixed": {**spec.fixed, "decode": "thresholds"}})
    assert thresholds.base_config().decode == "thresholds"
    assert thresholds.baseline_config().config_id == recipe.config_id
    assert thresholds.baseline_config().decode == "argmax"


def test_a_sweep_recorded_before_baselines_resumes_without_one(tmp_path, synthetic_root):
    spec = parse_sweep({"name": "old", "cv": {"n_folds": 3}, "search": {"algorithm": "grid"},
                        "space": {"forest.max_depth": {"grid": [2, 4]}}})
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    write_manifest(plan)
    path = plan.sweep_dir / store.MANIFEST
    manifest = store.read_manifest(plan.sweep_dir)
    old_spec = {k: v for k, v in manifest["spec"].items() if k not in ("baseline", "selection")}
    old = {k: v for k, v in manifest.items() if k != "baseline"}
    store.write_json_atomic(path, {**old, "spec": old_spec,
                                   "configs": manifest["configs"][:2]})
    recorded = parse_sweep(store.recorded_spec(store.read_manifest(plan.sweep_dir)))
    again = plan_sweep(recorded, data_root=synthetic_root, storage=tmp_path, name="old")
    assert len(again.configs) == 2
    from dfu_train.sweep.plan import check_same_sweep

    assert check_same_sweep(again)  # still the same sweep, not refused as another


def test_a_proposing_search_runs_the_recipe_in_its_promotion(tmp_path, synthetic_root, cohort):
    spec = parse_sweep({"name": "tpe", "cv": {"n_folds": 3, "run_folds": [0]},
                        "search": {"algorithm": "optuna", "num_samples": 4},
                        "fixed": {"forest.n_estimators": 5},
                        "space": {"forest.max_depth": {"choice": [2, 4]}}})
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    assert plan.proposes and all(c.config_id != spec.baseline_config().config_id
                                 for c, _ in plan.configs)  # no recipe among the proposals
    write_manifest(plan)
    manifest = store.read_manifest(plan.sweep_dir)
    proposed = spec.base_config().override({"forest.max_depth": 4})
    store.write_fold_result(plan.sweep_dir, {**fold_record(
        proposed.config_id, 42, 0, 0.4, params={"forest.max_depth": 4},
        cohort_fingerprint=cohort.fingerprint,
        fold_fingerprint=manifest["fold_fingerprints"]["42"]), "config": proposed.to_dict()})
    promotion = plan_promotion(plan.sweep_dir, top=1)
    recipe = manifest["baseline"]["config_id"]
    assert promotion.promotion["configs"] == [proposed.config_id, recipe]
    assert {c.config_id for c, _ in promotion.configs} == {proposed.config_id, recipe}
