"""Sweeps stored in a bucket: an S3 server (moto) on loopback stands in for AWS.

Everything that reads or writes the sweep folder goes through `Location`, so the same tests run
on a local folder and on the bucket; a whole sweep is then run, resumed and queried on the bucket
through the CLI, as a cluster and a laptop would.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys

import pytest
import yaml
from moto import server as moto_server

from dfu_train.errors import ConfigError
from dfu_train.location import Location, read_all
from dfu_train.results import store

BUCKET = "dfu-sweeps"


@pytest.fixture(scope="module")
def s3_env():
    """An S3 server on 127.0.0.1 with one bucket, and the environment that points AWS clients
    (pyarrow here, in the CLI's subprocesses and in their Ray workers) at it."""
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(params=["folder", "bucket"])
def folder(request, tmp_path):
    if request.param == "folder":
        return Location(tmp_path / "store")
    request.getfixturevalue("s3_env")
    return Location(f"s3://{BUCKET}/{tmp_path.name}/store")


def test_a_location_reads_writes_and_lists_alike_on_a_folder_and_a_bucket(folder):
    assert not (folder / "sweep.json").exists()
    store.write_json_atomic(folder / "sweep.json", {"a": 1.0, "nan": float("nan")})
    store.write_json_atomic(folder / "tune" / "t1" / "params.json", {"fold": 0})
    store.write_json_atomic(folder / "tune" / "t2" / "params.json", {"fold": 1})
    (folder / "tune" / "t3").mkdir()
    assert json.loads((folder / "sweep.json").read_text()) == {"a": 1.0, "nan": None}
    assert (folder / "sweep.json").is_file() and (folder / "tune").is_dir()
    assert [p.parent.name for p in folder.glob("tune/*/params.json")] == ["t1", "t2"]
    assert [p.name for p in folder.glob("*.json")] == ["sweep.json"]
    assert folder.glob("missing/*.json") == []
    assert (folder / "sweep.json").mtime() > 0
    assert (folder / "tune").parent == folder and (folder / "tune").name == "tune"
    assert pickle.loads(pickle.dumps(folder / "tune")) == folder / "tune"
    assert Location(str(folder)) == folder  # str() gives back what Ray's storage_path takes
    with pytest.raises(OSError):
        (folder / "absent.json").read_text()
    (folder / "sweep.json").delete()
    assert not (folder / "sweep.json").exists()


def test_read_all_returns_each_file_in_order_and_none_where_unreadable(folder):
    names = [f"{i:03d}.json" for i in range(40)]
    for name in names:
        (folder / name).write_text(name)
    bodies = read_all([folder / "absent", *(folder / name for name in names)])
    assert bodies[0] is None and [b.decode() for b in bodies[1:]] == names


def test_storage_takes_folders_file_uris_and_bucket_uris(tmp_path):
    from pathlib import Path

    assert store.storage_path(tmp_path.as_uri()) == tmp_path
    assert store.storage_path(str(tmp_path)) == tmp_path
    assert store.storage_path((tmp_path / "a b").as_uri()) == tmp_path / "a b"
    assert store.storage_path(str(Path((tmp_path / "c").as_uri()))) == tmp_path / "c"  # file:/c
    bucket = store.storage_path("s3://bucket/results/")
    assert str(bucket) == "s3://bucket/results" and not bucket.is_local
    assert str(bucket / "demo" / "sweep.json") == "s3://bucket/results/demo/sweep.json"
    assert str(Location("gs://b/p?project=x") / "q") == "gs://b/p/q?project=x"
    with pytest.raises(ConfigError, match="needs a bucket"):
        store.storage_path("s3:///results")


SWEEP = {
    "name": "on-bucket", "baseline": False, "cv": {"n_folds": 2, "run_folds": "all"},
    "search": {"algorithm": "grid"}, "scheduler": {"type": "none"},
    "resources": {"cpus_per_trial": 1, "use_train": False, "max_concurrent": 2},
    "fixed": {"modalities": ["metadata"], "forest.n_estimators": 30},
    "space": {"forest.max_depth": {"grid": [3, 6]}},
}


def _dfu(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "dfu_train.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _run_sweep(spec: dict, storage: str, data_root, tmp_path) -> None:
    sweep_file = tmp_path / f"{spec['name']}.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    run = _dfu("sweep", "run", str(sweep_file), "--data-root", str(data_root),
               "--storage", storage, "--progress", "quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]


def test_a_sweep_runs_resumes_and_is_ranked_on_a_bucket(s3_env, tmp_path, synthetic_root):
    storage = f"s3://{BUCKET}/team"
    _run_sweep(SWEEP, storage, synthetic_root, tmp_path)
    assert not (tmp_path / "results").exists()  # nothing landed on the local disk instead

    sweep_dir = Location(f"{storage}/on-bucket")
    records = store.read_fold_results(sweep_dir)
    assert sorted((r["config"]["forest"]["max_depth"], r["fold"]) for r in records) == [
        (3, 0), (3, 1), (6, 0), (6, 1)]
    written = {p.name: p.mtime() for p in (sweep_dir / store.FOLD_RESULTS).glob("*.json")}
    assert sweep_dir.glob("tune/experiment_state-*.json")  # Tune's state went there too

    board = _dfu("leaderboard", "on-bucket", "--storage", storage, "--format", "json",
                 cwd=tmp_path)
    assert board.returncode == 0, board.stderr[-2000:]
    rows = json.loads(board.stdout)
    assert len(rows) == 2 and all(row["folds_done"] == 2 for row in rows)
    by_config = {}
    for record in records:
        by_config.setdefault(record["config_id"], []).append(record["metrics"]["qwk"])
    for row in rows:
        assert row["qwk_mean"] == pytest.approx(sum(by_config[row["config_id"]]) / 2, abs=1e-4)

    resumed = _dfu("sweep", "resume", "on-bucket", "--storage", storage, "--progress", "quiet",
                   cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert {p.name: p.mtime() for p in (sweep_dir / store.FOLD_RESULTS).glob("*.json")} == written

    status = _dfu("sweep", "status", "on-bucket", "--storage", storage, "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout)["trials"].get("finished") == 4

    report = _dfu("report", "on-bucket", "--storage", storage, "--out", "report", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (tmp_path / "report" / "index.html").is_file()
    assert len(list((tmp_path / "report").glob("*.png"))) == 10

    cached = _dfu("cache", "ls", "forest", "--storage", storage, cwd=tmp_path)
    assert cached.returncode == 0 and cached.stdout.count("forest") >= 4  # 2 configs x 2 folds


def test_a_bucket_that_does_not_exist_is_refused_before_any_work(s3_env, tmp_path, synthetic_root):
    sweep_file = tmp_path / "bucket.yaml"
    sweep_file.write_text(yaml.safe_dump(SWEEP))
    run = _dfu("sweep", "run", str(sweep_file), "--data-root", str(synthetic_root),
               "--storage", "s3://no-such-bucket/team", cwd=tmp_path, timeout=120)
    assert run.returncode == 2
    assert "no-such-bucket" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_train_trial_keeps_its_checkpoints_and_record_in_the_bucket(s3_env, tmp_path,
                                                                      synthetic_root):
    """The path a GPU cluster takes: each trial a TorchTrainer whose run and checkpoints Ray
    Train writes under STORAGE/NAME/train/ in the bucket."""
    spec = {**SWEEP, "name": "train-on-bucket", "baseline": False, "cv": {"n_folds": 2, "run_folds": [0]},
            "resources": {"cpus_per_trial": 1, "use_train": True},
            "fixed": {"modalities": ["metadata", "thermal_map"], "forest.n_estimators": 30,
                      "image.size": 16, "thermal_map.backbone": "simple_cnn",
                      "thermal_map.pretrain_epochs": 1, "stage1.epochs": 1, "stage2.epochs": 0},
            "space": {}}
    storage = f"s3://{BUCKET}/gpu-team"
    _run_sweep(spec, storage, synthetic_root, tmp_path)
    sweep_dir = Location(f"{storage}/train-on-bucket")
    [record] = store.read_fold_results(sweep_dir)
    assert record["fold"] == 0 and record["metrics"]["qwk"] is not None
    [train_run] = (sweep_dir / store.TRAIN_DIR).glob("train-*")
    assert train_run.glob("checkpoint_*/fold.pt")  # Train's checkpoints went to the bucket
