"""The artifact cache: hits give the fold a miss would, keys change with exactly the inputs of a
stage, broken entries are recomputed, and concurrent writers leave one whole entry."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import pyarrow.fs as pafs
import pytest

from dfu_train.cache import ArtifactCache, cache_key
from dfu_train.config import TrialConfig
from dfu_train.training.fold import run_fold

FUSION = TrialConfig().override({
    "modalities": ["metadata", "thermal_map"], "seed": 2,
    "forest.n_estimators": 30, "forest.inner_folds": 3,
    "image.size": 16, "image.batch_size": 16,
    "thermal_map.pretrain_epochs": 2, "stage1.epochs": 2, "stage2.epochs": 1,
})
OTHER_HEAD = FUSION.override({"fusion.head": "fixed_blend", "stage1.lr": 3e-3})


def _same_fold(a, b) -> None:
    assert a.metrics == b.metrics
    assert a.val_samples == b.val_samples
    assert a.meta_qwk == b.meta_qwk


@pytest.fixture(scope="module")
def warm(cohort, tmp_path_factory):
    """A cache filled by one run of FUSION on fold 0."""
    root = tmp_path_factory.mktemp("artifacts")
    result = run_fold(FUSION, cohort, 0, cache=ArtifactCache(root))
    return root, result


def test_first_run_computes_every_artifact_and_a_rerun_reuses_them_with_the_same_metrics(
        cohort, warm):
    root, first = warm
    assert sorted(a.split(":")[0] for a in first.artifacts["computed"]) == [
        "branch", "crops", "forest"]
    assert first.artifacts["reused"] == []
    again = run_fold(FUSION, cohort, 0, cache=ArtifactCache(root))
    assert sorted(a.split(":")[0] for a in again.artifacts["reused"]) == [
        "branch", "crops", "forest"]
    assert again.stages["pretrain:thermal_map"]["reused"] is True
    assert again.stages["forest"]["reused"] is True
    _same_fold(again, first)


def test_another_fusion_head_reuses_forest_and_branch_and_matches_an_uncached_run(cohort, warm):
    root, _ = warm
    cached = run_fold(OTHER_HEAD, cohort, 0, cache=ArtifactCache(root))
    assert sorted(a.split(":")[0] for a in cached.artifacts["reused"]) == [
        "branch", "crops", "forest"]
    uncached = run_fold(OTHER_HEAD, cohort, 0, cache=ArtifactCache.off())
    assert uncached.artifacts["reused"] == []
    _same_fold(cached, uncached)


@pytest.mark.parametrize(("change", "computed"), [
    ({"thermal_map.pretrain_lr": 3e-3}, ["branch"]),
    ({"image.augment": False}, ["branch"]),
    ({"loss.focal_gamma": 1.0}, ["branch"]),
    ({"forest.min_samples_leaf": 3}, ["forest"]),
    ({"metadata.scale": False}, ["forest"]),
    ({"seed": 5}, ["branch", "forest"]),
    ({"image.size": 12}, ["branch", "crops"]),
])
def test_a_changed_stage_parameter_misses_that_stage_only(cohort, warm, change, computed):
    root, _ = warm
    result = run_fold(FUSION.override(change), cohort, 0, cache=ArtifactCache(root))
    assert sorted({a.split(":")[0] for a in result.artifacts["computed"]}) == computed


def test_another_fold_misses_forest_and_branch(cohort, warm):
    root, _ = warm
    result = run_fold(FUSION, cohort, 1, cache=ArtifactCache(root))
    assert sorted(a.split(":")[0] for a in result.artifacts["computed"]) == ["branch", "forest"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_damaged_entry_is_recomputed_with_the_same_result(cohort, warm, damage, tmp_path):
    _, first = warm
    root = tmp_path / "cache"
    run_fold(FUSION, cohort, 0, cache=ArtifactCache(root))
    (entry,) = ArtifactCache(root).entries("branch")
    path = root / "branch" / f"{entry.key}.bin"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:len(data) // 2],
                      "flip": data[:-10] + bytes(b ^ 0xFF for b in data[-10:]),
                      "empty": b""}[damage])
    result = run_fold(FUSION, cohort, 0, cache=ArtifactCache(root))
    assert [a.split(":")[0] for a in result.artifacts["computed"]] == ["branch"]
    _same_fold(result, first)
    assert ArtifactCache(root).read("branch", entry.key) is not None  # whole again


def test_gpu_speed_ups_change_nothing_on_cpu(cohort, warm):
    _, first = warm
    fast = FUSION.override({"train.amp": True, "train.channels_last": True,
                            "train.pin_memory": True})
    assert fast.config_id == FUSION.config_id
    _same_fold(run_fold(fast, cohort, 0, cache=ArtifactCache.off()), first)


def test_keys_hash_values_not_their_order():
    assert cache_key("forest", {"a": 1, "b": [1, 2]}) == cache_key("forest", {"b": [1, 2], "a": 1})
    assert cache_key("forest", {"a": 1}) != cache_key("branch", {"a": 1})
    assert cache_key("forest", {"a": 1}) != cache_key("forest", {"a": 1.5})


def _write_many(root: str, body_byte: int, rounds: int) -> None:
    cache = ArtifactCache(root)
    for _ in range(rounds):
        cache.write("branch", "k" * 32, bytes([body_byte]) * 3_000_000, parts={"who": body_byte})


def test_two_processes_writing_one_key_leave_one_whole_entry(tmp_path):
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_many, args=(str(tmp_path), b, 15)) for b in (1, 2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    body = ArtifactCache(tmp_path).read("branch", "k" * 32)
    assert body in (bytes([1]) * 3_000_000, bytes([2]) * 3_000_000)
    assert [p.name for p in (tmp_path / "branch").iterdir()] == ["k" * 32 + ".bin"]  # no temp


def test_an_object_store_filesystem_and_a_file_uri_work_too(tmp_path):
    for cache in (ArtifactCache("bucket/cache", filesystem=pafs._MockFileSystem()),
                  ArtifactCache(tmp_path.as_uri())):
        value = cache.fetch("forest", {"x": 1}, lambda: {"v": 1}, dump=lambda v: b"one",
                            load=lambda body: body.decode())
        assert value == {"v": 1} and cache.computed == ["forest"]
        assert cache.fetch("forest", {"x": 1}, lambda: 0, dump=bytes, load=bytes.decode) == "one"
        assert [e.kind for e in cache.entries()] == ["forest"]


def test_cache_commands_list_size_and_clear(warm, tmp_path):
    import shutil

    root = tmp_path / "cache"
    shutil.copytree(warm[0], root)

    def dfu(*args):
        return subprocess.run([sys.executable, "-m", "dfu_train.cli", "cache", *args,
                               "--cache-dir", str(root)], capture_output=True, text=True)

    listed = dfu("ls", "--json")
    assert listed.returncode == 0
    kinds = sorted({e["kind"] for e in json.loads(listed.stdout)})
    assert kinds == ["branch", "crops", "forest"]
    assert "forest" in dfu("du").stdout
    assert dfu("clear", "forest").returncode == 0
    assert [e.kind for e in ArtifactCache(root).entries("forest")] == []
    assert ArtifactCache(root).entries("branch")
    assert dfu("clear", "all").returncode == 0 and ArtifactCache(root).entries() == []
