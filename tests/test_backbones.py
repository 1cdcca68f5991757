"""Every registered backbone builds offline with random weights and has the same surface."""

from __future__ import annotations

import pytest
import torch

from dfu_train.errors import ConfigError
from dfu_train.models.backbones import BACKBONES, create_backbone


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_surface(name):
    torch.manual_seed(0)
    model = create_backbone(name).eval()
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        features = model(images)
    assert features.shape == (2, model.num_features)
    assert torch.isfinite(features).all()
    assert len(model.layer_groups) >= 3
    counted = sum(p.numel() for g in model.layer_groups for p in g.parameters())
    assert counted == sum(p.numel() for p in model.parameters())  # groups cover every weight


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ConfigError, match=r"did you mean 'efficientnet-b0'.*choose from simple_cnn"):
        create_backbone("efficientnet_b0")


def test_local_weights_file_is_loaded_into_the_architecture(tmp_path):
    """A file as users download it: the state dict of the torchvision / efficientnet model."""
    import torchvision

    path = tmp_path / "w.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        create_backbone("simple_cnn", pretrained=str(path))
    with pytest.raises(ConfigError, match="not found"):
        create_backbone("resnet50", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="does not fit this backbone"):
        create_backbone("densenet121", pretrained=str(path))
    loaded = create_backbone("resnet50", pretrained=str(path))
    reference = torch.load(path, weights_only=True)
    assert torch.equal(loaded.layer_groups[0][0].weight, reference["conv1.weight"])
