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
import torch

from dfu_train import __version__
from dfu_train.cache import ArtifactCache, dump_arrays, load_arrays
from dfu_train.config import TrialConfig
from dfu_train.data.cohort import Cohort
from dfu_train.data.folds import assign_folds, fold_fingerprint, split
from dfu_train.metadata.features import build_pipeline
from dfu_train.metadata.forest import fit_forest_outputs
from dfu_train.training.metrics import classification_metrics, kappa
from dfu_train.data.rows import fold_rows, image_crops
from dfu_train.training.checkpoint import FoldCheckpoint
from dfu_train.training.decoding import DECODERS, fit_decoder
from dfu_train.training.model import build_model
from dfu_train.training.schedule import schedule_length
from dfu_train.training.stages import ImageStages

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
    artifacts: dict = field(default_factory=dict)  # {"reused": [...], "computed": [...]}

    @property
    def qwk(self) -> float | None:
        return self.metrics["qwk"]

    def final_report(self) -> dict[str, Any]:
        return final_report(self.metrics, meta_qwk=self.meta_qwk, fusion_gain=self.fusion_gain,
                            progress=self.progress)

    def to_dict(self) -> dict:
        return asdict(self)


def final_report(metrics: dict, *, meta_qwk: float | None, fusion_gain: float | None,
                 progress: int) -> dict[str, Any]:
    """The fold's last report: its recorded final metrics (the restored best, not the last
    epoch), so progress lines, the scheduler's last look and trackers show what was recorded."""
    finals = {f"final_{name}": value for name, value in metrics.items() if value is not None}
    return {"progress": progress, "final": 1, "val_qwk": metrics["qwk"], "fused_qwk": metrics["qwk"],
            "meta_qwk": meta_qwk, "fusion_gain": fusion_gain, **finals}


