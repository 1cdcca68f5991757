"""Registries of search algorithms and schedulers, like the backbone and fusion-head ones.

Each entry says what it accepts of a sweep file (checked before Ray starts) and builds its Ray
object; adding a search algorithm or a scheduler is adding one entry. Ray's modules are imported
only when an entry builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dfu_train.errors import did_you_mean


@dataclass(frozen=True)
class Searcher:
    """How a search algorithm treats the `space`.

    `proposes`: it proposes each config while the sweep runs (from the results so far), so the
    sweep screens on one fold, the space holds no grid values, and `build(seed)` makes the Ray
    searcher. Otherwise the configs are expanded before Ray starts: every grid point crossed
    with `num_samples` random draws, or (`grid_only`) the grid alone.
    `keeps_study`: it keeps an Optuna study, which `search.storage` can hold in an RDB:
    `build(seed, storage=..., study_name=...)`.
    """

    description: str
    proposes: bool = False
    grid_only: bool = False
    build: Callable[..., Any] | None = None
    keeps_study: bool = False

    def check(self, name: str, *, grid: list[str], random: list[str], folds: int) -> None:
        """Raise ValueError naming what of the sweep file this algorithm cannot take."""
        if self.grid_only and random:
            raise ValueError(f"search.algorithm {name} needs grid values only; "
                             f"{random[0]!r} is a random distribution")
        if self.proposes and grid:
            raise ValueError(f"search.algorithm {name} cannot take grid values ({grid[0]!r}); "
                             "use choice")
        if self.proposes and folds != 1:
            raise ValueError(f"search.algorithm {name} proposes one config per trial: screen on "
                             "one fold of one fold seed (cv.run_folds: [0], no cv.seeds) and "
                             "`dfu sweep promote` the best to all folds and fold seeds")


def _optuna_tpe(seed: int, **study):
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=seed, **study)


def _optuna_gp(seed: int, **study):
    """Optuna's Gaussian-process sampler (the earlier study's search; torch and scipy)."""
    from optuna.samplers import GPSampler, RandomSampler
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(sampler=GPSampler(seed=seed, independent_sampler=RandomSampler(seed=seed),
                                          warn_independent_sampling=False), **study)


def _optuna_cmaes(seed: int, **study):
    """Optuna's CMA-ES sampler (the `cmaes` package): numeric parameters evolve together;
    choices, which CMA-ES cannot take, are drawn at random."""
    from optuna.samplers import CmaEsSampler, RandomSampler
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(sampler=CmaEsSampler(
        seed=seed, independent_sampler=RandomSampler(seed=seed), warn_independent_sampling=False),
        **study)


_OPTUNA_TPE = Searcher("Optuna's TPE through Ray's OptunaSearch: proposes each config from the "
                       "results so far", proposes=True, build=_optuna_tpe, keeps_study=True)

SEARCHERS = MappingProxyType({
    "random": Searcher("num_samples random draws per grid point, made before Ray starts"),
    "grid": Searcher("every combination of the grid values", grid_only=True),
    "optuna-tpe": _OPTUNA_TPE,
    "optuna": _OPTUNA_TPE,  # the name earlier sweep files use
    "optuna-gp": Searcher("Optuna's Gaussian-process sampler (the earlier study's search) through "
                          "Ray's OptunaSearch: proposes each config from the results so far",
                          proposes=True, build=_optuna_gp, keeps_study=True),
    "optuna-cmaes": Searcher("Optuna's CMA-ES sampler through Ray's OptunaSearch: numeric "
                             "parameters evolve together, choices are drawn at random",
                             proposes=True, build=_optuna_cmaes, keeps_study=True),
})


@dataclass(frozen=True)
class Scheduler:
    """A trial scheduler; `build(section, schedule_length, fusion_length)` makes Ray's for trials
    of at most that many `progress` steps, of which at most `fusion_length` fusion epochs."""

    description: str
    build: Callable[[Any, int, int], Any]
    # run the first fold of every config before any config's second: a scheduler that stops
    # configs then stops most of them before their other folds start
    folds_first: bool = False


def _fifo(section, schedule_length: int, fusion_length: int):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _fold_asha(section, schedule_length: int, fusion_length: int):
    """Config-level, fold-aware ASHA on the fused QWK over fusion epochs (`fold_asha`). As with
    ASHA, `max_t` lies one step past the longest fusion schedule: a trial ends by itself."""
    from dfu_train.sweep.fold_asha import FoldAwareASHA

    if fusion_length < 1:
        return _fifo(section, schedule_length, fusion_length)  # no fusion stage to judge
    return FoldAwareASHA(max_t=fusion_length + 1, grace_period=min(section.grace_period,
                                                                   fusion_length),
                         reduction_factor=section.reduction_factor)


def _asha(section, schedule_length: int, fusion_length: int):
    """ASHA on the monotonic `progress` counter (`training_iteration` resets on restore).

    `max_t` lies one step past the full schedule: a trial that completes its schedule ends by
    itself. Were ASHA to stop it at `max_t`, Tune would kill the trial's driver while its
    TorchTrainer still holds the worker's placement group, and that reservation would leak.
    """
    from ray.tune.schedulers import ASHAScheduler

    if schedule_length <= 1:  # a single report leaves nothing to stop early
        return _fifo(section, schedule_length, fusion_length)
    max_t = schedule_length + 1
    return ASHAScheduler(time_attr="progress", max_t=max_t,
                         grace_period=min(section.grace_period, max_t - 1),
                         reduction_factor=section.reduction_factor)


def _hyperband(section, schedule_length: int, fusion_length: int):
    """Asynchronous HyperBand with `section.brackets` brackets on the fused QWK over fusion
    epochs (`hyperband`); `max_t` one step past the longest fusion schedule, as fold-asha's."""
    from dfu_train.sweep.hyperband import FusedHyperBand

    if fusion_length < 1:
        return _fifo(section, schedule_length, fusion_length)  # no fusion stage to judge
    return FusedHyperBand(max_t=fusion_length + 1,
                          grace_period=min(section.grace_period, fusion_length),
                          reduction_factor=section.reduction_factor, brackets=section.brackets)


