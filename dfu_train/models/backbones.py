"""Image backbones by name: one registry, one factory, one surface.

Every backbone takes images in [0, 255] (normalisation is part of the model, from its registry
entry), returns pooled features of size `num_features`, and exposes `layer_groups`: its layers as
an ordered list from the stem to the top, so fine-tuning can unfreeze "the top N %" by group
instead of matching parameter names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from dfu_train.errors import ConfigError, did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Normalise, run the groups in order, global-average-pool."""

    def __init__(self, groups: list[nn.Module], num_features: int, mean, std):
        super().__init__()
        self.layer_groups = nn.ModuleList(groups)
        self.num_features = num_features
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        for group in self.layer_groups:
            x = group(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[str], Backbone]  # takes the pretrained source: "none", "imagenet" or a path
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def _simple_cnn(pretrained: str) -> Backbone:
    if pretrained != "none":
        raise ConfigError("simple_cnn has no pretrained weights; use image.pretrained: none")

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))

    return Backbone([block(3, 16), block(16, 32), block(32, 64)], 64, (0.5,) * 3, (0.25,) * 3)


def _efficientnet(variant: str) -> Callable[[str], Backbone]:
    def build(pretrained: str) -> Backbone:
        from efficientnet_pytorch import EfficientNet

        name = f"efficientnet-{variant}"
        model = (EfficientNet.from_pretrained(name) if pretrained == "imagenet"
                 else EfficientNet.from_name(name))
        _load_local(model, pretrained)
        stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
        head = nn.Sequential(model._conv_head, model._bn1, model._swish)
        return Backbone([stem, *model._blocks, head], model._fc.in_features,
                        IMAGENET_MEAN, IMAGENET_STD)

    return build


def _torchvision(name: str) -> Callable[[str], Backbone]:
    def build(pretrained: str) -> Backbone:
        import torchvision

        model = torchvision.models.get_model(
            name, weights="DEFAULT" if pretrained == "imagenet" else None)
        _load_local(model, pretrained)
        if name == "resnet50":
            stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
            groups = [stem, *model.layer1, *model.layer2, *model.layer3, *model.layer4]
            return Backbone(groups, model.fc.in_features, IMAGENET_MEAN, IMAGENET_STD)
        if name == "densenet121":
            groups = [*model.features, nn.ReLU(inplace=False)]
            return Backbone(groups, model.classifier.in_features, IMAGENET_MEAN, IMAGENET_STD)
        return Backbone(list(model.features), model.classifier[0].in_features,
                        IMAGENET_MEAN, IMAGENET_STD)

    return build


def _load_local(model: nn.Module, pretrained: str) -> None:
    """Weights from a local file (a state dict), loaded without executing pickled code."""
    if pretrained in ("none", "imagenet"):
        return
    path = Path(pretrained)
    if not path.is_file():
        raise ConfigError(f"image.pretrained: weights file {path} not found "
                          "(use none, imagenet, or a path to a state dict)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or len(missing) == len(list(model.state_dict())):
        raise ConfigError(f"image.pretrained: {path} does not fit this backbone "
                          f"({len(unexpected)} unexpected, {len(missing)} missing tensors)")


BACKBONES = MappingProxyType({
    "simple_cnn": BackboneSpec(_simple_cnn, (0.5,) * 3, (0.25,) * 3),
    **{f"efficientnet-b{i}": BackboneSpec(_efficientnet(f"b{i}")) for i in range(4)},
    "densenet121": BackboneSpec(_torchvision("densenet121")),
    "resnet50": BackboneSpec(_torchvision("resnet50")),
    "mobilenet_v3_large": BackboneSpec(_torchvision("mobilenet_v3_large")),
})


def create_backbone(name: str, *, pretrained: str = "none") -> Backbone:
    """The only constructor: an unknown name fails at once and lists the registered ones."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}{did_you_mean(name, BACKBONES)}; "
                          f"choose from {', '.join(BACKBONES)}")
    return BACKBONES[name].build(pretrained)
