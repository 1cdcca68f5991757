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

import json
from dataclasses import dataclass, field
from typing import Any

from dfu_train.location import Location
from dfu_train.results import store
from dfu_train.sweep.search import SCHEDULERS


@dataclass(frozen=True)
class Session:
    """The trials of this run. `trials`: (index into the plan's configs, fold seed, fold) of a
    planned sweep; for a proposing search, `samples` configs to propose, after it is told the
    `evaluated` ones (flat params, QWK) and re-proposes the `unfinished` ones first, then the
    `points` to evaluate (`search.points_to_evaluate`) no earlier run proposed.
    `checkpoints`: trial key name -> the newest fold checkpoint an unfinished trial left."""

    trials: tuple[tuple[int, int, int], ...] = ()
    samples: int = 0
    evaluated: tuple[tuple[dict, float], ...] = ()
    unfinished: tuple[dict, ...] = ()
    points: tuple[dict, ...] = ()
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
    unfinished = tuple(flat_params(p) for p in unfinished if isinstance(p, dict))
    points = untried(map(flat_params, plan.spec.search.points_to_evaluate),
                     [params for params, _ in evaluated] + list(unfinished))
    return Session(samples=max(plan.n_configs - done, 0), evaluated=tuple(evaluated),
                   unfinished=unfinished, points=points,
                   checkpoints=_checkpoints(plan.sweep_dir, todo, folders), done=done)


def untried(points, tried: list[dict]) -> tuple[dict, ...]:
    """The (partial) points no tried config matches on every parameter the point names: a
    resumed search does not enqueue a point an earlier run already proposed."""
    return tuple(point for point in points
                 if not any(point.items() <= params.items() for params in tried))


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
    searchers accept evaluated points only then), re-proposing the unfinished ones first, then
    the points to evaluate. Those go straight into the Optuna study (`enqueue_trial`, which
    samples the parameters a point leaves out): Ray's `points_to_evaluate` needs every
    parameter in every point. A study kept in an RDB (`search.storage`) is told only what it
    does not hold yet (`_kept_trials`)."""
    if not session.evaluated and not session.unfinished and not session.points:
        return searcher
    searcher.set_search_properties = _WarmStart(searcher, session)
    return searcher


class _WarmStart:
    """The searcher's own `set_search_properties`, then the warm start. An object, not a
    closure: Tune pickles the searcher, this attribute with it, at its experiment checkpoints."""

    def __init__(self, searcher: Any, session: Session):
        self.searcher, self.session = searcher, session

    def __call__(self, metric, mode, config, **spec) -> bool:
        searcher, session = self.searcher, self.session
        accepted = type(searcher).set_search_properties(searcher, metric, mode, config, **spec)
        study = getattr(searcher, "_ot_study", None)
        ended, waiting = _kept_trials(study)
        for params, qwk in session.evaluated:
            if _same(params) in ended:
                continue
            try:
                searcher.add_evaluated_point(params, qwk)
            except (ValueError, KeyError, TypeError, RuntimeError):
                continue  # a point outside the space (an earlier version's) informs nothing
        for params in (*session.unfinished, *session.points) if study is not None else ():
            if _same(params) not in waiting:
                study.enqueue_trial(params)
        return accepted


def _kept_trials(study) -> tuple[set[str], set[str]]:
    """The params of the trials an Optuna study loaded from its RDB already holds: those that
    ended, and those enqueued and still waiting. Trials an earlier run left running (it was
    killed) are failed: this run proposes them again as unfinished."""
    if study is None:
        return set(), set()
    from optuna.trial import TrialState

    ended, waiting = set(), set()
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        elif trial.state == TrialState.WAITING:
            waiting.add(_same(trial.system_attrs.get("fixed_params", {})))
        elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            ended.add(_same(trial.params))
    return ended, waiting


def _same(params: dict) -> str:
    """Params as comparable text (values read back from JSON or from a study alike)."""
    return json.dumps(sorted(params.items()), default=str)
