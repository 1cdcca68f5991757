"""`cluster/local.sh` for real: a head and two worker nodes on this machine that listen on
127.0.0.1 only, a client that reaches them through `connect_ray` and runs work on both workers,
and `local.sh stop`, which ends exactly the processes it started."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")

pytestmark = pytest.mark.ray

CLIENT = """
import json, sys, time, ray
from dfu_train.sweep.local_ray import connect_ray
connect_ray(sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=1)
def node_of_task():
    time.sleep(1.0)  # two at once: one per worker node
    return ray.get_runtime_context().get_node_id()

ran_on = set(ray.get([node_of_task.remote() for _ in range(4)]))
alive = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
print(json.dumps({"ran_on": len(ran_on), "nodes": alive}))
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _with_children(pids: list[int]) -> list[psutil.Process]:
    processes = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            processes += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return processes


@pytest.fixture
def state():
    """A short folder: Ray's socket paths under it must stay within 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="dfu-lc-"))
    yield folder / "cluster"
    shutil.rmtree(folder, ignore_errors=True)


def test_local_sh_runs_a_loopback_cluster_and_stops_exactly_its_processes(state):
    port = _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DFU_LOCAL_CLUSTER": str(state), "DFU_LOCAL_PORT": str(port)}
    up = subprocess.run(["bash", "cluster/local.sh", "2", "1"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=240)
    recorded = [int(pid) for pid in (state / "pids").read_text().split()] if (
        state / "pids").is_file() else []
    try:
        assert up.returncode == 0, up.stderr[-2000:] + up.stdout[-2000:]
        assert f"address: 127.0.0.1:{port}" in up.stdout
        client_env = {**env, "RAY_AUTH_MODE": "token",
                      "RAY_AUTH_TOKEN_PATH": str(state / "auth_token")}
        client = subprocess.run([sys.executable, "-c", CLIENT, f"127.0.0.1:{port}"], cwd=ROOT,
                                env=client_env, capture_output=True, text=True, timeout=180)
        assert client.returncode == 0, client.stderr[-2000:]
        seen = json.loads(client.stdout.strip().splitlines()[-1])
        assert seen["nodes"] == ["127.0.0.1"] * 3 and seen["ran_on"] == 2
        listening = {(process.name(), conn.laddr.ip)
                     for process in _with_children(recorded)
                     for conn in process.net_connections("inet")
                     if conn.status == psutil.CONN_LISTEN}
        assert {"gcs_server", "raylet"} <= {name for name, _ in listening}
        assert not [entry for entry in listening if entry[1] not in LOOPBACK], listening
        started = {p.pid for p in _with_children(recorded)}
    finally:
        down = subprocess.run(["bash", "cluster/local.sh", "stop"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    left = []
    for pid in started:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append((pid, process.name()))
        except psutil.NoSuchProcess:
            continue
    assert not left, left
