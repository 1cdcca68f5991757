"""`run_cv`: a config on every fold of one or more fold seeds, with no Ray in sight."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable

from dfu_train.cache import ArtifactCache
from dfu_train.config import TrialConfig
from dfu_train.data.cohort import Cohort
from dfu_train.training.fold import FoldResult, run_fold


def run_cv(config: TrialConfig, cohort: Cohort, *, seeds: Iterable[int], n_jobs: int = 1,
           cache: ArtifactCache | None = None,
           done: Callable[[int, int], FoldResult | dict | None] = lambda seed, fold: None,
           on_fold: Callable[[FoldResult], None] = lambda result: None,
           config_id: str | None = None) -> list[dict]:
    """Every (fold seed, fold) of `config`, in order, as fold summaries. `done(seed, fold)` gives
    a fold recorded earlier (it is not run again); `on_fold` sees each fold as it finishes, so a
    caller can record it before the next one starts; `config_id` as in `run_fold`."""
    folds = []
    for seed in seeds:
        seeded = config.override({"cv.seed": seed})
        for fold in range(seeded.cv.n_folds):
            result = done(seed, fold)
            if result is None:
                result = run_fold(seeded, cohort, fold, n_jobs=n_jobs, cache=cache,
                                  config_id=config_id)
                on_fold(result)
            folds.append(fold_summary(result))
    return folds


def fold_summary(result: FoldResult | dict) -> dict:
    """The figures of one fold that a CV summary lists."""
    record = result.to_dict() if isinstance(result, FoldResult) else result
    metrics = record["metrics"]
    return {"fold_seed": record["fold_seed"], "fold": record["fold"], "qwk": metrics["qwk"],
            "meta_qwk": record["meta_qwk"], "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"]}


def summarize_cv(config: TrialConfig, seeds: list[int], folds: list[dict]) -> dict:
    """Mean and standard deviation of QWK over the folds (None where undefined)."""
    qwks = [f["qwk"] for f in folds if f["qwk"] is not None]
    metas = [f["meta_qwk"] for f in folds if f["meta_qwk"] is not None]
    return {
        "config_id": config.config_id, "config": config.to_dict(), "fold_seeds": seeds,
        "folds": folds, "qwk_mean": statistics.fmean(qwks) if qwks else None,
        "qwk_std": statistics.stdev(qwks) if len(qwks) > 1 else None,
        "meta_qwk_mean": statistics.fmean(metas) if metas else None,
    }
