"""Modality ablation: `modalities: {combinations: [...]}` expands to every non-empty
combination, and `dfu leaderboard NAME --by-modalities` gives one row per combination with its
gain over metadata alone, paired over the same folds."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.config import TrialConfig
from dfu_train.errors import ConfigError
from dfu_train.results.ablation import modality_board
from dfu_train.results.leaderboard import build_leaderboard
from dfu_train.sweep.plan import plan_sweep
from dfu_train.sweep.space import expand_configs, parse_sweep
from sweep_files import fold_record, manifest, write_sweep

FOUR = ["metadata", "depth_rgb", "depth_map", "thermal_map"]
ABLATION = {"name": "ablation", "cv": {"n_folds": 3}, "search": {"algorithm": "grid"},
            "fixed": {"image.size": 16, "thermal_map.pretrain_epochs": 1,
                      "depth_rgb.pretrain_epochs": 1, "depth_map.pretrain_epochs": 1,
                      "stage1.epochs": 1, "stage2.epochs": 0},
            "space": {"modalities": {"combinations": FOUR}}}


def test_four_modalities_expand_to_fifteen_combinations_image_only_included():
    spec = parse_sweep(ABLATION)
    combos = [params["modalities"] for _, params in expand_configs(spec)]
    assert len(combos) == 15 == len({tuple(c) for c in combos})
    assert combos[:4] == [[m] for m in FOUR]  # fewest first, in the listed order
    assert combos[-1] == FOUR
    assert ["depth_rgb", "thermal_map"] in combos  # image-only: no forest, still a config
    assert not TrialConfig().override({"modalities": ["depth_rgb"]}).uses_metadata
    assert spec.baseline_config() is not None  # metadata is among them: the recipe runs beside


def test_combinations_cross_other_grids_and_random_draws():
    spec = parse_sweep({**ABLATION, "search": {"algorithm": "random", "num_samples": 2},
                        "space": {"modalities": {"combinations": ["metadata", "thermal_map"]},
                                  "forest.max_depth": {"grid": [3, 5]},
                                  "forest.n_estimators": {"randint": [10, 400]}}})
    configs = expand_configs(spec)
    # 3 combinations x 2 depths x 2 draws; thermal_map alone ignores the forest's parameters
    by_combo = {}
    for _, params in configs:
        by_combo.setdefault(tuple(params["modalities"]), []).append(params)
    assert set(by_combo) == {("metadata",), ("thermal_map",), ("metadata", "thermal_map")}
    assert len(by_combo[("metadata",)]) == 4 and len(by_combo[("thermal_map",)]) == 1
    assert "forest.max_depth" not in by_combo[("thermal_map",)][0]


@pytest.mark.parametrize("space, message", [
    ({"forest.max_depth": {"combinations": [3, 5]}}, "for `modalities` only"),
    ({"modalities": {"combinations": ["metadata", "thermal_mop"]}}, "did you mean 'thermal_map'"),
    ({"modalities": {"combinations": ["metadata", "metadata"]}}, "listed twice"),
    ({"modalities": {"combinations": []}}, "non-empty list"),
])
def test_a_bad_combinations_entry_is_one_clear_error(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep({**ABLATION, "space": space})


def test_a_proposing_search_refuses_combinations_as_it_refuses_grids():
    with pytest.raises(ConfigError, match="cannot take grid values"):
        parse_sweep({**ABLATION, "cv": {"n_folds": 3, "run_folds": [0]},
                     "search": {"algorithm": "optuna-tpe", "num_samples": 4}})


def test_planning_checks_every_image_folder_the_combinations_use(synthetic_root, editable_root,
                                                                 tmp_path):
    spec = parse_sweep(ABLATION)
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    assert len({tuple(c.modalities) for c, _ in plan.configs}) == 15
    # metadata alone at the defaults is the study's recipe: run once, marked as the baseline
    assert spec.baseline_config().config_id in {c.config_id for c, _ in plan.configs}
    assert plan.n_trials == 15 * 3
    (editable_root / "Depth_Map_IMG").unlink()
    with pytest.raises(ConfigError, match="modality .depth_map. requested"):
        plan_sweep(spec, data_root=editable_root, storage=tmp_path)


META_A, META_B, FUSION, IMAGE = "a0a0a1", "b0b0b2", "f0f0f3", "c0c0c4"


def _ablation_folder(tmp_path):
    """Four configs on three folds: two metadata-only (the better is the reference), one
    fusion that beats it by 0.1 on every fold, one image-only worse by 0.05 on two folds."""
    qwk = {META_A: [0.30, 0.20, 0.25], META_B: [0.10, 0.10, 0.10],
           FUSION: [0.40, 0.30, 0.35], IMAGE: [0.25, 0.15, 0.2]}
    params = {META_A: {"modalities": ["metadata"], "forest.max_depth": 3},
              META_B: {"modalities": ["metadata"], "forest.max_depth": 5},
              FUSION: {"modalities": ["thermal_map", "metadata"]},
              IMAGE: {"modalities": ["thermal_map"]}}
    data = manifest("abl", list(qwk), folds=(0, 1, 2))
    data["configs"] = [{"config_id": c, "params": params[c]} for c in qwk]
    data["spec"]["cv"]["n_folds"] = 3
    records = [fold_record(c, 42, fold, q, params=params[c])
               for c, values in qwk.items() for fold, q in enumerate(values)
               if not (c == IMAGE and fold == 2)]
    write_sweep(tmp_path / "abl", data, records)
    return tmp_path / "abl", data


def test_one_row_per_combination_with_the_paired_gain_over_metadata(tmp_path):
    sweep_dir, data = _ablation_folder(tmp_path)
    rows = modality_board(build_leaderboard(sweep_dir), data, rule="mean", include_partial=True)
    assert [tuple(m) for m in rows["modalities"]] == [("metadata", "thermal_map"),
                                                      ("metadata",), ("thermal_map",)]
    by = {tuple(row["modalities"]): row for row in rows.to_dict("records")}
    assert by[("metadata",)]["config_id"] == META_A  # the better of two
    assert by[("metadata",)]["configs"] == 2
    assert by[("metadata", "thermal_map")]["gain_vs_metadata"] == pytest.approx(0.1)
    assert by[("metadata", "thermal_map")]["gain_folds"] == 3
    # paired over the two folds the image-only config ran, not against META_A's 3-fold mean
    assert by[("thermal_map",)]["gain_vs_metadata"] == pytest.approx(-0.05)
    assert by[("thermal_map",)]["gain_folds"] == 2
    assert set(rows["metadata_config"]) == {META_A}


def test_without_a_metadata_only_config_the_gain_is_empty(tmp_path):
    sweep_dir, data = _ablation_folder(tmp_path)
    board = build_leaderboard(sweep_dir)
    board = board[~board["config_id"].isin([META_A, META_B])]
    rows = modality_board(board, data, rule="mean", include_partial=True)
    assert len(rows) == 2 and rows["gain_vs_metadata"].isna().all()


def test_leaderboard_by_modalities_as_table_json_and_csv(tmp_path):
    sweep_dir, _ = _ablation_folder(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["leaderboard", str(sweep_dir), "--by-modalities", "--all",
                                 "--rule", "mean", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["modalities"] for r in rows][0] == ["metadata", "thermal_map"]
    assert rows[0]["gain_vs_metadata"] == pytest.approx(0.1) and rows[0]["rule"] == "mean"
    csv = runner.invoke(app, ["leaderboard", str(sweep_dir), "--by-modalities", "--all",
                              "--format", "csv"])
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0].startswith("modalities,")
    assert len(csv.stdout.strip().splitlines()) == 4
    table = runner.invoke(app, ["leaderboard", str(sweep_dir), "--by-modalities", "--all"])
    assert table.exit_code == 0 and "metadata + thermal_map" in table.stdout
    refused = runner.invoke(app, ["leaderboard", str(sweep_dir), "--by-modalities",
                                  "--by", "qwk_mean"])
    assert refused.exit_code == 2 and "--by-modalities" in refused.output


def test_the_ready_ablation_file_runs_all_fifteen_combinations():
    from pathlib import Path

    from dfu_train.sweep.space import load_sweep

    spec = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "ablation.yaml")
    assert len({tuple(p["modalities"]) for _, p in expand_configs(spec)}) == 15
