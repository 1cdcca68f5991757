"""Plan a sweep: every check, before Ray starts, and the manifest that records it.

`plan_sweep` plays the role of Optuna's `create_study`: it checks the sweep file, the cohort, the
folds and the storage, and writes nothing until all of them are valid. `plan_promotion` plans
the top configs of a screened sweep on every fold as a grid. The manifest (`sweep.json`) is
written once the sweep starts (`write_manifest`, `record_promotion`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfu_train.config import TrialConfig
from dfu_train.data.check import check_cohort_for
from dfu_train.data.cohort import Cohort, load_cohort
from dfu_train.data.folds import assign_folds, check_fold_count, fold_fingerprint
from dfu_train.errors import ConfigError, DataError
from dfu_train.location import Location
from dfu_train.results import store
from dfu_train.sweep.space import SweepSpec, expand_configs, longest_values, parse_sweep
from dfu_train.training.schedule import fusion_length, schedule_length

DEFAULT_DATA_ROOT = "results/demo-data"


@dataclass(frozen=True)
class SweepPlan:
    spec: SweepSpec
    name: str
    sweep_dir: Location
    data_root: Path
    cohort: Cohort
    configs: tuple[tuple[TrialConfig, dict[str, Any]], ...]
    experiment: str = store.TUNE_DIR  # the Tune experiment folder inside the sweep folder
    promotion: dict | None = None  # the manifest entry of a promotion, recorded once it runs
    # The ids a promotion's configs were recorded under (an earlier version may have given
    # another id than `config_id`); empty: each config's own `config_id`.
    recorded_ids: tuple[str, ...] = ()
    cache_dir: str | None = None  # the cache the command line named (`checked_cache_dir`)

    @property
    def folds(self) -> tuple[int, ...]:
        return self.spec.cv.folds()

    def trial_seeds(self, config: TrialConfig) -> tuple[int, ...]:
        """The fold seeds `config` runs on: the sweep's (`cv.seeds`); a promotion plans each
        fold seed as a config of its own."""
        return (config.cv.seed,) if self.promotion is not None else self.spec.cv.fold_seeds()

    @property
    def proposes(self) -> bool:
        """True when a search algorithm proposes the configs while the sweep runs; `configs`
        are then random draws that validated the space."""
        return self.spec.search.searcher.proposes and self.experiment == store.TUNE_DIR

    @property
    def n_configs(self) -> int:
        return self.spec.search.num_samples if self.proposes else len(self.configs)

    @property
    def n_trials(self) -> int:
        seeds = 1 if self.promotion is not None else len(self.spec.cv.fold_seeds())
        return self.n_configs * len(self.folds) * seeds

    @property
    def schedule_length(self) -> int:
        """The longest trial in `progress` steps: ASHA's horizon."""
        return max(schedule_length(config) for config in self._longest_configs())

    @property
    def fusion_length(self) -> int:
        """The longest trial's fusion stages in epochs: fold-asha's horizon."""
        return max(fusion_length(config) for config in self._longest_configs())

    def _longest_configs(self) -> list[TrialConfig]:
        """The configs, with the longest epochs a search may yet propose when it proposes."""
        if self.proposes:
            longest = longest_values(self.spec)
            return [c.override(longest) for c, _ in self.configs]
        return [config for config, _ in self.configs]

    @property
    def cache_root(self) -> str:
        """Shared by every sweep under the same storage unless the command line (or the sweep
        file, inside the storage) names another."""
        return self.cache_dir or self.spec.cache.root or str(self.sweep_dir.parent /
                                                             store.CACHE_DIR)

    @property
    def spec_hash(self) -> str:
        return spec_hash(self.spec, self.cohort.fingerprint)


