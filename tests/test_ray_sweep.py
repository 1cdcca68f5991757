"""The real path: Tune function trainable -> TorchTrainer -> run_fold, on a private local Ray."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.data import schema
from dfu_train.results import store
from dfu_train.sweep.launch import run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.results.leaderboard import build_leaderboard
from dfu_train.sweep.space import parse_sweep

pytestmark = pytest.mark.ray
SMALL = {"forest.n_estimators": 20, "forest.inner_folds": 3}


def test_sweep_runs_torchtrainer_trials_and_resume_repeats_nothing(local_ray, tmp_path,
                                                                   tables_only_root):
    spec = parse_sweep({"name": "real", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0, 2]},
                        "search": {"algorithm": "grid"}, "scheduler": {"type": "asha"},
                        "resources": {"cpus_per_trial": 1, "use_train": True}, "fixed": SMALL})
    plan = plan_sweep(spec, data_root=tables_only_root, storage=tmp_path)
    sweep_dir = run_sweep(plan, on_event=lambda line: None)

    records = store.read_fold_results(sweep_dir)
    assert sorted(r["fold"] for r in records) == [0, 2]
    for record in records:
        assert record["trial_id"] and record["status"] == "finished"
        assert record["wall_s"] >= record["compute_s"] > 0
    assert len(list((sweep_dir / store.TRAIN_DIR).glob("train-*"))) == 2  # one TorchTrainer each
    board = build_leaderboard(sweep_dir)
    assert board.iloc[0]["folds_done"] == 2 and bool(board.iloc[0]["complete"])

    results = sorted((sweep_dir / store.FOLD_RESULTS).glob("*.json"))
    written = {p.name: p.local_path.stat().st_mtime_ns for p in results}
    runner = CliRunner()
    resumed = runner.invoke(app, ["sweep", "resume", "real", "--storage", str(tmp_path)])
    assert resumed.exit_code == 0, resumed.output
    assert "(0 to run, 2 done before)" in resumed.stderr
    assert {p.name: p.local_path.stat().st_mtime_ns for p in results} == written  # nothing re-ran
    status = runner.invoke(app, ["sweep", "status", "real", "--storage", str(tmp_path), "--json"])
    assert status.exit_code == 0, status.output
    payload = json.loads(status.stdout)
    assert payload["trials"]["finished"] == payload["trials"]["planned"] == 2
    assert payload["best"]["config_id"] == board.iloc[0]["config_id"]


def test_a_trial_that_fails_after_validation_fails_alone_with_its_reason(local_ray, tmp_path,
                                                                         tables_only_root):
    root = tmp_path / "cohort"
    shutil.copytree(tables_only_root, root)
    spec = parse_sweep({"name": "broken", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0]},
                        "search": {"algorithm": "grid"}, "scheduler": {"type": "none"},
                        "resources": {"cpus_per_trial": 1, "max_failures": 0}, "fixed": SMALL})
    plan = plan_sweep(spec, data_root=root, storage=tmp_path)
    (root / schema.METADATA_CSV).write_bytes(b"\xff\xfe broken after validation")
    sweep_dir = run_sweep(plan, on_event=lambda line: None)
    states = store.read_trial_states(sweep_dir)
    assert [s["status"] for s in states] == ["error"]
    assert "not UTF-8" in states[0]["error"]
    row = build_leaderboard(sweep_dir).iloc[0]
    assert row["errors"] == 1 and row["folds_done"] == 0 and "not UTF-8" in row["last_error"]


def test_reservations_of_dead_trial_controllers_are_released(local_ray):
    import ray
    from ray.util.placement_group import placement_group, placement_group_table

    from dfu_train.sweep.reservations import release_orphaned_placement_groups

    @ray.remote(num_cpus=0)
    class Controller:  # stands in for a TorchTrainer controller that Tune killed mid-run
        def reserve(self):
            group = placement_group([{"CPU": 0.5}])
            ray.get(group.ready())
            return group.id.hex()

    kept = placement_group([{"CPU": 0.25}])  # made by the driver itself: must survive
    ray.get(kept.ready())
    controller = Controller.remote()
    orphan = ray.get(controller.reserve.remote())
    ray.kill(controller)
    deadline = time.monotonic() + 20
    while placement_group_table()[orphan]["state"] != "REMOVED" and time.monotonic() < deadline:
        release_orphaned_placement_groups()
        time.sleep(0.5)
    assert placement_group_table()[orphan]["state"] == "REMOVED"
    assert placement_group_table()[kept.id.hex()]["state"] == "CREATED"
    ray.util.remove_placement_group(kept)


def test_images_unreadable_after_validation_fail_only_their_trials(local_ray, tmp_path,
                                                                   synthetic_root):
    root = tmp_path / "cohort"
    shutil.copytree(synthetic_root, root)
    spec = parse_sweep({
        "name": "images-broken", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0]},
        "search": {"algorithm": "grid"}, "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1, "max_failures": 0, "use_train": False,
                      "max_concurrent": 1},
        "fixed": {**SMALL, "image.size": 16, "thermal_map.pretrain_epochs": 1,
                  "stage1.epochs": 1, "stage2.epochs": 0},
        "space": {"modalities": {"grid": [["metadata", "thermal_map"], ["metadata"]]}},
    })
    plan = plan_sweep(spec, data_root=root, storage=tmp_path)  # validation passes here
    for image in (root / schema.IMAGE_FOLDERS["thermal_map"][0]).glob("*.png"):
        image.write_bytes(b"\0" * image.stat().st_size)  # same size: the same cohort listing
    sweep_dir = run_sweep(plan, on_event=lambda line: None)
    board = build_leaderboard(sweep_dir).set_index("config_id")
    by_modalities = {tuple(p["modalities"]): cid for cid, p in board["params"].items()}
    fusion, metadata = by_modalities[("metadata", "thermal_map")], by_modalities[("metadata",)]
    assert board.loc[fusion, "errors"] == 1 and board.loc[fusion, "folds_done"] == 0
    assert "not a readable image" in board.loc[fusion, "last_error"]
    assert board.loc[metadata, "folds_done"] == 1 and board.loc[metadata, "errors"] == 0
