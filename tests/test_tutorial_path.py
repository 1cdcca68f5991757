"""docs/tutorial.md from the command line: check -> screen -> promote -> export-best -> confirm,
for a random and an Optuna search; and a sweep's exit code says how it ended."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.data import schema
from dfu_train.results import store

pytestmark = pytest.mark.ray
runner = CliRunner()


def _sweep_file(tmp_path, name: str, **sections) -> str:
    spec = {"name": name, "baseline": False, "cv": {"n_folds": 3, "run_folds": [0]},
            "scheduler": {"type": "none"},
            "resources": {"cpus_per_trial": 1, "use_train": False, "max_failures": 0},
            "fixed": {"forest.inner_folds": 3, "forest.n_estimators": 15}, **sections}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


SEARCHES = {
    "random": {"search": {"algorithm": "random", "num_samples": 3, "seed": 0},
               "space": {"forest.min_samples_leaf": {"choice": [1, 5, 20, 40]},
                         "forest.max_depth": {"choice": [3, None]}}},
    "optuna": {"search": {"algorithm": "optuna", "num_samples": 3, "seed": 1},
               "space": {"forest.min_samples_leaf": {"choice": [1, 5, 20, 40]},
                         "forest.max_depth": {"choice": [3, None]}}},
}


@pytest.mark.parametrize("search", sorted(SEARCHES))
def test_the_tutorial_path_from_screen_to_confirmed_winner(local_ray, tmp_path, synthetic_root,
                                                           search, monkeypatch):
    storage = tmp_path / "results"
    sweep_file = _sweep_file(tmp_path, "tut", **SEARCHES[search])
    assert _cli("data", "check", "--data-root", synthetic_root).exit_code == 0

    screened = _cli("sweep", "run", sweep_file, "--data-root", synthetic_root,
                    "--storage", storage, "--progress", "lines")
    assert screened.exit_code == 0, screened.output
    sweep_dir = store.storage_path(storage) / "tut"
    records = {(r["config_id"], r["fold"]): r for r in store.read_fold_results(sweep_dir)}
    printed = re.findall(r"config (\w+) fold (\d+): qwk ([0-9.]+)", screened.stderr)
    assert len(printed) == 3 and 1 <= len(records) <= 3  # a search may propose a config twice
    for config_id, fold, qwk in printed:  # the line shows the recorded final QWK
        assert float(qwk) == pytest.approx(records[(config_id, int(fold))]["metrics"]["qwk"],
                                           abs=5e-4)

    manifest_before = (sweep_dir / store.MANIFEST).read_bytes()
    if search == "random":  # a promotion that fails before it runs records nothing
        import dfu_train.sweep.launch as launch

        def broken(spec):
            raise RuntimeError("the trainable could not be built")

        monkeypatch.setattr(launch, "create_trainable", broken)
        failed = _cli("sweep", "promote", "tut", "--top", "1", "--storage", storage)
        assert failed.exit_code == 1
        assert (sweep_dir / store.MANIFEST).read_bytes() == manifest_before
        monkeypatch.undo()

    promoted = _cli("sweep", "promote", "tut", "--top", "1", "--fold-seeds", "7",
                    "--storage", storage, "--progress", "quiet")
    assert promoted.exit_code == 0, promoted.output
    manifest = store.read_manifest(sweep_dir)
    assert len(manifest["promotions"]) == 1 and manifest["promotions"][0]["fold_seeds"] == [42, 7]

    best = tmp_path / "best.json"
    exported = _cli("leaderboard", "tut", "--storage", storage, "--export-best", best,
                    "--format", "json")
    assert exported.exit_code == 0, exported.output
    top = json.loads(exported.stdout)[0]
    assert top["config_id"] == manifest["promotions"][0]["configs"][0]
    assert top["folds_done"] == 6 and not top["fewer_folds"]

    confirmed = _cli("cv", best, "--sweep", "tut", "--storage", storage,
                     "--fold-seeds", "100", "--json")
    assert confirmed.exit_code == 0, confirmed.output
    summary = json.loads(confirmed.stdout)
    assert summary["config_id"] == top["config_id"] and len(summary["folds"]) == 3

    rows = json.loads(_cli("leaderboard", "tut", "--storage", storage, "--format", "json",
                           "--all").stdout)
    row = next(r for r in rows if r["config_id"] == top["config_id"])
    assert row["qwk_confirmed_mean"] == pytest.approx(summary["qwk_mean"], abs=1e-4)
    assert row["optimism"] == pytest.approx(row["qwk_screen_mean"] - summary["qwk_mean"],
                                            abs=1e-4)
    assert row["qwk_promoted_mean"] is not None and row["folds_confirmed"] == 3
    status = json.loads(_cli("sweep", "status", "tut", "--storage", storage, "--json").stdout)
    assert status["trials"]["planned"] == status["trials"]["finished"] == 3 * 1 + 1 * 2 * 3


def test_a_trial_no_node_can_hold_is_refused_before_tune_starts(local_ray, tmp_path,
                                                                 synthetic_root):
    storage = tmp_path / "results"
    for name, resources, asked in (
        ("huge", {"cpus_per_trial": 1000, "use_train": False}, "1000 CPU"),
        ("gpu", {"cpus_per_trial": 1, "gpus_per_trial": 1}, "1 GPU"),
    ):
        result = _cli("sweep", "run", _sweep_file(tmp_path, name, resources=resources),
                      "--data-root", synthetic_root, "--storage", storage)
        assert result.exit_code == 2, result.output
        assert asked in result.stderr and "no node of the cluster can hold it" in result.stderr
        assert "Traceback" not in result.output
        assert not (storage / name / store.MANIFEST).exists()


def test_a_sweep_with_failed_trials_exits_1_after_the_leaderboard_and_errors(
        local_ray, tmp_path, tables_only_root):
    root = tmp_path / "cohort"
    shutil.copytree(tables_only_root, root)
    storage = tmp_path / "results"
    sweep_file = _sweep_file(tmp_path, "failing")

    def break_after_validation():  # the cohort goes bad once the sweep is planned
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (storage / "failing" / store.MANIFEST).exists():
                (root / schema.METADATA_CSV).write_bytes(b"\xff\xfe broken after validation")
                return
            time.sleep(0.005)

    breaker = threading.Thread(target=break_after_validation)
    breaker.start()
    result = _cli("sweep", "run", sweep_file, "--data-root", root, "--storage", storage,
                  "--progress", "lines")
    breaker.join()
    assert result.exit_code == 1, result.output
    assert "leaderboard failing" in result.stdout
    assert "not UTF-8" in result.stderr and "1 of 1 trials failed" in result.stderr
    assert "dfu sweep resume failing --storage" in result.stderr


def _finish(process: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The process's output; on a timeout it is killed (a stuck child would block on its full
    pipes and outlive the test)."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise


def _run_cli(args: list[str], env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "dfu_train.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_smoke_sweep_beside_another_ray_is_private_quiet_and_within_the_cores(
        local_ray, tmp_path, synthetic_root):
    """`dfu sweep run` of the demo's smoke sweep (inline) while another Ray runs on the machine
    and `ray start` left its address behind (here: this test session's Ray): the sweep starts
    its own Ray, its trials never outnumber the cores, and the terminal shows dfu's lines only
    (Ray's go to the sweep's log)."""
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="dfu-", dir="/tmp")  # short: Ray's socket paths are long
    os.makedirs(f"{ray_tmp}/ray")
    gcs = local_ray._private.worker._global_node.gcs_address
    with open(f"{ray_tmp}/ray/ray_current_cluster", "w") as handle:
        handle.write(gcs)  # what `ray start` writes for later `ray.init()` calls to join
    storage = tmp_path / "results"
    smoke = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml")
                           .read_text())
    smoke["resources"]["use_train"] = False  # inline: the Train path's start-up is issue-sized
    sweep_file = tmp_path / "smoke.yaml"
    sweep_file.write_text(yaml.safe_dump(smoke))
    process = _run_cli(["sweep", "run", str(sweep_file), "--data-root", str(synthetic_root),
                        "--storage", str(storage), "--progress", "lines"],
                       env={"RAY_TMPDIR": ray_tmp})
    try:
        out, err = _finish(process, 600)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert process.returncode == 0, err
    assert "up to {} at once".format(os.cpu_count()) in err
    dfu_lines = re.compile(r"^(sweep smoke: |  \[\d+\] config \w+ fold \d+: qwk |Ray's own output: "
                           r"|Δ vs baseline: )")  # the leaderboard's footnote
    assert [line for line in err.splitlines() if not dfu_lines.match(line)] == []
    assert out.splitlines()[0].strip().startswith("leaderboard smoke")
    log = next((storage / "smoke" / "logs").glob("tune-*.log")).read_text()
    assert "Started a local Ray instance" in log  # Ray's lines went to the sweep's log
    spans = [(r["timing"]["started_at"], r["timing"]["started_at"] + r["timing"]["wall_s"])
             for r in store.read_fold_results(store.storage_path(storage) / "smoke")]
    assert len(spans) == 3 * 2  # two configs and the baseline, on two folds
    most = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert most <= os.cpu_count()


def test_ctrl_c_exits_130_and_names_the_resume_command(local_ray, tmp_path, synthetic_root):
    storage = tmp_path / "results"
    sweep_file = _sweep_file(
        tmp_path, "stopped", search={"algorithm": "grid"},
        resources={"cpus_per_trial": 1, "use_train": False, "max_concurrent": 1},
        fixed={"forest.inner_folds": 5, "forest.n_estimators": 150},
        space={"forest.min_samples_leaf": {"grid": [1, 2, 3, 4, 5, 6, 7, 8]}})
    process = _run_cli(["sweep", "run", sweep_file, "--data-root", str(synthetic_root),
                        "--storage", str(storage), "--progress", "lines"])
    results = store.storage_path(storage) / "stopped" / store.FOLD_RESULTS
    deadline = time.monotonic() + 240
    while not list(results.glob("*.json")) and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(process.communicate()[1])
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = _finish(process, 120)
    assert process.returncode == 130, err
    assert f"dfu sweep resume stopped --storage {storage}" in err
    assert "Tuner.restore" not in err
    assert 1 <= len(list(results.glob("*.json"))) < 8
