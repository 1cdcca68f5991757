"""What the code never does with untrusted bytes: run them. Source checks for the calls that could,
and behaviour checks that a booby-trapped cache entry or checkpoint is refused, not executed."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
import torch

from dfu_train.cache import ArtifactCache, cache_key, load_state
from dfu_train.training.checkpoint import FoldCheckpoint

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "dfu_train").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")])


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return ast.unparse(keyword.value)
    return None


def test_no_source_evaluates_or_unpickles_untrusted_input():
    problems = []
    for path in SOURCES:
        for call, name in _calls(path):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if name in ("eval", "exec", "pickle.load", "pickle.loads", "yaml.load",
                        "yaml.unsafe_load", "yaml.full_load", "marshal.loads", "cloudpickle.load",
                        "cloudpickle.loads", "tune.Tuner.restore", "Tuner.restore",
                        "ray.cloudpickle.loads"):
                problems.append(f"{where}: {name}")
            if name == "torch.load" and _keyword(call, "weights_only") != "True":
                problems.append(f"{where}: torch.load without weights_only=True")
            if name in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") != "False":
                problems.append(f"{where}: np.load without allow_pickle=False")
    assert not problems, problems


def test_security_md_names_every_file_read_from_the_storage_and_how():
    """SECURITY.md's table of what dfu reads from the storage covers every kind of file the
    sweep folder holds (`results.store`'s layout), and says resume never restores Tune."""
    from dfu_train.results import store
    from dfu_train.results.lease import LEASE

    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in text.splitlines() if line.strip().startswith("|"))
    for name in (store.MANIFEST, store.FOLD_RESULTS, store.CONFIRMATIONS, store.PRUNED,
                 store.QUARANTINE, LEASE, store.TUNE_DIR, f"{store.PROMOTE_PREFIX}*",
                 store.TRAIN_DIR, store.CACHE_DIR, "fold.pt"):
        assert name in table, f"SECURITY.md does not say how {name} is read"
    assert "weights_only=True" in table and "never restored" in table
    assert "does not call\n  `Tuner.restore`" in text


def test_the_project_starts_a_local_ray_only_through_start_local_ray():
    local_ray = ROOT / "dfu_train" / "sweep" / "local_ray.py"
    for path in SOURCES:
        for call, name in _calls(path):
            if name == "ray.init" and _keyword(call, "address") in (None, "'local'"):
                assert path == local_ray, f"{path.relative_to(ROOT)}:{call.lineno}"
                assert _keyword(call, "include_dashboard") == "False"


LISTENERS = """
import json, psutil, ray
from dfu_train.sweep.local_ray import start_local_ray
start_local_ray(1, log_to_driver=False)
ray.get(ray.remote(lambda: 1).remote())  # a worker process is up too
found = []
for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
    for conn in process.net_connections("inet"):
        if conn.status == psutil.CONN_LISTEN:
            found.append([process.name(), conn.laddr.ip, conn.laddr.port])
print(json.dumps({"node_ip": ray.util.get_node_ip_address(), "listening": found}))
ray.shutdown()
"""


def test_a_local_ray_listens_on_loopback_only():
    """Every server of a local Ray (GCS, raylet, workers, agents) is bound to 127.0.0.1: no
    other machine can connect to it, token or not."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", LISTENERS], capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["node_ip"] == "127.0.0.1"
    names = {name for name, _, _ in found["listening"]}
    assert {"gcs_server", "raylet"} <= names, names
    exposed = [entry for entry in found["listening"]
               if entry[1] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert not exposed, exposed


class _Trap:
    """Unpickling this object would create `path`: the proof that code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _trapped_state(proof: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "trap": _Trap(proof)}, buffer)
    return buffer.getvalue()


def test_a_cache_entry_that_would_run_code_is_recomputed_not_executed(tmp_path):
    proof = tmp_path / "code-ran"
    cache = ArtifactCache(tmp_path / "cache")
    parts = {"modality": "thermal_map"}
    cache.write("branch", cache_key("branch", parts), _trapped_state(proof), parts=parts)
    value = cache.fetch("branch", parts, lambda: {"weight": torch.ones(2)},
                        dump=lambda v: b"", load=load_state)
    assert torch.equal(value["weight"], torch.ones(2)) and cache.computed == ["branch"]
    assert not proof.exists()


def test_a_checkpoint_that_would_run_code_is_refused_not_executed(tmp_path):
    proof = tmp_path / "code-ran"
    path = tmp_path / "fold.pt"
    path.write_bytes(_trapped_state(proof))
    with pytest.raises(Exception, match="Weights only load failed|Unsupported"):
        FoldCheckpoint.load(path)
    assert not proof.exists()
