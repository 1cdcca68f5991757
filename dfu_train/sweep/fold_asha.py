"""Asynchronous successive halving that stops configs, never folds (`scheduler.type: fold-asha`).

A trial is one (config, fold). Plain ASHA compares every trial at a rung whatever its fold, and
one config's folds differ more than configs do: it keeps easy folds and stops hard ones, and
leaves configs with some folds run and others stopped. Here a trial's value at a rung is judged
against the other configs' values **on the same fold**: its gain there is the share of them it
beats minus the share that beat it (ranks, not QWK differences: folds differ in spread too). A
config's score is its mean gain over its folds at the rung, and a config below the rung's cutoff
(ASHA's: the top 1/reduction_factor go on) is stopped on every fold at once: running folds at
their next report, and folds not started yet as they start (the trial finds the config's prune
mark and ends before any work). A config one of whose folds already ran to its end is not
stopped any more, so every config is either complete or stopped on all its folds.

The value is `fused_qwk` at `fusion_epochs` (reported by `run_fold`): the fused prediction of the
fold so far, counted in fusion epochs actually trained, so rungs fall in the fusion stages where
the swept fusion settings act, and a reused (cached) branch or a stage stopped by its own
patience advances no rung for free. A fold that ends before a rung is judged at that rung on its
restored result.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import numpy as np

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from dfu_train.results import store

TIME_ATTR, METRIC = "fusion_epochs", "fused_qwk"


def rung_milestones(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """grace_period * reduction_factor^k below max_t: where configs are compared."""
    rungs, t = [], grace_period
    while t < max_t:
        rungs.append(int(t))
        t = math.ceil(t * reduction_factor)
    return sorted(set(rungs))


class FoldAwareASHA(FIFOScheduler):
    """ASHA over configs, each fold judged against the other configs on it (see the module)."""

    def __init__(self, *, max_t: int, grace_period: int = 1, reduction_factor: float = 2.0,
                 on_stop: Callable[[Trial, dict | None], None] | None = None):
        super().__init__()
        self.rungs = rung_milestones(grace_period, reduction_factor, max_t)
        self.reduction_factor = reduction_factor
        self.on_stop = on_stop  # told of every trial this stops (the sweep's prune marks)
        # rung -> (fold seed, fold) -> config_id -> fused QWK of that config's fold there
        self.values: dict[int, dict[tuple[int, int], dict[str, float]]] = {r: {} for r in self.rungs}
        self.stopped: set[str] = set()
        self.finished: set[str] = set()  # configs with a fold run to its end: never stopped
        self._cutoffs: dict[int, float | None] = {}

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        config_id, seed, fold = store.trial_key(trial.config)
        if config_id in self.stopped and not result.get("final"):  # a fold that just ended stays
            return self._stop(trial, result)
        if result.get("final"):
            self._record(config_id, (seed, fold), result, up_to=math.inf)
            return TrialScheduler.CONTINUE
        epochs = result.get(TIME_ATTR, 0)
        self._record(config_id, (seed, fold), result, up_to=epochs)
        passed = [rung for rung in self.rungs if rung <= epochs]
        # judged at the last rung passed, again at every report: a config that passed a rung
        # early, before most configs got there, stops once it falls below the rung's cutoff
        if passed and config_id not in self.finished and not self._keeps(config_id, passed[-1]):
            self.stopped.add(config_id)
            return self._stop(trial, result)
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        """A fold that ended (finished, or stopped by its own patience) counts at every later rung
        with its restored result, as the other folds of its fold meet them."""
        if result and result.get("final"):
            config_id, seed, fold = store.trial_key(trial.config)
            self._record(config_id, (seed, fold), result, up_to=math.inf)
            self.finished.add(config_id)

    def _record(self, config_id: str, fold: tuple[int, int], result: dict,
                up_to: float) -> list[int]:
        """Record the value at each rung the trial has reached and not yet recorded; the rungs
        newly reached, in order."""
        value = result.get(METRIC)
        if value is None or value != value:
            return []
        reached = []
        for rung in self.rungs:
            if rung <= up_to and config_id not in self.values[rung].setdefault(fold, {}):
                self.values[rung][fold][config_id] = float(value)
                self._cutoffs.pop(rung, None)
                reached.append(rung)
        return reached

    def score(self, config_id: str, rung: int) -> float | None:
        """The config's mean gain at `rung` (the share of other configs it beats on the same
        fold, minus the share that beat it), over its folds where others are there to compare."""
        gains = [statistics.fmean((by_config[config_id] > v) - (by_config[config_id] < v)
                                  for c, v in by_config.items() if c != config_id)
                 for by_config in self.values[rung].values()
                 if config_id in by_config and len(by_config) > 1]
        return statistics.fmean(gains) if gains else None

    def _keeps(self, config_id: str, rung: int) -> bool:
        """ASHA's rule on the configs' scores: below the (1 - 1/reduction_factor) quantile of
        the scores at the rung, the config stops."""
        own, cutoff = self.score(config_id, rung), self._cutoff(rung)
        return own is None or cutoff is None or own >= cutoff

    def _cutoff(self, rung: int) -> float | None:
        """The rung's cutoff, kept until a value lands at the rung (it is asked at every
        report); None while fewer than two configs have a score there."""
        if rung not in self._cutoffs:
            configs = {c for by_config in self.values[rung].values() for c in by_config}
            scores = [s for s in (self.score(c, rung) for c in configs) if s is not None]
            quantile = 100 * (1 - 1 / self.reduction_factor)
            self._cutoffs[rung] = (float(np.percentile(scores, quantile))
                                   if len(scores) >= 2 else None)
        return self._cutoffs[rung]

    def _stop(self, trial: Trial, result: dict | None) -> str:
        if self.on_stop is not None:
            self.on_stop(trial, result)
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return (f"fold-aware ASHA: rungs at {self.rungs} fusion epochs, "
                f"{len(self.stopped)} configs stopped")
