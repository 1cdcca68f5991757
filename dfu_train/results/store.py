"""The sweep folder, read and written without Ray (safe while a sweep runs).

<storage>/<name>/
  sweep.json                   manifest: the sweep file, data root and fingerprint, planned trials
  fold_results/*.json          one record per finished (config_id, fold seed, fold); never edited
  confirmations/*.json         the same records, of `dfu cv --sweep` on fresh fold seeds
  pruned/*.json                trials the scheduler stopped early (not run again on resume)
  quarantine/                  files that failed their checks, moved aside with the reason
  lease.json                   who runs the sweep now (`results.lease`)
  tune/                        Ray Tune's experiments, one per run or resume (params.json,
                               result.json); written by Tune, never restored from
  train/train-<trial_id>/      Ray Train runs and checkpoints
<storage>/cache/               artifacts every sweep under the storage shares (`dfu_train.cache`)

The storage is a folder or a bucket URI (`dfu_train.location`); every file here is written whole.
Every file read back is validated (`results.records`) before use: a fold record of the wrong
shape, or of another cohort, fold assignment or an unplanned config, is never ranked (`rejected`)
and is moved to `quarantine/` by the next run or resume, which computes its fold again.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfu_train.errors import ConfigError, DataError
from dfu_train.location import Location, read_all
from dfu_train.results import records as shapes

if TYPE_CHECKING:  # validating configs imports pydantic and the registries: only when needed
    from dfu_train.config import TrialConfig

MANIFEST = "sweep.json"
FOLD_RESULTS = "fold_results"
CONFIRMATIONS = "confirmations"  # folds `dfu cv --sweep` ran on fresh fold seeds
TUNE_DIR = "tune"
PROMOTE_PREFIX = "promote-"
TRAIN_DIR = "train"
CACHE_DIR = "cache"  # under the storage folder, beside the sweeps
PRUNED = "pruned"  # marks of trials the scheduler stopped early
QUARANTINE = "quarantine"  # files that failed their checks, moved aside
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # one path component, never . or ..


def storage_path(storage: str | Path | Location) -> Location:
    """The storage from a folder, a `file://` URI or a bucket URI (`s3://`, `gs://`)."""
    return Location(storage)


def resolve_sweep(name_or_path: str | Path | Location, *,
                  storage: str | Path | Location = "results") -> Location:
    """A sweep folder from a path or URI, or a name under `storage`; a clear error if none."""
    storage = storage_path(storage)
    candidates = [Location(name_or_path)]
    if SAFE_NAME.match(str(name_or_path)):  # a name, never `..` or a path out of the storage
        candidates.append(storage / str(name_or_path))
    for candidate in candidates:
        if (candidate / MANIFEST).is_file():
            return candidate
    known = sorted(p.parent.name for p in storage.glob(f"*/{MANIFEST}"))
    hint = f"; sweeps under {storage}/: {', '.join(known)}" if known else ""
    raise ConfigError(f"no sweep {str(name_or_path)!r} (no {MANIFEST} there){hint}")


def write_json_atomic(path: Location, data: Any) -> None:
    """JSON written whole: readers never see half a file (`Location.write_bytes`)."""
    Location(path).write_bytes(json.dumps(_finite(data), indent=1, sort_keys=True).encode("utf-8"))


def _finite(value: Any) -> Any:
    """NaN and infinity as null, so the files stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_manifest(sweep_dir: Location | Path) -> dict:
    """`sweep.json`, checked for the shape dfu writes: a damaged manifest is one clear error."""
    path = Location(sweep_dir) / MANIFEST
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable sweep manifest ({str(exc)[:200]})") from None
    manifest, problem = shapes.validated(shapes.Manifest, data)
    if manifest is None:
        raise DataError(f"{path}: not a sweep manifest dfu wrote ({problem})")
    return manifest


def selection_rule(manifest: dict) -> str:
    """The rule the sweep ranks its configs by (`selection.rule`; sweeps recorded before there
    was a choice take today's default)."""
    from dfu_train.results.selection import DEFAULT_RULE

    return (manifest["spec"].get("selection") or {}).get("rule", DEFAULT_RULE)


