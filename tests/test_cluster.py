"""Multi-node: a head with no CPUs and two worker nodes on this machine (`ray.cluster_utils`).
Trials land on both workers, and a sweep that loses a worker node mid-way still records every
(config, fold) exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dfu_train.results import store
from dfu_train.sweep.launch import create_trainable, max_concurrent_trials, run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.sweep.space import parse_sweep

pytestmark = pytest.mark.ray


def _spec(name: str, seeds: int) -> dict:
    return {
        "name": name, "baseline": False, "cv": {"n_folds": 3, "run_folds": "all"}, "search": {"algorithm": "grid"},
        "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1, "use_train": False, "max_failures": 3},
        "fixed": {"forest.n_estimators": 150, "forest.inner_folds": 5},
        "space": {"seed": {"grid": list(range(seeds))}},
    }


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                          "resources": {"driver": 1}})
    workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=nodes.address, log_to_driver=False)
    nodes.wait_for_nodes()
    yield nodes, workers
    ray.shutdown()
    nodes.shutdown()


def test_trials_land_on_both_worker_nodes(cluster, synthetic_root, tmp_path):
    import ray

    nodes, workers = cluster
    spec = parse_sweep(_spec("spread", 2))
    assert max_concurrent_trials(spec, ray.cluster_resources()) == 2
    sweep_dir = run_sweep(plan_sweep(spec, data_root=synthetic_root, storage=tmp_path),
                          on_event=lambda line: None)
    records = store.read_fold_results(sweep_dir)
    assert len(records) == 6
    used = {r["node_id"] for r in records}
    assert used == {w.node_id for w in workers}  # both workers, never the CPU-less head


def test_a_sweep_that_loses_a_worker_node_still_records_every_fold_once(
        cluster, synthetic_root, tmp_path):
    nodes, workers = cluster
    spec = parse_sweep(_spec("lossy", 3))
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    results = plan.sweep_dir / store.FOLD_RESULTS
    removed = {}

    def remove_a_worker_mid_sweep():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(results.glob("*.json"))) < 2:
            time.sleep(0.2)
        removed["at"] = len(list(results.glob("*.json")))
        nodes.remove_node(workers[0], allow_graceful=False)

    killer = threading.Thread(target=remove_a_worker_mid_sweep, daemon=True)
    killer.start()
    sweep_dir = run_sweep(plan, on_event=lambda line: None)
    killer.join(timeout=10)
    assert 2 <= removed["at"] < 9
    records = store.read_fold_results(sweep_dir)
    keys = [(r["config_id"], r["fold"]) for r in records]
    assert len(keys) == len(set(keys)) == 9  # every (config, fold) exactly once
    after = [r for r in records if r["node_id"] == workers[1].node_id]
    assert len(after) >= 9 - removed["at"]  # the surviving worker ran the rest


def test_train_trial_drivers_can_be_placed_by_a_custom_resource():
    spec = parse_sweep({**_spec("placed", 1), "resources": {
        "cpus_per_trial": 1, "use_train": True, "driver_resource": "driver"}})
    trainable = create_trainable(spec)
    resources = trainable._resources.required_resources  # what Tune reserves per trial
    assert resources.get("CPU", 0) == 0 and resources["driver"] == 0.01
    assert max_concurrent_trials(spec, {"CPU": 4, "driver": 1}) == 4  # no driver CPU share


def test_fractional_gpus_put_several_trials_on_one_gpu():
    spec = parse_sweep({**_spec("shared", 1), "resources": {
        "cpus_per_trial": 1, "gpus_per_trial": 0.5, "use_train": True}})
    assert max_concurrent_trials(spec, {"CPU": 16, "GPU": 2}) == 4
