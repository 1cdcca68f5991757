"""Replay recorded learning curves through a Tune scheduler, without Ray: which trials it stops
and how many epochs they use. The scheduler objects are the ones a sweep runs (Ray's ASHA, the
project's fold-aware one); only the clock and the workers are simulated: `workers` trials run at
once, each reports one fusion epoch per tick, and a free worker takes the next trial in order.
Benchmarks compare schedulers on one full run's curves this way, and tests pin their decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[str, int, int]  # (config_id, fold seed, fold)


@dataclass
class ReplayTrial:
    """What a scheduler reads of a Tune trial: its id, config (a planned trial's) and status."""

    key: Key
    trial_id: str
    status: str = "PENDING"
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        config_id, seed, fold = self.key
        self.config = {"trial": {"config_id": config_id, "config": {"cv": {"seed": seed}},
                                 "fold": fold, "params": {}}}


class ReplayController:
    """The part of Tune's controller a scheduler calls."""

    def __init__(self, trials: list[ReplayTrial]):
        self.trials = trials
        self.stopped: list[Key] = []

    def get_trials(self) -> list[ReplayTrial]:
        return self.trials

    def stop_trial(self, trial: ReplayTrial) -> None:
        if trial.status in ("PENDING", "RUNNING", "PAUSED"):
            trial.status = "TERMINATED"
            self.stopped.append(trial.key)


def replay(scheduler, curves: dict[Key, list[float]], *, workers: int = 4,
           metric: str = "fused_qwk", time_attr: str = "fusion_epochs") -> dict[Key, int]:
    """Run every curve (the fused QWK after each fusion epoch, in the order given) through
    `scheduler`; the epochs each trial ran before it ended or was stopped. A curve's last
    report carries `final` with the best value (what the fold restores)."""
    trials = [ReplayTrial(key, f"t{i:05d}") for i, key in enumerate(curves)]
    controller = ReplayController(trials)
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    ran = {trial.key: 0 for trial in trials}
    running: list[ReplayTrial] = []
    while True:
        while len(running) < workers:
            nxt = scheduler.choose_trial_to_run(controller)
            if nxt is None:
                break
            if nxt.key[0] in getattr(scheduler, "stopped", ()):
                # a trial of a config stopped on another fold ends before any work, with the
                # empty report the trainable sends (`trainable._config_stopped`)
                scheduler.on_trial_result(controller, nxt, {time_attr: 0, metric: None,
                                                            "progress": 0})
                nxt.status = "TERMINATED"
                controller.stopped.append(nxt.key)
                continue
            nxt.status = "RUNNING"
            running.append(nxt)
        if not running:
            return ran
        for trial in list(running):
            if trial.status != "RUNNING":  # stopped by the scheduler while it ran
                running.remove(trial)
                continue
            curve = curves[trial.key]
            epoch = ran[trial.key] = ran[trial.key] + 1
            last = epoch >= len(curve)
            value = max(curve) if last else curve[epoch - 1]
            result = {time_attr: epoch, metric: value, "progress": epoch,
                      **({"final": 1} if last else {})}
            decision = scheduler.on_trial_result(controller, trial, result)
            if last or decision == "STOP":
                if decision == "STOP" and not last:
                    controller.stopped.append(trial.key)
                else:
                    scheduler.on_trial_complete(controller, trial, result)
                trial.status = "TERMINATED"
                running.remove(trial)