def recorded_spec(manifest: dict) -> dict:
    """The sweep file a manifest recorded, as this version reads it: a sweep recorded before
    sweeps ran the study's recipe beside their configs did not run it (`baseline: false`)."""
    return {"baseline": False, **manifest["spec"]}


def trial_of(tune_config: dict) -> tuple[TrialConfig, dict]:
    """A Tune trial's config and its sampled params: given whole (grid and random search, expanded
    before Ray starts) or as params a search algorithm proposed on top of the base config."""
    from dfu_train.config import TrialConfig

    if "trial" in tune_config:
        trial = tune_config["trial"]
        return TrialConfig.from_dict(trial["config"]), trial["params"]
    params = dict(tune_config["params"])
    base = TrialConfig.from_dict(tune_config["settings"]["base_config"])
    return base.override(params), params


def recorded_config(sweep_dir: Location | Path, config_id: str) -> TrialConfig:
    """A config exactly as its trials ran it, from its fold records (every search records it,
    planned or proposed), under the sweep's own fold seed."""
    from dfu_train.config import TrialConfig

    manifest = read_manifest(sweep_dir)
    for record in read_fold_results(sweep_dir, manifest=manifest):
        if record["config_id"] == config_id:
            config = TrialConfig.from_dict(record["config"])
            return config.override({"cv.seed": sweep_fold_seeds(manifest)[0]})
    raise ConfigError(f"config {config_id} has no finished fold in {Location(sweep_dir).name}")


Key = tuple[str, int, int]  # (config_id, fold seed, fold)


def trial_key(tune_config: dict) -> Key:
    """(config_id, fold seed, fold) of a Tune trial. Planned trials carry their id, config and
    fold, so this reads them without validating (and importing what validation needs); a config
    a search algorithm proposed is resolved on top of the base config."""
    if "trial" in tune_config:
        trial = tune_config["trial"]
        fold = trial["fold"] if "fold" in trial else tune_config["fold"]  # earlier versions
        return trial["config_id"], trial["config"]["cv"]["seed"], fold
    config, _ = trial_of(tune_config)
    return config.config_id, config.cv.seed, tune_config["fold"]


def key_name(key: Key) -> str:
    config_id, fold_seed, fold = key
    return f"{config_id}-s{fold_seed}-f{fold}"


def fold_result_path(sweep_dir: Location | Path, config_id: str, fold_seed: int,
                     fold: int, *, folder: str = FOLD_RESULTS) -> Location:
    return Location(sweep_dir) / folder / f"{key_name((config_id, fold_seed, fold))}.json"


def write_fold_result(sweep_dir: Location | Path, record: dict) -> Location:
    """Record one finished fold (a FoldResult dict plus trial facts) under its unique key."""
    path = fold_result_path(sweep_dir, record["config_id"], record["fold_seed"], record["fold"])
    write_json_atomic(path, record)
    return path


def write_confirmation(sweep_dir: Location | Path, record: dict) -> Location:
    """Record one confirmation fold; it never counts as a fold of the sweep itself."""
    path = fold_result_path(sweep_dir, record["config_id"], record["fold_seed"], record["fold"],
                            folder=CONFIRMATIONS)
    write_json_atomic(path, record)
    return path


def read_confirmations(sweep_dir: Location | Path, manifest: dict | None = None,
                       seen: dict[str, Any] | None = None) -> list[dict]:
    """Every valid confirmation record (`dfu cv --sweep`)."""
    return read_fold_results(sweep_dir, seen, folder=CONFIRMATIONS, manifest=manifest)


def read_fold_result(sweep_dir: Location | Path, config_id: str, fold_seed: int,
                     fold: int, *, folder: str = FOLD_RESULTS) -> dict | None:
    """One record, if it is there and has the shape dfu writes (whether it belongs to the
    sweep is for `check_records`)."""
    path = fold_result_path(sweep_dir, config_id, fold_seed, fold, folder=folder)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    record, _ = shapes.validated(shapes.FoldRecord, data)
    if record is None or (record["config_id"], record["fold_seed"], record["fold"]) != (
            config_id, fold_seed, fold):
        return None
    return record


