"""Fusion heads keep the forest's probabilities intact and are made by name."""

from __future__ import annotations

import pytest
import torch

from dfu_train.errors import ConfigError
from dfu_train.models.backbones import create_backbone
from dfu_train.models.branches import ImageBranch
from dfu_train.models.fusion import FUSION_HEADS, create_fusion_head


def _inputs(n=5, features=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rf = torch.rand(n, 3, generator=generator)
    rf = rf / rf.sum(dim=1, keepdim=True)
    return rf, torch.randn(n, features, generator=generator), torch.randn(n, 3, generator=generator)


@pytest.mark.parametrize("name", list(FUSION_HEADS))
def test_every_head_returns_logits_and_has_trainable_or_fixed_parameters(name):
    rf, features, logits = _inputs()
    head = create_fusion_head(name, image_features=8)
    out = head(rf, features, logits)
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    if name != "fixed_blend":
        assert sum(p.numel() for p in head.parameters() if p.requires_grad) > 0


def test_residual_head_at_initialisation_returns_the_forest_probabilities():
    rf, features, logits = _inputs()
    head = create_fusion_head("residual", image_features=8, residual_bound=0.5)
    probabilities = head(rf, features, logits).softmax(dim=1)
    assert torch.allclose(probabilities, rf, atol=1e-5)


def test_residual_correction_is_bounded():
    rf, features, logits = _inputs()
    head = create_fusion_head("residual", image_features=8, residual_bound=0.5)
    torch.nn.init.constant_(head.correction.weight, 100.0)
    shift = head(rf, features * 100, logits) - torch.log(rf + 1e-6)
    assert shift.abs().max() <= 0.5 + 1e-6


def test_fixed_blend_is_exactly_the_configured_mixture():
    rf, features, logits = _inputs()
    head = create_fusion_head("fixed_blend", image_features=8, blend_weight=0.3)
    expected = 0.3 * logits.softmax(dim=1) + 0.7 * rf
    assert torch.allclose(head(rf, features, logits).exp(), expected, atol=1e-5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        create_fusion_head("fixed_blend", image_features=8, blend_weight=1.5)


def test_forest_probabilities_meet_the_head_untouched():
    """No normalisation layer sits between the forest and the head: scaling the forest input
    changes the output exactly as the first linear layer dictates."""
    rf, features, logits = _inputs()
    head = create_fusion_head("feature_concat", image_features=8).eval()
    first = head.mlp[0]
    assert isinstance(first, torch.nn.Linear) and first.in_features == 3 + 8
    delta = head(rf * 2, features, logits) - head(rf, features, logits)
    assert torch.allclose(delta, rf @ first.weight[:, :3].T, atol=1e-5)


def test_unknown_head_lists_the_choices():
    with pytest.raises(ConfigError, match=r"did you mean 'residual'.*choose from feature_concat"):
        create_fusion_head("residul", image_features=4)


def test_image_branch_gives_features_and_logits():
    branch = ImageBranch(create_backbone("simple_cnn"), head_units=(32, 16), dropout=0.1).eval()
    images = torch.rand(4, 3, 32, 32) * 255
    assert branch.features(images).shape == (4, 16)
    assert branch(images).shape == (4, 3)


def test_each_head_declares_its_options_and_refuses_others():
    from dfu_train.errors import ConfigError
    from dfu_train.models.fusion import head_options

    assert head_options("fixed_blend") == ("blend_weight",)
    assert head_options("residual") == ("residual_bound",)
    assert head_options("gated") == ()
    assert set(head_options("feature_concat")) == {"projection", "hidden", "dropout"}
    with pytest.raises(ConfigError, match="takes no option 'blend_weight'; it takes residual_bound"):
        create_fusion_head("residual", image_features=8, blend_weight=0.2)
