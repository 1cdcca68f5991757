"""Sweep files: validated before Ray starts, then expanded into (config, fold) trials.

A sweep file is YAML with the sections `data`, `cv`, `search`, `scheduler`, `resources`, `cache`,
`fixed` and `space`. `space` maps dotted TrialConfig names to one distribution each:
`{choice: [...]}`, `{grid: [...]}`, `{uniform: [lo, hi]}`, `{loguniform: [lo, hi]}` or
`{randint: [lo, hi]}` (hi exclusive), and for `modalities` `{combinations: [...]}` (every
non-empty combination of the listed modalities, crossed like grid values: a modality ablation).
Grid values are crossed; every grid point gets
`search.num_samples` random draws of the other parameters, made with Ray Tune's own
distributions under `search.seed`, so the same file always yields the same configs, after
the `search.points_to_evaluate` (partial configs tried first). A sweep yields at most
MAX_CONFIGS configs (grid points x draws), counted before anything is expanded.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)
from ray import tune

from dfu_train.config import (MAX_SEED, TrialConfig, check_modality_names, check_runnable,
                              study_recipe)
from dfu_train.errors import ConfigError, did_you_mean, quoted
from dfu_train.results.selection import DEFAULT_RULE, SELECTION_RULES
from dfu_train.sweep.search import SCHEDULERS, SEARCHERS, Searcher, registered
from dfu_train.yaml_files import read_yaml

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint", "combinations")
MAX_CONFIGS = 10_000  # as many as `search.num_samples` may ask for


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DataSection(_Section):
    root: str | None = Field(None, description="data root; --data-root overrides it")


class CVSection(_Section):
    n_folds: int = Field(5, ge=2, le=20, description="patient-grouped stratified folds")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="the fold assignment's seed")
    run_folds: Literal["all"] | tuple[int, ...] = Field(
        "all", description="'all', or a screening list of fold indices")
    seeds: tuple[int, ...] | None = Field(
        None, description="repeated CV: every config runs on the folds of each of these fold "
                          "seeds (in place of `seed`), so it is ranked over several patient splits")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value):
        if value is None:
            return value
        if not value:
            raise ValueError("the list of fold seeds is empty; leave it out to use `seed`")
        for seed in value:
            if not 0 <= seed <= MAX_SEED:
                raise ValueError(f"fold seed {seed} is outside 0..{MAX_SEED}")
        if len(set(value)) != len(value):
            raise ValueError(f"a fold seed is listed twice: {list(value)}")
        return tuple(value)

    @field_validator("run_folds")
    @classmethod
    def _folds_exist(cls, value, info):
        if value == "all":
            return value
        if not value:
            raise ValueError("the screening list is empty; use 'all' or list fold indices")
        n_folds = info.data.get("n_folds", 5)
        for fold in value:
            if not 0 <= fold < n_folds:
                raise ValueError(f"fold {fold} does not exist with n_folds={n_folds}")
        return tuple(sorted(set(value)))

    def folds(self) -> tuple[int, ...]:
        return tuple(range(self.n_folds)) if self.run_folds == "all" else self.run_folds

    def fold_seeds(self) -> tuple[int, ...]:
        """The fold seeds every config runs on: `seeds`, else `seed` alone."""
        return self.seeds or (self.seed,)


class SearchSection(_Section):
    """grid and random are expanded before Ray starts; optuna-tpe (Ray's OptunaSearch, TPE;
    `optuna` names it too), optuna-gp (Gaussian process) and optuna-cmaes (CMA-ES) propose each
    config from the results so far, so they screen on one fold. The algorithms are the entries
    of `sweep.search.SEARCHERS`."""

    algorithm: str = Field("random", description=", ".join(SEARCHERS))
    num_samples: int = Field(1, ge=1, le=10_000, description="random draws per grid point "
                             "(a proposing search: configs to propose)")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="seed of the draws: the same file gives the same configs")
    points_to_evaluate: tuple[dict[str, Any], ...] = Field(
        (), description="partial configs (swept names -> values) tried first: before the "
        "expanded configs (unnamed parameters at their fixed values), or enqueued in a "
        "proposing search (unnamed ones sampled; they count in num_samples)")
    storage: str | None = Field(
        "auto", description="where an Optuna search keeps its study (named after the sweep), "
        "for optuna-dashboard and resumes: an RDB URL (sqlite:///PATH, postgresql://...); "
        "auto: sqlite:///SWEEP_DIR/optuna.db (in memory when the sweep folder is a bucket); "
        "null: in memory")

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value):
        return registered(value, SEARCHERS, "search algorithm")

    @field_validator("storage")
    @classmethod
    def _rdb_url(cls, value):
        if value is None or value.strip().lower() in ("none", "null"):
            return None
        if value == "auto":
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(f"{value!r} is not an RDB URL; use auto, null or a URL such as "
                             "sqlite:///results/NAME/optuna.db") from None
        return value

    @model_validator(mode="after")
    def _storage_for_a_study(self):
        if self.storage not in (None, "auto") and not self.searcher.keeps_study:
            raise ValueError(f"search.storage holds an Optuna study, and search.algorithm "
                             f"{self.algorithm} keeps none; drop storage or use an optuna "
                             "algorithm")
        return self

    @property
    def searcher(self) -> Searcher:
        return SEARCHERS[self.algorithm]


class SchedulerSection(_Section):
    type: str = Field("fold-asha", description=", ".join(SCHEDULERS))
    grace_period: int = Field(4, ge=1, description="the first rung: fusion epochs (fold-asha) "
                                                   "or progress steps (asha)")
    reduction_factor: float = Field(3.5, gt=1, description="1/this of the configs (fold-asha) "
                                                           "or trials (asha) go on per rung")
    brackets: int = Field(3, ge=1, le=10, description="hyperband: brackets, each starting to "
                          "halve one rung later than the one before")

    @field_validator("type")
    @classmethod
    def _known_scheduler(cls, value):
        return registered(value, SCHEDULERS, "scheduler")

    def build(self, schedule_length: int, fusion_length: int):
        """Ray's scheduler for trials of at most `schedule_length` progress steps, of which at
        most `fusion_length` fusion epochs."""
        return SCHEDULERS[self.type].build(self, schedule_length, fusion_length)


class ResourcesSection(_Section):
    cpus_per_trial: float = Field(1.0, gt=0, description="torch threads and forest jobs too")
    gpus_per_trial: float = Field(0.0, ge=0, description="fractions share a GPU between trials")
    max_concurrent: int | None = Field(None, ge=1, description="null: from the cluster's CPUs/GPUs")
    max_failures: int = Field(1, ge=0, description="Train worker retries from the last checkpoint")
    use_train: bool | Literal["auto"] = Field(
        "auto", description="true: each trial is a Ray Train TorchTrainer (worker retries from "
        "checkpoints, GPUs); false: the fold runs in the Tune trial itself (no worker start-up, "
        "CPU only); auto: Train when trials ask for GPUs or the sweep runs on a cluster "
        "(--address), else inline")
    driver_resource: str | None = Field(
        None, description="a custom resource (e.g. `driver` on the head, as in cluster/*.yaml) "
                          "that places each Train trial's driver, instead of a quarter CPU")

    @property
    def trains(self) -> bool:
        """Whether trials run on Train; an undecided `auto` (see `SweepSpec.on_train_path`) is
        what it means on this machine's private Ray: inline."""
        return self.use_train is True


