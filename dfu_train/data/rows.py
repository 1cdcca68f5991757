"""The image rows of one part of a fold, aligned across modalities, and back to samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from dfu_train.cache import ArtifactCache
from dfu_train.data import schema
from dfu_train.data.cohort import Cohort
from dfu_train.data.images import DEFAULT_FILTER, cached_crops, modality_rows


@dataclass(frozen=True)
class RowSet:
    """The image rows of one part of a fold, aligned across modalities."""

    crops: dict[str, np.ndarray]  # modality -> (rows, s, s, 3) uint8
    rf_proba: torch.Tensor  # (rows, 3): the forest's output for the row's sample
    labels: torch.Tensor  # (rows,)
    sample_pos: np.ndarray  # (rows,): index of the row's sample within the part

    def __len__(self) -> int:
        return len(self.labels)


def fold_rows(cohort: Cohort, modalities: tuple[str, ...], part: np.ndarray,
              rf_proba: np.ndarray, crops: dict[str, np.ndarray]) -> RowSet:
    """Rows of the samples at `part` (positions in `cohort.samples`) that have every modality."""
    rows = cohort.image_rows
    for modality in modalities:
        rows = rows.dropna(subset=[f"{schema.IMAGE_FOLDERS[modality][1]}_file"])
    sample_ids = cohort.samples["sample_id"].to_numpy()[part]
    position = pd.Series(np.arange(len(part)), index=sample_ids)
    rows = rows[rows["sample_id"].isin(position.index)]
    sample_pos = position.loc[rows["sample_id"]].to_numpy()
    aligned = {}
    for modality in modalities:
        index = modality_rows(cohort, modality).index
        aligned[modality] = crops[modality][index.get_indexer(rows.index)]
    labels = cohort.labels[part][sample_pos]
    return RowSet(aligned, torch.as_tensor(rf_proba[sample_pos], dtype=torch.float32),
                  torch.as_tensor(labels, dtype=torch.long), sample_pos)


def sample_proba(row_proba: np.ndarray, sample_pos: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Average the rows of each sample; samples without rows keep their `fallback` row."""
    sums = np.zeros_like(fallback, dtype=float)
    np.add.at(sums, sample_pos, row_proba)
    counts = np.bincount(sample_pos, minlength=len(fallback))[:, None]
    return np.where(counts > 0, sums / np.maximum(counts, 1), fallback)


def image_crops(cohort: Cohort, modalities: tuple[str, ...], size: int,
                cache: ArtifactCache, resize_filter: str = DEFAULT_FILTER) -> dict[str, Any]:
    """The preprocessed crops of each image modality (cached per data, size and filter)."""
    return {m: cached_crops(cohort, m, size, cache, resize_filter) for m in modalities}