def write_pruned(sweep_dir: Location | Path, mark: dict) -> None:
    """Mark a trial the scheduler stopped early: a resumed sweep does not run it again."""
    key = (mark["config_id"], mark["fold_seed"], mark["fold"])
    write_json_atomic(Location(sweep_dir) / PRUNED / f"{key_name(key)}.json", mark)


def read_pruned(sweep_dir: Location | Path, seen: dict[str, Any] | None = None) -> dict[Key, dict]:
    """The valid prune marks, by trial key (a damaged mark is ignored: that trial runs again)."""
    paths = (Location(sweep_dir) / PRUNED).glob("*.json")
    marks = {}
    for path, data in zip(paths, read_json_files(paths, seen)):
        mark, _ = shapes.validated(shapes.PrunedMark, data)
        if mark is not None:
            key = (mark["config_id"], mark["fold_seed"], mark["fold"])
            if path.name == f"{key_name(key)}.json":
                marks[key] = mark
    return marks


@dataclass(frozen=True)
class Rejected:
    """A file of the sweep folder that failed its checks, and why; `quarantined` once moved."""

    path: str  # relative to the sweep folder
    reason: str
    quarantined: bool = False


def check_records(sweep_dir: Location | Path, manifest: dict, *, folder: str = FOLD_RESULTS,
                  seen: dict[str, Any] | None = None) -> tuple[list[dict], list[Rejected]]:
    """The records of `folder` that belong to the sweep, in file-name order, and the others
    with the reason: unreadable JSON, the wrong shape, a file name that is not the record's
    key, another cohort or fold assignment, or a (config, fold) the sweep never planned."""
    sweep_dir = Location(sweep_dir)
    paths = (sweep_dir / folder).glob("*.json")  # temporary files start with '.'
    plan = planned_folds(manifest)
    proposed = _ProposedConfigs(manifest) if not manifest["configs"] else None
    valid, rejected = [], []
    kept: list[dict] = []
    for path, data in zip(paths, read_json_files(paths, seen, keep_unreadable=True)):
        where = f"{folder}/{path.name}"
        if data is _UNREADABLE:
            rejected.append(Rejected(where, "not readable JSON (damaged or cut short)"))
            continue
        record, problem = shapes.validated(shapes.FoldRecord, data)
        if record is None:
            rejected.append(Rejected(where, f"not a fold record: {problem}"))
            continue
        key = (record["config_id"], record["fold_seed"], record["fold"])
        if path.name != f"{key_name(key)}.json":
            rejected.append(Rejected(where, f"holds the record of {key_name(key)}, not of its "
                                            "file name"))
            continue
        reason = _foreign(record, manifest)
        if reason is None and folder == FOLD_RESULTS:
            reason = _unplanned(record, plan, manifest, proposed)
        if reason is not None:
            rejected.append(Rejected(where, reason))
        else:
            kept.append(record)
    if folder == CONFIRMATIONS:  # a confirmation confirms a config the sweep ran
        ran = {r["config_id"] for r in read_fold_results(sweep_dir, seen, manifest=manifest)}
        for record in kept:
            if record["config_id"] not in ran:
                rejected.append(Rejected(f"{folder}/{key_name(_key(record))}.json",
                                         f"config {record['config_id']} never ran in the sweep"))
            else:
                valid.append(record)
        return valid, rejected
    return kept, rejected


def _key(record: dict) -> Key:
    return record["config_id"], record["fold_seed"], record["fold"]


