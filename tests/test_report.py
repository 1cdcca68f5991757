"""`dfu report` on a finished synthetic sweep: every plot is a real PNG and the HTML shows them."""

from __future__ import annotations

import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.results import store
from dfu_train.sweep.launch import run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.results.report import trial_curves, write_report
from dfu_train.sweep.space import parse_sweep

pytestmark = pytest.mark.ray
PLOTS = ("top_configs.png", "fusion_vs_metadata.png", "learning_curves.png",
         "parallel_coordinates.png", "param_importance.png", "best_confusion.png",
         "optimisation_history.png", "class_metrics.png", "best_roc_pr.png",
         "best_calibration.png")


@pytest.fixture(scope="module")
def finished_sweep(local_ray, synthetic_root, tmp_path_factory):
    """Fusion and metadata-only configs on two folds, with ASHA stopping some of them."""
    spec = parse_sweep({
        "name": "reported", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0, 1]},
        "search": {"algorithm": "grid"},
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
        "resources": {"cpus_per_trial": 1, "use_train": False},
        "fixed": {"forest.n_estimators": 20, "forest.inner_folds": 3, "image.size": 16,
                  "thermal_map.pretrain_epochs": 3, "stage1.epochs": 3, "stage2.epochs": 0},
        "space": {"modalities": {"grid": [["metadata"], ["metadata", "thermal_map"]]},
                  "stage1.lr": {"grid": [1e-3, 1e-9]},
                  "forest.max_depth": {"grid": [3, None]}},  # a null choice too
    })
    storage = tmp_path_factory.mktemp("storage")
    return run_sweep(plan_sweep(spec, data_root=synthetic_root, storage=storage),
                     on_event=lambda line: None), storage


def test_report_writes_every_plot_as_a_png_that_the_html_shows(finished_sweep, tmp_path):
    sweep_dir, _ = finished_sweep
    figures = write_report(sweep_dir, tmp_path / "report")
    assert [f.file for f in figures] == list(PLOTS)
    page = (tmp_path / "report" / "index.html").read_text()
    for plot in PLOTS:
        path = tmp_path / "report" / plot
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
            assert min(image.size) > 200
        assert f'src="{plot}"' in page
    assert not re.search(r"(src|href)=\"https?://", page)  # viewable offline
    assert sweep_dir.name in page


def test_learning_curves_come_from_every_trial_and_mark_the_pruned(finished_sweep):
    sweep_dir, _ = finished_sweep
    curves = trial_curves(sweep_dir)
    assert len(curves) == 6 * 2  # metadata-only configs ignore stage1.lr: 6 distinct configs
    assert all(c["points"][0][0] == 1 for c in curves)  # the forest step comes first
    fusion = [c for c in curves if any(s == "stage1" for _, _, s in c["points"])]
    assert fusion and all([p for p, _, _ in c["points"]] == sorted(p for p, _, _ in c["points"])
                          for c in curves)


