"""The fold's schedule in `progress` steps (the ASHA time attribute) and per-epoch seeds."""

from __future__ import annotations

import hashlib

from dfu_train.config import TrialConfig


def schedule(config: TrialConfig) -> list[tuple[str, int]]:
    """The fold's stages and their lengths in `progress` steps (epochs; the forest is one step).
    Stages of length 0 are skipped."""
    stages = [("forest", 1)] if config.uses_metadata else []
    for modality in config.image_modalities:
        stages.append((f"pretrain:{modality}", config.branch(modality).pretrain_epochs))
        stages.append((f"pretrain-top:{modality}", config.branch(modality).pretrain_top_epochs))
    if config.image_modalities:
        stages += [("stage1", config.stage1.epochs), ("stage2", config.stage2.epochs)]
    return [(name, length) for name, length in stages if length > 0]


def schedule_length(config: TrialConfig) -> int:
    """The whole fold in `progress` steps: ASHA's `max_t`."""
    return sum(length for _, length in schedule(config))


def fusion_length(config: TrialConfig) -> int:
    """The fusion stages' epochs: the horizon of early stopping on the fused QWK (fold-asha)."""
    return sum(length for name, length in schedule(config) if name in ("stage1", "stage2"))


def epoch_seed(seed: int, stage: str, epoch: int) -> int:
    digest = hashlib.sha256(f"{seed}/{stage}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF
