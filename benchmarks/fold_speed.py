"""Seconds per epoch per stage of one fold, and the share of time spent preparing batches.

    python benchmarks/fold_speed.py [--patients 120] [--fold 0] [--device cpu] [--frozen-only]

Runs two configs on one fold of a synthetic cohort: the demo's fusion config (metadata + a 16 px
thermal-map branch on simple_cnn) and metadata + depth_rgb on efficientnet-b0 at 64 px. Crops are
built once before timing (they are cached per cohort and size in a sweep), so "data" is batch
preparation: indexing the uint8 crops, augmentation and the copy to the device. Goal: under 10 %.

Then stage 1 of the efficientnet-b0 config without augmentation, trained on images and on frozen
features (`stage1.frozen_features`, each backbone's features computed once per fold): seconds
per epoch of each, the speed-up, and whether the fold's metrics are the same. Goal: 10x.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dfu_train.cache import ArtifactCache
from dfu_train.config import TrialConfig
from dfu_train.data.cohort import load_cohort
from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.sweep.space import load_sweep
from dfu_train.training.fold import run_fold
from dfu_train.data.rows import image_crops

ROOT = Path(__file__).resolve().parent.parent


def configs() -> dict[str, TrialConfig]:
    smoke = load_sweep(ROOT / "sweeps" / "smoke.yaml").base_config()
    demo = smoke.override({"modalities": ["metadata", "thermal_map"]})
    b0 = TrialConfig().override({
        "modalities": ["metadata", "depth_rgb"], "image.size": 64,
        "depth_rgb.backbone": "efficientnet-b0", "depth_rgb.pretrain_epochs": 3,
        "stage1.epochs": 3, "stage2.epochs": 2, "optim.checkpoint_every": 1000,
    })
    return {"demo fusion (simple_cnn, 16 px)": demo, "efficientnet-b0, 64 px": b0}


def time_fold(config: TrialConfig, cohort, fold: int, cache: Path, device: str):
    crops = ArtifactCache(cache)
    image_crops(cohort, config.image_modalities, config.image.size, crops)  # warm the crop cache: built once, then shared by trials
    started = time.perf_counter()
    result = run_fold(config, cohort, fold, cache=crops, device=device)  # forest, branches: miss
    total = time.perf_counter() - started
    print(f"  fold {fold}: {total:.1f} s, QWK {result.qwk:.3f} (forest {result.meta_qwk:.3f})")
    for stage, summary in result.stages.items():
        if "epochs_run" not in summary:  # the forest, the decoder
            print(f"    {stage:<22} {summary['seconds']:7.3f} s")
            continue
        per_epoch = summary["seconds"] / max(summary["epochs_run"], 1)
        print(f"    {stage:<22} {per_epoch:7.3f} s/epoch  ({summary['epochs_run']} epochs, "
              f"{summary['trainable_params']:,} trainable parameters)")
    stages = [s for s in result.stages.values() if "epochs_run" in s]
    data = sum(s["data_seconds"] for s in stages)
    image_time = sum(s["seconds"] for s in stages)
    print(f"    batch preparation: {data:.2f} s = {100 * data / max(image_time, 1e-9):.1f} % "
          f"of the image stages ({image_time:.1f} s)")
    return result


def compare_frozen(config: TrialConfig, cohort, fold: int, cache: Path, device: str) -> None:
    """Stage 1 on images against stage 1 on features computed once, augmentation off; the
    second run reuses the first's forest and pretrained branch from the cache."""
    plain = config.override({"image.augment": False, "depth_rgb.pretrain_epochs": 1,
                             "stage2.epochs": 1})  # stage 1 as before, less of the rest
    results = {}
    for frozen in (False, True):
        print(f"efficientnet-b0, 64 px, no augmentation, stage1.frozen_features={frozen}")
        results[frozen] = time_fold(plain.override({"stage1.frozen_features": frozen}), cohort,
                                    fold, cache, device)
    images, features = (results[k].stages["stage1"] for k in (False, True))
    on_images = images["seconds"] / images["epochs_run"]
    on_features = (features["seconds"] - features["features_seconds"]) / features["epochs_run"]
    print(f"stage 1: {on_images:.3f} s/epoch on images, {on_features:.4f} s/epoch on frozen "
          f"features = {on_images / on_features:.0f}x faster per epoch (goal: 10x); the "
          f"features once per fold: {features['features_seconds']:.2f} s; whole stage "
          f"{images['seconds']:.2f} s -> {features['seconds']:.2f} s "
          f"({images['epochs_run']} epochs)")
    gap = max(abs(p - q) for a, b in zip(results[False].val_samples, results[True].val_samples)
              for p, q in zip(a["proba"], b["proba"]))
    print(f"same fold metrics: {results[False].metrics == results[True].metrics} "
          f"(QWK {results[False].qwk:.4f} and {results[True].qwk:.4f}); validation "
          f"probabilities differ by at most {gap:.1e} (a convolution rounds a row's features "
          f"a little differently in a batch of another size, about 1e-18, and training carries "
          f"that on; today's epochs differ among themselves as much)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--frozen-only", action="store_true",
                        help="only the frozen-features comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cohort(Path(tmp) / "cohort", SynthSpec(patients=args.patients))
        cohort = load_cohort(root)
        print(f"cohort: {len(cohort.samples)} samples, {len(cohort.image_rows)} image rows; "
              f"device {args.device}, {torch.get_num_threads()} torch threads")
        for name, config in configs().items():
            if not args.frozen_only:
                print(name)
                time_fold(config, cohort, args.fold, Path(tmp) / "cache", args.device)
        compare_frozen(configs()["efficientnet-b0, 64 px"], cohort, args.fold,
                       Path(tmp) / "cache", args.device)


if __name__ == "__main__":
    main()
