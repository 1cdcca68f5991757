"""The image stages of one fold: pretrain each branch (optionally in two phases: head on the
frozen backbone, then the backbone's top open, kept only if better) -> fusion stage 1 (backbones
frozen; optionally on their features computed once) -> fusion stage 2 (top of each backbone open,
BatchNorm frozen, kept only if better).

Everything here trains on image rows of the fold's training samples (never on resampled metadata
rows: those have no images) and is judged per sample: a sample's row probabilities are averaged;
a sample without images gets the forest's probabilities (or, with no forest in the trial, the
training class frequencies). The forest's probabilities enter as they are: out-of-fold for
training rows, from the full training fit for validation rows.

Randomness is drawn per (trial seed, stage, epoch), so a run continued from a checkpoint draws
exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dfu_train.cache import ArtifactCache, dump_arrays, dump_state, load_arrays, load_state
from dfu_train.config import TrialConfig
from dfu_train.data.images import Augmentation, augment, to_tensor
from dfu_train.data.rows import RowSet, sample_proba
from dfu_train.models.fusion import MultimodalModel, OnBackboneFeatures
from dfu_train.training.checkpoint import FoldCheckpoint
from dfu_train.training.freezing import set_trainable, unfreeze_top
from dfu_train.training.loop import LoopSettings, LoopState, fit_epochs
from dfu_train.training.losses import FocalLoss, MixupLoss, inverse_frequency_alpha
from dfu_train.training.metrics import kappa
from dfu_train.training.model import state_fingerprint, weights_fingerprint
from dfu_train.training.schedule import epoch_seed, schedule

EVAL_BATCH = 256
MIXUP_ALPHA = 0.4
FUSION_STAGES = ("stage1", "stage2")


@dataclass(frozen=True)
class Stage:
    """One row of the stage table: what a stage trains, on which inputs, with which settings.
    `open(model)` sets which parameters train (after everything is frozen) and returns facts
    for the stage's summary; a `cached` stage (pretraining) may be taken from an earlier trial;
    a `keep_if_better` stage (stage 2) is kept only if it beats the weights it starts from."""

    name: str
    epochs: int
    lr: float
    modalities: Callable[[MultimodalModel], tuple[str, ...]]
    with_rf: bool
    mixup: bool
    target: Callable[[MultimodalModel], nn.Module]
    open: Callable[[MultimodalModel], dict]
    cached: bool = False
    keep_if_better: bool = False
    mixup_alpha: float = MIXUP_ALPHA
    cache_phase: str | None = None  # a cached stage after the first of its branch: in the key
    frozen_features: bool = False  # train on each backbone's features, computed once per fold


@dataclass(frozen=True)
class BackboneFeatures:
    """Each frozen backbone's output on the fold's rows, computed once: `train[m]` is (views,
    rows, features), one view without augmentation; `val[m]` is (rows, features)."""

    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor]

    @property
    def views(self) -> int:
        return next(iter(self.train.values())).shape[0]


def stage_table(config: TrialConfig) -> dict[str, Stage]:
    """Every image stage of the trial by name, in the order of `schedule`."""
    table = {}
    for modality in config.image_modalities:
        branch = config.branch(modality)

        two_phase = branch.pretrain_top_epochs > 0

        def open_branch(model, modality=modality,
                        freeze_backbone=branch.freeze_backbone or two_phase):
            set_trainable(model.branches[modality], True)
            if freeze_backbone:
                set_trainable(model.branches[modality].backbone, False)
            return {}

        def open_branch_top(model, modality=modality, fraction=branch.pretrain_unfreeze_pct):
            open_branch(model, modality, freeze_backbone=True)
            opened = unfreeze_top(model.branches[modality].backbone.layer_groups, fraction)
            return {"opened_groups": len(opened)}

        name = f"pretrain:{modality}"
        table[name] = Stage(name, branch.pretrain_epochs, branch.pretrain_lr,
                            modalities=lambda model, m=modality: (m,), with_rf=False,
                            mixup=branch.mixup, target=lambda model, m=modality: model.branches[m],
                            open=open_branch, cached=True, mixup_alpha=branch.mixup_alpha)
        name = f"pretrain-top:{modality}"  # the study's second phase: top open, BatchNorm frozen
        table[name] = Stage(name, branch.pretrain_top_epochs, branch.pretrain_top_lr,
                            modalities=lambda model, m=modality: (m,), with_rf=False,
                            mixup=branch.mixup, target=lambda model, m=modality: model.branches[m],
                            open=open_branch_top, cached=True, keep_if_better=True,
                            mixup_alpha=branch.mixup_alpha, cache_phase="top")

    def open_heads(model) -> dict:
        set_trainable(model, True)
        for branch in model.branches.values():
            set_trainable(branch.backbone, False)
        return {}

    def open_top(model) -> dict:
        open_heads(model)
        opened = {m: unfreeze_top(b.backbone.layer_groups, config.stage2.unfreeze_pct)
                  for m, b in model.branches.items()}
        return {"opened_groups": {m: len(v) for m, v in opened.items()}}

    fused = {"modalities": lambda model: model.modalities, "with_rf": True, "mixup": False,
             "target": lambda model: model}
    table["stage1"] = Stage("stage1", config.stage1.epochs, config.stage1.lr, **fused,
                            open=open_heads, frozen_features=config.stage1.frozen_features)
    table["stage2"] = Stage("stage2", config.stage2.epochs, config.stage2.lr, **fused,
                            open=open_top, keep_if_better=True)
    return table


@dataclass
class ImageStages:
    """Runs the image stages of one fold; `report(metrics, checkpoint)` after every epoch."""

    config: TrialConfig
    train: RowSet
    val: RowSet
    val_fallback: np.ndarray  # (val samples, 3)
    val_labels: np.ndarray  # (val samples,)
    report: Callable[[dict, FoldCheckpoint | None], None]
    fold: int
    forest_state: dict | None
    meta_qwk: float | None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache: ArtifactCache = field(default_factory=ArtifactCache.off)
    cache_parts: dict = field(default_factory=dict)  # what identifies the data: cohort and folds
    config_id: str = ""  # the id the fold is recorded under (default: the config's)
    train_fallback: np.ndarray | None = None  # (train samples, 3): for `train_predictions`
    stages: dict = field(default_factory=dict)
    data_seconds: float = 0.0

    @property
    def recorded_id(self) -> str:
        return self.config_id or self.config.config_id

    def run(self, model: MultimodalModel, *, first_progress: int,
            resume: FoldCheckpoint | None) -> None:
        """Run every image stage after the forest, or continue at `resume`'s stage."""
        table = stage_table(self.config)
        offset = first_progress
        if resume is not None:
            self.stages = copy.deepcopy(resume.stages)
        for name, length in schedule(self.config):
            if name not in table:
                continue  # the forest ran before the image stages
            if resume is not None and name in resume.stages:
                offset += length
                continue  # finished before the checkpoint: its weights are in the model
            loop = resume.loop if resume is not None and resume.stage == name else None
            if table[name].cached and loop is None:
                self._pretrain_once(model, table[name], offset)
            else:
                self._run_stage(model, table[name], offset, loop)
            offset += length

    def _pretrain_once(self, model: MultimodalModel, stage: Stage, offset: int) -> None:
        """Pretrain a branch, or load the same branch pretrained by an earlier trial: the key
        holds everything pretraining reads (data, fold, rows, branch, image, loss and loop
        settings, seed), and nothing of the fusion stages."""
        config, name, (modality,) = self.config, stage.name, stage.modalities(model)
        branch = stage.target(model)
        parts = {
            **self.cache_parts, "modality": modality, "rows": list(model.modalities),
            "branch": config.identity()[modality], "image": self._image_identity,
            "weights": weights_fingerprint(config.image.pretrained),
            "loss": config.loss.model_dump(mode="json"),
            "optim": config.optim.model_dump(mode="json", exclude={"checkpoint_every"}),
            "seed": config.seed, "amp": self._amp,
        }
        if stage.cache_phase is not None:
            parts["phase"] = stage.cache_phase
        computed = []

        def pretrain() -> dict:
            self._run_stage(model, stage, offset, None)
            computed.append(name)
            return {"state": branch.state_dict(), "summary": self.stages[name]}

        artifact = self.cache.fetch("branch", parts, pretrain, dump=dump_state, load=load_state,
                                    label=f"{modality} {config.branch(modality).backbone} "
                                          f"{config.image.size}px fold {self.fold}")
        if computed:
            return
        branch.load_state_dict(artifact["state"])
        self.stages[name] = {**artifact["summary"], "seconds": 0.0, "data_seconds": 0.0,
                             "reused": True}
        progress = offset + stage.epochs
        checkpoint = FoldCheckpoint(self.recorded_id, self.fold, name, progress,
                                    copy.deepcopy(model.state_dict()), None,
                                    copy.deepcopy(self.stages), self.forest_state)
        self.report({"stage": name, "epoch": artifact["summary"]["epochs_run"] - 1,
                     "val_qwk": artifact["summary"]["best_qwk"], "progress": progress,
                     "meta_qwk": self.meta_qwk, "reused": True,
                     **self._fused(name, 0, None)}, checkpoint)

    def _fused(self, stage: str, epochs: int, best_qwk: float | None) -> dict:
        """What early stopping judges (`fused_qwk` at `fusion_epochs`): the fused prediction of
        the fold so far. Before the fusion stages that is the forest's (pretraining a branch
        changes no fused output yet, and a reused branch arrives in one step); in them, the best
        epoch so far, which is what the fold restores. `fusion_epochs` counts fusion epochs
        actually trained, so a stage that stops by its own patience advances no rung."""
        fused = stage in FUSION_STAGES
        done = sum(self.stages[s]["epochs_run"] for s in FUSION_STAGES
                   if s in self.stages and s != stage)
        earlier = [self.stages[s]["best_qwk"] for s in FUSION_STAGES
                   if s in self.stages and s != stage]
        if not fused:
            return {"fusion_epochs": done, "fused_qwk": max(earlier, default=self.meta_qwk)}
        return {"fusion_epochs": done + epochs,
                "fused_qwk": max([*earlier, best_qwk], key=lambda q: -1.0 if q is None else q)}

    @functools.cached_property
    def _augmentation(self) -> Augmentation:
        return self.config.image.augmentation()

    @functools.cached_property
    def _image_identity(self) -> dict:
        """The image settings as `config_id` sees them: a cache key that holds them is the
        same as before a setting added later existed, at its default."""
        return self.config.identity()["image"]

    @property
    def _amp(self) -> bool:
        return self.config.train.amp and self.device.type == "cuda"

    def _autocast(self):
        """bfloat16 autocast on CUDA when `train.amp`; nothing on CPU."""
        if self._amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run_stage(self, model: MultimodalModel, stage: Stage, offset: int,
                   resume: LoopState | None) -> None:
        config, started, name = self.config, time.perf_counter(), stage.name
        data_before = self.data_seconds
        set_trainable(model, False)
        baseline = float("-inf")
        facts = stage.open(model)
        target, modalities = stage.target(model), stage.modalities(model)
        with_rf, mixup, lr, epochs = stage.with_rf, stage.mixup, stage.lr, stage.epochs
        features = None
        if stage.frozen_features:
            features_started = time.perf_counter()
            features = self._backbone_features(model)
            target = OnBackboneFeatures(target)
            facts = {**facts, "feature_views": features.views,
                     "features_seconds": round(time.perf_counter() - features_started, 3)}
        loss = MixupLoss(self._loss()).to(self.device)
        settings = LoopSettings(
            epochs=epochs, lr=lr, optimizer=config.optim.optimizer,
            weight_decay=config.optim.weight_decay, grad_clip=config.optim.grad_clip,
            early_stop_patience=config.optim.early_stop_patience,
            plateau_patience=config.optim.plateau_patience,
            plateau_factor=config.optim.plateau_factor)

        def batches(epoch: int) -> Iterator:
            return self._train_batches(name, epoch, modalities, with_rf,
                                       stage.mixup_alpha if mixup else None, features)

        def evaluate(module: nn.Module) -> tuple[float, float]:
            return self._evaluate(module, modalities, with_rf, loss,
                                  features=None if features is None else features.val)

        if stage.keep_if_better and resume is None:
            target.eval()
            with torch.no_grad():  # kept only if it beats the weights it starts from
                baseline = evaluate(target)[0]

        def on_epoch(metrics: dict, snapshot: Callable[[], LoopState]) -> None:
            epoch = metrics["epoch"]
            checkpoint = None
            if (epoch + 1) % config.optim.checkpoint_every == 0 or epoch + 1 == epochs:
                checkpoint = FoldCheckpoint(
                    self.recorded_id, self.fold, name, offset + epoch + 1,
                    copy.deepcopy(model.state_dict()), snapshot(), copy.deepcopy(self.stages),
                    self.forest_state)
            self.report({**metrics, "progress": offset + epoch + 1, "meta_qwk": self.meta_qwk,
                         **self._fused(name, epoch + 1, metrics["best_qwk"])}, checkpoint)

        outcome = fit_epochs(target, stage=name, settings=settings, train_batches=batches,
                             evaluate=evaluate, loss_fn=loss, on_epoch=on_epoch,
                             baseline_qwk=baseline, resume=resume, autocast=self._autocast)
        summary = {"best_qwk": outcome.best_qwk, "best_epoch": outcome.best_epoch,
                   "epochs_run": outcome.epochs_run, "trainable_params": outcome.trainable,
                   "seconds": round(time.perf_counter() - started, 3),
                   "data_seconds": round(self.data_seconds - data_before, 3)}
        if stage.keep_if_better:
            summary["kept"] = outcome.best_epoch >= 0
        self.stages[name] = {**summary, **facts}

    def _loss(self) -> FocalLoss:
        config = self.config.loss
        alpha = None
        if config.alpha == "inverse_frequency":
            alpha = inverse_frequency_alpha(self.train.labels.numpy(), total=config.alpha_sum)
        return FocalLoss(gamma=config.focal_gamma, alpha=alpha,
                         label_smoothing=config.label_smoothing)

    def _backbone_features(self, model: MultimodalModel) -> BackboneFeatures:
        """Each frozen backbone's features of the fold's training and validation rows, computed
        once per (data, backbone weights, views) and cached like a pretrained branch.

        The backbone runs in eval mode. Training with it frozen runs it the same way: its
        BatchNorm layers, frozen, stay in eval mode (`keep_batch_norm_frozen`), and no
        registered backbone has dropout or stochastic depth in the layers it runs; so without
        augmentation these are exactly the features every epoch would compute."""
        config = self.config
        views = config.stage1.augment_views if config.image.augment else 0
        train, val = {}, {}
        for modality in model.modalities:
            backbone = model.branches[modality].backbone
            if any(p.requires_grad for p in backbone.parameters()):
                raise ValueError(f"frozen features of the {modality} backbone, which trains")
            parts = {**self.cache_parts, "modality": modality, "rows": list(model.modalities),
                     "size": config.image.size, "backbone": state_fingerprint(backbone),
                     "views": views, "amp": self._amp}
            if views:  # the augmentation draws
                parts.update(image=self._image_identity, seed=config.seed)
            expected = {"train": (max(views, 1), len(self.train), backbone.num_features),
                        "val": (len(self.val), backbone.num_features)}

            def compute(backbone=backbone, modality=modality) -> dict[str, np.ndarray]:
                # in batches of the sizes training and evaluation use: convolutions round the
                # same rows the same way in batches of one size, not always across sizes
                return {"train": self._embed(backbone, self.train, modality, views,
                                             config.image.batch_size),
                        "val": self._embed(backbone, self.val, modality, 0, EVAL_BATCH)[0]}

            def load(body: bytes, expected=expected) -> dict[str, np.ndarray] | None:
                arrays = load_arrays(body)
                shapes = {k: tuple(v.shape) for k, v in arrays.items()}
                return arrays if shapes == expected else None

            arrays = self.cache.fetch(
                "features", parts, compute, dump=dump_arrays, load=load,
                label=f"{modality} {config.branch(modality).backbone} {config.image.size}px "
                      f"fold {self.fold}")
            train[modality] = torch.as_tensor(arrays["train"]).to(self.device)
            val[modality] = torch.as_tensor(arrays["val"]).to(self.device)
        return BackboneFeatures(train, val)

    def _embed(self, backbone: nn.Module, rows: RowSet, modality: str, views: int,
               batch_size: int) -> np.ndarray:
        """(max(views, 1), rows, features): the backbone's output on `rows`' crops, unaugmented
        when `views` is 0, else on each of `views` augmented copies (view v drawn from its own
        seed, so a view is the same whichever trial draws it)."""
        was_training = backbone.training
        backbone.eval()
        out = np.zeros((max(views, 1), len(rows), backbone.num_features), dtype=np.float32)
        try:
            with torch.no_grad():
                for view in range(max(views, 1)):
                    generator = (torch.Generator().manual_seed(
                        epoch_seed(self.config.seed, f"stage1-view:{modality}", view))
                        if views else None)
                    for start in range(0, len(rows), batch_size):
                        index = np.arange(start, min(start + batch_size, len(rows)))
                        (batch,) = self._inputs(rows, index, (modality,), False, generator)
                        with self._autocast():
                            out[view, index] = backbone(batch).float().cpu().numpy()
        finally:
            backbone.train(was_training)
        return out

    def _inputs(self, rows: RowSet, index: np.ndarray, modalities, with_rf: bool,
                generator: torch.Generator | None,
                features: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        """The model's inputs for `rows[index]`: the forest's probabilities (`with_rf`) and each
        modality's images (augmented from `generator`), or its backbone's `features` (rows,
        features) in their place."""
        if features is not None:
            position = torch.as_tensor(index, device=self.device)
            rf = (rows.rf_proba[index].to(self.device),) if with_rf else ()
            return rf + tuple(features[m][position] for m in modalities)
        started = time.perf_counter()
        cuda, train = self.device.type == "cuda", self.config.train
        images = []
        for modality in modalities:
            batch = to_tensor(rows.crops[modality][index])
            if generator is not None:
                batch = augment(batch, modality, generator, self._augmentation)
            if cuda and train.pin_memory:
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=True)
            if cuda and train.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            images.append(batch)
        inputs = ((rows.rf_proba[index].to(self.device),) if with_rf else ()) + tuple(images)
        self.data_seconds += time.perf_counter() - started
        return inputs

    def _train_batches(self, stage: str, epoch: int, modalities, with_rf: bool,
                       mixup_alpha: float | None,
                       features: BackboneFeatures | None = None) -> Iterator:
        """The epoch's shuffled batches, mixed up with Beta(`mixup_alpha`, `mixup_alpha`)
        weights unless it is None; with `features`, each row's backbone features in place of
        its images (one of the pre-drawn views per row, drawn from the epoch's generator where
        augmentation would have drawn)."""
        seed = epoch_seed(self.config.seed, stage, epoch)
        torch.manual_seed(seed)  # dropout
        generator = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        order = torch.randperm(len(self.train), generator=generator).numpy()
        size = self.config.image.batch_size
        chunks = [order[i:i + size] for i in range(0, len(order), size)]
        if len(chunks) > 1 and len(chunks[-1]) == 1:  # BatchNorm cannot train on one row
            chunks[-2] = np.concatenate(chunks[-2:])
            chunks.pop()
        for index in chunks:
            if len(index) < 2:
                continue
            if features is not None:
                view = (torch.randint(features.views, (len(index),), generator=generator)
                        if features.views > 1 else torch.zeros(len(index), dtype=torch.long))
                position = torch.as_tensor(index)
                rf = (self.train.rf_proba[index].to(self.device),) if with_rf else ()
                inputs = rf + tuple(features.train[m][view.to(self.device),
                                                      position.to(self.device)]
                                    for m in modalities)
            else:
                augment_with = generator if self.config.image.augment else None
                inputs = self._inputs(self.train, index, modalities, with_rf, augment_with)
            labels = self.train.labels[index].to(self.device)
            if mixup_alpha is not None:
                lam = float(rng.beta(mixup_alpha, mixup_alpha))
                perm = torch.randperm(len(index), generator=generator)
                inputs = tuple(lam * x + (1 - lam) * x[perm.to(x.device)] for x in inputs)
                yield inputs, (labels, labels[perm.to(labels.device)], lam)
            else:
                yield inputs, labels

    def _row_proba(self, module: nn.Module, modalities, with_rf: bool,
                   loss: nn.Module | None = None, rows: RowSet | None = None,
                   features: dict[str, torch.Tensor] | None = None) -> tuple[np.ndarray, float]:
        """Row probabilities of `module` on `rows` (default: validation), never augmented (and
        the mean row loss, given `loss`); with `features`, `module` takes the rows' backbone
        features in place of their images."""
        rows = self.val if rows is None else rows
        row_proba = np.zeros((len(rows), 3))
        total = 0.0
        for start in range(0, len(rows), EVAL_BATCH):
            index = np.arange(start, min(start + EVAL_BATCH, len(rows)))
            with self._autocast():
                logits = module(*self._inputs(rows, index, modalities, with_rf, None,
                                              features)).float()
            row_proba[index] = logits.softmax(dim=1).cpu().numpy()
            if loss is not None:
                total += float(loss(logits, rows.labels[index].to(self.device))) * len(index)
        return row_proba, total / max(len(rows), 1)

    def _evaluate(self, module: nn.Module, modalities, with_rf: bool,
                  loss: nn.Module | None = None,
                  features: dict[str, torch.Tensor] | None = None) -> tuple[float, float]:
        """Sample-level validation QWK (0 where undefined) and mean row loss. Always of argmax
        predictions, whatever `decode` says: early stopping and the scheduler's rungs compare
        epochs and trials on one rule, and a decoder is fitted only once the model is final."""
        row_proba, val_loss = self._row_proba(module, modalities, with_rf, loss,
                                              features=features)
        proba = sample_proba(row_proba, self.val.sample_pos, self.val_fallback)
        qwk = kappa(self.val_labels, proba.argmax(axis=1))
        return (qwk if qwk is not None else 0.0), val_loss

    def final_predictions(self, model: MultimodalModel) -> tuple[np.ndarray, float | None]:
        """The trained model's sample probabilities and its row-level QWK (argmax of each row,
        as the earlier study scored rows)."""
        model.eval()
        with torch.no_grad():
            row_proba, _ = self._row_proba(model, model.modalities, True)
        row_qwk = (kappa(self.val.labels.numpy(), row_proba.argmax(axis=1))
                   if len(self.val) else None)
        return sample_proba(row_proba, self.val.sample_pos, self.val_fallback), row_qwk

    def train_predictions(self, model: MultimodalModel) -> np.ndarray:
        """The trained model's training-sample probabilities, made as `final_predictions` makes
        validation ones (eval mode, no augmentation, rows averaged per sample; a sample without
        images keeps its `train_fallback` row): what a decoder is fitted on, so it never sees a
        validation row. In-sample for the image weights, out-of-fold for the forest input."""
        if self.train_fallback is None:
            raise ValueError("train_predictions needs train_fallback (the training samples' "
                             "forest or prior probabilities)")
        model.eval()
        with torch.no_grad():
            row_proba, _ = self._row_proba(model, model.modalities, True, rows=self.train)
        return sample_proba(row_proba, self.train.sample_pos, self.train_fallback)


