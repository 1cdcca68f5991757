"""Two-phase pretraining, as the earlier study did it: head and classifier on a frozen backbone,
then the top of the backbone open with BatchNorm frozen, kept only if it beats the first phase."""

from __future__ import annotations

import pytest
import torch

from dfu_train.cache import ArtifactCache
from dfu_train.config import TrialConfig
from dfu_train.errors import ConfigError
from dfu_train.training import stages as stages_module
from dfu_train.training.fold import run_fold
from dfu_train.training.model import build_model

TWO_PHASE = TrialConfig().override({
    "modalities": ["depth_rgb"], "seed": 2, "image.size": 16, "image.batch_size": 16,
    "depth_rgb.pretrain_epochs": 2, "depth_rgb.pretrain_top_epochs": 2,
    "depth_rgb.pretrain_top_lr": 1e-2, "depth_rgb.pretrain_unfreeze_pct": 0.34,
    "stage1.epochs": 1, "stage2.epochs": 0,
})
PHASE1, TOP = "pretrain:depth_rgb", "pretrain-top:depth_rgb"


def _run(config, cohort, **kwargs):
    reports = []
    result = run_fold(config, cohort, 0, report=lambda m, c: reports.append((m, c)), **kwargs)
    return result, reports


def _last(reports, stage):
    return [c for m, c in reports if m.get("stage") == stage and c is not None][-1].model


def _backbone(state):
    return {k: v for k, v in state.items() if ".backbone." in k}


def test_settings_keep_ids_and_are_checked():
    one_phase = TrialConfig().override({"modalities": ["metadata", "depth_rgb"]})
    assert one_phase.config_id == "af7a1d93e6"  # recorded before two-phase pretraining existed
    assert one_phase.override({"depth_rgb.pretrain_top_lr": 0.01}).config_id == "af7a1d93e6"
    two = one_phase.override({"depth_rgb.pretrain_top_epochs": 3})
    assert two.config_id != one_phase.config_id
    assert two.override({"depth_rgb.freeze_backbone": True}).config_id == two.config_id
    with pytest.raises(ConfigError, match="pretrain_top_epochs needs pretrain_epochs"):
        one_phase.override({"depth_rgb.pretrain_epochs": 0, "depth_rgb.pretrain_top_epochs": 2})


def test_head_first_on_a_frozen_backbone_then_only_the_top_opens(cohort, tmp_path):
    cache = ArtifactCache(tmp_path)
    result, reports = _run(TWO_PHASE, cohort, cache=cache)
    assert [m["stage"] for m, _ in reports][:5] == [PHASE1] * 2 + [TOP] * 2 + ["stage1"]
    start = _backbone(build_model(TWO_PHASE).state_dict())
    phase1, top = _backbone(_last(reports, PHASE1)), _backbone(_last(reports, TOP))
    assert all(torch.equal(v, phase1[k]) for k, v in start.items())  # frozen, BatchNorm too
    groups = len(build_model(TWO_PHASE).branches["depth_rgb"].backbone.layer_groups)
    opened = result.stages[TOP]["opened_groups"]
    assert opened == 2 and groups == 3  # simple_cnn: ceil(3 x 0.34)
    for key, value in top.items():
        if "layer_groups." not in key:
            assert torch.equal(value, phase1[key]), key  # normalisation buffers
            continue
        group = int(key.split("layer_groups.")[1].split(".")[0])
        moved = not torch.equal(value, phase1[key])
        if group < groups - opened or "running" in key or key.endswith((".1.weight", ".1.bias")):
            assert not moved, key  # lower groups, BatchNorm weights and statistics stay
    assert any(not torch.equal(v, phase1[k]) for k, v in top.items())  # the top did train
    assert [a.split(":")[0] for a in result.artifacts["computed"]].count("branch") == 2
    again, _ = _run(TWO_PHASE.override({"stage1.lr": 1e-2}), cohort, cache=cache)
    assert [a.split(":")[0] for a in again.artifacts["reused"]].count("branch") == 2


def test_a_second_phase_that_does_not_beat_the_first_is_undone(cohort, monkeypatch):
    evaluate = stages_module.ImageStages._evaluate
    top_calls = []

    def rigged(self, module, modalities, with_rf, loss=None, features=None):
        backbone = getattr(module, "backbone", None)
        if backbone is not None and any(p.requires_grad for p in backbone.parameters()):
            top_calls.append(1)  # the second phase: its start scores best
            return (1.0 if len(top_calls) == 1 else 0.0), 1.0
        return evaluate(self, module, modalities, with_rf, loss, features)

    monkeypatch.setattr(stages_module.ImageStages, "_evaluate", rigged)
    result, reports = _run(TWO_PHASE, cohort)
    assert len(top_calls) == 3 and result.stages[TOP]["kept"] is False
    phase1 = _last(reports, PHASE1)
    assert any(not torch.equal(v, phase1[k]) for k, v in _last(reports, TOP).items())
    after = _last(reports, "stage1")  # stage 1 leaves the backbone as the branch ended
    assert all(torch.equal(v, after[k]) for k, v in _backbone(phase1).items())
