"""One image branch per modality: backbone -> head (Linear -> BatchNorm -> ReLU -> Dropout per
unit) -> features, plus a classifier used when the branch is pre-trained or used alone."""

from __future__ import annotations

import torch
from torch import nn

from dfu_train.models.backbones import Backbone

N_CLASSES = 3


class ImageBranch(nn.Module):
    def __init__(self, backbone: Backbone, *, head_units: tuple[int, ...] = (64,),
                 dropout: float = 0.3):
        super().__init__()
        self.backbone = backbone
        layers: list[nn.Module] = []
        width = backbone.num_features
        for units in head_units:
            layers += [nn.Linear(width, units), nn.BatchNorm1d(units), nn.ReLU(inplace=True),
                       nn.Dropout(dropout)]
            width = units
        self.head = nn.Sequential(*layers)
        self.num_features = width
        self.classifier = nn.Linear(width, N_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of this branch alone."""
        return self.classifier(self.features(images))