SCHEDULERS = MappingProxyType({
    "fold-asha": Scheduler("ASHA over configs on the fused QWK per fusion epoch: each fold's "
                           "result is judged against other configs on the same fold, and a "
                           "config that trails stops on every fold at once", _fold_asha,
                           folds_first=True),
    "none": Scheduler("every trial runs its whole schedule (FIFO)", _fifo),
    "asha": Scheduler("plain ASHA on `progress` over trials, whatever their fold (for "
                      "reference: it stops hard folds rather than weak configs)", _asha),
    "hyperband": Scheduler("asynchronous HyperBand over trials on the fused QWK per fusion "
                           "epoch: `brackets` brackets, each starting to halve one rung later "
                           "(less eager) than the one before", _hyperband),
})


def registered(value: str, registry, kind: str) -> str:
    """`value` if the registry has it, else a ValueError listing the choices."""
    if value not in registry:
        raise ValueError(f"unknown {kind} {value!r}{did_you_mean(value, registry)}; choose from "
                         f"{', '.join(registry)}")
    return value


STUDY_FILE = "optuna.db"  # the default RDB of a search that keeps an Optuna study


def study_storage(setting: str | None, sweep_dir) -> str | None:
    """The RDB URL an Optuna study is kept in (`search.storage`): the URL given; None (in
    memory) for `null`; for `auto`, a sqlite file in the sweep folder, or in memory when the
    sweep folder is a bucket (sqlite needs a local file: name a database server instead)."""
    if setting != "auto":
        return setting
    if not sweep_dir.is_local:
        return None
    return f"sqlite:///{(sweep_dir.local_path / STUDY_FILE).resolve()}"
