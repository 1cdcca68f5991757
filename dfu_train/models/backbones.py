"""Image backbones by name: one registry, one factory, one surface.

Every backbone takes images in [0, 255] (normalisation is part of the model, from its registry
entry), returns pooled features of size `num_features`, and exposes `layer_groups`: its layers as
an ordered list from the stem to the top, so fine-tuning can unfreeze "the top N %" by group
instead of matching parameter names.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
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
    state = read_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or len(missing) == len(list(model.state_dict())):
        raise ConfigError(f"image.pretrained: {path} does not fit this backbone "
                          f"({len(unexpected)} unexpected, {len(missing)} missing tensors)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict (names -> tensors) from a file, read with `weights_only=True` so no pickled
    code runs. Anything else is one ConfigError naming the file; torch's own message is left
    out, as it suggests `weights_only=False`, which would run the file's code."""
    if not path.is_file():
        raise ConfigError(f"image.pretrained: {path}: weights file not found "
                          "(use none, imagenet, or a path to a state dict)")
    try:
        with warnings.catch_warnings():  # torch warns about some files on stderr before failing
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike: not weights
        raise ConfigError(f"image.pretrained: {path}: not a state-dict file torch can read "
                          f"safely ({type(exc).__name__}); save one with "
                          "torch.save(model.state_dict(), path)") from None
    if not (isinstance(state, Mapping) and state and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise ConfigError(f"image.pretrained: {path}: holds a {type(state).__name__}, not a state "
                          "dict (parameter names -> tensors); save one with "
                          "torch.save(model.state_dict(), path)")
    return state


def check_weights(pretrained: str) -> None:
    """Refuse, before any work, an `image.pretrained` file that is missing or not a state dict."""
    if pretrained not in ("none", "imagenet"):
        stat = Path(pretrained).stat() if Path(pretrained).is_file() else None
        _check_weights_file(pretrained, stat and (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=16)
def _check_weights_file(path: str, version) -> None:
    """Once per file version: a sweep plans many configs with the same weights."""
    read_state_dict(Path(path))


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