def run_fold(config: TrialConfig, cohort: Cohort, fold: int, report: Report | None = None, *,
             n_jobs: int = 1, resume: FoldCheckpoint | None = None,
             cache: ArtifactCache | None = None, device: str | torch.device = "cpu",
             on_result: Callable[[FoldResult], None] | None = None,
             config_id: str | None = None) -> FoldResult:
    """Run one trial on one fold: forest -> pretrain each image branch -> fusion stage 1 ->
    fusion stage 2, reporting after every step; or continue from `resume`.

    With a `cache`, the forest's outputs, the crops and each pretrained branch are taken from an
    earlier trial that computed the same thing (the fold's metrics are the same either way).

    `on_result` sees the finished result before the last report goes out, so whoever records
    results has done so before a scheduler that listens to reports could stop the trial.
    `config_id`: the id to record the fold under, when a sweep planned the config under another
    (an id given by an earlier version); default `config.config_id`.

    The recorded metrics decode probabilities with `config.decode`, fitted on the training part
    only (recorded in `stages["decode"]`); `meta_qwk` decodes the forest's with the same rule
    fitted on the forest's own out-of-fold training probabilities. Reports during training (and
    so early stopping and rungs) score argmax throughout.
    """
    config_id = config_id or config.config_id
    started = time.perf_counter()
    report = _Deferred(report)
    cache = cache.fresh() if cache is not None else ArtifactCache.off()
    device = torch.device(device)
    if resume is not None and (resume.config_id, resume.fold) != (config_id, fold):
        raise ValueError(f"checkpoint of config {resume.config_id} fold {resume.fold} cannot "
                         f"continue config {config_id} fold {fold}")
    folds = assign_folds(cohort, n_folds=config.cv.n_folds, seed=config.cv.seed)
    train_idx, val_idx = split(folds, fold)
    data_parts = {"cohort": cohort.fingerprint, "folds": fold_fingerprint(cohort, folds),
                  "fold": fold}
    samples = cohort.samples
    y_train, y_val = cohort.labels[train_idx], cohort.labels[val_idx]
    stages: dict[str, dict] = {}
    progress, meta_qwk, forest_state = 0, None, None
    prior = np.bincount(y_train, minlength=3) / len(y_train)
    train_rf, val_rf = np.tile(prior, (len(train_idx), 1)), np.tile(prior, (len(val_idx), 1))
    if config.uses_metadata:
        if resume is not None and resume.forest is not None:
            train_rf, val_rf = (resume.forest[k].numpy() for k in ("train", "val"))
        else:
            def fit() -> dict[str, np.ndarray]:
                pipeline = build_pipeline(config.metadata, config.forest, columns=samples.columns,
                                          seed=config.seed, n_jobs=n_jobs)
                forest = fit_forest_outputs(pipeline, samples.iloc[train_idx], y_train,
                                            cohort.groups[train_idx], samples.iloc[val_idx],
                                            inner_folds=config.forest.inner_folds,
                                            seed=config.seed)
                return {"train": forest.train_proba, "val": forest.val_proba}

            outputs = cache.fetch(
                "forest", {**data_parts, "metadata": config.metadata.model_dump(mode="json"),
                           "forest": config.forest.model_dump(mode="json"), "seed": config.seed},
                fit, dump=dump_arrays, load=load_arrays, label=f"fold {fold}")
            train_rf, val_rf = outputs["train"], outputs["val"]
        meta_qwk = kappa(y_val, val_rf.argmax(axis=1))  # what training reports: argmax
        stages["forest"] = {"seconds": round(time.perf_counter() - started, 3),
                            "reused": any(a.startswith("forest") for a in cache.reused)}
        progress = 1
        forest_state = {"train": torch.as_tensor(train_rf), "val": torch.as_tensor(val_rf)}
        checkpoint = (FoldCheckpoint(config_id, fold, "forest", progress, {}, None,
                                     {}, forest_state) if config.image_modalities else None)
        if resume is None:
            report({"progress": progress, "stage": "forest", "val_qwk": meta_qwk,
                    "meta_qwk": meta_qwk, "fusion_epochs": 0, "fused_qwk": meta_qwk}, checkpoint)
    proba, row_qwk, imaged, train_proba = val_rf, None, None, train_rf
    if config.image_modalities:
        model = build_model(config).to(device)
        if config.train.channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if resume is not None and resume.model:
            model.load_state_dict(resume.model)
        crops = image_crops(cohort, config.image_modalities, config.image.size, cache,
                            config.image.resize_filter)
        modalities = config.image_modalities
        runner = ImageStages(
            config=config, fold=fold, report=report, device=device, cache=cache,
            cache_parts=data_parts,
            train=fold_rows(cohort, modalities, train_idx, train_rf, crops),
            val=fold_rows(cohort, modalities, val_idx, val_rf, crops),
            val_fallback=val_rf, val_labels=y_val, meta_qwk=meta_qwk,
            forest_state=forest_state, config_id=config_id, train_fallback=train_rf)
        runner.run(model, first_progress=progress, resume=resume)
        proba, row_qwk = runner.final_predictions(model)
        decode_started = time.perf_counter()
        if DECODERS[config.decode].learns:
            train_proba = runner.train_predictions(model)
        imaged = np.zeros(len(val_idx), dtype=bool)
        imaged[runner.val.sample_pos] = True
        stages = {**stages, **runner.stages}
        progress = schedule_length(config)
    else:
        decode_started = time.perf_counter()
    decoder = fit_decoder(config.decode, train_proba, y_train)
    stages["decode"] = decoder.describe()
    if config.uses_metadata:
        meta_decoder = (fit_decoder(config.decode, train_rf, y_train)
                        if config.image_modalities else decoder)
        meta_qwk = kappa(y_val, meta_decoder.predict(val_rf))
        stages["decode"]["meta"] = meta_decoder.describe()
    stages["decode"]["seconds"] = round(time.perf_counter() - decode_started, 3)
    y_pred = decoder.predict(proba)
    metrics = {**classification_metrics(y_val, proba, y_pred=y_pred), "row_qwk": row_qwk,
               **imaged_metrics(y_val, y_pred, imaged)}
    qwk = metrics["qwk"]
    result = FoldResult(
        config_id=config_id, config=config.to_dict(), fold=fold, fold_seed=config.cv.seed,
        n_folds=config.cv.n_folds, metrics=metrics, meta_qwk=meta_qwk,
        fusion_gain=qwk - meta_qwk if qwk is not None and meta_qwk is not None else None,
        progress=progress, stages=stages,
        val_samples=[
            {"sample_id": sid, "label": int(label), "proba": [round(float(p), 6) for p in row]}
            for sid, label, row in zip(samples["sample_id"].iloc[val_idx], y_val, proba)
        ],
        cohort_fingerprint=cohort.fingerprint,
        fold_fingerprint=data_parts["folds"],
        versions=environment_versions(),
        artifacts={"reused": list(cache.reused), "computed": list(cache.computed)},
    )
    if on_result is not None:
        on_result(result)
    report.finish(result.final_report())
    return result


def imaged_metrics(y_val: np.ndarray, y_pred: np.ndarray,
                   imaged: np.ndarray | None) -> dict[str, float | int | None]:
    """QWK over the validation samples that have every image modality of the trial, the
    population an image-only study scores (the others fall back to the forest or the prior);
    None for a metadata-only trial, where no sample is scored through images."""
    if imaged is None:
        return {"qwk_imaged": None, "n_imaged": None}
    n_imaged = int(imaged.sum())
    return {"qwk_imaged": kappa(y_val[imaged], y_pred[imaged]) if n_imaged else None,
            "n_imaged": n_imaged}


class _Deferred:
    """Holds each report back until the next one, so the last goes out after `on_result`."""

    def __init__(self, report: Report | None):
        self._report, self._held = report, None

    def __call__(self, metrics: dict, checkpoint: Any) -> None:
        self.flush()
        self._held = (metrics, checkpoint)

    def flush(self) -> None:
        if self._held is not None and self._report is not None:
            self._report(*self._held)
        self._held = None

    def finish(self, final: dict[str, Any]) -> None:
        """Send the held report with the fold's final metrics in it (alone when none is held,
        as after a resume that had nothing left to run)."""
        metrics, checkpoint = self._held or ({}, None)
        progress = max(metrics.get("progress", 0), final["progress"])
        self._held = ({"stage": "final", **metrics, **final, "progress": progress}, checkpoint)
        self.flush()


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
