"""Ensembles of a sweep's configs: their validation probabilities averaged, per sample, over the
folds they share, and scored as a fold is. No Ray, no torch.

The members are chosen by the sweep's leaderboard on the very folds the ensemble is then scored
on, so that score is a screening figure (optimistic, as a sweep's best config is); the ensemble
file this writes is confirmed on fresh fold seeds by `dfu cv ENSEMBLE.yaml --sweep NAME`.

Weights are equal. Fitting weights soundly needs each member's out-of-fold probabilities on the
training part of every fold; fold records keep validation probabilities only, and weights fitted
on those would be chosen on the samples they are scored on.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dfu_train.errors import ConfigError, DataError
from dfu_train.location import Location
from dfu_train.results import store

if TYPE_CHECKING:
    from dfu_train.config import TrialConfig

KIND = "dfu-ensemble"
WEIGHTS = "equal"
# the figures of a fold record's metrics an ensemble summary averages
SUMMARY_KEYS = ("qwk", "accuracy", "macro_f1", "weighted_f1", "roc_auc")


@dataclass(frozen=True)
class Ensemble:
    """Members (config_id, config as recorded) averaged with equal weights, decoded by `decode`."""

    members: tuple[tuple[str, dict], ...]
    decode: str
    sweep: str | None = None
    rule: str | None = None
    screening: dict = field(default_factory=dict)

    @property
    def ensemble_id(self) -> str:
        ids = sorted(config_id for config_id, _ in self.members)
        text = json.dumps({"members": ids, "decode": self.decode, "weights": WEIGHTS})
        return "e" + hashlib.sha256(text.encode()).hexdigest()[:11]

    @property
    def member_ids(self) -> list[str]:
        return [config_id for config_id, _ in self.members]

    def configs(self) -> list[TrialConfig]:
        """Each member's config, validated, its recorded id checked against its values (an
        edited file is refused, as an edited export is)."""
        from dfu_train.config import TrialConfig, check_runnable

        configs = []
        for config_id, data in self.members:
            config = TrialConfig.from_dict(data)
            if config_id not in (config.config_id, config.earlier_config_id):
                raise ConfigError(f"ensemble member {config_id} does not match its values "
                                  f"({config.config_id}); the file was edited after it was "
                                  "written")
            configs.append(config)
        check_runnable(configs)
        if len({c.cv.n_folds for c in configs}) > 1:
            raise ConfigError("ensemble members use different cv.n_folds")
        return configs

    def to_file(self) -> dict:
        return {"kind": KIND, "ensemble_id": self.ensemble_id, "sweep": self.sweep,
                "rule": self.rule, "weights": WEIGHTS, "decode": self.decode,
                "screening": self.screening,
                "members": [{"config_id": c, "config": data} for c, data in self.members]}


def ensemble_decode(configs: list[dict]) -> str:
    """The members' own rule when they share one that learns nothing (argmax, expected);
    otherwise argmax: learned thresholds need training-side probabilities records do not keep."""
    from dfu_train.training.decoding import DECODERS

    rules = {c.get("decode", "argmax") for c in configs}
    if len(rules) == 1 and not DECODERS[next(iter(rules))].learns:
        return next(iter(rules))
    return "argmax"


def choose_members(sweep_dir: Location, *, top: int, rule: str | None = None,
                   by_modalities: bool = False) -> tuple[list[str], str, str]:
    """The top `top` complete configs under the selection rule (by default the sweep's), or with
    `by_modalities` the best config of each modality combination, the best `top` of those;
    also the best single config and the rule used."""
    from dfu_train.results.leaderboard import build_leaderboard, query
    from dfu_train.results.selection import checked_rule

    manifest = store.read_manifest(sweep_dir)
    rule = checked_rule(rule or store.selection_rule(manifest))
    board = query(build_leaderboard(sweep_dir, manifest=manifest), rule=rule)
    ids = list(board["config_id"])
    if not ids:
        raise ConfigError(f"sweep {Location(sweep_dir).name} has no complete config yet")
    best = ids[0]
    if by_modalities:
        modalities = _modalities(sweep_dir, manifest)
        seen: set[tuple[str, ...]] = set()
        ids = [c for c in ids if not (modalities[c] in seen or seen.add(modalities[c]))]
    if len(ids) < 2 or top < 2:
        raise ConfigError(f"an ensemble needs at least 2 members; the sweep has {len(ids)} "
                          f"complete {'modality combinations' if by_modalities else 'configs'} "
                          f"and --top is {top}")
    return ids[:top], best, rule


def _modalities(sweep_dir: Location, manifest: dict) -> dict[str, tuple[str, ...]]:
    found = {}
    for record in store.read_fold_results(sweep_dir, manifest=manifest):
        found.setdefault(record["config_id"],
                         tuple(sorted(record["config"].get("modalities", ("metadata",)))))
    return found


def member_records(sweep_dir: Location, ids: list[str]) -> dict[str, dict[tuple, dict]]:
    """config_id -> {(fold seed, fold): record} of the sweep's own fold records."""
    found: dict[str, dict[tuple, dict]] = {c: {} for c in ids}
    for record in store.read_fold_results(sweep_dir):
        if record["config_id"] in found:
            found[record["config_id"]].setdefault((record["fold_seed"], record["fold"]), record)
    return found


def shared_folds(records: dict[str, dict[tuple, dict]]) -> list[tuple[int, int]]:
    """The (fold seed, fold) pairs every member finished, in order."""
    folds = set.intersection(*(set(by_fold) for by_fold in records.values()))
    if not folds:
        raise ConfigError(f"configs {', '.join(records)} share no finished fold")
    return sorted(folds)


def ensemble_fold(records: list[dict], *, decode: str) -> dict:
    """One fold of the ensemble from its members' records (or FoldResult dicts) of that fold:
    each validation sample's probabilities averaged over the members, decoded by `decode` (a
    rule that learns nothing) and scored with a fold's metrics. Shaped like a fold record."""
    from dfu_train.training.decoding import fit_decoder
    from dfu_train.training.metrics import classification_metrics

    first = records[0]
    ids = [s["sample_id"] for s in first["val_samples"]]
    labels = np.array([s["label"] for s in first["val_samples"]], dtype=int)
    stack = []
    for record in records:
        by_id = {s["sample_id"]: s["proba"] for s in record["val_samples"]}
        if set(by_id) != set(ids) or (record["fold_seed"], record["fold"]) != (
                first["fold_seed"], first["fold"]):
            raise DataError(f"config {record['config_id']} validated other samples on fold "
                            f"{first['fold']} of fold seed {first['fold_seed']} than config "
                            f"{first['config_id']}: not the same folds")
        stack.append([by_id[i] for i in ids])
    proba = np.mean(np.array(stack, dtype=float), axis=0)
    decoder = fit_decoder(decode)
    metrics = classification_metrics(labels, proba, y_pred=decoder.predict(proba))
    return {"fold_seed": first["fold_seed"], "fold": first["fold"], "metrics": metrics,
            "meta_qwk": None, "stages": {"decode": decoder.describe()},
            "val_samples": [{"sample_id": i, "label": int(y), "proba": [round(float(p), 6)
                                                                        for p in row]}
                            for i, y, row in zip(ids, labels, proba)]}


def summarize(folds: list[dict]) -> dict:
    """Mean (and, for QWK, std) of the fold metrics, and the per-fold QWKs."""
    summary: dict[str, Any] = {"folds": len(folds),
                               "qwk_folds": [f["metrics"]["qwk"] for f in folds]}
    for key in SUMMARY_KEYS:
        values = [f["metrics"].get(key) for f in folds if f["metrics"].get(key) is not None]
        summary[f"{key}_mean"] = round(statistics.fmean(values), 4) if values else None
    qwks = [q for q in summary["qwk_folds"] if q is not None]
    summary["qwk_std"] = round(statistics.stdev(qwks), 4) if len(qwks) > 1 else None
    return summary


def screen_ensemble(sweep_dir: Location, *, top: int, rule: str | None = None,
                    by_modalities: bool = False) -> tuple[Ensemble, dict]:
    """The ensemble of the sweep's top configs and its screening comparison: the ensemble and
    the best single config on the folds every member finished (members chosen on them)."""
    sweep_dir = Location(sweep_dir)
    ids, best, rule = choose_members(sweep_dir, top=top, rule=rule, by_modalities=by_modalities)
    records = member_records(sweep_dir, sorted({*ids, best}))
    folds = shared_folds({c: records[c] for c in ids})
    configs = [store.recorded_config(sweep_dir, c).to_dict() for c in ids]
    decode = ensemble_decode(configs)
    scored = [ensemble_fold([records[c][key] for c in ids], decode=decode) for key in folds]
    single = [records[best][key] for key in folds if key in records[best]]
    ensemble_summary, single_summary = summarize(scored), summarize(single)
    paired = [e["metrics"]["qwk"] - s["metrics"]["qwk"] for e, s in zip(scored, single)
              if len(single) == len(scored) and e["metrics"]["qwk"] is not None
              and s["metrics"]["qwk"] is not None]
    comparison = {
        "sweep": sweep_dir.name, "rule": rule, "label": "screening", "members": ids,
        "by_modalities": by_modalities, "decode": decode, "weights": WEIGHTS,
        "fold_keys": [f"{s}/{f}" for s, f in folds],
        "ensemble": ensemble_summary, "best_single": {"config_id": best, **single_summary},
        "qwk_diff_mean": round(statistics.fmean(paired), 4) if paired else None,
    }
    ensemble = Ensemble(tuple(zip(ids, configs)), decode, sweep=sweep_dir.name, rule=rule,
                        screening={"folds": len(folds), "qwk_mean": ensemble_summary["qwk_mean"],
                                   "qwk_std": ensemble_summary["qwk_std"],
                                   "best_single": best,
                                   "best_single_qwk_mean": single_summary["qwk_mean"]})
    comparison["ensemble_id"] = ensemble.ensemble_id
    return ensemble, comparison


def write_ensemble_file(path: Path, ensemble: Ensemble) -> None:
    import yaml

    text = yaml.safe_dump(ensemble.to_file(), sort_keys=False)
    Location(path).write_bytes(text.encode("utf-8"))


def read_ensemble_file(path: str) -> Ensemble | None:
    """The ensemble a file written by `dfu ensemble` holds; None for any other config file."""
    from dfu_train.yaml_files import read_yaml

    file = Path(path)
    if path in ("default", "baseline") or not file.is_file():
        return None
    data = read_yaml(file)
    if not isinstance(data, dict) or data.get("kind") != KIND:
        return None
    try:
        members = tuple((str(m["config_id"]), dict(m["config"])) for m in data["members"])
        decode = str(data["decode"])
        screening = dict(data.get("screening") or {})
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{file}: not an ensemble file dfu wrote (members, decode)") from None
    if data.get("weights", WEIGHTS) != WEIGHTS or decode not in ("argmax", "expected"):
        raise ConfigError(f"{file}: weights must be {WEIGHTS!r} and decode argmax or expected")
    ensemble = Ensemble(members, decode, sweep=data.get("sweep"), rule=data.get("rule"),
                        screening=screening)
    if data.get("ensemble_id") not in (None, ensemble.ensemble_id):
        raise ConfigError(f"{file}: ensemble_id {data['ensemble_id']} does not match its "
                          f"members ({ensemble.ensemble_id}); the file was edited")
    if len(members) < 2:
        raise ConfigError(f"{file}: an ensemble has at least 2 members")
    try:
        ensemble.configs()
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return ensemble
