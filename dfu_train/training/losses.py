"""Focal loss with per-class alpha, applied once (no class weights elsewhere on top of it)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def inverse_frequency_alpha(labels: np.ndarray, *, n_classes: int = 3,
                            total: float = 1.0) -> torch.Tensor:
    """Per-class weights proportional to 1 / training-class frequency, summing to `total`.
    A class absent from training gets the largest weight of the present ones."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes).astype(float)
    if not counts.any():
        raise ValueError("no training labels to weight")
    inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    inverse[counts == 0] = inverse.max()
    return torch.tensor(inverse / inverse.sum() * total, dtype=torch.float32)


class FocalLoss(nn.Module):
    """mean_i alpha[y_i] * (1 - p_i)^gamma * CE_i, with optional label smoothing in CE.

    gamma = 0 and alpha = None is plain (smoothed) cross-entropy, which the tests use as an anchor.
    """

    def __init__(self, *, gamma: float = 2.0, alpha: torch.Tensor | None = None,
                 label_smoothing: float = 0.0):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0 (got {gamma})")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label smoothing must lie in [0, 1) (got {label_smoothing})")
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("alpha", alpha if alpha is not None else torch.empty(0))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy(logits, target, reduction="none",
                                         label_smoothing=self.label_smoothing)
        p_true = logits.softmax(dim=1).gather(1, target[:, None]).squeeze(1)
        loss = (1 - p_true).clamp(min=0) ** self.gamma * ce
        if self.alpha.numel():
            loss = self.alpha[target] * loss
        return loss.mean()


class MixupLoss(nn.Module):
    """lam * loss(y_a) + (1 - lam) * loss(y_b) for mixed batches; plain loss otherwise."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits, target):
        if isinstance(target, tuple):
            y_a, y_b, lam = target
            return lam * self.loss(logits, y_a) + (1 - lam) * self.loss(logits, y_b)
        return self.loss(logits, target)
