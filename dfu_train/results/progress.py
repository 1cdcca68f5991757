"""Live progress of a running sweep, read from its folder (no Ray): counts, best so far, time.

A watcher thread polls the folder the trials write to, so the same view works for a sweep on a
laptop or on a cluster whose storage this machine can read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dfu_train.location import Location
from dfu_train.results import store

STATUSES = ("running", "pending", "finished", "pruned", "error")


def snapshot(sweep_dir: Location, *, experiment: str, planned: int, started: float,
             seen: dict | None = None) -> dict:
    """Trial counts of one experiment, the best config so far and the time left, estimated from
    the pace of the trials that ended. `seen`: files read at earlier polls, not read again."""
    records = store.read_fold_results(sweep_dir, seen)
    trials = store.read_trial_states(sweep_dir, records, experiment=experiment, seen=seen)
    counts = {status: sum(t["status"] == status for t in trials) for status in STATUSES}
    counts["pending"] += max(planned - len(trials), 0)  # not yet created by Tune
    ended = counts["finished"] + counts["pruned"] + counts["error"]
    elapsed = time.time() - started
    best = _best(records)
    return {
        "experiment": experiment, "planned": planned, **counts,
        "best_config": best[0], "best_qwk": best[1],
        "elapsed_s": round(elapsed, 1),
        "remaining_s": round(elapsed / ended * (planned - ended), 1) if ended else None,
    }


def _best(records: list[dict]) -> tuple[str | None, float | None]:
    """The config with the best mean QWK over its recorded folds."""
    by_config: dict[str, list[float]] = {}
    for record in records:
        if record["metrics"]["qwk"] is not None:
            by_config.setdefault(record["config_id"], []).append(record["metrics"]["qwk"])
    if not by_config:
        return None, None
    config_id, qwks = max(by_config.items(), key=lambda item: sum(item[1]) / len(item[1]))
    return config_id, round(sum(qwks) / len(qwks), 4)


class ProgressWatcher(threading.Thread):
    """Calls `show(snapshot)` every `interval` seconds, and once more when stopped."""

    def __init__(self, sweep_dir: Location, *, experiment: str, planned: int,
                 show: Callable[[dict], None], interval: float = 2.0):
        super().__init__(daemon=True)
        self.sweep_dir, self.experiment, self.planned = sweep_dir, experiment, planned
        self.show, self.interval = show, interval
        self.started = time.time()
        self._seen: dict = {}  # fold records and trial params never change once whole
        self._halt = threading.Event()

    def _tick(self) -> None:
        try:
            self.show(snapshot(self.sweep_dir, experiment=self.experiment, planned=self.planned,
                               started=self.started, seen=self._seen))
        except (OSError, ValueError, KeyError):
            pass  # a file mid-write: the next tick reads it whole

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self._tick()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self._tick()