class CacheSection(_Section):
    """The artifact cache trials share (crops, forest outputs, pretrained branches)."""

    enabled: bool = Field(True, description="reuse forest outputs, branches and crops")
    root: str | None = Field(None, description="folder or URI (s3://, gs://); default "
                             "STORAGE/cache; outside the storage also name it with --cache-dir")


class SelectionSection(_Section):
    """How the leaderboard ranks configs, and which `promote` and `--export-best` take
    (`results.selection`); `--rule` on those commands overrides it."""

    rule: str = Field(DEFAULT_RULE, description=", ".join(SELECTION_RULES))

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, value):
        return registered(value, SELECTION_RULES, "selection rule")


class SweepSpec(_Section):
    """A whole sweep file."""

    name: str | None = None
    data: DataSection = DataSection()
    cv: CVSection = CVSection()
    search: SearchSection = SearchSection()
    scheduler: SchedulerSection = SchedulerSection()
    resources: ResourcesSection = ResourcesSection()
    cache: CacheSection = CacheSection()
    selection: SelectionSection = SelectionSection()
    baseline: bool = Field(True, description="run the earlier study's metadata recipe beside the "
                           "configs (sweeps that use metadata), paired on the same folds")
    fixed: dict[str, Any] = {}
    space: dict[str, dict[str, Any]] = {}

    @field_validator("fixed", "space")
    @classmethod
    def _known_names(cls, value):
        for dotted in value:
            if dotted not in TrialConfig.dotted_names():
                raise ValueError(f"unknown parameter {quoted(dotted)}"
                                 f"{did_you_mean(dotted, TrialConfig.dotted_names())}")
            if dotted.startswith("cv."):
                raise ValueError(f"{quoted(dotted)}: set folds in the sweep's cv section")
        return value

    @field_validator("space")
    @classmethod
    def _valid_distributions(cls, value):
        for dotted, spec in value.items():
            _domain(dotted, spec)
        return value

    @model_validator(mode="after")
    def _searcher_accepts_the_space(self):
        domains = {k: _domain(k, v) for k, v in self.space.items()}
        self.search.searcher.check(
            self.search.algorithm, grid=sorted(k for k, d in domains.items() if isinstance(d, list)),
            random=sorted(k for k, d in domains.items() if not isinstance(d, list)),
            folds=len(self.cv.folds()) * len(self.cv.fold_seeds()))
        self._check_points(domains)
        if self.resources.gpus_per_trial > 0 and self.resources.use_train is False:
            raise ValueError("resources.gpus_per_trial needs resources.use_train: true (or auto)")
        return self

    def on_train_path(self, on_cluster: bool) -> SweepSpec:
        """This sweep with `resources.use_train` decided: `auto` runs Train trials where they pay
        for their start-up (GPUs, a cluster) and inline trials on a private local Ray, where a
        TorchTrainer's start-up (about 12 s on 2 cores) is longer than most folds."""
        if self.resources.use_train != "auto":
            return self
        trains = self.resources.gpus_per_trial > 0 or on_cluster
        return self.model_copy(update={
            "resources": self.resources.model_copy(update={"use_train": trains})})

    def _check_points(self, domains: dict[str, Any]) -> None:
        """Each point names swept parameters only; a proposing search also needs every value
        inside its distribution (Optuna cannot enqueue a choice it does not offer) and no more
        points than configs it proposes."""
        points = self.search.points_to_evaluate
        proposes = self.search.searcher.proposes
        for i, point in enumerate(points):
            where = f"search.points_to_evaluate.{i}"
            if not point:
                raise ValueError(f"{where}: an empty point; name swept parameters and values")
            for dotted, value in point.items():
                if dotted not in domains:
                    raise ValueError(f"{where}: {quoted(dotted)} is not swept in `space`"
                                     f"{did_you_mean(dotted, domains)}")
                if proposes and not in_domain(domains[dotted], value):
                    raise ValueError(f"{where}: {dotted}={value!r} lies outside its "
                                     f"distribution in `space` ({self.space[dotted]})")
        if proposes and len(points) > self.search.num_samples:
            raise ValueError(f"search.points_to_evaluate: {len(points)} points, more than the "
                             f"{self.search.num_samples} configs search.num_samples proposes")

    def modality_choices(self) -> list[tuple[str, ...]]:
        """Every modality set a config of this sweep can have: the base config's, the swept
        ones and those the points to evaluate name."""
        domain = search_domains(self).get("modalities")
        values = (domain if isinstance(domain, list) else
                  getattr(domain, "categories", None) or [self.base_config().modalities])
        values = [*values, *(p["modalities"] for p in self.search.points_to_evaluate
                             if "modalities" in p)]
        return list(dict.fromkeys(tuple(v) for v in values))

    def baseline_config(self) -> TrialConfig | None:
        """The study's recipe on this sweep's folds, when the sweep uses metadata and wants it."""
        base = self.base_config()
        uses_metadata = any("metadata" in m for m in self.modality_choices())
        return study_recipe(base) if self.baseline and uses_metadata else None

    def base_config(self) -> TrialConfig:
        """The config every trial starts from: defaults, the fixed values and the sweep's cv."""
        values = {**self.fixed, "cv.n_folds": self.cv.n_folds, "cv.seed": self.cv.fold_seeds()[0]}
        return TrialConfig().override(values)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; every problem is one ConfigError naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping of sections")
    return parse_sweep(data, source=str(path))


