"""The sweep engine under pressure: ASHA pruning, a killed driver, a killed worker, live reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from dfu_train.results import store
from dfu_train.sweep.launch import run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.results.leaderboard import build_leaderboard
from dfu_train.sweep.space import parse_sweep
from sweep_files import manifest

pytestmark = pytest.mark.ray

TINY_FUSION = {
    "modalities": ["metadata", "thermal_map"], "forest.n_estimators": 20,
    "forest.inner_folds": 3, "image.size": 16, "image.batch_size": 32,
    "thermal_map.pretrain_epochs": 4, "stage1.epochs": 4, "stage2.epochs": 0,
    "fusion.head": "residual", "optim.early_stop_patience": 50, "optim.checkpoint_every": 2,
}


def _node_processes(title: str) -> list[psutil.Process]:
    """Processes of the Ray this test session started (never another Ray on the machine)."""
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    return [p for p in psutil.Process(raylet).children(recursive=True)
            if title in " ".join(_cmdline(p))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_fold_asha_stops_weak_configs_on_every_fold_and_the_leaderboard_marks_them(
        local_ray, tmp_path, synthetic_root):
    """On the real Tune path: a config whose fusion stage cannot learn is stopped on both folds
    (the running one at its next report, the one not yet started before it starts), and each
    config ends finished on both folds or pruned on both."""
    spec = parse_sweep({
        "name": "folds", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0, 1]},
        "search": {"algorithm": "grid"},
        "scheduler": {"type": "fold-asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpus_per_trial": 1, "use_train": False, "max_concurrent": 1},
        "fixed": TINY_FUSION,
        # a learning rate that cannot learn follows each one that can: fold-asha should stop it
        "space": {"seed": {"grid": [0, 1]}, "stage1.lr": {"grid": [3e-3, 1e-9]}},
    })
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    assert plan.fusion_length == 4
    sweep_dir = run_sweep(plan, on_event=lambda line: None)
    states = store.read_trial_states(sweep_dir)
    assert len(states) == 8 and all(s["status"] in ("finished", "pruned") for s in states)
    by_config: dict[str, set[str]] = {}
    for state in states:
        by_config.setdefault(state["config_id"], set()).add(state["status"])
    assert all(len(statuses) == 1 for statuses in by_config.values()), by_config
    stopped = {c for c, statuses in by_config.items() if statuses == {"pruned"}}
    assert stopped
    marks = store.read_pruned(sweep_dir)
    assert {key[0] for key in marks} == stopped and len(marks) == 2 * len(stopped)
    assert all(mark["scope"] == "config" for mark in marks.values())
    board = build_leaderboard(sweep_dir).set_index("config_id")
    for config_id, row in board.iterrows():
        assert (row["folds_done"], row["pruned"]) == ((0, 2) if config_id in stopped else (2, 0))
        if config_id in stopped:
            assert row["params"]["stage1.lr"] == 1e-9


KILLED_SWEEP = {
    "name": "killed", "baseline": False, "cv": {"n_folds": 3, "run_folds": "all"},
    "search": {"algorithm": "grid"}, "scheduler": {"type": "none"},
    "resources": {"cpus_per_trial": 1, "use_train": False, "max_concurrent": 1},
    "fixed": TINY_FUSION, "space": {"seed": {"grid": [0, 1]}},
}


@pytest.fixture(scope="module")
def uninterrupted_board(local_ray, synthetic_root, tmp_path_factory):
    """The leaderboard of the sweep that the fault-injection tests kill, run without a fault."""
    spec = parse_sweep(KILLED_SWEEP)
    storage = tmp_path_factory.mktemp("uninterrupted")
    return build_leaderboard(run_sweep(plan_sweep(spec, data_root=synthetic_root,
                                                  storage=storage), on_event=lambda line: None))


def _tune_started(sweep_dir: Path) -> bool:
    """Tune has set up the experiment (its trials' actors are still starting)."""
    return (sweep_dir / store.TUNE_DIR / "tuner.pkl").is_file()


@pytest.mark.parametrize(("moment", "ready"), [
    ("before-the-first-result", lambda d, n: _tune_started(d)),
    ("during-the-last-trial", lambda d, n: n >= 5),  # and folds before it recorded
])
def test_driver_killed_then_resumed_gives_the_uninterrupted_leaderboard(
        local_ray, tmp_path, synthetic_root, uninterrupted_board, moment, ready):
    import ray

    sweep_file = tmp_path / "killed.yaml"
    sweep_file.write_text(yaml.safe_dump(KILLED_SWEEP))
    address = ray.get_runtime_context().gcs_address
    dfu = [sys.executable, "-m", "dfu_train.cli"]
    common = ["--storage", str(tmp_path / "results"), "--address", address]
    driver = subprocess.Popen([*dfu, "sweep", "run", str(sweep_file), "--data-root",
                               str(synthetic_root), *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sweep_dir = tmp_path / "results" / "killed"
    results = sweep_dir / store.FOLD_RESULTS
    try:
        _wait_for(lambda: ready(sweep_dir, len(list(results.glob("*.json")))), 240, moment)
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert len(before) < 6
    if moment == "before-the-first-result":
        assert not before

    resumed = subprocess.run([*dfu, "sweep", "resume", "killed", *common],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    records = store.read_fold_results(sweep_dir)
    keys = [(r["config_id"], r["fold"]) for r in records]
    assert len(keys) == len(set(keys)) == 6  # every (config, fold) exactly once
    after = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert {k: after[k] for k in before} == before  # finished folds were not re-run
    board = build_leaderboard(sweep_dir)
    assert list(board["folds_done"]) == [3, 3] and board["complete"].all()
    columns = ["config_id", "qwk_by_fold", "qwk_mean", "meta_qwk_mean"]
    assert board[columns].to_dict("records") == uninterrupted_board[columns].to_dict("records")


def test_a_killed_train_worker_is_retried_from_its_checkpoint(local_ray, tmp_path,
                                                              synthetic_root):
    spec = parse_sweep({
        "name": "retry", "baseline": False, "cv": {"n_folds": 3, "run_folds": [1]}, "search": {"algorithm": "grid"},
        "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1, "max_failures": 2, "use_train": True},
        "fixed": {**TINY_FUSION, "thermal_map.pretrain_epochs": 16},
    })
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    sweep_dir = plan.sweep_dir
    outcome: dict = {}

    def kill_worker_after_a_checkpoint():
        # the second checkpoint on disk means the controller has registered the first
        _wait_for(lambda: len(list((sweep_dir / store.TRAIN_DIR).glob("train-*/checkpoint_*/")))
                  >= 2, 240, "two checkpoints")
        workers = _wait_for(lambda: _node_processes("RayTrainWorker"), 60, "the Train worker")
        for worker in workers:
            worker.send_signal(signal.SIGKILL)
        outcome["killed"] = len(workers)

    import threading

    killer = threading.Thread(target=kill_worker_after_a_checkpoint, daemon=True)
    killer.start()
    run_sweep(plan, on_event=lambda line: None)
    killer.join(timeout=5)
    assert outcome.get("killed", 0) >= 1
    record = store.read_fold_results(sweep_dir)
    assert len(record) == 1 and record[0]["resumed_from"] is not None
    assert record[0]["resumed_from"] >= 1  # continued after the forest at least, not from scratch


def test_leaderboard_reads_a_sweep_folder_while_it_is_written(tmp_path):
    sweep_dir = tmp_path / "live"
    (sweep_dir / store.TUNE_DIR).mkdir(parents=True)
    store.write_json_atomic(sweep_dir / store.MANIFEST, manifest("live", ["abcabc"], folds=[0, 1]))
    (sweep_dir / store.TUNE_DIR / "experiment_state-2026.json").write_text('{"trial_da')
    (sweep_dir / store.FOLD_RESULTS).mkdir()
    (sweep_dir / store.FOLD_RESULTS / "abcabc-s42-f0.json").write_text('{"config_id": "ab')
    (sweep_dir / store.FOLD_RESULTS / ".abcabc-s42-f1.json.tmp").write_text("{")  # being written
    board = build_leaderboard(sweep_dir)
    assert list(board["folds_done"]) == [0] and not board["complete"].any()
    # records are written whole: one cut short was damaged, and is listed as such
    assert [r.path for r in store.rejected_files(sweep_dir)] == ["fold_results/abcabc-s42-f0.json"]


def test_optuna_proposes_configs_that_the_leaderboard_ranks(local_ray, tmp_path, synthetic_root):
    spec = parse_sweep({
        "name": "tpe", "baseline": False, "cv": {"n_folds": 3, "run_folds": [2]},
        "search": {"algorithm": "optuna", "num_samples": 4, "seed": 3},
        "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1, "use_train": False},
        "fixed": {"forest.inner_folds": 3},
        "space": {"forest.n_estimators": {"randint": [5, 40]},
                  "forest.min_samples_leaf": {"choice": [1, 3, 5]}},
    })
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    assert plan.n_trials == 4
    sweep_dir = run_sweep(plan, on_event=lambda line: None)
    records = store.read_fold_results(sweep_dir)
    assert {r["fold"] for r in records} == {2} and 1 <= len(records) <= 4
    board = build_leaderboard(sweep_dir)
    assert set(board["config_id"]) == {r["config_id"] for r in records}
    assert all(5 <= row["forest.n_estimators"] < 40 for row in board["params"])
    assert board["complete"].all()
    # the study is kept in the sweep folder, under the sweep's name, for optuna-dashboard
    import optuna

    study = optuna.load_study(study_name="tpe", storage="sqlite:///" + str(
        sweep_dir.local_path.resolve() / "optuna.db"))
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    recorded = {json.dumps(sorted(r["params"].items())): r["metrics"]["qwk"] for r in records}
    for trial in study.trials:
        params = sorted((k.removeprefix("params/"), v) for k, v in trial.params.items())
        assert trial.value == pytest.approx(recorded[json.dumps(params)])


def test_promote_runs_the_screened_best_on_all_folds_and_extra_seeds(local_ray, tmp_path,
                                                                      synthetic_root):
    from typer.testing import CliRunner

    from dfu_train.cli import app

    spec = parse_sweep({
        "name": "screen", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0]}, "search": {"algorithm": "grid"},
        "scheduler": {"type": "none"}, "resources": {"cpus_per_trial": 1, "use_train": False},
        "fixed": {"forest.n_estimators": 20, "forest.inner_folds": 3},
        "space": {"forest.min_samples_leaf": {"grid": [1, 5, 20]}},
    })
    sweep_dir = run_sweep(plan_sweep(spec, data_root=synthetic_root, storage=tmp_path),
                          on_event=lambda line: None)
    screened = build_leaderboard(sweep_dir)
    best = screened.iloc[0]["config_id"]
    screen_file = store.fold_result_path(sweep_dir, best, 42, 0)
    written = screen_file.local_path.stat().st_mtime_ns
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", "promote", "screen", "--top", "1", "--fold-seeds", "7",
                                 "--storage", str(tmp_path)])
    assert result.exit_code == 0, result.output
    board = build_leaderboard(sweep_dir)
    row = board[board["config_id"] == best].iloc[0]
    assert row["folds_total"] == 6 and row["folds_done"] == 6 and row["complete"]
    assert set(row["qwk_by_fold"]) == {f"{s}/{f}" for s in (42, 7) for f in range(3)}
    assert screen_file.local_path.stat().st_mtime_ns == written  # the screening fold was not re-run
    others = board[board["config_id"] != best]
    assert (others["folds_total"] == 1).all()  # the rest keep their screening plan
    status = runner.invoke(app, ["sweep", "status", "screen", "--storage", str(tmp_path), "--json"])
    assert json.loads(status.stdout)["trials"]["planned"] == 3 * 1 + 1 * 2 * 3


