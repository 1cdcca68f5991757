"""Wall time of the read-only commands a user types while a sweep runs.

    python benchmarks/cli_latency.py [--configs 24] [--folds 5] [--repeats 5]

Writes a sweep folder as a finished sweep leaves it (the manifest, one fold record per
(config, fold) with ~180 validation samples each, Tune's experiment state and each trial's
params.json; 24 x 5 = 120 records by default) and times `dfu leaderboard`, `dfu sweep status` and
`dfu --help` as fresh processes. Prints the median and the slowest of `--repeats` runs each
(goal: every median under 1 s on a 2-core machine), and whether each command imported Ray or torch.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dfu_train.config import TrialConfig
from dfu_train.results import store

CHECK_IMPORTS = ("import sys, runpy; sys.argv = ['dfu', *sys.argv[1:]]\n"
                 "try:\n    runpy.run_module('dfu_train.cli', run_name='__main__')\n"
                 "except SystemExit:\n    pass\n"
                 "print('IMPORTED', 'ray' in sys.modules, 'torch' in sys.modules, file=sys.stderr)")


def write_sweep(storage: Path, *, configs: int, folds: int) -> str:
    rng = random.Random(0)
    sweep_dir = store.storage_path(storage) / "latency"
    planned = []
    for index in range(configs):
        config = TrialConfig().override({"forest.n_estimators": 10 + index, "cv.n_folds": folds})
        planned.append({"config_id": config.config_id,
                        "params": {"forest.n_estimators": 10 + index},
                        "config": config.to_dict()})
    store.write_json_atomic(sweep_dir / store.MANIFEST, {
        "name": "latency", "spec": {"cv": {"seed": 42, "n_folds": folds},
                                    "search": {"algorithm": "random", "num_samples": configs}},
        "folds": list(range(folds)), "configs": planned, "data_root": "/nowhere",
        "cohort_fingerprint": "0" * 16})
    trial_data = []
    for index, entry in enumerate(planned):
        for fold in range(folds):
            qwk = rng.uniform(0.2, 0.5)
            store.write_fold_result(sweep_dir, {
                "config_id": entry["config_id"], "config": entry["config"], "fold": fold,
                "fold_seed": 42, "n_folds": folds, "params": entry["params"],
                "metrics": {"qwk": qwk, "accuracy": 0.6, "macro_f1": 0.5, "f1_I": 0.5,
                            "f1_P": 0.6, "f1_R": 0.3, "row_qwk": None},
                "meta_qwk": qwk - 0.01, "fusion_gain": 0.01, "progress": 1, "stages": {},
                "val_samples": [{"sample_id": f"P{i:03d}A00D1", "label": i % 3,
                                 "proba": [0.2, 0.5, 0.3]} for i in range(180)],
                "wall_s": 10.0, "compute_s": 8.0, "timing": {}, "artifacts": {},
                "cohort_fingerprint": "0" * 16, "fold_fingerprint": "1" * 16})
            trial_id = f"abcde_{index * folds + fold:05d}"
            logdir = f"{entry['config_id']}-f{fold}-{trial_id}"
            store.write_json_atomic(sweep_dir / store.TUNE_DIR / logdir / "params.json",
                                    {"trial": entry, "fold": fold, "settings": {}})
            trial_data.append([json.dumps({"trial_id": trial_id, "relative_logdir": logdir,
                                           "status": "TERMINATED"}), json.dumps({})])
    store.write_json_atomic(sweep_dir / store.TUNE_DIR / "experiment_state-2026-01-01_00-00-00.json",
                            {"trial_data": trial_data})
    return "latency"


def time_command(args: list[str], repeats: int) -> tuple[list[float], str]:
    times, imported = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, *args],
                              capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"dfu {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        imported = next(line for line in done.stderr.splitlines() if line.startswith("IMPORTED"))
    return times, imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=24)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dfu-latency-") as folder:
        name = write_sweep(Path(folder), configs=options.configs, folds=options.folds)
        print(f"sweep folder: {options.configs} configs x {options.folds} folds = "
              f"{options.configs * options.folds} records")
        print(f"{'command':34} {'median s':>9} {'slowest s':>10}  imports ray / torch")
        for args in (["leaderboard", name, "--storage", folder],
                     ["sweep", "status", name, "--storage", folder], ["--help"]):
            times, imported = time_command(args, options.repeats)
            _, ray_loaded, torch_loaded = imported.split()
            label = "dfu " + " ".join(a for a in args if a not in (folder,) and a != "--storage")
            print(f"{label:34} {statistics.median(times):9.2f} {max(times):10.2f}  "
                  f"{ray_loaded} / {torch_loaded}")


if __name__ == "__main__":
    main()