def parse_sweep(data: dict, *, source: str = "sweep") -> SweepSpec:
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            top = [f for f in SweepSpec.model_fields]
            raise ConfigError(f"{source}: unknown key {quoted(key)}"
                              f"{did_you_mean(key.split('.')[-1], top)}") from None
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {key}: {message}" if key else f"{source}: {message}") from None
    try:
        check_runnable(config for config, _ in expand_configs(spec))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return spec


def _domain(dotted: str, spec: Any):
    """The Tune distribution for one `space` entry (grid entries return their value list)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"{dotted}: give exactly one of {', '.join(DISTRIBUTIONS)}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"{dotted}: unknown distribution {quoted(kind)}"
                         f"{did_you_mean(kind, DISTRIBUTIONS)}")
    if kind == "combinations":
        return modality_combinations(dotted, args)
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ValueError(f"{dotted}: {kind} needs a non-empty list of values")
        return list(args) if kind == "grid" else tune.choice(args)
    if not (isinstance(args, list) and len(args) == 2 and all(_range_end(a) for a in args)):
        raise ValueError(f"{dotted}: {kind} needs [low, high], two numbers within +-2**53 "
                         f"(got {quoted(args)})")
    low, high = args
    if not low < high:
        raise ValueError(f"{dotted}: {kind} range [{low}, {high}] is empty or inverted")
    if kind == "loguniform":
        if low <= 0:
            raise ValueError(f"{dotted}: loguniform needs low > 0")
        return tune.loguniform(low, high)
    if kind == "randint":
        return tune.randint(int(low), int(high))
    return tune.uniform(low, high)


def modality_combinations(dotted: str, modalities: Any) -> list[list[str]]:
    """Every non-empty combination of `modalities` (a modality ablation), fewest first, each in
    the listed order: 15 for four. Image-only combinations are valid configs (no forest)."""
    if dotted != "modalities":
        raise ValueError(f"{dotted}: combinations is for `modalities` only")
    if not (isinstance(modalities, list) and modalities
            and all(isinstance(m, str) for m in modalities)):
        raise ValueError("modalities: combinations needs a non-empty list of modality names")
    try:
        check_modality_names(modalities)
    except ValueError as error:
        raise ValueError(f"modalities: {error}") from None
    return [list(combo) for size in range(1, len(modalities) + 1)
            for combo in itertools.combinations(modalities, size)]


def in_domain(domain: Any, value: Any) -> bool:
    """Whether a proposing search can take `value` for a parameter of this Tune domain."""
    if isinstance(domain, list) or hasattr(domain, "categories"):
        return value in (domain if isinstance(domain, list) else domain.categories)
    if not _range_end(value):
        return False
    if isinstance(domain, tune.search.sample.Integer):
        return isinstance(value, int) and domain.lower <= value < domain.upper
    return domain.lower <= value <= domain.upper


def _range_end(value: Any) -> bool:
    """A number Tune can sample between: finite, exact as a float, within numpy's int64."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= 2**53


