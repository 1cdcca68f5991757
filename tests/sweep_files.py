"""Hand-made sweep folders for tests that need no training: a manifest and fold records of the
shape dfu writes (`dfu_train.results.records`), with only what a test varies given."""

from __future__ import annotations

from dfu_train.results import store

COHORT = "c0ffee00c0ffee00"
FOLDS = "f01d5f01d5f01d5f"


def fold_record(config_id: str, seed: int, fold: int, qwk: float | None, *,
                n_folds: int = 3, params: dict | None = None, **extra) -> dict:
    return {"config_id": config_id, "fold_seed": seed, "fold": fold, "n_folds": n_folds,
            "params": params or {}, "config": {},
            "metrics": {"qwk": qwk, "accuracy": 0.5, "macro_f1": 0.4}, "meta_qwk": 0.3,
            "fusion_gain": None if qwk is None else qwk - 0.3, "progress": 4, "stages": {},
            "val_samples": [{"label": 1, "proba": [0.2, 0.5, 0.3], "sample_id": "P001A00D1"}],
            "cohort_fingerprint": COHORT, "fold_fingerprint": FOLDS, **extra}


def manifest(name: str, config_ids, *, folds=(0,), seed: int = 42, n_folds: int = 3,
             promotions=(), **extra) -> dict:
    return {"name": name, "spec": {"cv": {"seed": seed, "n_folds": n_folds},
                                   "search": {"algorithm": "random", "num_samples": 1}},
            "data_root": "/nowhere", "cohort_fingerprint": COHORT, "folds": list(folds),
            "configs": [{"config_id": c, "params": {"x": i}} for i, c in enumerate(config_ids)],
            "promotions": list(promotions), **extra}


def write_sweep(sweep_dir, manifest_data: dict, records=()) -> None:
    store.write_json_atomic(sweep_dir / store.MANIFEST, manifest_data)
    for record in records:
        store.write_fold_result(sweep_dir, record)
