"""Fusion heads by name. Each takes the forest's probabilities exactly as the forest gave them
(never normalised, batch-normed or re-learned), the image features and the image branches'
logits, and returns class logits.

The earlier study's fusion failed when BatchNorm sat on the forest's probabilities and when an
unconstrained learned weight collapsed; the heads here keep the forest's output intact, and
`residual` starts as exactly the forest and learns only a bounded image correction.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import MappingProxyType

import torch
from torch import nn

from dfu_train.errors import ConfigError, did_you_mean

N_CLASSES = 3
EPS = 1e-6


def _mlp(width: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = units
    layers.append(nn.Linear(width, N_CLASSES))
    return nn.Sequential(*layers)


class FeatureConcat(nn.Module):
    """[forest probabilities, (projected) image features] -> MLP -> logits."""

    def __init__(self, image_features: int, *, projection: int = 0, hidden: tuple[int, ...] = (),
                 dropout: float = 0.0):
        super().__init__()
        self.project = nn.Linear(image_features, projection) if projection else nn.Identity()
        self.mlp = _mlp(N_CLASSES + (projection or image_features), hidden, dropout)

    def forward(self, rf_proba, image_features, image_logits):
        return self.mlp(torch.cat([rf_proba, self.project(image_features)], dim=1))


class ProbConcat(nn.Module):
    """[image probabilities, forest probabilities] -> MLP -> logits."""

    def __init__(self, image_features: int, *, hidden: tuple[int, ...] = (), dropout: float = 0.0):
        super().__init__()
        self.mlp = _mlp(2 * N_CLASSES, hidden, dropout)

    def forward(self, rf_proba, image_features, image_logits):
        return self.mlp(torch.cat([image_logits.softmax(dim=1), rf_proba], dim=1))


class Gated(nn.Module):
    """A per-sample gate from the image features mixes image and forest log-probabilities."""

    def __init__(self, image_features: int):
        super().__init__()
        self.gate = nn.Linear(image_features, 1)

    def forward(self, rf_proba, image_features, image_logits):
        gate = torch.sigmoid(self.gate(image_features))
        return gate * image_logits.log_softmax(dim=1) + (1 - gate) * torch.log(rf_proba + EPS)


class Residual(nn.Module):
    """Forest log-probabilities plus a bounded image correction that starts at exactly zero."""

    def __init__(self, image_features: int, *, residual_bound: float = 1.0):
        super().__init__()
        if residual_bound <= 0:
            raise ConfigError(f"fusion residual bound must be positive (got {residual_bound})")
        self.bound = residual_bound
        self.correction = nn.Linear(image_features, N_CLASSES)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)

    def forward(self, rf_proba, image_features, image_logits):
        correction = self.bound * torch.tanh(self.correction(image_features))
        return torch.log(rf_proba + EPS) + correction


class FixedBlend(nn.Module):
    """log(w * image probabilities + (1 - w) * forest probabilities), w a config value."""

    def __init__(self, image_features: int, *, blend_weight: float = 0.3):
        super().__init__()
        if not 0 <= blend_weight <= 1:
            raise ConfigError(f"fusion fixed_blend weight must lie in [0, 1] (got {blend_weight})")
        self.weight = blend_weight

    def forward(self, rf_proba, image_features, image_logits):
        blend = self.weight * image_logits.softmax(dim=1) + (1 - self.weight) * rf_proba
        return torch.log(blend + EPS)


FUSION_HEADS: MappingProxyType[str, Callable[..., nn.Module]] = MappingProxyType({
    "feature_concat": FeatureConcat,
    "prob_concat": ProbConcat,
    "gated": Gated,
    "residual": Residual,
    "fixed_blend": FixedBlend,
})


def head_options(name: str) -> tuple[str, ...]:
    """The `fusion.*` options the head takes (its keyword-only arguments, named as in the
    config): the only fusion settings that change a trial with this head."""
    parameters = inspect.signature(FUSION_HEADS[name]).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def create_fusion_head(name: str, *, image_features: int, **options) -> nn.Module:
    if name not in FUSION_HEADS:
        raise ConfigError(f"unknown fusion head {name!r}{did_you_mean(name, FUSION_HEADS)}; "
                          f"choose from {', '.join(FUSION_HEADS)}")
    unknown = sorted(set(options) - set(head_options(name)))
    if unknown:
        raise ConfigError(f"fusion head {name!r} takes no option {unknown[0]!r}; it takes "
                          f"{', '.join(head_options(name)) or 'none'}")
    return FUSION_HEADS[name](image_features, **options)


class MultimodalModel(nn.Module):
    """Image branches (one per modality) and, when the forest is in the trial, a fusion head.

    The branches' features are concatenated; their class log-probabilities are averaged. Without
    a fusion head (image-only trials) that average is the prediction.
    """

    def __init__(self, branches: dict[str, nn.Module], head: nn.Module | None):
        super().__init__()
        self.branches = nn.ModuleDict(branches)
        self.head = head

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.branches)

    def forward(self, rf_proba: torch.Tensor, *images: torch.Tensor) -> torch.Tensor:
        return self.fuse(rf_proba, *(branch.backbone(batch)
                                     for branch, batch in zip(self.branches.values(), images)))

    def fuse(self, rf_proba: torch.Tensor, *backbone_features: torch.Tensor) -> torch.Tensor:
        """`forward` from each backbone's output on its modality's images onwards."""
        features, log_probs = [], []
        for branch, pooled in zip(self.branches.values(), backbone_features):
            feats = branch.head(pooled)
            features.append(feats)
            log_probs.append(branch.classifier(feats).log_softmax(dim=1))
        image_logits = torch.stack(log_probs).mean(dim=0)
        if self.head is None:
            return image_logits
        return self.head(rf_proba, torch.cat(features, dim=1), image_logits)


class OnBackboneFeatures(nn.Module):
    """`model` taking its backbones' outputs instead of images: what a stage with every backbone
    frozen (and so a fixed function of its input) trains when the features are computed once.
    It holds the model's heads, classifiers and fusion head (the same modules), not its
    backbones, so the weights a training loop copies every epoch are only those that train."""

    def __init__(self, model: MultimodalModel):
        super().__init__()
        self.heads = nn.ModuleDict({m: b.head for m, b in model.branches.items()})
        self.classifiers = nn.ModuleDict({m: b.classifier for m, b in model.branches.items()})
        self.fusion = model.head
        self._fuse = model.fuse  # a bound method: not registered, so no backbone comes along

    def forward(self, rf_proba: torch.Tensor, *backbone_features: torch.Tensor) -> torch.Tensor:
        return self._fuse(rf_proba, *backbone_features)
