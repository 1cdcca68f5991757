"""Confirmation of a sweep's config on fresh fold seeds (`dfu cv EXPORT --sweep NAME`), no Ray.

A config picked as the best of many is scored optimistically on the folds that picked it; its
folds on patient splits the sweep never saw are the honest figure. They are recorded in the sweep
folder (`confirmations/`), and the leaderboard shows screening, promoted and confirmed QWK and
the optimism (screening minus confirmation).
"""

from __future__ import annotations

from pathlib import Path

from dfu_train.config import TrialConfig
from dfu_train.data.cohort import load_cohort
from dfu_train.errors import ConfigError, DataError
from dfu_train.location import Location
from dfu_train.results import store


def check_confirmation(sweep_dir: Location, config: TrialConfig, seeds: list[int], *,
                       data_root: str | Path | None = None) -> tuple[Path, float | None, str]:
    """The data root to confirm on, the config's screening QWK in the sweep and the id the
    sweep recorded it under (an earlier version's id for older sweeps); refuses a config the
    sweep never ran, fold seeds that took part in choosing it, another number of folds, or a
    cohort other than the sweep's."""
    manifest = store.read_manifest(sweep_dir)
    ids = (config.config_id, config.earlier_config_id)
    records = [r for r in store.read_fold_results(sweep_dir) if r["config_id"] in ids]
    if not records:
        raise ConfigError(f"config {config.config_id} has no finished fold in sweep "
                          f"{sweep_dir.name}; export a config from that sweep's leaderboard "
                          "(--export-best)")
    n_folds = manifest["spec"]["cv"]["n_folds"]
    if config.cv.n_folds != n_folds:
        raise ConfigError(f"the config uses cv.n_folds={config.cv.n_folds}, the sweep "
                          f"{n_folds}: confirm with the sweep's number of folds")
    recorded_id = records[0]["config_id"]
    used = {r["fold_seed"] for r in records} | {
        seed for seed, _ in store.planned_folds(manifest).get(recorded_id, ())}
    reused = sorted(used & set(seeds))
    if reused:
        raise ConfigError(f"fold seed {reused[0]} took part in choosing config "
                          f"{config.config_id} in sweep {sweep_dir.name}: confirm on fresh fold "
                          f"seeds (used: {', '.join(str(s) for s in sorted(used))})")
    root = Path(data_root or manifest["data_root"])
    cohort = load_cohort(root)
    if cohort.fingerprint != manifest["cohort_fingerprint"]:
        raise DataError(f"{root}: not the cohort sweep {sweep_dir.name} ran on (fingerprint "
                        f"{cohort.fingerprint}, the sweep's {manifest['cohort_fingerprint']})")
    screening = store.screening_folds(manifest)
    qwks = [r["metrics"]["qwk"] for r in records
            if (r["fold_seed"], r["fold"]) in screening and r["metrics"]["qwk"] is not None]
    return root, (round(sum(qwks) / len(qwks), 4) if qwks else None), recorded_id


class Confirmation:
    """The confirmation folds of one config in a sweep folder: those recorded, and recording."""

    def __init__(self, sweep_dir: Location, config_id: str):
        self.sweep_dir, self.config_id = sweep_dir, config_id

    def recorded(self, seed: int, fold: int) -> dict | None:
        return store.read_fold_result(self.sweep_dir, self.config_id, seed, fold,
                                      folder=store.CONFIRMATIONS)

    def record(self, result) -> None:
        """Write a finished fold (a FoldResult) before the next one starts."""
        store.write_confirmation(self.sweep_dir, {**result.to_dict(), "role": "confirmation"})
