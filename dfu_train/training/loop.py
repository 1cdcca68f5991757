"""One epoch loop shared by every stage: train, evaluate under no_grad, reduce the learning rate
on a plateau of validation QWK, stop early, and restore the best weights."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from dfu_train.training.freezing import keep_batch_norm_frozen, require_trainable

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    lr: float
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    early_stop_patience: int = 10
    plateau_patience: int = 4
    plateau_factor: float = 0.5


@dataclass(frozen=True)
class LoopOutcome:
    best_qwk: float
    best_epoch: int  # 0-based; -1 when no epoch beat the starting weights
    epochs_run: int
    trainable: int


def build_optimizer(model: nn.Module, settings: LoopSettings) -> torch.optim.Optimizer:
    """A fresh optimizer over the parameters that train in this stage (rebuilt every stage)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}; choose adam or adamw")


def fit_epochs(model: nn.Module, *, stage: str, settings: LoopSettings,
               train_batches: Callable[[int], Iterable[Batch]],
               evaluate: Callable[[nn.Module], tuple[float, float]],
               loss_fn: nn.Module, on_epoch: Callable[[dict], None],
               baseline_qwk: float = float("-inf")) -> LoopOutcome:
    """Train `model` for up to `settings.epochs`; `evaluate` returns (val QWK, val loss) and is
    called under no_grad in eval mode. The model ends with its best weights (or the starting ones,
    when no epoch beat `baseline_qwk`)."""
    trainable = require_trainable(model, stage)
    optimizer = build_optimizer(model, settings)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=settings.plateau_factor, patience=settings.plateau_patience)
    best_qwk, best_epoch, best_state = baseline_qwk, -1, copy.deepcopy(model.state_dict())
    epochs_run = 0
    for epoch in range(settings.epochs):
        model.train()
        keep_batch_norm_frozen(model)
        total, count = 0.0, 0
        for inputs, target in train_batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(*inputs), target)
            loss.backward()
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], settings.grad_clip)
            optimizer.step()
            total, count = total + loss.item() * len(target), count + len(target)
        model.eval()
        with torch.no_grad():
            val_qwk, val_loss = evaluate(model)
        plateau.step(val_qwk)
        epochs_run = epoch + 1
        if val_qwk > best_qwk:
            best_qwk, best_epoch, best_state = val_qwk, epoch, copy.deepcopy(model.state_dict())
        on_epoch({"stage": stage, "epoch": epoch, "val_qwk": val_qwk, "val_loss": val_loss,
                  "train_loss": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"],
                  "trainable_params": trainable})
        if epoch - max(best_epoch, 0) >= settings.early_stop_patience:
            break
    model.load_state_dict(best_state)
    return LoopOutcome(best_qwk, best_epoch, epochs_run, trainable)
