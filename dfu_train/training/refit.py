"""Refit a config on every patient of a cohort, and predict new cohorts with the result.

A refit runs the stages of `run_fold` (forest with out-of-fold training probabilities, each
branch's pretraining, fusion stages 1 and 2) on all samples. With no validation part to stop on,
each stage trains a fixed number of epochs: what the cross-validated folds of the config restored
(`refit_epochs`), else the config's own. The decoding rule is fitted on the training side, as a
fold fits it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from dfu_train.cache import ArtifactCache
from dfu_train.config import TrialConfig
from dfu_train.data.cohort import Cohort
from dfu_train.data.images import to_tensor
from dfu_train.data.rows import fold_rows, image_crops, sample_proba
from dfu_train.data.sampling import STEP_NAMES
from dfu_train.data.schema import CLASS_NAMES, PATIENT
from dfu_train.errors import DataError
from dfu_train.metadata.features import build_pipeline, feature_columns
from dfu_train.metadata.forest import class_proba, fit_forest_outputs
from dfu_train.models.fusion import MultimodalModel
from dfu_train.training.decoding import DECODERS, Decoder, fit_decoder
from dfu_train.training.fold import environment_versions
from dfu_train.training.model import build_model
from dfu_train.training.schedule import schedule
from dfu_train.training.stages import EVAL_BATCH, ImageStages


@dataclass(frozen=True)
class FittedModel:
    """What a refit produced and a model folder holds."""

    config: TrialConfig  # as exported (its config_id); the epochs trained are in `info`
    pipeline: Any | None  # the fitted metadata pipeline, resampling steps removed
    model: MultimodalModel | None  # branches and fusion head, eval mode
    decoder: Decoder
    info: dict  # refit_epochs, feature columns, class prior, cohort fingerprint, versions


def epoch_key(stage: str) -> str:
    """The config key that sets a stage's epochs."""
    if stage.startswith("pretrain:"):
        return f"{stage.split(':', 1)[1]}.pretrain_epochs"
    if stage.startswith("pretrain-top:"):
        return f"{stage.split(':', 1)[1]}.pretrain_top_epochs"
    return f"{stage}.epochs"


def refit_epochs(config: TrialConfig, records: list[dict] = ()) -> tuple[dict[str, int], str]:
    """Epochs per image stage for a refit, and where they come from: the median, over the
    config's cross-validated fold records, of the epochs each fold kept (best epoch + 1; 0 for
    a stage 2 that did not beat stage 1); the config's epochs for a stage no record has."""
    epochs, used = {}, 0
    for stage, length in schedule(config):
        if stage == "forest":
            continue
        kept = [0 if s.get("kept") is False else int(s["best_epoch"]) + 1
                for r in records if isinstance(s := r.get("stages", {}).get(stage), dict)
                and "best_epoch" in s]
        epochs[stage] = max(0, int(round(statistics.median(kept)))) if kept else length
        used = max(used, len(kept))
    source = f"median over {used} cross-validated folds" if used else "the config"
    return epochs, source


class _AllPatients(ImageStages):
    """The image stages on every sample: no validation part, so every epoch counts as the best
    so far (the loop keeps the last weights, never stops early, never lowers the learning rate
    on a plateau) and stage 2 is always kept."""

    _calls = 0

    def _evaluate(self, *args, **kwargs) -> tuple[float, float]:
        self._calls += 1
        return float(self._calls), 0.0


