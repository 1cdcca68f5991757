"""`run_cv`: a config on every fold of one or more fold seeds, with no Ray in sight."""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

from dfu_train.cache import ArtifactCache
from dfu_train.config import TrialConfig
from dfu_train.data.cohort import Cohort
from dfu_train.training.decoding import Decoder
from dfu_train.training.fold import FoldResult, run_fold
from dfu_train.training.metrics import METRIC_KEYS, kappa

# the per-fold metrics a CV summary averages (qwk has its own mean, std and interval)
MEAN_KEYS = (*(k for k in METRIC_KEYS if k != "qwk"), "qwk_imaged")
N_RESAMPLES = 1000


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
    """The figures of one fold that a CV summary lists, and its validation predictions
    (`predictions`: sample_id, label, pred, decoded with the fold's own recorded decoder) for
    the patient bootstrap; a record written before a metric existed has None for it."""
    record = result.to_dict() if isinstance(result, FoldResult) else result
    metrics = record["metrics"]
    decoder = Decoder.from_description(record["stages"].get("decode"))
    samples = record["val_samples"]
    preds = (decoder.predict(np.array([s["proba"] for s in samples])) if samples
             else np.zeros(0, dtype=int))
    return {"fold_seed": record["fold_seed"], "fold": record["fold"], "qwk": metrics["qwk"],
            "meta_qwk": record["meta_qwk"],
            **{key: metrics.get(key) for key in MEAN_KEYS},
            "predictions": [{"sample_id": s["sample_id"], "label": int(s["label"]),
                             "pred": int(p)} for s, p in zip(samples, preds)]}


def summarize_cv(config: TrialConfig, seeds: list[int], folds: list[dict], *,
                 cohort: Cohort | None = None, n_resamples: int = N_RESAMPLES,
                 bootstrap_seed: int = 0) -> dict:
    """Mean and standard deviation of QWK over the folds (None where undefined), the means of
    the other metrics and, given the `cohort` (its patients), a patient bootstrap 95 % interval
    of the pooled QWK (`qwk_pooled`, `qwk_ci95`; see `bootstrap_qwk_ci`)."""
    qwks = [f["qwk"] for f in folds if f["qwk"] is not None]
    metas = [f["meta_qwk"] for f in folds if f["meta_qwk"] is not None]
    summary = {
        "config_id": config.config_id, "config": config.to_dict(), "fold_seeds": seeds,
        "folds": [{k: v for k, v in f.items() if k != "predictions"} for f in folds],
        "qwk_mean": statistics.fmean(qwks) if qwks else None,
        "qwk_std": statistics.stdev(qwks) if len(qwks) > 1 else None,
        "meta_qwk_mean": statistics.fmean(metas) if metas else None,
        **{f"{key}_mean": _mean([f.get(key) for f in folds]) for key in MEAN_KEYS},
        "qwk_pooled": None, "qwk_ci95": None,
    }
    if cohort is not None and folds:
        patients = dict(zip(cohort.samples["sample_id"], cohort.groups))
        interval = bootstrap_qwk_ci(folds, patients, n_resamples=n_resamples, seed=bootstrap_seed)
        summary.update(interval)
    return summary


def bootstrap_qwk_ci(folds: list[dict], patients: Mapping[str, Hashable], *,
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """A percentile 95 % interval of QWK by resampling patients, not samples: samples of one
    patient are correlated, so resampling them alone would understate the uncertainty.

    The statistic, per fold seed: QWK of the pooled out-of-fold predictions of its folds (each
    validation sample once); over seeds, their mean (`qwk_pooled`). Each resample draws the
    patients with replacement once, takes all their validation samples (a patient drawn twice
    counts twice) and scores every seed's pooled predictions on that draw; resamples where QWK
    is undefined are skipped. Seeded: the same `seed` gives the same interval.
    `patients`: sample_id -> patient id (`cohort.groups`)."""
    by_seed: dict[int, list[dict]] = {}
    for f in folds:
        by_seed.setdefault(f["fold_seed"], []).extend(f["predictions"])
    missing = {p["sample_id"] for rows in by_seed.values() for p in rows} - set(patients)
    if missing:
        raise ValueError(f"{len(missing)} validation samples are not in the cohort "
                         f"(e.g. {sorted(missing)[0]!r}): the folds come from another cohort")
    ids = sorted({patients[p["sample_id"]] for rows in by_seed.values() for p in rows}, key=str)
    position = {patient: i for i, patient in enumerate(ids)}
    pooled = [(np.array([p["label"] for p in rows]), np.array([p["pred"] for p in rows]),
               np.array([position[patients[p["sample_id"]]] for p in rows], dtype=int))
              for rows in by_seed.values() if rows]
    point = _mean([kappa(y, pred) for y, pred, _ in pooled])
    stats = []
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for _ in range(n_resamples if ids else 0):
            draws = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
            value = _mean([kappa(y, pred, sample_weight=draws[who]) for y, pred, who in pooled
                           if draws[who].any()])
            if value is not None:
                stats.append(value)
    interval = [float(q) for q in np.percentile(stats, [2.5, 97.5])] if stats else None
    return {"qwk_pooled": point, "qwk_ci95": interval,
            "bootstrap": {"unit": "patient", "patients": len(ids), "resamples": n_resamples,
                          "defined": len(stats), "seed": seed}}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None
