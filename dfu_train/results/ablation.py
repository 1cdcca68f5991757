"""The modality ablation table (`dfu leaderboard NAME --by-modalities`), as the earlier study
published it: one row per modality combination with its best config under the selection rule,
that config's QWK over its folds, and its gain over metadata alone, paired over the folds both
ran (the same corrected resampled t-test as the leaderboard's `Δ vs baseline`).

"Metadata alone" is the best metadata-only config of the sweep (the study's recipe the sweep ran
beside its configs competes for it), so the gain is what adding images buys over the best the
metadata did on the same folds.
"""

from __future__ import annotations

import pandas as pd

from dfu_train.data.schema import MODALITIES
from dfu_train.results.leaderboard import compare_to_baseline, query

METADATA_ONLY = ("metadata",)
ABLATION_COLUMNS = ("modalities", "n_modalities", "configs", "config_id", "params", "baseline",
                    "folds_done", "folds_total", "complete", "qwk_mean", "qwk_std",
                    "qwk_mean_minus_std", "qwk_folds", "meta_qwk_mean", "macro_f1_mean",
                    "gain_vs_metadata", "gain_p", "gain_folds", "metadata_config")


def combination(params: dict, base: tuple[str, ...]) -> tuple[str, ...]:
    """A config's modalities in the schema's order, so [thermal_map, metadata] and
    [metadata, thermal_map] are one combination; the base config's when not swept."""
    chosen = set(params.get("modalities") or base)
    return tuple(m for m in MODALITIES if m in chosen)


def base_modalities(manifest: dict) -> tuple[str, ...]:
    """The modalities of a sweep's configs that do not sweep them."""
    base = manifest.get("base_config") or {}
    fixed = (manifest.get("spec") or {}).get("fixed") or {}
    return tuple(base.get("modalities") or fixed.get("modalities") or METADATA_ONLY)


def modality_board(board: pd.DataFrame, manifest: dict, *, rule: str,
                   include_partial: bool = False, where: tuple[str, ...] = (),
                   fewer_folds_apart: bool = True) -> pd.DataFrame:
    """One row per modality combination, best first: the combination's best config as the
    leaderboard ranks it (`query` with `rule`), how many configs had that combination, and the
    paired gain over the best metadata-only config (None without one)."""
    ranked = query(board, rule=rule, include_partial=include_partial, where=where,
                   fewer_folds_apart=fewer_folds_apart)
    ranked = ranked[ranked["qwk_mean"].notna()]
    if ranked.empty:
        return pd.DataFrame(columns=list(ABLATION_COLUMNS))
    base = base_modalities(manifest)
    ranked = ranked.assign(modalities=[combination(p, base) for p in ranked["params"]])
    counts = ranked["modalities"].value_counts()
    best = ranked.drop_duplicates("modalities", keep="first")
    reference = best.loc[best["modalities"] == METADATA_ONLY, "config_id"]
    if reference.empty:
        gains = best.assign(gain_vs_metadata=None, gain_p=None, gain_folds=0,
                            metadata_config=None)
    else:
        paired = compare_to_baseline(board, reference.iloc[0],
                                     n_folds=manifest["spec"]["cv"]["n_folds"])
        paired = paired.set_index("config_id")
        ids = best["config_id"]
        gains = best.assign(gain_vs_metadata=list(paired.loc[ids, "baseline_diff"]),
                            gain_p=list(paired.loc[ids, "baseline_p"]),
                            gain_folds=list(paired.loc[ids, "baseline_folds"]),
                            metadata_config=reference.iloc[0])
    rows = gains.assign(modalities=[list(m) for m in gains["modalities"]],
                        n_modalities=[len(m) for m in gains["modalities"]],
                        configs=[int(counts[m]) for m in best["modalities"]])
    return rows[list(ABLATION_COLUMNS)].reset_index(drop=True)