def _foreign(record: dict, manifest: dict) -> str | None:
    """Why a record comes from another cohort or another fold assignment, if it does."""
    if record["cohort_fingerprint"] != manifest["cohort_fingerprint"]:
        return (f"made on another cohort (fingerprint {record['cohort_fingerprint'][:16]}, the "
                f"sweep's {manifest['cohort_fingerprint']})")
    if record["n_folds"] != manifest["spec"]["cv"]["n_folds"]:
        return f"made with {record['n_folds']} folds, the sweep uses {manifest['spec']['cv']['n_folds']}"
    expected = manifest["fold_fingerprints"].get(str(record["fold_seed"]))
    if expected is not None and record["fold_fingerprint"] != expected:
        return (f"made on another fold assignment under fold seed {record['fold_seed']} "
                f"(fingerprint {record['fold_fingerprint'][:16]}, the sweep's {expected})")
    return None


def _unplanned(record: dict, plan: dict[str, set], manifest: dict,
               proposed: _ProposedConfigs | None) -> str | None:
    """Why the sweep never planned the record's (config, fold seed, fold), if it did not."""
    config_id, pair = record["config_id"], (record["fold_seed"], record["fold"])
    if config_id in plan:
        if pair in plan[config_id]:
            return None
        return f"config {config_id} is not planned on fold {pair[1]} of fold seed {pair[0]}"
    if proposed is not None and pair in screening_folds(manifest):
        return proposed.check(record)
    return f"config {config_id} is not planned in this sweep"


class _ProposedConfigs:
    """Configs a search algorithm proposed belong to the sweep when they are its base config
    with the recorded params applied (checked once per config)."""

    def __init__(self, manifest: dict):
        self.manifest, self._seen, self._base = manifest, {}, None

    def check(self, record: dict) -> str | None:
        config_id = record["config_id"]
        if config_id not in self._seen:
            self._seen[config_id] = self._reason(record)
        return self._seen[config_id]

    def _reason(self, record: dict) -> str | None:
        try:
            if self._base is None:
                self._base = _base_config(self.manifest)
            config = self._base.override(record["params"])
        except (ConfigError, ValueError, TypeError, KeyError) as exc:  # pydantic's too
            return f"params that are not of this sweep's space ({str(exc)[:120]})"
        if record["config_id"] not in (config.config_id, config.earlier_config_id):
            return (f"config {record['config_id']} is not the sweep's base config with the "
                    "recorded params")
        return None


def _base_config(manifest: dict) -> TrialConfig:
    """The config every proposal starts from, as the manifest recorded it (sweeps recorded
    before it was kept: from the sweep file, which imports Ray's search spaces)."""
    from dfu_train.config import TrialConfig

    if "base_config" in manifest:
        return TrialConfig.from_dict(manifest["base_config"])
    from dfu_train.sweep.space import SweepSpec  # not parse_sweep: no files are checked here

    return SweepSpec.model_validate(manifest["spec"]).base_config()


def read_fold_results(sweep_dir: Location | Path, seen: dict[str, Any] | None = None, *,
                      folder: str = FOLD_RESULTS, manifest: dict | None = None) -> list[dict]:
    """The fold records that belong to the sweep, in file-name order (`check_records`). `seen`:
    files read before (`read_json_files`)."""
    manifest = read_manifest(sweep_dir) if manifest is None else manifest
    return check_records(sweep_dir, manifest, folder=folder, seen=seen)[0]


