"""What one run of a sweep still has to do, from what dfu itself wrote: never from Tune's state.

A sweep is run, and continued after a crash or Ctrl-C, as a fresh Tune experiment over the
trials that have neither a valid fold record nor a prune mark. Nothing Tune pickled is read
back (`Tuner.restore` would unpickle `tuner.pkl` and the trials' state, so whoever can write to
the storage could run code on every machine that resumes). What is read: the manifest and the
records (validated JSON), the trial folders' `params.json` (plain JSON) to find each unfinished
trial's newest fold checkpoint, which the trial loads with `torch.load(weights_only=True)`, and,
for a search algorithm, the configs tried so far with their QWK, which warm-start a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dfu_train.location import Location
from dfu_train.results import store
from dfu_train.sweep.search import SCHEDULERS


@dataclass(frozen=True)
class Session:
    """The trials of this run. `trials`: (index into the plan's configs, fold seed, fold) of a
    planned sweep; for a proposing search, `samples` configs to propose, after it is told the
    `evaluated` ones (flat params, QWK) and re-proposes the `unfinished` ones first.
    `checkpoints`: trial key name -> the newest fold checkpoint an unfinished trial left."""

    trials: tuple[tuple[int, int, int], ...] = ()
    samples: int = 0
    evaluated: tuple[tuple[dict, float], ...] = ()
    unfinished: tuple[dict, ...] = ()
    checkpoints: dict[str, str] = field(default_factory=dict)
    done: int = 0  # trials of the experiment already finished or pruned

    @property
    def n_trials(self) -> int:
        return len(self.trials) or self.samples


def plan_session(plan) -> Session:
    """The trials of `plan` (a SweepPlan whose manifest is written) still to run."""
    manifest = store.read_manifest(plan.sweep_dir)
    folders = store.trial_folders(plan.sweep_dir, manifest, plan.experiment)
    records = store.read_fold_results(plan.sweep_dir, manifest=manifest)
    pruned = store.read_pruned(plan.sweep_dir)
    if plan.proposes:
        return _proposing_session(plan, manifest, folders, records, pruned)
    ended = {(r["config_id"], r["fold_seed"], r["fold"]) for r in records}
    ended |= set(pruned)
    stopped = {config_id for experiment, config_id in store.stopped_configs(pruned)
               if experiment == plan.experiment}  # a scheduler's decision stays made
    ids = plan.recorded_ids or tuple(c.config_id for c, _ in plan.configs)
    trials, todo, planned = [], [], 0
    for index, (config_id, (config, _)) in enumerate(zip(ids, plan.configs)):
        for seed in plan.trial_seeds(config):
            for fold in plan.folds:
                key = (config_id, seed, fold)
                planned += 1
                if key not in ended and config_id not in stopped:
                    trials.append((index, seed, fold))
                    todo.append(key)
    if SCHEDULERS[plan.spec.scheduler.type].folds_first:
        seeds = {seed: i for i, seed in enumerate(dict.fromkeys(t[1] for t in trials))}
        trials.sort(key=lambda t: (seeds[t[1]], t[2]))  # stable: configs in order per fold
    return Session(trials=tuple(trials), checkpoints=_checkpoints(plan.sweep_dir, todo, folders),
                   done=planned - len(trials))


def _proposing_session(plan, manifest: dict, folders, all_records: list[dict],
                       all_pruned: dict) -> Session:
    """Configs tried so far, from the records and prune marks; configs proposed but left
    unfinished, from the trial folders (read even when Tune's experiment state is damaged)."""
    screening = store.screening_folds(manifest)
    records = [r for r in all_records if (r["fold_seed"], r["fold"]) in screening]
    pruned = {key: mark for key, mark in all_pruned.items()
              if mark["experiment"] == plan.experiment}
    ended = {(r["config_id"], r["fold_seed"], r["fold"]) for r in records} | set(pruned)
    evaluated = [(r["params"], r["metrics"]["qwk"]) for r in records]
    evaluated += [(mark["params"], mark["val_qwk"]) for mark in pruned.values()]
    todo = [key for key, runs in folders.items() if key not in ended and key[1:] in screening
            and "params" in runs[-1][1]]
    unfinished = [folders[key][-1][1]["params"] for key in todo]
    evaluated = [(flat_params(p), q) for p, q in evaluated if q is not None]
    # A search may propose a config twice: every proposal that ended counts as a sample.
    trials = store.read_trial_states(plan.sweep_dir, all_records, experiment=plan.experiment,
                                     manifest=manifest)
    done = sum(t["status"] in ("finished", "pruned") for t in trials)
    return Session(samples=max(plan.n_configs - done, 0), evaluated=tuple(evaluated),
                   unfinished=tuple(flat_params(p) for p in unfinished if isinstance(p, dict)),
                   checkpoints=_checkpoints(plan.sweep_dir, todo, folders), done=done)


def flat_params(params: dict) -> dict:
    """Params as a search algorithm names them in the flattened param space."""
    return {f"params/{name}": value for name, value in params.items()}


def _checkpoints(sweep_dir: Location, keys: list, folders) -> dict[str, str]:
    """For each unfinished trial key, its newest fold checkpoint in any earlier run: in the Tune
    trial's folder (a trial run inline) or in its Train run (`train/train-<trial_id>`)."""
    found = {}
    for key in keys:
        candidates = []
        for folder, _ in folders.get(key, []):
            trial_id = folder.name.rsplit("-", 1)[-1]
            candidates += folder.glob("checkpoint_*/fold.pt")
            candidates += (sweep_dir / store.TRAIN_DIR / f"train-{trial_id}").glob(
                "checkpoint_*/fold.pt")
        if candidates:
            newest = max(candidates, key=_mtime)
            found[store.key_name(key)] = str(newest)
    return found


def _mtime(location: Location) -> float:
    try:
        return location.mtime()
    except OSError:
        return 0.0


def warm_started(searcher: Any, session: Session) -> Any:
    """`searcher` told the configs tried in earlier runs, once it knows its space (Ray's
    searchers accept evaluated points only then), and re-proposing the unfinished ones first."""
    if not session.evaluated and not session.unfinished:
        return searcher
    set_properties = searcher.set_search_properties

    def set_search_properties(metric, mode, config, **spec) -> bool:
        accepted = set_properties(metric, mode, config, **spec)
        for params, qwk in session.evaluated:
            try:
                searcher.add_evaluated_point(params, qwk)
            except (ValueError, KeyError, TypeError, RuntimeError):
                continue  # a point outside the space (an earlier version's) informs nothing
        study = getattr(searcher, "_ot_study", None)
        for params in session.unfinished if study is not None else ():
            study.enqueue_trial(params)
        return accepted

    searcher.set_search_properties = set_search_properties
    return searcher
