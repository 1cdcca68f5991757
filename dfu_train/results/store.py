"""The sweep folder, read and written without Ray (safe while a sweep runs).

<storage>/<name>/
  sweep.json                   manifest: the sweep file, data root and fingerprint, planned trials
  fold_results/*.json          one record per finished (config_id, fold seed, fold); never edited
  confirmations/*.json         the same records, of `dfu cv --sweep` on fresh fold seeds
  tune/                        Ray Tune's experiment (trial params.json / result.json)
  train/train-<trial_id>/      Ray Train runs and checkpoints
<storage>/cache/               artifacts every sweep under the storage shares (`dfu_train.cache`)

The storage is a folder or a bucket URI (`dfu_train.location`); every file here is written whole.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfu_train.errors import ConfigError, DataError
from dfu_train.location import Location, read_all

if TYPE_CHECKING:  # validating configs imports pydantic and the registries: only when needed
    from dfu_train.config import TrialConfig

MANIFEST = "sweep.json"
FOLD_RESULTS = "fold_results"
CONFIRMATIONS = "confirmations"  # folds `dfu cv --sweep` ran on fresh fold seeds
TUNE_DIR = "tune"
PROMOTE_PREFIX = "promote-"
TRAIN_DIR = "train"
CACHE_DIR = "cache"  # under the storage folder, beside the sweeps


def storage_path(storage: str | Path | Location) -> Location:
    """The storage from a folder, a `file://` URI or a bucket URI (`s3://`, `gs://`)."""
    return Location(storage)


def resolve_sweep(name_or_path: str | Path | Location, *,
                  storage: str | Path | Location = "results") -> Location:
    """A sweep folder from a path or URI, or a name under `storage`; a clear error if none."""
    storage = storage_path(storage)
    for candidate in (Location(name_or_path), storage / str(name_or_path)):
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
    sweep_dir = Location(sweep_dir)
    try:
        return json.loads((sweep_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{sweep_dir / MANIFEST}: unreadable sweep manifest ({exc})") from None


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
    for record in read_fold_results(sweep_dir):
        if record["config_id"] == config_id:
            config = TrialConfig.from_dict(record["config"])
            return config.override({"cv.seed": manifest["spec"]["cv"]["seed"]})
    raise ConfigError(f"config {config_id} has no finished fold in {Location(sweep_dir).name}")


def trial_key(tune_config: dict) -> tuple[str, int, int]:
    """(config_id, fold seed, fold) of a Tune trial. Planned trials carry their id and config,
    so this reads them without validating (and importing what validation needs); a config a
    search algorithm proposed is resolved on top of the base config."""
    if "trial" in tune_config:
        trial = tune_config["trial"]
        return trial["config_id"], trial["config"]["cv"]["seed"], tune_config["fold"]
    config, _ = trial_of(tune_config)
    return config.config_id, config.cv.seed, tune_config["fold"]


def fold_result_path(sweep_dir: Location | Path, config_id: str, fold_seed: int,
                     fold: int, *, folder: str = FOLD_RESULTS) -> Location:
    return Location(sweep_dir) / folder / f"{config_id}-s{fold_seed}-f{fold}.json"


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


def read_confirmations(sweep_dir: Location | Path) -> list[dict]:
    """Every readable confirmation record (`dfu cv --sweep`)."""
    return read_fold_results(sweep_dir, folder=CONFIRMATIONS)


def read_fold_result(sweep_dir: Location | Path, config_id: str, fold_seed: int,
                     fold: int, *, folder: str = FOLD_RESULTS) -> dict | None:
    path = fold_result_path(sweep_dir, config_id, fold_seed, fold, folder=folder)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def read_trial_states(sweep_dir: Location | Path, records: list[dict] | None = None, *,
                      experiment: str | None = None,
                      seen: dict[str, Any] | None = None) -> list[dict]:
    """Each Tune trial as {trial_id, config_id, fold, fold_seed, status, error}.

    status is finished (its fold record exists), running, pending, error, or pruned (stopped by
    the scheduler without a record). Read from Tune's periodically written experiment state and
    each trial's params.json, so it works while the sweep runs; unreadable entries are skipped.
    `records` are the fold records when the caller has read them already; `experiment` limits
    the trials to one Tune experiment (`tune`, or a `promote-*` folder); `seen` keeps the
    trials' params between calls (`read_json_files`).
    """
    sweep_dir = Location(sweep_dir)
    if records is None:
        records = read_fold_results(sweep_dir, seen)
    finished = {(r["config_id"], r["fold_seed"], r["fold"]) for r in records}
    trials = []
    for tune_dir in experiment_dirs(sweep_dir):
        if experiment is None or tune_dir.name == experiment:
            trials += _experiment_trials(tune_dir, finished, seen)
    return trials


def experiment_outcome(sweep_dir: Location | Path, *, experiment: str, planned: int) -> dict:
    """How one Tune experiment of the sweep ended, from what it wrote: trial counts, the errors,
    and `interrupted` when some planned trial neither finished, was pruned nor failed (Tune
    stops early only when it is interrupted)."""
    trials = read_trial_states(sweep_dir, experiment=experiment)
    counts = {status: sum(t["status"] == status for t in trials)
              for status in ("finished", "pruned", "error", "running", "pending")}
    ended = counts["finished"] + counts["pruned"] + counts["error"]
    return {**counts, "planned": planned, "interrupted": ended < planned,
            "errors": [t for t in trials if t["status"] == "error"]}


def experiment_dirs(sweep_dir: Location | Path) -> list[Location]:
    """The sweep's Tune experiments: the sweep's own, then each promotion's."""
    sweep_dir = Location(sweep_dir)
    return [sweep_dir / TUNE_DIR, *sweep_dir.glob(f"{PROMOTE_PREFIX}*")]


