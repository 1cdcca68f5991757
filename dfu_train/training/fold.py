"""`run_fold`: the whole procedure of one trial on one fold, with no Ray in sight.

The caller passes `report(metrics, checkpoint)`; Ray's adapter forwards it to `ray.train.report`, the
CLI prints it, tests record it. `run_fold` never learns which scheduler listens.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from dfu_train import __version__
from dfu_train.config import TrialConfig
from dfu_train.data.cohort import Cohort
from dfu_train.data.folds import assign_folds, fold_fingerprint, split
from dfu_train.metadata.features import build_pipeline
from dfu_train.metadata.forest import fit_forest_outputs
from dfu_train.training.metrics import classification_metrics

Report = Callable[[dict[str, Any], Any], None]
PACKAGES = ("torch", "scikit-learn", "imbalanced-learn", "numpy", "pandas", "ray")


@dataclass(frozen=True)
class FoldResult:
    """What one finished (config, fold) produced; written once as fold_result.json, never edited."""

    config_id: str
    config: dict
    fold: int
    fold_seed: int
    n_folds: int
    metrics: dict
    meta_qwk: float | None
    fusion_gain: float | None
    progress: int
    stages: dict
    val_samples: list[dict]
    cohort_fingerprint: str
    fold_fingerprint: str
    versions: dict = field(default_factory=dict)

    @property
    def qwk(self) -> float | None:
        return self.metrics["qwk"]

    def to_dict(self) -> dict:
        return asdict(self)


def run_fold(config: TrialConfig, cohort: Cohort, fold: int, report: Report | None = None, *,
             n_jobs: int = 1) -> FoldResult:
    """Fit the metadata forest on the fold's training part and evaluate on its validation part."""
    started = time.perf_counter()
    folds = assign_folds(cohort, n_folds=config.cv.n_folds, seed=config.cv.seed)
    train_idx, val_idx = split(folds, fold)
    samples = cohort.samples
    train, val = samples.iloc[train_idx], samples.iloc[val_idx]
    y_train, y_val = cohort.labels[train_idx], cohort.labels[val_idx]

    pipeline = build_pipeline(config.metadata, config.forest, columns=samples.columns,
                              seed=config.seed, n_jobs=n_jobs)
    forest = fit_forest_outputs(pipeline, train, y_train, cohort.groups[train_idx], val,
                                inner_folds=config.forest.inner_folds, seed=config.seed)
    metrics = classification_metrics(y_val, forest.val_proba)
    stages = {"forest": {"seconds": round(time.perf_counter() - started, 3)}}
    progress = 1
    if report is not None:
        report({"progress": progress, "stage": "forest", "val_qwk": metrics["qwk"],
                "meta_qwk": metrics["qwk"]}, None)
    return FoldResult(
        config_id=config.config_id, config=config.to_dict(), fold=fold, fold_seed=config.cv.seed,
        n_folds=config.cv.n_folds, metrics=metrics, meta_qwk=metrics["qwk"],
        fusion_gain=0.0 if metrics["qwk"] is not None else None, progress=progress, stages=stages,
        val_samples=[
            {"sample_id": sid, "label": int(label), "proba": [round(float(p), 6) for p in row]}
            for sid, label, row in zip(val["sample_id"], y_val, forest.val_proba)
        ],
        cohort_fingerprint=cohort.fingerprint,
        fold_fingerprint=fold_fingerprint(cohort, folds),
        versions=environment_versions(),
    )


def environment_versions() -> dict[str, str]:
    """Package versions, Python, the project's version and git revision: what produced a result."""
    versions = {"dfu_train": __version__, "python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = "absent"
    versions["git_revision"] = _git_revision()
    return versions


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
