"""The image stages of one fold: pretrain each branch -> fusion stage 1 (backbones frozen) ->
fusion stage 2 (top of each backbone open, BatchNorm frozen, kept only if better).

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dfu_train.cache import ArtifactCache, dump_state, load_state
from dfu_train.config import TrialConfig
from dfu_train.data.images import augment, to_tensor
from dfu_train.data.rows import RowSet, sample_proba
from dfu_train.models.fusion import MultimodalModel
from dfu_train.training.checkpoint import FoldCheckpoint
from dfu_train.training.freezing import set_trainable, unfreeze_top
from dfu_train.training.loop import LoopSettings, LoopState, fit_epochs
from dfu_train.training.losses import FocalLoss, MixupLoss, inverse_frequency_alpha
from dfu_train.training.metrics import kappa
from dfu_train.training.model import weights_fingerprint
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


def stage_table(config: TrialConfig) -> dict[str, Stage]:
    """Every image stage of the trial by name, in the order of `schedule`."""
    table = {}
    for modality in config.image_modalities:
        branch = config.branch(modality)

        def open_branch(model, modality=modality, freeze_backbone=branch.freeze_backbone):
            set_trainable(model.branches[modality], True)
            if freeze_backbone:
                set_trainable(model.branches[modality].backbone, False)
            return {}

        name = f"pretrain:{modality}"
        table[name] = Stage(name, branch.pretrain_epochs, branch.pretrain_lr,
                            modalities=lambda model, m=modality: (m,), with_rf=False,
                            mixup=branch.mixup, target=lambda model, m=modality: model.branches[m],
                            open=open_branch, cached=True)

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
                            open=open_heads)
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
            "branch": config.branch(modality).model_dump(mode="json"),
            "image": config.image.model_dump(mode="json"),
            "weights": weights_fingerprint(config.image.pretrained),
            "loss": config.loss.model_dump(mode="json"),
            "optim": config.optim.model_dump(mode="json", exclude={"checkpoint_every"}),
            "seed": config.seed, "amp": self._amp,
        }
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
        loss = MixupLoss(self._loss()).to(self.device)
        settings = LoopSettings(
            epochs=epochs, lr=lr, optimizer=config.optim.optimizer,
            weight_decay=config.optim.weight_decay, grad_clip=config.optim.grad_clip,
            early_stop_patience=config.optim.early_stop_patience,
            plateau_patience=config.optim.plateau_patience,
            plateau_factor=config.optim.plateau_factor)

        def batches(epoch: int) -> Iterator:
            return self._train_batches(name, epoch, modalities, with_rf, mixup)

        def evaluate(module: nn.Module) -> tuple[float, float]:
            return self._evaluate(module, modalities, with_rf, loss)

        if stage.keep_if_better and resume is None:
            model.eval()
            with torch.no_grad():  # stage 2 is kept only if it beats the weights it starts from
                baseline = evaluate(model)[0]

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

    def _inputs(self, rows: RowSet, index: np.ndarray, modalities, with_rf: bool,
                generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        started = time.perf_counter()
        cuda, train = self.device.type == "cuda", self.config.train
        images = []
        for modality in modalities:
            batch = to_tensor(rows.crops[modality][index])
            if generator is not None:
                batch = augment(batch, modality, generator)
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
                       mixup: bool) -> Iterator:
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
            augment_with = generator if self.config.image.augment else None
            inputs = self._inputs(self.train, index, modalities, with_rf, augment_with)
            labels = self.train.labels[index].to(self.device)
            if mixup:
                lam = float(rng.beta(MIXUP_ALPHA, MIXUP_ALPHA))
                perm = torch.randperm(len(index), generator=generator)
                inputs = tuple(lam * x + (1 - lam) * x[perm.to(x.device)] for x in inputs)
                yield inputs, (labels, labels[perm.to(labels.device)], lam)
            else:
                yield inputs, labels

    def _row_proba(self, module: nn.Module, modalities, with_rf: bool,
                   loss: nn.Module | None = None,
                   rows: RowSet | None = None) -> tuple[np.ndarray, float]:
        """Row probabilities of `module` on `rows` (default: validation), never augmented (and
        the mean row loss, given `loss`)."""
        rows = self.val if rows is None else rows
        row_proba = np.zeros((len(rows), 3))
        total = 0.0
        for start in range(0, len(rows), EVAL_BATCH):
            index = np.arange(start, min(start + EVAL_BATCH, len(rows)))
            with self._autocast():
                logits = module(*self._inputs(rows, index, modalities, with_rf, None)).float()
            row_proba[index] = logits.softmax(dim=1).cpu().numpy()
            if loss is not None:
                total += float(loss(logits, rows.labels[index].to(self.device))) * len(index)
        return row_proba, total / max(len(rows), 1)

    def _evaluate(self, module: nn.Module, modalities, with_rf: bool,
                  loss: nn.Module | None = None) -> tuple[float, float]:
        """Sample-level validation QWK (0 where undefined) and mean row loss. Always of argmax
        predictions, whatever `decode` says: early stopping and the scheduler's rungs compare
        epochs and trials on one rule, and a decoder is fitted only once the model is final."""
        row_proba, val_loss = self._row_proba(module, modalities, with_rf, loss)
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