def screening_folds(manifest: dict) -> set[tuple[int, int]]:
    """The (fold seed, fold) pairs every config of the sweep itself is planned on."""
    seed = manifest["spec"]["cv"]["seed"] if "spec" in manifest else None
    return {(seed, fold) for fold in manifest["folds"]}


def promoted_folds(manifest: dict) -> dict[str, set[tuple[int, int]]]:
    """config_id -> the (fold seed, fold) pairs its promotions planned."""
    plan: dict[str, set[tuple[int, int]]] = {}
    for promotion in manifest.get("promotions", []):
        for config_id in promotion["configs"]:
            plan.setdefault(config_id, set()).update(
                (s, f) for s in promotion["fold_seeds"] for f in promotion["folds"])
    return plan


def planned_trials(manifest: dict) -> int:
    """How many trials the sweep and its promotions planned (a proposing search counts the
    configs it will propose)."""
    # A sweep whose search proposes its configs records none in its manifest.
    configs = len(manifest["configs"]) or manifest["spec"]["search"]["num_samples"]
    return configs * len(manifest["folds"]) + sum(
        len(p["configs"]) * len(p["fold_seeds"]) * len(p["folds"])
        for p in manifest.get("promotions", []))


def planned_folds(manifest: dict) -> dict[str, set[tuple[int, int]]]:
    """config_id -> the (fold seed, fold) pairs it is planned on: the sweep's own folds, plus
    every promotion's. Configs a search algorithm proposes get the sweep's folds when found."""
    base = screening_folds(manifest)
    plan = {entry["config_id"]: set(base) for entry in manifest["configs"]}
    for config_id, folds in promoted_folds(manifest).items():
        plan.setdefault(config_id, set(base)).update(folds)
    return plan


def _experiment_trials(tune_dir: Location, finished: set,
                       seen: dict[str, Any] | None) -> list[dict]:
    # Each Tune session (a run, then each resume) writes its own file, named by its start time;
    # modification times of two sessions often fall in the same second.
    states = sorted(tune_dir.glob("experiment_state-*.json"), key=lambda p: (p.name, p.mtime()))
    if not states:
        return []
    try:
        trial_data = json.loads(states[-1].read_text(encoding="utf-8"))["trial_data"]
    except (OSError, json.JSONDecodeError, KeyError):
        return []
    entries = []
    for entry in trial_data:
        try:
            trial, runtime = json.loads(entry[0]), json.loads(entry[1])
        except (json.JSONDecodeError, IndexError, TypeError):
            continue
        if "relative_logdir" in trial:
            entries.append((trial, runtime))
    params_files = read_json_files(
        [tune_dir / t["relative_logdir"] / "params.json" for t, _ in entries], seen)
    trials = []
    for (trial, runtime), params in zip(entries, params_files):
        try:
            key = trial_key(params)
        except (KeyError, TypeError, ConfigError):
            continue
        status = _STATUS.get(trial.get("status"), "pending")
        if key in finished:
            status = "finished"
        elif status == "finished":
            status = "pruned"
        error = None
        if status == "error":
            error = _last_line(tune_dir / trial["relative_logdir"] / "error.txt") or (
                runtime.get("error_filename") or "failed")
        trials.append({"trial_id": trial["trial_id"], "config_id": key[0], "fold_seed": key[1],
                       "fold": key[2], "status": status, "error": error})
    return trials


_STATUS = {"TERMINATED": "finished", "ERROR": "error", "RUNNING": "running",
           "PENDING": "pending", "PAUSED": "pending"}


def _last_line(path: Location) -> str | None:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1].strip()[:300] if lines else None


def read_fold_results(sweep_dir: Location | Path, seen: dict[str, Any] | None = None, *,
                      folder: str = FOLD_RESULTS) -> list[dict]:
    """Every readable fold record, in file-name order; temporary files are skipped. `seen`:
    records read before (`read_json_files`)."""
    sweep_dir = Location(sweep_dir)
    return [r for r in read_json_files((sweep_dir / folder).glob("*.json"), seen)
            if r is not None]


def read_json_files(paths: list[Location], seen: dict[str, Any] | None = None) -> list[Any]:
    """Each file's JSON, or None where unreadable or half written. Files that never change once
    whole (fold records, trial params) are kept in `seen`, by URI, when given: a caller that
    polls (the progress view) then reads only the new ones, however many the sweep holds."""
    seen = {} if seen is None else seen
    missing = [path for path in paths if str(path) not in seen]
    for path, body in zip(missing, read_all(missing)):
        try:
            seen[str(path)] = json.loads(body)
        except (json.JSONDecodeError, TypeError):  # unreadable (None) or half written
            continue
    return [seen.get(str(path)) for path in paths]
