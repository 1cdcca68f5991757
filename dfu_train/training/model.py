"""Build a trial's model from its config: branches and fusion head, each from its own seed."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
from torch import nn

from dfu_train.config import TrialConfig
from dfu_train.models.backbones import create_backbone
from dfu_train.models.branches import ImageBranch
from dfu_train.models.fusion import MultimodalModel, create_fusion_head, head_options
from dfu_train.training.schedule import epoch_seed


def build_model(config: TrialConfig) -> MultimodalModel:
    """Branches for the trial's image modalities and, with metadata, the configured fusion head.
    Each part is initialised from its own seed, so a branch starts the same whatever other
    branches the trial has (a cached pretrained branch depends on its own settings only)."""
    branches = {}
    for modality in config.image_modalities:
        torch.manual_seed(epoch_seed(config.seed, f"init:{modality}", 0))
        branch = config.branch(modality)
        backbone = create_backbone(branch.backbone, pretrained=config.image.pretrained)
        branches[modality] = ImageBranch(backbone, head_units=branch.head_units,
                                         dropout=branch.dropout)
    head = None
    if config.uses_metadata:
        torch.manual_seed(epoch_seed(config.seed, "init:fusion", 0))
        fusion = config.fusion
        head = create_fusion_head(
            fusion.head, image_features=sum(b.num_features for b in branches.values()),
            **{name: getattr(fusion, name) for name in head_options(fusion.head)})
    return MultimodalModel(branches, head)


@functools.lru_cache(maxsize=8)
def weights_fingerprint(pretrained: str) -> str:
    """What a branch's starting weights are: `none`, `imagenet`, or the SHA-256 of a state-dict
    file (a file replaced under the same name is a different start)."""
    path = Path(pretrained)
    if pretrained in ("none", "imagenet") or not path.is_file():
        return pretrained
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's weights and buffers (names, dtypes, shapes, values): the same
    module whichever way it came by them (trained now, loaded from the cache, resumed)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
