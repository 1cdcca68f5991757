"""Which parameters train in each stage, decided by layer group, never by parameter-name strings.

The earlier study once froze everything in stage 1 (a name rule matched the classifier too) and
changed nothing in stage 2; so every stage counts its trainable parameters and refuses zero.
"""

from __future__ import annotations

import math

from torch import nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


def unfreeze_top(layer_groups: nn.ModuleList, fraction: float) -> list[int]:
    """Make the top `fraction` of the groups trainable (at least one when fraction > 0), except
    their BatchNorm layers, whose weights stay frozen. Returns the indices of the opened groups."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"unfreeze fraction must lie in [0, 1] (got {fraction})")
    count = math.ceil(len(layer_groups) * fraction) if fraction > 0 else 0
    opened = list(range(len(layer_groups) - count, len(layer_groups)))
    for index in opened:
        set_trainable(layer_groups[index], True)
        for module in layer_groups[index].modules():
            if isinstance(module, BATCH_NORMS):
                set_trainable(module, False)
    return opened


def keep_batch_norm_frozen(module: nn.Module) -> None:
    """Put BatchNorm layers whose weights are frozen back in eval mode (call after `.train()`), so
    their running statistics do not move."""
    for child in module.modules():
        if isinstance(child, BATCH_NORMS) and not any(p.requires_grad for p in child.parameters()):
            child.eval()


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def require_trainable(module: nn.Module, stage: str) -> int:
    """The number of trainable parameters; a stage with none is a configuration error."""
    count = count_trainable(module)
    if count == 0:
        raise ValueError(f"stage {stage!r} has no trainable parameters")
    return count
