"""Every command: exit code 0 on success, 2 with one line on bad input; --json is pure JSON."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.results import store
from dfu_train.sweep.plan import plan_sweep, write_manifest
from dfu_train.sweep.space import parse_sweep
from dfu_train.training.fold import run_fold

runner = CliRunner()
PACKAGE = Path(__file__).resolve().parents[1] / "dfu_train"


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _assert_user_error(result, text):
    assert result.exit_code == 2, result.output
    assert text in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_synth_output_passes_check(tmp_path):
    result = _invoke("data", "synth", tmp_path / "c", "--patients", 12, "--seed", 3)
    assert result.exit_code == 0, result.output
    checked = _invoke("data", "check", "--data-root", tmp_path / "c", "--json")
    assert checked.exit_code == 0, checked.output
    summary = json.loads(checked.stdout)
    assert summary["patients"] == 12
    assert set(summary["image_rows"]) == {"depth_rgb", "depth_map", "thermal_map", "thermal_rgb"}
    assert sum(summary["classes"].values()) == summary["samples"]


def test_check_on_tables_only_root_reports_metadata_only(tables_only_root):
    result = _invoke("data", "check", "--data-root", tables_only_root, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["modalities"] == ["metadata"]


def test_check_refuses_a_missing_image_with_its_path(editable_root):
    folder = editable_root / "Depth_RGB"
    target = folder.resolve()
    folder.unlink()
    folder.mkdir()
    for image in sorted(target.iterdir())[1:]:
        (folder / image.name).symlink_to(image)
    result = _invoke("data", "check", "--data-root", editable_root)
    _assert_user_error(result, "does not exist")


def test_check_on_missing_root_is_one_line_exit_2(tmp_path):
    _assert_user_error(_invoke("data", "check", "--data-root", tmp_path / "nowhere"),
                       "not a directory")


def test_fold_json_is_machine_readable(synthetic_root, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("forest:\n  n_estimators: 20\n  inner_folds: 3\n")
    result = _invoke("fold", config, "--fold", 1, "--data-root", synthetic_root, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["fold"] == 1 and -1 <= payload["metrics"]["qwk"] <= 1


def test_cv_runs_metadata_only_on_tables_only_root(tables_only_root, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("forest:\n  n_estimators: 20\n  inner_folds: 3\ncv:\n  n_folds: 3\n")
    result = _invoke("cv", config, "--data-root", tables_only_root, "--fold-seeds", "0,1", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [(f["fold_seed"], f["fold"]) for f in payload["folds"]] == [
        (s, k) for s in (0, 1) for k in range(3)]
    assert payload["qwk_std"] is not None


def test_bad_config_and_seeds_are_exit_2(synthetic_root, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("forest:\n  n_estimator: 20\n")
    _assert_user_error(_invoke("cv", config, "--data-root", synthetic_root), "did you mean")
    _assert_user_error(_invoke("cv", "default", "--data-root", synthetic_root,
                               "--fold-seeds", "a,b"), "comma-separated integers")


def test_sweep_run_refuses_bad_file_before_ray(tmp_path, synthetic_root):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nspace:\n  forest.n_trees: {choice: [1]}\n")
    result = _invoke("sweep", "run", sweep, "--data-root", synthetic_root, "--storage", tmp_path / "r")
    _assert_user_error(result, "unknown parameter 'forest.n_trees'")
    assert not (tmp_path / "r" / "s").exists()


@pytest.fixture
def finished_sweep(tmp_path, cohort, synthetic_root):
    spec = parse_sweep({"name": "done", "cv": {"n_folds": 3}, "search": {"algorithm": "grid"},
                        "fixed": {"forest.n_estimators": 20, "forest.inner_folds": 3},
                        "space": {"forest.min_samples_leaf": {"grid": [1, 20]}}})
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path / "results")
    write_manifest(plan)
    for config, params in plan.configs:
        for fold in plan.folds:
            record = {**run_fold(config, cohort, fold).to_dict(), "params": params,
                      "wall_s": 1.0, "compute_s": 0.5}
            store.write_fold_result(plan.sweep_dir, record)
    return plan


def test_leaderboard_json_carries_the_contract_fields(finished_sweep, tmp_path):
    result = _invoke("leaderboard", "done", "--storage", tmp_path / "results", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3  # the two swept configs and the study's recipe beside them
    for field in ("config_id", "params", "folds_done", "folds_total", "qwk_mean", "qwk_std",
                  "qwk_folds", "meta_qwk_mean", "fusion_gain_mean", "wall_s", "compute_s",
                  "baseline", "baseline_diff", "rule", "weighted_f1_mean", "roc_auc_mean",
                  "sensitivity_I_mean", "specificity_R_mean", "qwk_imaged_mean", "row_qwk_mean"):
        assert field in rows[0]
    assert all(0 <= r["weighted_f1_mean"] <= 1 and 0 <= r["roc_auc_mean"] <= 1 for r in rows)
    assert rows[0]["qwk_imaged_mean"] is None  # metadata-only configs score every sample
    scores = [r["qwk_mean"] - 0.5 * (r["qwk_std"] or 0) for r in rows]  # the default rule
    assert scores == sorted(scores, reverse=True) and {r["rule"] for r in rows} == {
        "mean_minus_std"}
    baseline, = [r for r in rows if r["baseline"]]
    assert baseline["baseline_diff"] == 0 and baseline["baseline_folds"] == 3
    assert all(r["baseline_folds"] == 3 for r in rows)  # paired on the same folds


def test_leaderboard_formats_and_unknown_sweep(finished_sweep, tmp_path):
    storage = tmp_path / "results"
    csv = _invoke("leaderboard", "done", "--storage", storage, "--format", "csv")
    assert csv.exit_code == 0 and csv.stdout.startswith("config_id,params")
    table = _invoke("leaderboard", "done", "--storage", storage, "--top", 1)
    assert table.exit_code == 0 and "leaderboard done" in table.stdout
    parquet = tmp_path / "board.parquet"
    assert _invoke("leaderboard", "done", "--storage", storage, "--format", "parquet",
                   "--out", parquet).exit_code == 0
    assert parquet.stat().st_size > 0
    _assert_user_error(_invoke("leaderboard", "nope", "--storage", storage), "sweeps under")
    _assert_user_error(_invoke("leaderboard", "done", "--storage", storage, "--format", "xml"),
                       "'xml' is not one of")


def test_export_best_round_trips_through_cv(finished_sweep, tmp_path, synthetic_root):
    best = tmp_path / "best.json"
    board = _invoke("leaderboard", "done", "--storage", tmp_path / "results", "--format", "json",
                    "--export-best", best)
    assert board.exit_code == 0, board.output
    top = json.loads(board.stdout)[0]
    cv = _invoke("cv", best, "--data-root", synthetic_root, "--json")
    assert cv.exit_code == 0, cv.output
    payload = json.loads(cv.stdout)
    assert payload["config_id"] == top["config_id"]
    assert payload["qwk_mean"] == pytest.approx(top["qwk_mean"], abs=1e-4)


def test_the_results_package_imports_neither_ray_nor_torch():
    for path in (PACKAGE / "results").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("ray", "torch", "torchvision"), path


def test_read_only_commands_load_neither_ray_nor_torch(finished_sweep, tmp_path):
    """`leaderboard` and `sweep status` answer in a fresh process without importing Ray or torch
    (they take seconds to import)."""
    import subprocess
    import sys

    probe = ("import sys, runpy\nsys.argv = ['dfu', *sys.argv[1:]]\ntry:\n"
             "    runpy.run_module('dfu_train.cli', run_name='__main__')\n"
             "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "print(sorted(m for m in ('ray', 'torch') if m in sys.modules), file=sys.stderr)")
    storage = str(tmp_path / "results")
    for args in (["leaderboard", "done", "--storage", storage],
                 ["sweep", "status", "done", "--storage", storage, "--json"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().splitlines()[-1] == "[]", (args, done.stderr[-500:])


def test_nothing_below_the_sweep_layer_imports_ray():
    for folder in ("data", "metadata", "models", "training"):
        for path in (PACKAGE / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n == "ray" or n.startswith("ray.") for n in names), path
                if isinstance(node, ast.Attribute) and node.attr == "environ":
                    pytest.fail(f"{path} reads os.environ")


def test_fusion_cv_runs_on_frames_that_show_several_wounds(synthetic_root, tmp_path):
    """The main path on a data root whose box CSVs name other wounds' frames: check, then a
    fusion `dfu cv`."""
    checked = _invoke("data", "check", "--data-root", synthetic_root, "--json")
    assert checked.exit_code == 0, checked.output
    assert any("named after another wound" in n for n in json.loads(checked.stdout)["notes"])
    config = tmp_path / "fusion.yaml"
    config.write_text(
        "modalities: [metadata, depth_rgb]\nforest: {n_estimators: 15, inner_folds: 3}\n"
        "image: {size: 16}\ndepth_rgb: {pretrain_epochs: 1}\nstage1: {epochs: 1}\n"
        "stage2: {epochs: 0}\ncv: {n_folds: 2}\n")
    result = _invoke("cv", config, "--data-root", synthetic_root, "--json", "--no-cache")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert len(summary["folds"]) == 2 and summary["qwk_mean"] is not None


def test_help_has_a_short_flag_and_the_version_prints():
    from dfu_train import __version__

    short = _invoke("sweep", "run", "-h")
    assert short.exit_code == 0 and "--data-root" in short.stdout
    version = _invoke("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"dfu {__version__}"


def test_leaderboard_filters_exports_and_explains_itself(finished_sweep, tmp_path):
    storage = tmp_path / "results"
    args = ["leaderboard", "done", "--storage", storage]
    rows = json.loads(_invoke(*args, "--format", "json", "--where",
                              "forest.min_samples_leaf=20").stdout)
    assert [r["params"]["forest.min_samples_leaf"] for r in rows] == [20]
    _assert_user_error(_invoke(*args, "--where", "forest.max_depth=null"),
                       "no such column or parameter")  # max_depth is not swept here
    import csv
    import io

    table = list(csv.DictReader(io.StringIO(_invoke(*args, "--format", "csv").stdout)))
    assert {json.loads(r["params"])["forest.min_samples_leaf"] for r in table} == {1, 20}
    table_file = tmp_path / "board.txt"
    written = _invoke(*args, "--out", table_file)
    assert written.exit_code == 0 and written.stdout == ""
    assert "leaderboard done" in table_file.read_text()
    trials = json.loads(_invoke(*args, "--trials", "--format", "json", "--top", 2, "--by", "qwk",
                                "--where", "fold=1").stdout)
    assert len(trials) == 2 and {t["fold"] for t in trials} == {1}
    assert trials[0]["qwk"] >= trials[1]["qwk"]
    none_left = _invoke(*args, "--where", "forest.min_samples_leaf=7")
    assert none_left.exit_code == 0 and "no config matches --where" in none_left.stderr
    bad_view = _invoke("sweep", "run", "x.yaml", "--progress", "loud")
    assert bad_view.exit_code == 2 and "'loud' is not one of" in bad_view.stderr


def test_where_reads_null_and_lists_as_yaml():
    import pandas as pd

    from dfu_train.results.leaderboard import filter_rows

    frame = pd.DataFrame({"config_id": ["a", "b", "c"], "params": [
        {"forest.max_depth": None, "fusion.hidden": [64, 32]},
        {"forest.max_depth": 5, "fusion.hidden": []},
        {"forest.max_depth": 5, "fusion.hidden": [64]}]})
    assert list(filter_rows(frame, ("forest.max_depth=null",), params=True)["config_id"]) == ["a"]
    assert list(filter_rows(frame, ("forest.max_depth=5",), params=True)["config_id"]) == ["b", "c"]
    assert list(filter_rows(frame, ("fusion.hidden=[64, 32]",), params=True)["config_id"]) == ["a"]
    assert list(filter_rows(frame, ("fusion.hidden=[]",), params=True)["config_id"]) == ["b"]
