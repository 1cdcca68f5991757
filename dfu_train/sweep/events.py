"""What a running sweep tells the terminal: Tune callbacks that run in the driver.

(Tune pickles its callbacks with the experiment state, so these hold no console or lock: they
print to stderr, and share counts through a plain dict.)"""

from __future__ import annotations

import json
import sys
import time

from ray import tune

from dfu_train.results import store


def _trial_ids(trial) -> dict:
    config_id, seed, fold = store.trial_key(trial.config)
    return {"trial_id": trial.trial_id, "config_id": config_id, "fold_seed": seed, "fold": fold}


def _ended(trial) -> str:
    """finished when the trial sent its fold's final report, else pruned by the scheduler."""
    return "finished" if (trial.last_result or {}).get("final") else "pruned"


class TrialLines(tune.Callback):
    """One line on stderr per ended trial with its recorded QWK, so a user sees the sweep move."""

    def __init__(self):
        self._done = 0

    def _line(self, trial, outcome: str) -> None:
        self._done += 1
        ids = _trial_ids(trial)
        print(f"  [{self._done}] config {ids['config_id']} fold {ids['fold']}: {outcome}",
              file=sys.stderr, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        qwk = (trial.last_result or {}).get("val_qwk")
        status = _ended(trial)
        shown = "qwk n/a" if qwk is None else f"qwk {qwk:.3f}"
        self._line(trial, shown if status == "finished" else f"pruned at {shown}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "error")


class TrialEvents(tune.Callback):
    """Counts running trials (into `counts`, shared with a live view) and, with `emit`, writes
    one JSON line on stderr per trial start, per report (at most one per trial every
    `report_every` seconds; 0: every report) and per end."""

    def __init__(self, *, emit: bool = True, report_every: float = 10.0,
                 counts: dict | None = None):
        self.emit, self.report_every = emit, report_every
        self.counts = {"running": 0} if counts is None else counts
        self._last_report: dict[str, float] = {}

    def _send(self, event: str, trial, **fields) -> None:
        if self.emit:
            line = {"event": event, "time": round(time.time(), 3), **_trial_ids(trial),
                    "running": self.counts["running"], **fields}
            print(json.dumps(line), file=sys.stderr, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.counts["running"] += 1
        self._send("trial_start", trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.counts["running"] += 1
        self._send("trial_start", trial, restored=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        now = time.monotonic()
        if now - self._last_report.get(trial.trial_id, -1e9) < self.report_every:
            return
        self._last_report[trial.trial_id] = now
        self._send("trial_report", trial, progress=result.get("progress"),
                   stage=result.get("stage"), val_qwk=result.get("val_qwk"))

    def _end(self, trial, status: str) -> None:
        self.counts["running"] = max(self.counts["running"] - 1, 0)
        self._send("trial_end", trial, status=status,
                   val_qwk=(trial.last_result or {}).get("val_qwk"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, _ended(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "error")
