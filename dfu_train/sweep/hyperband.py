"""HyperBand with several brackets (`scheduler.type: hyperband`), asynchronous: Ray's
`AsyncHyperBandScheduler`, whose brackets each start halving one rung later than the one before
(the first at `grace_period`, the next at `grace_period * reduction_factor`, ...), each trial
placed in one of them. Unlike Ray's synchronous `HyperBandScheduler` it never pauses a trial: a
paused Train trial's driver would be killed while its TorchTrainer holds the worker's placement
group, and a paused fold would restart from its last checkpoint.

It judges what `fold-asha` judges, per trial: `fused_qwk` at `fusion_epochs`, the fused
prediction so far counted in fusion epochs actually trained (never a branch alone during
pretraining), so it keeps its own metric instead of the Tuner's `val_qwk`.
"""

from __future__ import annotations

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from dfu_train.sweep.fold_asha import METRIC, TIME_ATTR


class FusedHyperBand(AsyncHyperBandScheduler):
    """Ray's asynchronous HyperBand on the fused QWK per fusion epoch (see the module)."""

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float, brackets: int):
        super().__init__(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=max_t,
                         grace_period=grace_period, reduction_factor=reduction_factor,
                         brackets=brackets)

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the Tuner ranks by val_qwk; this judges the fused QWK on purpose

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(METRIC) is None:  # a trial that ended before any work reports None
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result.get(METRIC) is None:
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)

    @property
    def rungs(self) -> list[list[float]]:
        """Each bracket's rungs (in `fusion_epochs`), first bracket first: where it halves."""
        return [sorted(float(milestone) for milestone, _ in bracket._rungs)
                for bracket in self._brackets]
