"""A fold's checkpoint: what a retried or resumed trial continues from (read weights-only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dfu_train.training.loop import LoopState


@dataclass
class FoldCheckpoint:
    """Everything needed to continue a fold mid-stage: the stage in progress, the model, the
    loop's state, the finished stages' summaries and the forest's outputs."""

    config_id: str
    fold: int
    stage: str
    progress: int
    model: dict
    loop: LoopState | None
    stages: dict
    forest: dict | None

    def save(self, path: Path) -> None:
        torch.save({**self.__dict__, "loop": self.loop.to_dict() if self.loop else None}, path)

    @classmethod
    def load(cls, path: Path) -> FoldCheckpoint:
        data = torch.load(path, map_location="cpu", weights_only=True)
        loop = data.pop("loop")
        return cls(**data, loop=LoopState.from_dict(loop) if loop is not None else None)
