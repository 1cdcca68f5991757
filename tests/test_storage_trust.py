"""Storage that cannot hurt: every file read back is validated, damaged and foreign records are
set aside (never ranked), one writer holds a sweep at a time, names and output paths are safe.
None of these tests starts Ray; `test_resume_never_unpickles` runs the real sweep path."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.results import store
from dfu_train.results.lease import LEASE, SweepBusy, SweepLease, read_lease
from dfu_train.results.leaderboard import build_leaderboard, sweep_status
from sweep_files import fold_record, manifest, write_sweep
from test_broken_inputs import _assert_refused

runner = CliRunner()
IDS = ["aaaaaa", "bbbbbb"]


@pytest.fixture
def sweep(tmp_path):
    """Two configs on folds 0 and 1, all four folds recorded; b is the better config."""
    sweep_dir = store.storage_path(tmp_path / "results") / "trusty"
    write_sweep(sweep_dir, manifest("trusty", IDS, folds=(0, 1)),
                [fold_record(c, 42, f, q) for c, qs in zip(IDS, ((0.3, 0.4), (0.5, 0.6)))
                 for f, q in enumerate(qs)])
    return sweep_dir


def _ranked(sweep_dir) -> list[tuple[str, float]]:
    board = build_leaderboard(sweep_dir)
    return [(r.config_id, r.qwk_mean) for r in board.itertuples() if r.complete]


DAMAGE = [
    ("cut-to-200-bytes", lambda d: _cut(d / store.FOLD_RESULTS / "bbbbbb-s42-f1.json"),
     "fold_results/bbbbbb-s42-f1.json", r"not readable JSON"),
    ("metrics-oops", lambda d: _rewrite(d, "bbbbbb-s42-f1.json", metrics="oops"),
     "fold_results/bbbbbb-s42-f1.json", r"metrics: .*valid dictionary"),
    ("qwk-out-of-range", lambda d: _rewrite(d, "bbbbbb-s42-f1.json",
                                            metrics={"qwk": 7.0, "accuracy": 1, "macro_f1": 1}),
     "fold_results/bbbbbb-s42-f1.json", r"metrics.qwk: .*less than or equal to 1"),
    ("stray-list", lambda d: (d / store.FOLD_RESULTS / "stray.json").write_text("[]"),
     "fold_results/stray.json", r"not a fold record"),
    ("renamed", lambda d: os.replace(d.local_path / "fold_results/bbbbbb-s42-f1.json",
                                     d.local_path / "fold_results/bbbbbb-s42-f0x.json"),
     "fold_results/bbbbbb-s42-f0x.json", r"holds the record of bbbbbb-s42-f1"),
    ("path-in-config-id", lambda d: _rewrite(d, "bbbbbb-s42-f1.json", config_id="../../x"),
     "fold_results/bbbbbb-s42-f1.json", r"config_id: String should match pattern"),
]


def _cut(path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _rewrite(sweep_dir, name: str, **changes) -> None:
    path = sweep_dir / store.FOLD_RESULTS / name
    path.write_text(json.dumps({**json.loads(path.read_bytes()), **changes}))


@pytest.mark.parametrize(("case", "damage", "where", "reason"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_record_is_listed_with_its_reason_and_never_ranked(sweep, case, damage, where,
                                                                     reason):
    damage(sweep)
    lost = case != "stray-list"  # the others take b's second fold away: b is partial
    assert _ranked(sweep) == [("aaaaaa", 0.35)] if lost else [("bbbbbb", 0.55), ("aaaaaa", 0.35)]
    status = sweep_status(sweep)
    [rejected] = status["rejected"]
    assert rejected["path"] == where and re.search(reason, rejected["reason"])
    assert (status["trials"]["finished"], status["trials"]["pending"]) == ((3, 1) if lost
                                                                           else (4, 0))
    shown = runner.invoke(app, ["sweep", "status", "trusty", "--storage", str(sweep.parent)])
    assert shown.exit_code == 0 and "Traceback" not in shown.output
    assert f"not ranked: {where}" in shown.stderr
    board = runner.invoke(app, ["leaderboard", "trusty", "--storage", str(sweep.parent),
                                "--format", "json"])
    assert board.exit_code == 0 and [r["config_id"] for r in json.loads(board.stdout)] == (
        ["aaaaaa"] if lost else ["bbbbbb", "aaaaaa"])
    assert f"not ranked: {where}" in board.stderr


FOREIGN = [
    ("other-cohort", {"config_id": "bbbbbb", "fold": 1, "cohort_fingerprint": "0ther0ther0ther0"},
     r"made on another cohort"),
    ("other-fold-count", {"config_id": "bbbbbb", "fold": 1, "n_folds": 5}, r"made with 5 folds"),
    ("other-fold-assignment", {"config_id": "bbbbbb", "fold": 1, "fold_fingerprint": "1" * 16},
     r"another fold assignment under fold seed 42"),
    ("unplanned-config", {"config_id": "c0c0c0", "fold": 0}, r"config c0c0c0 is not planned"),
    ("unplanned-fold", {"config_id": "bbbbbb", "fold": 2}, r"not planned on fold 2"),
    ("unplanned-seed", {"config_id": "bbbbbb", "fold": 0, "fold_seed": 9},
     r"not planned on fold 0 of fold seed 9"),
]


@pytest.mark.parametrize(("case", "fields", "reason"), FOREIGN, ids=[f[0] for f in FOREIGN])
def test_a_record_from_elsewhere_is_not_ranked(sweep, case, fields, reason):
    (sweep / store.FOLD_RESULTS / "bbbbbb-s42-f1.json").delete()  # its place is free
    manifest_data = json.loads((sweep / store.MANIFEST).read_bytes())
    manifest_data["fold_fingerprints"] = {"42": fold_record("x" * 6, 42, 0, 0)["fold_fingerprint"]}
    store.write_json_atomic(sweep / store.MANIFEST, manifest_data)
    record = {**fold_record("bbbbbb", 42, 0, 0.99), **fields}
    store.write_fold_result(sweep, record)
    ranked = _ranked(sweep)
    assert all(qwk < 0.9 for _, qwk in ranked) and "c0c0c0" not in dict(ranked)
    [rejected] = store.rejected_files(sweep)
    assert re.search(reason, rejected.reason), rejected.reason


def test_the_writer_moves_rejected_records_to_quarantine_with_the_reason(sweep):
    _cut(sweep / store.FOLD_RESULTS / "bbbbbb-s42-f1.json")
    original = (sweep / store.FOLD_RESULTS / "bbbbbb-s42-f1.json").read_bytes()
    moved = store.quarantine(sweep, store.rejected_files(sweep))
    assert [m.path for m in moved] == ["fold_results/bbbbbb-s42-f1.json"]
    assert not (sweep / store.FOLD_RESULTS / "bbbbbb-s42-f1.json").exists()
    kept = sweep / store.QUARANTINE / store.FOLD_RESULTS / "bbbbbb-s42-f1.json"
    assert kept.read_bytes() == original  # moved as it was, for whoever investigates
    [listed] = store.rejected_files(sweep)
    assert listed.quarantined and "not readable JSON" in listed.reason
    shown = runner.invoke(app, ["sweep", "status", "trusty", "--storage", str(sweep.parent)])
    assert "quarantined: fold_results/bbbbbb-s42-f1.json" in shown.stderr


def test_readers_never_move_files(sweep):
    _cut(sweep / store.FOLD_RESULTS / "bbbbbb-s42-f1.json")
    for command in (["sweep", "status"], ["leaderboard"]):
        runner.invoke(app, [*command, "trusty", "--storage", str(sweep.parent)])
    assert (sweep / store.FOLD_RESULTS / "bbbbbb-s42-f1.json").exists()
    assert not (sweep / store.QUARANTINE).exists()


BAD_MANIFESTS = [
    ("not-json", b"{\"name\": \"tru", r"unreadable sweep manifest"),
    ("a-list", b"[]", r"not a sweep manifest dfu wrote \(the file: Input should be a valid "),
    ("folds-text", None, r"not a sweep manifest dfu wrote \(folds: Input should be a valid list"),
    ("config-id-path", None, r"not a sweep manifest dfu wrote \(configs\.0\.config_id: String should "
                             r"match pattern"),
]


@pytest.mark.parametrize(("case", "body", "message"), BAD_MANIFESTS, ids=[b[0] for b in BAD_MANIFESTS])
def test_a_manifest_of_the_wrong_shape_is_one_clear_error_everywhere(sweep, tmp_path, case, body,
                                                                    message):
    data = json.loads((sweep / store.MANIFEST).read_bytes())
    if case == "folds-text":
        body = json.dumps({**data, "folds": "0,1"}).encode()
    elif case == "config-id-path":
        body = json.dumps({**data, "configs": [{"config_id": "../up", "params": {}}]}).encode()
    (sweep / store.MANIFEST).write_bytes(body)
    storage = str(sweep.parent)
    for command in (["leaderboard", "trusty"], ["sweep", "status", "trusty"],
                    ["report", "trusty", "--out", str(tmp_path / "report")],
                    ["sweep", "resume", "trusty"], ["sweep", "promote", "trusty"]):
        _assert_refused(runner.invoke(app, [*command, "--storage", storage]),
                      rf"sweep.json: {message}")


def test_a_truncated_tune_state_only_hides_running_trials(sweep):
    (sweep / store.TUNE_DIR).mkdir()
    (sweep / store.TUNE_DIR / "experiment_state-2026-12-02_00-00-00.json").write_text('{"trial_da')
    status = sweep_status(sweep)
    assert status["trials"]["finished"] == 4 and status["best"]["config_id"] == "bbbbbb"


def _lease_for(sweep_dir, *, host: str, pid: int, expires_in: float) -> None:
    (sweep_dir / LEASE).write_text(json.dumps({
        "holder": f"{host}:{pid}:cafe", "host": host, "pid": pid, "command": "dfu sweep run",
        "acquired": time.time() - 5, "expires": time.time() + expires_in}))


def test_a_second_writer_is_refused_while_the_first_holds_the_lease(sweep):
    with SweepLease(sweep, "dfu sweep run") as held:
        assert read_lease(sweep / LEASE)["holder"] == held.holder
        for command in (["sweep", "resume", "trusty"], ["sweep", "promote", "trusty"]):
            _assert_refused(runner.invoke(app, [*command, "--storage", str(sweep.parent)]),
                          r"sweep trusty is being run by dfu sweep run \(process \d+ on .*\); "
                          r"wait for it to end")
        with pytest.raises(SweepBusy):
            SweepLease(sweep, "dfu sweep resume").acquire()
    assert not (sweep / LEASE).exists()  # released on the way out


def test_a_dead_or_expired_holder_does_not_block_the_sweep(sweep):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lease_for(sweep, host=socket.gethostname(), pid=dead.pid, expires_in=600)
    with SweepLease(sweep, "dfu sweep resume") as lease:  # its process is gone: taken over
        assert read_lease(sweep / LEASE)["holder"] == lease.holder
    _lease_for(sweep, host="elsewhere", pid=1, expires_in=-1)
    with SweepLease(sweep, "dfu sweep resume"):  # another host's, expired
        pass
    _lease_for(sweep, host="elsewhere", pid=1, expires_in=600)
    with pytest.raises(SweepBusy, match="expires in 600 s|expires in 599 s"):
        SweepLease(sweep, "dfu sweep resume").acquire()


def test_a_lease_is_renewed_while_the_sweep_runs(sweep):
    with SweepLease(sweep, "dfu sweep run", ttl_s=30, renew_s=0.1) as lease:
        first = read_lease(sweep / LEASE)["expires"]
        time.sleep(0.5)
        assert read_lease(sweep / LEASE)["expires"] > first
        assert read_lease(sweep / LEASE)["holder"] == lease.holder


VALID_SWEEP = {"name": "safe", "cv": {"n_folds": 3, "run_folds": [0]},
               "search": {"algorithm": "random", "num_samples": 1}, "scheduler": {"type": "none"},
               "resources": {"use_train": False}, "fixed": {"forest.n_estimators": 10}}


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "-dash", "x" * 101])
def test_sweep_names_are_one_safe_path_component(synthetic_root, tmp_path, name):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(VALID_SWEEP))
    storage = tmp_path / "store" / "inner"
    result = runner.invoke(app, ["sweep", "run", str(path), "--name", name, "--data-root",
                                 str(synthetic_root), "--storage", str(storage)])
    _assert_refused(result, r"sweep name .*: start with a letter or digit")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("name", ["..", "."])
def test_a_sweep_is_never_found_outside_the_storage_by_name(sweep, name):
    write_sweep(sweep.parent.parent, manifest("parent", IDS))  # a sweep one level up
    result = runner.invoke(app, ["leaderboard", name, "--storage", str(sweep)])
    if name == "..":  # given as a path it is a path; `..` of the sweep is the storage: no sweep
        _assert_refused(result, r"no sweep '\.\.'")
    else:
        _assert_refused(result, r"no sweep '\.'")


def test_output_paths_are_checked_before_any_work(sweep, tmp_path):
    a_file, a_dir = tmp_path / "taken.txt", tmp_path / "folder"
    a_file.write_text("keep me")
    a_dir.mkdir()
    storage = str(sweep.parent)
    for command, message in (
            (["report", "trusty", "--out", str(a_file)], r"--out .*taken.txt is a file; give a folder"),
            (["leaderboard", "trusty", "--out", str(a_dir)], r"--out .*folder is a folder"),
            (["leaderboard", "trusty", "--export-best", str(a_dir)], r"--export-best .*is a folder"),
            (["leaderboard", "trusty", "--out", str(a_file / "x.csv")],
             r"--out .*: .*taken.txt is a file, not a folder"),
            (["leaderboard", "trusty", "--format", "parquet", "--out", f"{a_dir}/"],
             r"--out .*is a folder"),
    ):
        _assert_refused(runner.invoke(app, [*command, "--storage", storage]), message)
    assert a_file.read_text() == "keep me"
    written = runner.invoke(app, ["leaderboard", "trusty", "--storage", storage, "--format", "csv",
                                  "--out", str(tmp_path / "new" / "deeper" / "board.csv")])
    assert written.exit_code == 0 and (tmp_path / "new" / "deeper" / "board.csv").is_file()


def test_cache_clear_refuses_an_empty_or_unknown_target(tmp_path):
    from dfu_train.cache import ArtifactCache, cache_key

    cache = ArtifactCache(tmp_path / "results" / "cache")
    cache.write("forest", cache_key("forest", {"a": 1}), b"body", parts={"a": 1})
    storage = str(tmp_path / "results")
    _assert_refused(runner.invoke(app, ["cache", "clear", "", "--storage", storage]),
                  r"cache clear: name an artifact kind")
    _assert_refused(runner.invoke(app, ["cache", "clear", "forrest", "--storage", storage]),
                  r"cache clear 'forrest': no cached artifact .*did you mean 'forest'")
    assert len(cache.entries()) == 1
    cleared = runner.invoke(app, ["cache", "clear", "forest", "--storage", storage])
    assert cleared.exit_code == 0 and cache.entries() == []


def test_a_cache_outside_the_storage_must_be_named_on_the_command_line(synthetic_root, tmp_path):
    from dfu_train.sweep.plan import plan_sweep
    from dfu_train.sweep.space import parse_sweep

    elsewhere = tmp_path / "someone-elses-bucket"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**VALID_SWEEP, "cache": {"root": str(elsewhere)}}))
    storage = tmp_path / "results"
    result = runner.invoke(app, ["sweep", "run", str(path), "--data-root", str(synthetic_root),
                                 "--storage", str(storage)])
    _assert_refused(result, r"sweep.yaml: cache.root '.*someone-elses-bucket' lies outside the "
                            r"storage .*; pass --cache-dir .*someone-elses-bucket to use it")
    assert not storage.exists() and not elsewhere.exists()
    spec = parse_sweep(yaml.safe_load(path.read_text()))
    plan = plan_sweep(spec, data_root=synthetic_root, storage=storage, cache_dir=str(elsewhere))
    assert plan.cache_root == str(elsewhere)
    inside = parse_sweep({**VALID_SWEEP, "cache": {"root": str(storage / "team-cache")}})
    assert plan_sweep(inside, data_root=synthetic_root, storage=storage).cache_root == str(
        storage / "team-cache")


def test_an_earlier_checkpoint_that_would_run_code_starts_the_fold_over(tmp_path):
    from dfu_train.sweep.trainable import _earlier_checkpoint
    from test_security import _trapped_state

    proof = tmp_path / "code-ran"
    trapped = tmp_path / "fold.pt"
    trapped.write_bytes(_trapped_state(proof))
    settings = {"resume_from": {"aaaaaa-s42-f0": str(trapped)}}
    assert _earlier_checkpoint(settings, ("aaaaaa", 42, 0)) is None
    assert not proof.exists()


TRAP_SWEEP = {"name": "trap", "cv": {"n_folds": 3, "run_folds": [0, 1]}, "baseline": False,
              "search": {"algorithm": "grid"}, "scheduler": {"type": "none"},
              "resources": {"use_train": False, "cpus_per_trial": 1},
              "fixed": {"modalities": ["metadata"], "forest.n_estimators": 10,
                        "forest.inner_folds": 3},
              "space": {"forest.max_depth": {"grid": [3, None]}}}


def _dfu(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen([sys.executable, "-m", "dfu_train.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process.returncode, out, err


def _board(storage: str) -> list[tuple]:
    code, out, err = _done(_dfu("leaderboard", "trap", "--storage", storage, "--format", "json"))
    assert code == 0, err
    return [(r["config_id"], round(r["qwk_mean"], 4), r["folds_done"]) for r in json.loads(out)]


@pytest.mark.ray
def test_resume_never_unpickles_and_recovers_the_uninterrupted_leaderboard(synthetic_root,
                                                                           tmp_path):
    """Booby-trapped Tune state, damaged and foreign records and a truncated experiment state:
    the resume runs no stored code, sets the bad records aside, recomputes their folds and ends
    with the leaderboard of the uninterrupted sweep; a second writer meanwhile is refused."""
    import pickle

    from test_security import _Trap

    sweep_file, storage = tmp_path / "trap.yaml", str(tmp_path / "results")
    sweep_file.write_text(yaml.safe_dump(TRAP_SWEEP))
    code, _, err = _done(_dfu("sweep", "run", str(sweep_file), "--data-root", str(synthetic_root),
                              "--storage", storage, "--progress", "quiet"))
    assert code == 0, err
    uninterrupted = _board(storage)
    assert len(uninterrupted) == 2 and all(folds == 2 for _, _, folds in uninterrupted)

    sweep_dir = store.storage_path(storage) / "trap"
    proof = tmp_path / "code-ran"
    trap = pickle.dumps(_Trap(proof))
    tune_dir = sweep_dir.local_path / store.TUNE_DIR
    for path in (tune_dir / "tuner.pkl", tune_dir / "searcher-state-2026.pkl",
                 *(folder / "params.pkl" for folder in tune_dir.iterdir() if folder.is_dir())):
        path.write_bytes(trap)
    for state in tune_dir.glob("experiment_state-*.json"):
        state.write_bytes(state.read_bytes()[:100])
    first, second, third, _ = sorted((sweep_dir.local_path / store.FOLD_RESULTS).glob("*.json"))
    first.write_bytes(first.read_bytes()[:200])
    second.write_text(json.dumps({**json.loads(second.read_text()), "metrics": "oops"}))
    foreign = {**json.loads(third.read_text()), "cohort_fingerprint": "0" * 16}
    foreign["metrics"]["qwk"] = 0.99
    for config_id in ("f0f0f0", json.loads(third.read_text())["config_id"]):
        (third.parent / f"{config_id}-s42-f2.json").write_text(json.dumps(
            {**foreign, "config_id": config_id, "fold": 2}))

    resumed = _dfu("sweep", "resume", "trap", "--storage", storage, "--progress", "lines")
    deadline = time.time() + 120
    while not (sweep_dir / LEASE).exists() and resumed.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    code, _, err = _done(_dfu("sweep", "resume", "trap", "--storage", storage), timeout=60)
    assert code == 2 and "sweep trap is being run by dfu sweep resume" in err, err
    code, _, err = _done(resumed)
    assert code == 0, err
    assert "set aside fold_results/" in err and "2 to run, 2 done before" in err
    assert _board(storage) == uninterrupted
    assert not proof.exists()
    quarantined = sorted(p.name for p in (sweep_dir.local_path / store.QUARANTINE /
                                          store.FOLD_RESULTS).glob("*.json")
                         if not p.name.endswith(".why.json"))
    assert len(quarantined) == 4 and first.name in quarantined and second.name in quarantined
    assert not (sweep_dir / LEASE).exists()