def spec_hash(spec: SweepSpec, cohort_fingerprint: str) -> str:
    """What makes two sweeps the same sweep: the parsed sweep file (defaults filled in) and the
    cohort; not its name, data root, cache settings, selection rule, resources (how and where
    trials run: a sweep may continue on another cluster, or on the Train path after inline) or
    where an Optuna search keeps its study."""
    skip = {"name": True, "data": True, "cache": True, "selection": True, "resources": True,
            "search": {"storage": True}}
    blob = json.dumps([spec.model_dump(mode="json", exclude=skip), cohort_fingerprint],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def plan_sweep(spec: SweepSpec, *, data_root: str | Path | None = None,
               storage: str | Path | Location = "results", name: str | None = None,
               source: str = "sweep", cache_dir: str | None = None) -> SweepPlan:
    """Validate everything a sweep needs; raise ConfigError/DataError before any work starts."""
    name = name or spec.name
    if not name:
        raise ConfigError(f"{source}: the sweep has no name; set `name:` or pass --name")
    if not store.SAFE_NAME.match(name):
        raise ConfigError(f"sweep name {name[:100]!r}: start with a letter or digit, then use "
                          "letters, digits, '-', '_' and '.' only (at most 100)")
    root = Path(data_root or spec.data.root or DEFAULT_DATA_ROOT)
    configs = tuple(with_baseline(spec, expand_configs(spec)))
    requested = {m for config, _ in configs for m in config.modalities}
    for choice in spec.modality_choices():  # a search may propose any choice
        requested.update(choice)
    cohort = check_cohort_for(root, modalities=requested, n_folds=spec.cv.n_folds, source=source)
    storage = store.storage_path(storage)
    sweep_dir = storage / name
    cache_dir = checked_cache_dir(spec, storage, cache_dir, source=source)
    _check_writable(storage)
    return SweepPlan(spec, name, sweep_dir, root.resolve(), cohort, configs, cache_dir=cache_dir)


def with_baseline(spec: SweepSpec, configs: list) -> list:
    """The sweep's configs and, unless a search proposes them or the sweep says not to, the
    study's recipe (`SweepSpec.baseline_config`) after them, shown with the values it takes for
    the swept parameters it uses. A config of the sweep that is the recipe is not run twice."""
    baseline = spec.baseline_config()
    if baseline is None or spec.search.searcher.proposes:
        return list(configs)
    if any(config.config_id == baseline.config_id for config, _ in configs):
        return list(configs)
    used = baseline.used_names()
    return [*configs, (baseline, {k: baseline.get(k) for k in spec.space if k in used})]


def checked_cache_dir(spec: SweepSpec, storage: Location, cache_dir: str | None, *,
                      source: str) -> str | None:
    """The cache the trials write to when it is not the storage's own: a sweep file may name a
    folder inside the storage, but a cache elsewhere (another bucket, say) must also be named on
    the command line, so that a sweep file from someone else cannot send wound crops there."""
    if cache_dir is not None:
        return str(Location(cache_dir))
    root = spec.cache.root
    if root is None or str(Location(root)).startswith(f"{storage}/"):
        return None
    raise ConfigError(f"{source}: cache.root {str(root)[:200]!r} lies outside the storage "
                      f"{storage}; pass --cache-dir {str(root)[:200]} to use it")


def plan_promotion(sweep_dir: Location, *, top: int, fold_seeds: tuple[int, ...] = (),
                   cache_dir: str | None = None, rule: str | None = None) -> SweepPlan:
    """The top `top` configs of a (screening) sweep under `rule` (default: the sweep's) on every
    fold, under the sweep's fold seeds and each of `fold_seeds`, with the study's recipe beside
    them (`baseline`): trials of a new Tune experiment in the same sweep folder. Folds already
    recorded are not run again; the same promotion run twice continues the first."""
    from dfu_train.results.leaderboard import build_leaderboard, screening_board
    from dfu_train.results.selection import rank_by_rule

    if top < 1:
        raise ConfigError(f"--top must be at least 1 (got {top})")
    manifest = store.read_manifest(sweep_dir)
    spec = parse_sweep(store.recorded_spec(manifest), source=str(sweep_dir / store.MANIFEST))
    # Configs compete on the folds they were screened on, not on folds some got from promotions.
    board = screening_board(build_leaderboard(sweep_dir))
    board = rank_by_rule(board[board["qwk_mean"].notna()], rule or spec.selection.rule)
    if board.empty:
        raise ConfigError(f"{sweep_dir}: no finished fold to promote from yet")
    cache_dir = checked_cache_dir(spec, sweep_dir.parent, cache_dir,
                                  source=str(sweep_dir / store.MANIFEST))
    seeds = tuple(dict.fromkeys((*spec.cv.fold_seeds(), *fold_seeds)))
    promoted = spec.model_copy(update={
        "cv": spec.cv.model_copy(update={"run_folds": "all", "seeds": None}),
        "scheduler": spec.scheduler.model_copy(update={"type": "none"})})
    chosen = list(board["config_id"][:top])
    known = {r["config_id"]: r for r in store.read_fold_results(sweep_dir, manifest=manifest)}
    if manifest["baseline"] is not None:  # the reference, on the same folds as the promoted
        known.setdefault(manifest["baseline"]["config_id"], manifest["baseline"])
        chosen += [manifest["baseline"]["config_id"]] * (manifest["baseline"]["config_id"]
                                                         not in chosen)
    configs, ids = [], []
    for config_id in chosen:
        config = TrialConfig.from_dict(known[config_id]["config"])
        for seed in seeds:
            configs.append((config.override({"cv.seed": seed}), known[config_id]["params"]))
            ids.append(config_id)  # the promoted folds join the recorded ones, whatever version
    root = Path(manifest["data_root"])
    cohort = load_cohort(root)
    check_fold_count(cohort, spec.cv.n_folds)
    if cohort.fingerprint != manifest["cohort_fingerprint"]:
        raise DataError(f"{root}: the cohort changed since the sweep ran; promote into a new sweep")
    key = hashlib.sha256(json.dumps([chosen, seeds]).encode()).hexdigest()[:8]
    experiment = f"{store.PROMOTE_PREFIX}{key}"
    return SweepPlan(promoted, manifest["name"], sweep_dir, root, cohort, tuple(configs),
                     experiment=experiment, recorded_ids=tuple(ids), cache_dir=cache_dir,
                     promotion={"experiment": experiment, "configs": chosen,
                                "fold_seeds": list(seeds), "folds": list(promoted.cv.folds())})


def record_promotion(plan: SweepPlan) -> None:
    """Add the promotion (and the fold assignments of its fold seeds) to the manifest: only
    once it is planned and its Tuner is built, so a promotion that fails before it runs leaves
    `sweep.json` as it was."""
    manifest = store.read_manifest(plan.sweep_dir)
    promotions = [p for p in manifest["promotions"]
                  if p["experiment"] != plan.promotion["experiment"]]
    fingerprints = {**fold_fingerprints(plan.cohort, plan.spec.cv.n_folds,
                                        plan.promotion["fold_seeds"]),
                    **manifest["fold_fingerprints"]}
    store.write_json_atomic(plan.sweep_dir / store.MANIFEST,
                            {**manifest, "promotions": [*promotions, plan.promotion],
                             "fold_fingerprints": fingerprints})


def fold_fingerprints(cohort: Cohort, n_folds: int, seeds) -> dict[str, str]:
    """fold seed (as text) -> the fingerprint of the patients' fold assignment under it, which
    every fold record of the sweep must carry."""
    return {str(seed): fold_fingerprint(cohort, assign_folds(cohort, n_folds=n_folds, seed=seed))
            for seed in seeds}


def _check_writable(storage: Location) -> None:
    try:
        storage.mkdir()
        probe = storage / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.delete()
    except OSError as exc:
        raise ConfigError(f"storage {storage} is not writable ({exc.strerror or exc})") from None


def check_same_sweep(plan: SweepPlan) -> bool:
    """True when the sweep folder already records this sweep; a different sweep under the same
    name is refused."""
    if not (plan.sweep_dir / store.MANIFEST).is_file():
        return False
    if _recorded_spec_hash(store.read_manifest(plan.sweep_dir)) != plan.spec_hash:
        raise ConfigError(f"{plan.sweep_dir} already holds a different sweep (other file or "
                          "cohort); pass another --name")
    return True


def write_manifest(plan: SweepPlan) -> None:
    """Record the sweep once; a different sweep under the same name is refused."""
    path = plan.sweep_dir / store.MANIFEST
    if check_same_sweep(plan):
        return
    store.write_json_atomic(path, {
        "name": plan.name,
        "spec": plan.spec.model_dump(mode="json"),
        "spec_hash": plan.spec_hash,
        "data_root": str(plan.data_root),
        "cohort_fingerprint": plan.cohort.fingerprint,
        "folds": list(plan.folds),
        "fold_fingerprints": fold_fingerprints(plan.cohort, plan.spec.cv.n_folds,
                                               plan.spec.cv.fold_seeds()),
        "base_config": plan.spec.base_config().to_dict(),
        "configs": [] if plan.proposes else [
            {"config_id": c.config_id, "params": p, "config": c.to_dict()} for c, p in plan.configs],
        "baseline": _baseline_entry(plan.spec),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def _baseline_entry(spec: SweepSpec) -> dict | None:
    baseline = spec.baseline_config()
    if baseline is None:
        return None
    used = baseline.used_names()
    return {"config_id": baseline.config_id, "config": baseline.to_dict(),
            "params": {k: baseline.get(k) for k in spec.space if k in used}}


def _recorded_spec_hash(manifest: dict) -> str | None:
    """The recorded sweep's hash as this version computes it: a sweep file recorded before a
    setting was added (and so without it) is still the same sweep, with the default filled in."""
    try:
        return spec_hash(parse_sweep(store.recorded_spec(manifest), source=store.MANIFEST),
                         manifest["cohort_fingerprint"])
    except (ConfigError, KeyError, TypeError):
        return None