def test_trials_of_a_fusion_sweep_share_forest_and_branch_and_record_their_timing(
        local_ray, tmp_path, synthetic_root, cohort):
    from dfu_train.config import TrialConfig
    from dfu_train.results.leaderboard import trial_table
    from dfu_train.training.fold import run_fold

    spec = parse_sweep({
        "name": "share", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0]}, "search": {"algorithm": "grid"},
        "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1, "use_train": False, "max_concurrent": 1},
        "fixed": TINY_FUSION,
        "space": {"fusion.head": {"grid": ["residual", "prob_concat", "feature_concat"]}},
    })
    sweep_dir = run_sweep(plan_sweep(spec, data_root=synthetic_root, storage=tmp_path),
                          on_event=lambda line: None)
    trials = trial_table(sweep_dir)
    assert len(trials) == 3
    made = trials[trials["computed"].str.contains("branch")]
    assert len(made) == 1  # one at a time: the first makes forest and branch, the others reuse
    assert trials["reused"].str.contains("branch").sum() == 2
    assert trials["reused"].str.contains("forest").sum() == 2
    assert (tmp_path / store.CACHE_DIR / "branch").is_dir()  # beside the sweeps, not inside one
    board = build_leaderboard(sweep_dir)
    assert sorted(board["reused"]) == ["", "branch 1/1, crops 1/1, forest 1/1",
                                       "branch 1/1, crops 1/1, forest 1/1"]
    for record in store.read_fold_results(sweep_dir):
        assert record["threads"] == {"torch": 1, "forest_jobs": 1}
        timing = record["timing"]
        assert 0 <= timing["startup_s"] <= timing["wall_s"]
        assert timing["compute_s"] <= timing["wall_s"]
        assert set(timing["stages_s"]) == {"forest", "pretrain:thermal_map", "stage1",
                                             "decode"}
    reused = next(r for r in store.read_fold_results(sweep_dir)
                  if "branch" in ",".join(r["artifacts"]["reused"]))
    alone = run_fold(TrialConfig.from_dict(reused["config"]), cohort, 0)  # no cache at all
    assert alone.metrics == reused["metrics"]
