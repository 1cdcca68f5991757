"""One epoch loop shared by every stage: train, evaluate under no_grad, reduce the learning rate
on a plateau of validation QWK, stop early, and restore the best weights.

The loop can stop after any epoch and continue from a `LoopState`: everything it carries between
epochs (optimizer, scheduler, best weights) is in it, and the early-stopping test runs at the top
of an epoch, so a continued loop makes the decisions the uninterrupted one would have made.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class LoopState:
    """What the loop carries from one epoch to the next; saved in checkpoints."""

    next_epoch: int
    optimizer: dict
    plateau: dict
    best_qwk: float
    best_epoch: int
    best_state: dict

    def to_dict(self) -> dict[str, Any]:
        return {"next_epoch": self.next_epoch, "optimizer": self.optimizer,
                "plateau": self.plateau, "best_qwk": self.best_qwk,
                "best_epoch": self.best_epoch, "best_state": self.best_state}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        return cls(**data)


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
               loss_fn: Callable[[torch.Tensor, Any], torch.Tensor],
               on_epoch: Callable[..., None], baseline_qwk: float = float("-inf"),
               resume: LoopState | None = None,
               autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               ) -> LoopOutcome:
    """Train `model` for up to `settings.epochs`; `evaluate` returns (val QWK, val loss) and is
    called under no_grad in eval mode. The model ends with its best weights (or the starting ones,
    when no epoch beat `baseline_qwk`).

    `on_epoch(metrics, snapshot)` gets a zero-argument `snapshot` that returns the `LoopState` to
    continue after this epoch (built only when called: it copies the weights). `resume` continues
    such a state; the caller has loaded the model's weights of that moment. `autocast` wraps
    each training forward pass (mixed precision on GPUs).
    """
    trainable = require_trainable(model, stage)
    optimizer = build_optimizer(model, settings)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=settings.plateau_factor, patience=settings.plateau_patience)
    best_qwk, best_epoch, best_state = baseline_qwk, -1, copy.deepcopy(model.state_dict())
    start = 0
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)
        plateau.load_state_dict(resume.plateau)
        best_qwk, best_epoch, best_state = resume.best_qwk, resume.best_epoch, resume.best_state
        start = resume.next_epoch
    epochs_run = start
    for epoch in range(start, settings.epochs):
        if epoch > 0 and (epoch - 1) - max(best_epoch, 0) >= settings.early_stop_patience:
            break
        model.train()
        keep_batch_norm_frozen(model)
        total, count = 0.0, 0
        for inputs, target in train_batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(*inputs).float(), target)
            loss.backward()
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], settings.grad_clip)
            optimizer.step()
            rows = len(inputs[0])
            total, count = total + loss.item() * rows, count + rows
        model.eval()
        with torch.no_grad():
            val_qwk, val_loss = evaluate(model)
        plateau.step(val_qwk)
        epochs_run = epoch + 1
        if val_qwk > best_qwk:
            best_qwk, best_epoch, best_state = val_qwk, epoch, copy.deepcopy(model.state_dict())

        def snapshot(next_epoch=epoch + 1, best=(best_qwk, best_epoch, best_state)) -> LoopState:
            return LoopState(next_epoch, copy.deepcopy(optimizer.state_dict()),
                             copy.deepcopy(plateau.state_dict()), *best)  # best: never mutated

        on_epoch({"stage": stage, "epoch": epoch, "val_qwk": val_qwk, "best_qwk": best_qwk,
                  "val_loss": val_loss,
                  "train_loss": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"],
                  "trainable_params": trainable}, snapshot)
    model.load_state_dict(best_state)
    return LoopOutcome(best_qwk, best_epoch, epochs_run, trainable)
