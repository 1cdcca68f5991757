"""Focal loss reduces to cross-entropy at gamma 0; freezing works by layer group and keeps
BatchNorm statistics still."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfu_train.models.backbones import create_backbone
from dfu_train.training.freezing import (count_trainable, keep_batch_norm_frozen,
                                         require_trainable, set_trainable, unfreeze_top)
from dfu_train.training.losses import FocalLoss, inverse_frequency_alpha


def _batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, generator=generator), torch.randint(0, 3, (16,), generator=generator)


def test_focal_loss_at_gamma_zero_is_cross_entropy_with_smoothing():
    logits, target = _batch()
    expected = nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
    assert torch.allclose(FocalLoss(gamma=0, label_smoothing=0.1)(logits, target), expected)


def test_focal_loss_down_weights_easy_examples():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
    target = torch.tensor([0, 0])
    per_example = [FocalLoss(gamma=2)(logits[i:i + 1], target[i:i + 1]) /
                   nn.functional.cross_entropy(logits[i:i + 1], target[i:i + 1]) for i in range(2)]
    assert per_example[0] < 0.01 < 0.3 < per_example[1]


def test_alpha_is_inverse_frequency_normalised_and_applied_once():
    alpha = inverse_frequency_alpha(np.array([0] * 30 + [1] * 60 + [2] * 10), total=3.0)
    assert torch.isclose(alpha.sum(), torch.tensor(3.0))
    assert alpha[2] > alpha[0] > alpha[1]
    assert torch.isclose(alpha[2] / alpha[1], torch.tensor(6.0))
    logits, target = _batch()
    weighted = FocalLoss(gamma=0, alpha=alpha)(logits, target)
    ce = nn.functional.cross_entropy(logits, target, reduction="none")
    assert torch.isclose(weighted, (alpha[target] * ce).mean())


def test_absent_class_gets_the_largest_weight():
    alpha = inverse_frequency_alpha(np.array([0, 0, 1]))
    assert alpha[2] == alpha.max()


def test_unfreeze_top_opens_whole_groups_from_the_top_but_not_batch_norm():
    backbone = create_backbone("efficientnet-b0")
    set_trainable(backbone, False)
    assert count_trainable(backbone) == 0
    groups = backbone.layer_groups
    opened = unfreeze_top(groups, 0.2)
    assert opened == list(range(len(groups) - len(opened), len(groups))) and opened
    for index, group in enumerate(groups):
        for module in group.modules():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            expected = index in opened and not isinstance(module, nn.BatchNorm2d)
            assert all(p.requires_grad == expected for p in own)
    with pytest.raises(ValueError, match="no trainable parameters"):
        require_trainable(nn.Sequential(nn.BatchNorm1d(3)).requires_grad_(False), "stage1")


def test_frozen_batch_norm_statistics_do_not_move_in_training_mode():
    backbone = create_backbone("simple_cnn")
    set_trainable(backbone, False)
    unfreeze_top(backbone.layer_groups, 0.34)
    backbone.train()
    keep_batch_norm_frozen(backbone)
    before = [m.running_mean.clone() for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    backbone(torch.rand(4, 3, 32, 32) * 255).sum().backward()
    after = [m.running_mean for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    top_conv = backbone.layer_groups[-1][0]
    assert top_conv.weight.grad is not None and backbone.layer_groups[0][0].weight.grad is None