def rejected_files(sweep_dir: Location | Path, manifest: dict | None = None,
                   seen: dict[str, Any] | None = None) -> list[Rejected]:
    """Every record that failed its checks: those still in place (set aside by the next run or
    resume) and those already in `quarantine/`, with their reasons. `seen`: files read before."""
    sweep_dir = Location(sweep_dir)
    manifest = read_manifest(sweep_dir) if manifest is None else manifest
    found = [r for folder in (FOLD_RESULTS, CONFIRMATIONS)
             for r in check_records(sweep_dir, manifest, folder=folder, seen=seen)[1]]
    for why in (sweep_dir / QUARANTINE).glob("*/*.why.json"):
        try:
            note = json.loads(why.read_bytes())
            found.append(Rejected(str(note["path"])[:200], str(note["reason"])[:300],
                                  quarantined=True))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def quarantine(sweep_dir: Location | Path, rejected: list[Rejected]) -> list[Rejected]:
    """Move each rejected file to `quarantine/<folder>/`, with a note of why (only the sweep's
    writer does this: readers leave the folder as it is). The folds they held are then run
    again like any fold without a record."""
    sweep_dir = Location(sweep_dir)
    moved = []
    for item in rejected:
        if item.quarantined:
            continue
        source = sweep_dir / item.path
        target = sweep_dir / QUARANTINE / item.path
        try:
            target.write_bytes(source.read_bytes())
            write_json_atomic(Location(f"{target}.why.json"), {
                "path": item.path, "reason": item.reason,
                "moved": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            source.delete()
        except OSError:
            continue
        moved.append(Rejected(item.path, item.reason, quarantined=True))
    return moved


def read_trial_states(sweep_dir: Location | Path, records: list[dict] | None = None, *,
                      experiment: str | None = None, seen: dict[str, Any] | None = None,
                      manifest: dict | None = None) -> list[dict]:
    """Each planned trial as {trial_id, config_id, fold, fold_seed, status, error, experiment}.

    status is finished (it has a valid fold record), pruned (the scheduler stopped it: a prune
    mark), or what the latest Tune run of its experiment says of it (running, pending, error);
    a trial no run has reached yet is pending. Works while the sweep runs; a damaged Tune state
    only hides running trials. `records`: the valid fold records when read already;
    `experiment`: only that Tune experiment (`tune`, or a `promote-*` folder); `seen`: files
    read before (`read_json_files`)."""
    sweep_dir = Location(sweep_dir)
    manifest = read_manifest(sweep_dir) if manifest is None else manifest
    if records is None:
        records = read_fold_results(sweep_dir, seen, manifest=manifest)
    finished = {_key(r): r for r in records}
    pruned = read_pruned(sweep_dir, seen)
    stopped = stopped_configs(pruned)
    trials = []
    for name in experiment_names(manifest):
        if experiment is not None and name != experiment:
            continue
        runs = _tune_runs(sweep_dir / name, seen)
        keys = experiment_keys(manifest, name)
        if keys is None:
            trials += _proposed_trials(name, runs, finished, pruned, stopped, manifest)
            continue
        latest = {t["key"]: t for t in (runs[-1] if runs else [])}
        for key in keys:
            trials.append(_trial_state(name, key, latest.get(key, {}), finished, pruned,
                                       stopped))
    return trials


def stopped_configs(pruned: dict[Key, dict]) -> set[tuple[str, str]]:
    """(experiment, config_id) of the configs a scheduler stopped on every fold (fold-asha): a
    fold of theirs without a mark of its own was never started, and never will be."""
    return {(m["experiment"], m["config_id"]) for m in pruned.values() if m["scope"] == "config"}


def _trial_state(experiment: str, key: Key, run: dict, finished: dict, pruned: dict,
                 stopped: set[tuple[str, str]]) -> dict:
    if key in finished:
        status, trial_id = "finished", finished[key].get("trial_id")
    elif key in pruned or (experiment, key[0]) in stopped:
        status, trial_id = "pruned", pruned.get(key, run).get("trial_id")
    else:  # a trial Tune ended without a record or a mark lost its record: it runs again
        status = run.get("status", "pending").replace("ended", "pending")
        trial_id = run.get("trial_id")
    return {"trial_id": trial_id or run.get("trial_id"), "config_id": key[0], "fold_seed": key[1],
            "fold": key[2], "status": status,
            "error": run.get("error") if status == "error" else None, "experiment": experiment}


def _proposed_trials(experiment: str, runs: list[list[dict]], finished: dict, pruned: dict,
                     stopped: set[tuple[str, str]], manifest: dict) -> list[dict]:
    """One entry per trial a search algorithm proposed: a search may propose a config twice,
    and each proposal counts towards `num_samples`. Earlier runs count the trials that ended in
    them (the others ran again later); configs recorded without a readable Tune state still
    count once."""
    chosen = [t for run in runs[:-1] for t in run if t["status"] == "ended"]
    chosen += runs[-1] if runs else []
    seen_keys = {t["key"] for t in chosen}
    screening = screening_folds(manifest)
    trials = [_trial_state(experiment, t["key"], t, finished, pruned, stopped) for t in chosen]
    for key in [*finished, *(k for k, m in pruned.items() if m["experiment"] == experiment)]:
        if key not in seen_keys and key[1:] in screening:
            seen_keys.add(key)
            trials.append(_trial_state(experiment, key, {}, finished, pruned, stopped))
    return trials


def experiment_outcome(sweep_dir: Location | Path, *, experiment: str, planned: int) -> dict:
    """How one Tune experiment of the sweep stands after a run: trial counts, the errors, and
    `interrupted` when some planned trial neither finished, was pruned nor failed (Tune stops
    early only when it is interrupted)."""
    trials = read_trial_states(sweep_dir, experiment=experiment)
    counts = {status: sum(t["status"] == status for t in trials)
              for status in ("finished", "pruned", "error", "running", "pending")}
    ended = counts["finished"] + counts["pruned"] + counts["error"]
    return {**counts, "planned": planned, "interrupted": ended < planned,
            "errors": [t for t in trials if t["status"] == "error"]}


def experiment_names(manifest: dict) -> list[str]:
    """The sweep's Tune experiments: its own, then each promotion's."""
    return [TUNE_DIR, *(p["experiment"] for p in manifest["promotions"])]


def experiment_dirs(sweep_dir: Location | Path) -> list[Location]:
    sweep_dir = Location(sweep_dir)
    return [sweep_dir / name for name in experiment_names(read_manifest(sweep_dir))]


def experiment_keys(manifest: dict, experiment: str) -> list[Key] | None:
    """The trials an experiment plans, in order; None when a search algorithm proposes them."""
    if experiment == TUNE_DIR:
        if not manifest["configs"]:
            return None
        return [(c["config_id"], seed, fold) for c in manifest["configs"]
                for seed in sweep_fold_seeds(manifest) for fold in manifest["folds"]]
    for promotion in manifest["promotions"]:
        if promotion["experiment"] == experiment:
            return [(config_id, seed, fold) for config_id in promotion["configs"]
                    for seed in promotion["fold_seeds"] for fold in promotion["folds"]]
    return []


def sweep_fold_seeds(manifest: dict) -> list[int]:
    """The fold seeds every config of the sweep itself runs on (`cv.seeds`, else `cv.seed`)."""
    cv = manifest["spec"]["cv"]
    return list(cv.get("seeds") or [cv["seed"]])


def screening_folds(manifest: dict) -> set[tuple[int, int]]:
    """The (fold seed, fold) pairs every config of the sweep itself is planned on."""
    return {(seed, fold) for seed in sweep_fold_seeds(manifest) for fold in manifest["folds"]}


def promoted_folds(manifest: dict) -> dict[str, set[tuple[int, int]]]:
    """config_id -> the (fold seed, fold) pairs its promotions planned."""
    plan: dict[str, set[tuple[int, int]]] = {}
    for promotion in manifest["promotions"]:
        for config_id in promotion["configs"]:
            plan.setdefault(config_id, set()).update(
                (s, f) for s in promotion["fold_seeds"] for f in promotion["folds"])
    return plan


def planned_trials(manifest: dict) -> int:
    """How many trials the sweep and its promotions planned (a proposing search counts the
    configs it will propose)."""
    configs = len(manifest["configs"]) or manifest["spec"]["search"]["num_samples"]
    return configs * len(screening_folds(manifest)) + sum(
        len(p["configs"]) * len(p["fold_seeds"]) * len(p["folds"])
        for p in manifest["promotions"])


def planned_folds(manifest: dict) -> dict[str, set[tuple[int, int]]]:
    """config_id -> the (fold seed, fold) pairs it is planned on: the sweep's own folds, plus
    every promotion's. Configs a search algorithm proposes are not listed (`_ProposedConfigs`)."""
    base = screening_folds(manifest)
    plan = {entry["config_id"]: set(base) for entry in manifest["configs"]}
    for config_id, folds in promoted_folds(manifest).items():
        plan.setdefault(config_id, set(base)).update(folds)
    return plan


def _tune_runs(tune_dir: Location, seen: dict[str, Any] | None) -> list[list[dict]]:
    """What each Tune run of an experiment (a run, then each resume) says of its trials, oldest
    run first: [{trial_id, key, status (running, pending, error or ended), error}]. Read as
    plain JSON, never restored from; a damaged state file counts as a run without trials."""
    # Each Tune run writes its own file, named by its start time; modification times of two
    # runs often fall in the same second.
    states = sorted(tune_dir.glob("experiment_state-*.json"), key=lambda p: (p.name, p.mtime()))
    return [_run_trials(tune_dir, state, seen) for state in states]


def _run_trials(tune_dir: Location, state: Location, seen: dict[str, Any] | None) -> list[dict]:
    try:
        trial_data = json.loads(state.read_bytes())["trial_data"]
        entries = [(json.loads(entry[0]), json.loads(entry[1])) for entry in trial_data]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return []
    entries = [(t, r) for t, r in entries if isinstance(t, dict) and isinstance(r, dict)
               and isinstance(t.get("relative_logdir"), str) and SAFE_NAME.match(
                   t["relative_logdir"])]
    params_files = read_json_files(
        [tune_dir / t["relative_logdir"] / "params.json" for t, _ in entries], seen)
    trials = []
    for (trial, runtime), params in zip(entries, params_files):
        try:
            key = trial_key(params)
        except (KeyError, TypeError, ValueError, ConfigError):
            continue
        status = _STATUS.get(trial.get("status"), "pending")
        error = None
        if status == "error":
            error = _last_line(tune_dir / trial["relative_logdir"] / "error.txt") or str(
                runtime.get("error_filename") or "failed")[:200]
        trials.append({"trial_id": str(trial.get("trial_id", ""))[:64], "key": key,
                       "status": status, "error": error})
    return trials


_STATUS = {"TERMINATED": "ended", "ERROR": "error", "RUNNING": "running",
           "PENDING": "pending", "PAUSED": "pending"}


def trial_folders(sweep_dir: Location | Path, manifest: dict,
                  *extra: str) -> dict[Key, list[tuple[Location, dict]]]:
    """Every Tune trial folder of every run of the sweep (and of the `extra` experiments), by
    trial key, with its params (read as JSON): where a resumed trial finds its last checkpoint
    and a search its proposals."""
    sweep_dir = Location(sweep_dir)
    params_files = [f for name in dict.fromkeys([*experiment_names(manifest), *extra])
                    for f in (sweep_dir / name).glob("*/params.json")]
    folders: dict[Key, list[tuple[Location, dict]]] = {}
    for path, params in zip(params_files, read_json_files(params_files)):
        try:
            key = trial_key(params)
        except (KeyError, TypeError, ValueError, ConfigError):
            continue
        folders.setdefault(key, []).append((path.parent, params))
    return folders


def _last_line(path: Location) -> str | None:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    return lines[-1].strip()[:300] if lines else None


_UNREADABLE = object()


def read_json_files(paths: list[Location], seen: dict[str, Any] | None = None, *,
                    keep_unreadable: bool = False) -> list[Any]:
    """Each file's JSON, or None where it cannot be read (`_UNREADABLE` where its bytes are not
    JSON, when `keep_unreadable`). Files that never change once whole (fold records, trial
    params) are kept in `seen`, by URI, when given: a caller that polls (the progress view)
    then reads only the new ones, however many the sweep holds."""
    seen = {} if seen is None else seen
    missing = [path for path in paths if str(path) not in seen]
    bad: set[str] = set()
    for path, body in zip(missing, read_all(missing)):
        if body is None:
            continue
        try:
            seen[str(path)] = json.loads(body)
        except ValueError:  # not JSON: damaged (whole files are written atomically)
            bad.add(str(path))
    default = _UNREADABLE if keep_unreadable else None
    return [seen.get(str(path), default if str(path) in bad else None) for path in paths]
