"""Release the worker reservations of trials that Tune stopped mid-run.

When Tune stops a trial early (ASHA pruning, or an error), it kills the trial's driver, and the
TorchTrainer's controller dies with it. Ray removes a placement group only once both its creator
actor and its job are dead, so the worker group's reservation outlives the controller until the
whole sweep ends, and after a few pruned trials no new worker can start. This callback removes
placement groups whose creator actor is dead: nothing alive can use them any more.
"""

from __future__ import annotations

import time

import ray
from ray import tune
from ray._private.state import state as _global_state
from ray.core.generated import gcs_pb2
from ray.util.placement_group import PlacementGroup


def orphaned_placement_groups() -> list[str]:
    """Ids of live, non-detached placement groups whose creator actor has died."""
    accessor = _global_state._connect_and_get_accessor()
    orphans = []
    for blob in accessor.get_placement_group_table():
        info = gcs_pb2.PlacementGroupTableData.FromString(blob)
        created_by_actor = info.creator_actor_id and not ray.ActorID(info.creator_actor_id).is_nil()
        if (info.state != gcs_pb2.PlacementGroupTableData.REMOVED and not info.is_detached
                and created_by_actor and info.creator_actor_dead):
            orphans.append(info.placement_group_id.hex())
    return orphans


def release_orphaned_placement_groups() -> int:
    released = 0
    for pg_id in orphaned_placement_groups():
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_id)))
        released += 1
    return released


class ReleaseOrphanedReservations(tune.Callback):
    """Checks at most every `interval_s` seconds of the Tune loop (Tune pickles callbacks, so this
    keeps only plain values)."""

    def __init__(self, interval_s: float = 2.0):
        self.interval_s = interval_s
        self._last = 0.0

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            release_orphaned_placement_groups()

    def on_experiment_end(self, trials, **info):
        release_orphaned_placement_groups()
