"""Ray on this machine that only this machine can reach.

Ray turns 127.0.0.1 into the machine's network address (so that other nodes could join) unless
it runs as a single-machine instance, the mode it uses on macOS and Windows. In that mode every
server it starts (GCS, raylet, workers, agents) listens on 127.0.0.1 only. A sweep that does not
join a cluster needs no more, so the project starts its local Ray that way, and connects to a
cluster at a loopback address in the same mode (`cluster/local.sh`).

`python -m dfu_train.sweep.local_ray worker --address=127.0.0.1:PORT ...` starts a worker node of
such a cluster: `ray start`, except that the node keeps 127.0.0.1 as its address. (Plain
`ray start` refuses worker nodes in single-machine mode and, outside it, turns 127.0.0.1 into
the machine's address, so its servers would listen on every interface.)

The private local Ray also gets `LOCAL_TRAIN_ENV` in the environment its processes inherit: Ray
Train settings that only make sense on one machine (a cluster keeps Train's defaults).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import ray
from ray._private import ray_constants

SINGLE_MACHINE_ENV = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR  # "0": loopback only

# Read by Ray Train where a trial builds its TorchTrainer, and passed on to the controller.
LOCAL_TRAIN_ENV = {
    # The preemption watcher, an actor (a process) per Train run, logs nodes being drained, which
    # the one node of a local Ray never is.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


@contextlib.contextmanager
def single_machine() -> Iterator[None]:
    """While inside, Ray started from this process (and the processes it starts) binds to
    127.0.0.1. Ray reads the switch when it is imported, so its parsed value is set as well."""
    saved_env = os.environ.get(SINGLE_MACHINE_ENV)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved_env


@contextlib.contextmanager
def inherited_env(values: dict[str, str]) -> Iterator[None]:
    """While inside, `values` (where not set already) are in this process's environment, and so
    in that of the Ray processes it starts (raylet, workers); then this process's is restored."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def start_local_ray(num_cpus: int, **options) -> None:
    """`ray.init` of a new, private local instance with no dashboard, listening on loopback only,
    its processes with `LOCAL_TRAIN_ENV`. `address="local"`: never join a Ray that another
    program started on this machine."""
    with single_machine(), inherited_env(LOCAL_TRAIN_ENV):
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **options)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def connect_ray(address: str, **options) -> None:
    """`ray.init(address=...)`; a loopback address is reached in single-machine mode, as the
    cluster there listens on loopback only (Ray would otherwise dial the machine's address)."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    with single_machine() if host in LOOPBACK_HOSTS else contextlib.nullcontext():
        ray.init(address=address, **options)


def start_worker_node(ray_start_args: list[str]) -> None:
    """`ray start ARGS --node-ip-address=127.0.0.1` for a worker node that stays on loopback."""
    from ray._private import services
    from ray.scripts.scripts import main as ray_main

    services.resolve_ip_for_localhost = lambda host: host
    sys.argv = ["ray", "start", *ray_start_args, "--node-ip-address=127.0.0.1"]
    ray_main()


if __name__ == "__main__":
    if sys.argv[1:2] != ["worker"]:
        sys.exit("usage: python -m dfu_train.sweep.local_ray worker --address=127.0.0.1:PORT ...")
    start_worker_node(sys.argv[2:])