def test_dfu_report_command_and_its_refusals(finished_sweep, tmp_path):
    sweep_dir, storage = finished_sweep
    runner = CliRunner()
    done = runner.invoke(app, ["report", "reported", "--storage", str(storage),
                               "--out", str(tmp_path / "r")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "r" / "index.html").is_file()
    missing = runner.invoke(app, ["report", "nope", "--storage", str(storage),
                                  "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "no sweep 'nope'" in missing.stderr


def test_progress_snapshot_of_a_finished_sweep_counts_every_trial(finished_sweep):
    from dfu_train.results.progress import snapshot

    sweep_dir, _ = finished_sweep
    snap = snapshot(sweep_dir, experiment="tune", planned=12, started=0.0)
    assert snap["finished"] + snap["pruned"] == 12 and snap["pruned"] >= 1
    assert snap["running"] == snap["pending"] == snap["error"] == 0
    assert snap["remaining_s"] == 0 and snap["best_qwk"] is not None


def test_progress_polls_read_each_fold_record_and_trial_params_once(finished_sweep, tmp_path):
    """On a bucket every read is a request: a poll reads only files it has not seen whole."""
    import shutil
    from pathlib import Path

    from dfu_train.results.progress import snapshot

    sweep_dir = Path(shutil.copytree(str(finished_sweep[0]), tmp_path / "copy"))
    seen: dict = {}
    first = snapshot(sweep_dir, experiment="tune", planned=12, started=0.0, seen=seen)
    written_once = [*sweep_dir.glob("fold_results/*.json"), *sweep_dir.glob("tune/*/params.json")]
    for path in written_once:
        path.write_text("overwritten: unreadable if read again")
    again = snapshot(sweep_dir, experiment="tune", planned=12, started=0.0, seen=seen)
    counts = ["finished", "pruned", "running", "pending", "error", "best_config", "best_qwk"]
    assert [again[k] for k in counts] == [first[k] for k in counts]
    assert snapshot(sweep_dir, experiment="tune", planned=12, started=0.0)["finished"] == 0


def test_sweep_run_json_progress_and_quiet_modes(local_ray, synthetic_root, tmp_path):
    import json

    import yaml

    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "tiny", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0]}, "search": {"algorithm": "grid"},
        "scheduler": {"type": "none"}, "resources": {"use_train": False},
        "fixed": {"forest.n_estimators": 10, "forest.inner_folds": 3},
        "space": {"forest.min_samples_leaf": {"grid": [1, 4]}}}))
    runner = CliRunner()
    args = ["sweep", "run", str(sweep), "--data-root", str(synthetic_root),
            "--storage", str(tmp_path / "s")]
    result = runner.invoke(app, [*args, "--progress", "json"])
    assert result.exit_code == 0, result.output
    updates = [json.loads(line) for line in result.stderr.splitlines()]  # JSON lines only
    assert updates and updates[-1]["finished"] == 2 and updates[-1]["planned"] == 2
    kinds = [u["event"] for u in updates]
    assert kinds.count("trial_start") == kinds.count("trial_end") == 2 and kinds[-1] == "summary"
    records = {(r["config_id"], r["fold"]): r["metrics"]["qwk"] for r in
               store.read_fold_results(store.storage_path(tmp_path / "s") / "tiny")}
    assert {(u["config_id"], u["fold"]): u["val_qwk"] for u in updates
            if u["event"] == "trial_end" and u["status"] == "finished"} == records
    board = json.loads(result.stdout)
    assert len(board) == 2 and updates[-1]["best_config"] == board[0]["config_id"]
    again = runner.invoke(app, ["sweep", "resume", "tiny", "--storage", str(tmp_path / "s"),
                                "--progress", "quiet"])
    assert again.exit_code == 0 and again.stdout == ""
    bad = runner.invoke(app, [*args, "--progress", "loud"])
    assert bad.exit_code == 2 and "'loud' is not one of" in bad.stderr


def test_mlflow_file_store_and_tensorboard_receive_the_sweep(local_ray, synthetic_root, tmp_path):
    import mlflow
    import yaml

    sweep = tmp_path / "tracked.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "tracked", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0, 1]},
        "search": {"algorithm": "grid"}, "scheduler": {"type": "none"},
        "resources": {"use_train": False},
        "fixed": {"forest.n_estimators": 10, "forest.inner_folds": 3}}))
    uri = (tmp_path / "mlruns").as_uri()
    result = CliRunner().invoke(app, [
        "sweep", "run", str(sweep), "--data-root", str(synthetic_root),
        "--storage", str(tmp_path / "s"), "--progress", "quiet", "--mlflow", uri,
        "--tensorboard"])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [run for run in runs if run.data.tags["kind"] == "config"]
    children = [run for run in runs if run.data.tags["kind"] == "fold"]
    records = store.read_fold_results(store.storage_path(tmp_path / "s") / "tracked")
    config_id = records[0]["config_id"]
    assert parent.info.run_name == config_id and len(children) == 2  # a child per fold
    assert {run.info.run_name for run in children} == {f"{config_id}-s42-f0",
                                                       f"{config_id}-s42-f1"}
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id
               and run.data.tags["status"] == "finished" for run in children)
    recorded = sorted(round(r["metrics"]["qwk"], 6) for r in records)
    assert sorted(round(run.data.metrics["final_qwk"], 6) for run in children) == recorded
    assert all("final_macro_f1" in run.data.metrics and "final_f1_R" in run.data.metrics
               and client.get_metric_history(run.info.run_id, "val_qwk") for run in children)
    assert parent.data.metrics["qwk_mean"] == pytest.approx(sum(recorded) / 2, abs=1e-5)
    assert parent.data.tags["complete"] == "true"
    assert list((tmp_path / "s" / "tracked" / "tune").glob("*/events.out.tfevents.*"))