def expand_configs(spec: SweepSpec) -> list[tuple[TrialConfig, dict[str, Any]]]:
    """Distinct (config, sampled params) pairs in a reproducible order; each is validated.

    With a proposing search the configs are proposed while the sweep runs; these are
    `num_samples` random draws from the same space, made to validate it before Ray starts."""
    base = spec.base_config()
    domains = search_domains(spec)
    grid = {k: v for k, v in domains.items() if isinstance(v, list)}
    random = {k: v for k, v in domains.items() if not isinstance(v, list)}
    rng = np.random.default_rng(spec.search.seed)
    draws = 1 if spec.search.searcher.grid_only else spec.search.num_samples
    count = (math.prod(len(values) for values in grid.values()) * draws
             + len(spec.search.points_to_evaluate))
    if count > MAX_CONFIGS:
        sizes = " x ".join(f"{len(v)} ({k})" for k, v in grid.items())
        raise ConfigError(f"space: {sizes + ' grid values x ' if grid else ''}{draws} draws "
                          f"(search.num_samples) = {count} configs, over the cap of "
                          f"{MAX_CONFIGS}; shrink the grid or num_samples")
    configs: dict[str, tuple[TrialConfig, dict[str, Any]]] = {}
    for point in spec.search.points_to_evaluate:  # tried first; the rest at the base values
        config = base.override(point)
        used = config.used_names()
        configs.setdefault(config.config_id,
                           (config, {k: config.get(k) for k in spec.space if k in used}))
    for point in itertools.product(*grid.values()):
        for _ in range(draws):
            params = dict(zip(grid, point))
            params.update({k: _plain(d.sample(random_state=rng)) for k, d in random.items()})
            config = base.override(params)
            used = config.used_names()  # a value the config ignores is neither kept nor shown
            configs.setdefault(config.config_id,
                               (config, {k: v for k, v in params.items() if k in used}))
    return list(configs.values())


def search_domains(spec: SweepSpec) -> dict[str, Any]:
    """dotted name -> Tune domain (or the list of grid values)."""
    return {k: _domain(k, v) for k, v in spec.space.items()}


def longest_values(spec: SweepSpec) -> dict[str, Any]:
    """The largest value each swept `*epochs` parameter can take: bounds the schedule of configs
    a search algorithm has yet to propose."""
    out = {}
    for dotted, entry in spec.space.items():
        if not dotted.endswith("epochs"):
            continue
        (kind, args), = entry.items()
        out[dotted] = int(max(args)) - (1 if kind == "randint" else 0)  # randint: hi exclusive
    return out


def _plain(value: Any) -> Any:
    """Numpy scalars from Tune's samplers as plain Python values (JSON, hashing)."""
    return value.item() if hasattr(value, "item") else value
