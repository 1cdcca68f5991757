"""Single-flight artifacts: trials that miss one entry at once compute it once, the others wait
for it; a dead, expired, failed or stuck holder never blocks a waiter for good."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time

import pyarrow.fs as pafs
import pytest

from dfu_train import cache as cache_module
from dfu_train.cache import LEASE_SUFFIX, ArtifactCache, cache_key

KIND, PARTS = "branch", {"fold": 0}
KEY = cache_key(KIND, PARTS)


def _fetch(cache: ArtifactCache, compute):
    return cache.fetch(KIND, PARTS, compute, dump=lambda v: json.dumps(v).encode(),
                       load=json.loads, label="x")


def _slow(calls: list, seconds: float = 0.8, value=None):
    def compute():
        calls.append(threading.get_ident())
        time.sleep(seconds)
        return value if value is not None else {"weights": [1, 2, 3]}
    return compute


def _lease_path(root) -> str:
    return ArtifactCache(root).path(KIND, KEY) + LEASE_SUFFIX


def _plant_lease(root, **fields) -> None:
    lease = {"holder": "someone", "host": "another-host", "pid": 1,
             "expires": time.time() + 300, **fields}
    path = _lease_path(root)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as out:
        json.dump(lease, out)


def _in_threads(*targets) -> list:
    """Run each target in its own thread, started together; their results (or exceptions)."""
    results = [None] * len(targets)
    start = threading.Barrier(len(targets))

    def run(i, target):
        start.wait()
        try:
            results[i] = target()
        except Exception as exc:  # the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_two_threads_missing_one_entry_compute_it_once(tmp_path):
    calls, caches = [], [ArtifactCache(tmp_path), ArtifactCache(tmp_path)]
    first, second = _in_threads(*(lambda c=c: _fetch(c, _slow(calls)) for c in caches))
    assert len(calls) == 1
    assert first == second == {"weights": [1, 2, 3]}
    assert sorted(len(c.computed) for c in caches) == [0, 1]
    assert sorted(c.reused for c in caches) == [[], ["branch:x"]]  # waited for: reused
    assert not os.path.exists(_lease_path(tmp_path))  # released
    assert [e.kind for e in ArtifactCache(tmp_path).entries()] == ["branch"]


def _fetch_in_process(root: str, start, log: str, out: str) -> None:
    def compute():
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(1.5)
        return {"pid": os.getpid()}

    start.wait()
    value = _fetch(ArtifactCache(root), compute)
    with open(out, "w") as handle:
        json.dump(value, handle)


def test_two_processes_missing_one_entry_compute_it_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    start, log = context.Barrier(2), tmp_path / "computed.log"
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    workers = [context.Process(target=_fetch_in_process,
                               args=(str(tmp_path / "cache"), start, str(log), str(out)))
               for out in outs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert len(log.read_text().split()) == 1
    values = [json.loads(out.read_text()) for out in outs]
    assert values[0] == values[1]


def test_a_lease_whose_process_is_gone_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _plant_lease(tmp_path, host=socket.gethostname(), pid=dead.pid)
    calls, started = [], time.monotonic()
    cache = ArtifactCache(tmp_path, wait_limit_s=60)
    assert _fetch(cache, _slow(calls, 0)) == {"weights": [1, 2, 3]}
    assert len(calls) == 1 and cache.computed == ["branch:x"]
    assert time.monotonic() - started < 5
    assert not os.path.exists(_lease_path(tmp_path))


DAMAGED = {"cut": '{"holder": "someone", "pid": "1"', "nan": '{"holder": "someone", "host": '
           '"another-host", "pid": 1, "expires": NaN}', "deep": "[" * 4000,
           "huge": '{"holder": "' + "x" * 10_000 + '", "host": "h", "pid": 1, "expires": 1e12}'}


@pytest.mark.parametrize("lease", ["expired", *DAMAGED])
def test_an_expired_or_damaged_lease_holds_nothing(tmp_path, lease):
    if lease == "expired":
        _plant_lease(tmp_path, expires=time.time() - 1)
    else:
        _plant_lease(tmp_path)
        with open(_lease_path(tmp_path), "w") as out:
            out.write(DAMAGED[lease])
    calls, started = [], time.monotonic()
    assert _fetch(ArtifactCache(tmp_path, wait_limit_s=60), _slow(calls, 0))
    assert len(calls) == 1 and time.monotonic() - started < 5


def test_a_live_holder_makes_a_trial_wait_then_load_the_entry(tmp_path):
    _plant_lease(tmp_path)  # another host, not expired: alive

    def holder_finishes():
        time.sleep(0.8)
        ArtifactCache(tmp_path).write(KIND, KEY, json.dumps({"from": "holder"}).encode(),
                                      parts=PARTS)
        os.remove(_lease_path(tmp_path))

    finisher = threading.Thread(target=holder_finishes)
    finisher.start()
    calls, cache, started = [], ArtifactCache(tmp_path, wait_limit_s=60), time.monotonic()
    value = _fetch(cache, _slow(calls, 0))
    finisher.join()
    assert value == {"from": "holder"} and calls == []
    assert cache.reused == ["branch:x"] and cache.computed == []
    assert time.monotonic() - started >= 0.7


def test_a_holder_that_never_finishes_is_waited_for_no_longer_than_the_limit(tmp_path, caplog):
    _plant_lease(tmp_path)
    calls, started = [], time.monotonic()
    cache = ArtifactCache(tmp_path, wait_limit_s=0.6)
    assert _fetch(cache, _slow(calls, 0)) == {"weights": [1, 2, 3]}
    assert len(calls) == 1 and cache.computed == ["branch:x"]
    assert 0.6 <= time.monotonic() - started < 5
    assert "still being computed by another trial" in caplog.text


def test_a_failed_compute_frees_the_lease_and_the_waiter_computes_at_once(tmp_path):
    holding, calls = threading.Event(), []

    def failing():
        holding.set()
        time.sleep(0.5)
        raise RuntimeError("out of memory")

    def waiter():
        holding.wait()
        time.sleep(0.1)
        started = time.monotonic()
        value = _fetch(ArtifactCache(tmp_path, wait_limit_s=60), _slow(calls, 0))
        return value, time.monotonic() - started

    failed, (value, waited) = _in_threads(
        lambda: _fetch(ArtifactCache(tmp_path), failing), waiter)
    assert isinstance(failed, RuntimeError)
    assert value == {"weights": [1, 2, 3]} and len(calls) == 1
    assert waited < 5  # not the 60 s limit


def test_the_holder_renews_its_lease_while_it_computes(tmp_path):
    seen, calls = [], []

    def long_compute():
        calls.append(1)
        time.sleep(1.4)
        with open(_lease_path(tmp_path)) as lease:
            seen.append(json.load(lease)["expires"] - time.time())
        time.sleep(0.8)
        return {"done": True}

    def late_waiter():
        time.sleep(1.2)  # after the first expiry, had there been no renewal
        return _fetch(ArtifactCache(tmp_path, lease_ttl_s=1.0), _slow(calls, 0))

    first, second = _in_threads(
        lambda: _fetch(ArtifactCache(tmp_path, lease_ttl_s=1.0), long_compute), late_waiter)
    assert first == second == {"done": True}
    assert len(calls) == 1 and seen and seen[0] > 0


def test_with_the_cache_off_every_trial_computes(tmp_path):
    calls = []
    results = _in_threads(lambda: _fetch(ArtifactCache.off(), _slow(calls, 0.3)),
                          lambda: _fetch(ArtifactCache(tmp_path, enabled=False),
                                         _slow(calls, 0.3)))
    assert len(calls) == 2 and results[0] == results[1]
    assert list(tmp_path.iterdir()) == []


def test_on_a_bucket_two_threads_compute_once(monkeypatch):
    monkeypatch.setattr(cache_module, "BUCKET_SETTLE_S", 0.2)
    fs, calls = pafs._MockFileSystem(), []
    caches = [ArtifactCache("bucket/cache", filesystem=fs) for _ in range(2)]
    first, second = _in_threads(*(lambda c=c: _fetch(c, _slow(calls)) for c in caches))
    assert len(calls) == 1 and first == second
    leftover = fs.get_file_info(pafs.FileSelector("bucket/cache", recursive=True))
    assert [i.base_name for i in leftover if i.type == pafs.FileType.File] == [f"{KEY}.bin"]


def test_on_a_bucket_the_earlier_of_two_racing_lease_writers_steps_back(monkeypatch):
    monkeypatch.setattr(cache_module, "BUCKET_SETTLE_S", 0.5)
    fs, calls = pafs._MockFileSystem(), []
    cache = ArtifactCache("bucket/cache", filesystem=fs, wait_limit_s=60)
    lease_path = cache.path(KIND, KEY) + LEASE_SUFFIX

    def finish():  # the rival computes the entry, then frees its lease
        time.sleep(0.8)
        cache.write(KIND, KEY, json.dumps({"from": "rival"}).encode(), parts=PARTS)
        fs.delete_file(lease_path)

    racer = threading.Thread(target=finish)
    write_lease = cache_module._Lease._write

    def written_then_overwritten(lease):  # the rival's lease lands while the first one settles
        write_lease(lease)
        if not racer.is_alive() and racer.ident is None:
            with fs.open_output_stream(lease_path) as out:
                out.write(json.dumps({"holder": "rival", "host": "another-host", "pid": 1,
                                      "expires": time.time() + 300}).encode())
            racer.start()

    monkeypatch.setattr(cache_module._Lease, "_write", written_then_overwritten)
    value = _fetch(cache, _slow(calls, 0))
    racer.join()
    assert value == {"from": "rival"} and calls == [] and cache.reused == ["branch:x"]


def test_a_fresh_cache_keeps_the_lease_settings(tmp_path):
    fresh = ArtifactCache(tmp_path, lease_ttl_s=7, wait_limit_s=9).fresh()
    assert (fresh.lease_ttl_s, fresh.wait_limit_s) == (7, 9)


def test_on_an_s3_server_three_threads_compute_once(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    import logging

    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}",
                            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1",
                            "AWS_EC2_METADATA_DISABLED": "true"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(cache_module, "BUCKET_SETTLE_S", 0.3)
        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="leases")
        calls = []
        caches = [ArtifactCache("s3://leases/cache") for _ in range(3)]
        values = _in_threads(*(lambda c=c: _fetch(c, _slow(calls)) for c in caches))
        assert len(calls) == 1 and values[0] == values[1] == values[2] == {"weights": [1, 2, 3]}
        files = caches[0]._fs.get_file_info(pafs.FileSelector("leases/cache", recursive=True))
        assert [i.base_name for i in files if i.type == pafs.FileType.File] == [f"{KEY}.bin"]
    finally:
        server.stop()