def refit(config: TrialConfig, cohort: Cohort, *, epochs: dict[str, int] | None = None,
          epochs_source: str = "the config", n_jobs: int = 1,
          device: str | torch.device = "cpu") -> FittedModel:
    """Train `config` on every sample of `cohort` (`epochs`: per image stage, see
    `refit_epochs`)."""
    started = time.perf_counter()
    samples, labels = cohort.samples, cohort.labels
    everyone = np.arange(len(samples))
    prior = np.bincount(labels, minlength=len(CLASS_NAMES)) / len(labels)
    train_rf = np.tile(prior, (len(samples), 1))
    pipeline, columns = None, None
    if config.uses_metadata:
        unfitted = build_pipeline(config.metadata, config.forest, columns=samples.columns,
                                  seed=config.seed, n_jobs=n_jobs)
        forest = fit_forest_outputs(unfitted, samples, labels, cohort.groups, samples.iloc[:1],
                                    inner_folds=config.forest.inner_folds, seed=config.seed)
        train_rf, pipeline = forest.train_proba, without_resampling(forest.pipeline)
        numeric, categorical = feature_columns(config.metadata, samples.columns)
        columns = {"numeric": numeric, "categorical": categorical}
    train_proba, model = train_rf, None
    epochs = dict(epochs or {})
    if config.image_modalities:
        trained = config.override({epoch_key(s): n for s, n in epochs.items()})
        device = torch.device(device)
        model = build_model(trained).to(device)
        crops = image_crops(cohort, trained.image_modalities, trained.image.size,
                            ArtifactCache.off(), trained.image.resize_filter)
        rows = fold_rows(cohort, trained.image_modalities, everyone, train_rf, crops)
        runner = _AllPatients(config=trained, train=rows, val=rows, val_fallback=train_rf,
                              val_labels=labels, report=lambda metrics, checkpoint: None,
                              fold=-1, forest_state=None, meta_qwk=None, device=device,
                              train_fallback=train_rf)
        runner.run(model, first_progress=0, resume=None)
        if DECODERS[config.decode].learns:
            train_proba = runner.train_predictions(model)
        model = model.cpu().eval()
        epochs = {s: runner.stages.get(s, {}).get("epochs_run", 0) for s in epochs}
    decoder = fit_decoder(config.decode, train_proba, labels)
    info = {
        "config_id": config.config_id, "refit_epochs": epochs, "epochs_source": epochs_source,
        "feature_columns": columns, "image_modalities": list(config.image_modalities),
        "image_size": config.image.size, "classes": list(CLASS_NAMES),
        "class_prior": [float(p) for p in prior], "decoder": decoder.describe(),
        "cohort_fingerprint": cohort.fingerprint, "samples": len(samples),
        "patients": int(samples[PATIENT].nunique()),
        "seconds": round(time.perf_counter() - started, 2),
        "versions": {**environment_versions(), "skops": _version("skops")},
    }
    return FittedModel(config, pipeline, model, decoder, info)


def without_resampling(pipeline):
    """The fitted pipeline without its resampling steps: they act in `fit` only, so predictions
    are the same, and the saved model holds fewer types to trust."""
    from imblearn.pipeline import Pipeline

    return Pipeline([(name, step) for name, step in pipeline.steps if name not in STEP_NAMES])


def predict(fitted: FittedModel, cohort: Cohort) -> pd.DataFrame:
    """Per sample of `cohort`: the phase probabilities and the phase (decoded as the refit fold
    decoded). A cohort whose feature columns differ from the model's, or that lacks an image
    modality the model uses, is refused."""
    config, info, samples = fitted.config, fitted.info, cohort.samples
    check_columns(fitted, cohort)
    if fitted.pipeline is not None:
        rf = class_proba(fitted.pipeline, samples)
    else:
        rf = np.tile(np.asarray(info["class_prior"], dtype=float), (len(samples), 1))
    proba = rf
    if fitted.model is not None:
        modalities = config.image_modalities
        crops = image_crops(cohort, modalities, config.image.size, ArtifactCache.off(),
                            config.image.resize_filter)
        rows = fold_rows(cohort, modalities, np.arange(len(samples)), rf, crops)
        proba = sample_proba(row_probabilities(fitted.model, rows), rows.sample_pos, rf)
    phase = fitted.decoder.predict(proba)
    table = pd.DataFrame({"sample_id": samples["sample_id"].to_numpy()})
    for k, name in enumerate(CLASS_NAMES):
        table[f"p_{name}"] = np.round(proba[:, k], 6)
    table["phase"] = [CLASS_NAMES[int(p)] for p in phase]
    return table


def check_columns(fitted: FittedModel, cohort: Cohort) -> None:
    """Refuse a cohort the model cannot read as it was trained to."""
    info = fitted.info
    absent = [m for m in info["image_modalities"] if m not in cohort.modalities]
    if absent:
        raise DataError(f"{cohort.root}: the model uses modality {absent[0]!r}, which the "
                        f"cohort lacks (it has {', '.join(cohort.modalities)})")
    if fitted.pipeline is None:
        return
    numeric, categorical = feature_columns(fitted.config.metadata, cohort.samples.columns)
    saved = info["feature_columns"]
    if [*numeric, *categorical] != [*saved["numeric"], *saved["categorical"]]:
        have, want = {*numeric, *categorical}, {*saved["numeric"], *saved["categorical"]}
        missing, extra = sorted(want - have), sorted(have - want)
        detail = (f"missing {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1
                                                else "")) if missing else (
            f"{extra[0]!r} was absent when the model was trained" if extra else "another order")
        raise DataError(f"{cohort.root}: the cohort's feature columns do not match the model's "
                        f"({detail})")


def row_probabilities(model: MultimodalModel, rows) -> np.ndarray:
    """The model's class probabilities for each image row, in eval mode, never augmented."""
    model.eval()
    out = np.zeros((len(rows), len(CLASS_NAMES)))
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH):
            index = np.arange(start, min(start + EVAL_BATCH, len(rows)))
            images = [to_tensor(rows.crops[m][index]) for m in model.modalities]
            out[index] = model(rows.rf_proba[index], *images).float().softmax(dim=1).numpy()
    return out


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"
