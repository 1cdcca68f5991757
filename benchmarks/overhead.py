"""Ray's overhead per trial and how busy the cores stay during a 2-concurrent-trial sweep.

    python benchmarks/overhead.py [--configs 4] [--epochs 200] [--train] [--worker-niceness N]
    python benchmarks/overhead.py --sweep sweeps/metadata.yaml --patients 270 [--train]

Runs a sweep of `--configs` configs (and the study's metadata recipe beside them) x 1 fold, two at
a time, with the artifact cache off (every trial computes everything), and samples system CPU use
every half second. Prints per trial (wall - compute) / wall, where wall runs from the start of the
Tune trial's function to its record and compute is the time inside `run_fold` (goal: under 10 % for
trials of about 60 s of compute), the median start-up (the rest before `run_fold`; goal for
TorchTrainer trials: at most 5 s), and the mean CPU busy share of all cores between the first
trial's compute start and the last trial's end (goal: at least 85 %). Trials run inline unless
--train (a TorchTrainer per trial). The machine's load average is printed before and after: other
work on the machine lengthens start-up and compute alike. Ray runs its workers at niceness 15, so
on a machine where other work runs at a lower niceness they get little of the CPU;
`--worker-niceness 0` measures as on an idle machine there (it is not a setting for sweeps).

With `--sweep FILE` the sweep file runs as it is (its own settings, `resources.use_train` as
`dfu sweep run` decides it on this machine unless --train) and the split of the trials' summed
wall time into start-up and compute is printed (goal for sweeps/metadata.yaml on 270 patients:
start-up at most 25 %).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
import ray

from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.results import store
from dfu_train.sweep.launch import local_cpus, run_sweep
from dfu_train.sweep.plan import plan_sweep
from dfu_train.sweep.local_ray import start_local_ray
from dfu_train.sweep.space import load_sweep, parse_sweep


class CpuSampler(threading.Thread):
    """(time, busy % of all cores, busy % of all cores by this process and its descendants, Ray
    included) every `interval` seconds until stopped. On a machine shared with other work the
    second share is the sweep's own."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval, self.samples, self._done = interval, [], threading.Event()
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds seen so far

    def _own_cpu_seconds(self) -> float:
        """CPU seconds this process tree used since the last call (a process that ended since
        then loses what it used in between: up to one interval of one short-lived process)."""
        used, seen = 0.0, {}
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            seen[process.pid] = times.user + times.system
            used += seen[process.pid] - self._cpu.get(process.pid, 0.0)
        self._cpu = seen
        return used

    def run(self) -> None:
        psutil.cpu_percent(interval=None)
        self._own_cpu_seconds()
        cores = psutil.cpu_count() or 1
        last = time.time()
        while not self._done.wait(self.interval):
            now = time.time()
            own = 100 * self._own_cpu_seconds() / ((now - last) * cores)
            self.samples.append((now, psutil.cpu_percent(interval=None), min(own, 100.0)))
            last = now

    def stop(self) -> None:
        self._done.set()
        self.join()


def sweep_file(args) -> dict:
    return {
        "name": "overhead", "cv": {"n_folds": 5, "run_folds": [0]},
        "search": {"algorithm": "random", "num_samples": args.configs, "seed": 0},
        "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1, "use_train": args.train, "max_concurrent": 2},
        "cache": {"enabled": False},
        "fixed": {"modalities": ["metadata", "thermal_map"], "image.size": 32,
                  "thermal_map.pretrain_epochs": args.epochs, "stage1.epochs": 5,
                  "stage2.epochs": 0, "optim.early_stop_patience": 1000},
        "space": {"thermal_map.dropout": {"uniform": [0.0, 0.5]}},  # a value the configs use
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=200, help="pretraining epochs per trial")
    parser.add_argument("--patients", type=int, default=80)
    parser.add_argument("--train", action="store_true", help="TorchTrainer per trial")
    parser.add_argument("--sweep", default=None, help="run this sweep file as it is instead")
    parser.add_argument("--worker-niceness", type=int, default=None,
                        help="niceness of Ray's workers (default: Ray's, 15)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cohort(Path(tmp) / "cohort", SynthSpec(patients=args.patients))
        spec = load_sweep(args.sweep) if args.sweep else parse_sweep(sweep_file(args))
        if args.sweep and args.train:
            spec = spec.model_copy(update={"resources": spec.resources.model_copy(
                update={"use_train": True})})
        load_before = os.getloadavg()
        system = {} if args.worker_niceness is None else {"worker_niceness": args.worker_niceness}
        start_local_ray(local_cpus(spec), log_to_driver=False,  # as `dfu sweep run` would
                        **({"_system_config": system} if system else {}))
        sampler = CpuSampler()
        try:
            plan = plan_sweep(spec, data_root=root, storage=Path(tmp))
            sampler.start()
            started = time.time()
            sweep_dir = run_sweep(plan, on_event=lambda line: None)
            ended = time.time()
        finally:
            sampler.stop()
            ray.shutdown()
        records = store.read_fold_results(sweep_dir)
    niceness = "Ray's" if args.worker_niceness is None else args.worker_niceness
    path = "TorchTrainer" if args.train or spec.resources.use_train is True else "inline"
    print(f"{len(records)} trials ({path}), up to {spec.resources.max_concurrent or os.cpu_count()} "
          "at a time, "
          f"on {os.cpu_count()} cores (worker niceness {niceness}); sweep wall "
          f"{ended - started:.1f} s")
    shares = []
    for r in sorted(records, key=lambda r: r["timing"]["started_at"]):
        t = r["timing"]
        share = (t["wall_s"] - t["compute_s"]) / t["wall_s"]
        shares.append(share)
        if len(records) > 20:
            continue
        print(f"  trial {r['trial_id']}: wall {t['wall_s']:6.1f} s, start-up {t['startup_s']:5.1f} s, "
              f"compute {t['compute_s']:6.1f} s -> overhead {share:6.1%}")
    print(f"  mean (wall - compute) / wall: {statistics.fmean(shares):.1%} (goal: < 10 %)")
    startups = [r["timing"]["startup_s"] for r in records]
    print(f"  median start-up: {statistics.median(startups):.1f} s (min {min(startups):.1f}, max "
          f"{max(startups):.1f}; goal for TorchTrainer trials: <= 5 s)")
    compute = sum(r["timing"]["compute_s"] for r in records)
    wall, startup = (sum(r["timing"][k] for r in records) for k in ("wall_s", "startup_s"))
    print(f"  trial time: {wall:.1f} s = start-up {startup:.1f} s ({startup / wall:.1%}; goal for "
          f"a sweep file: <= 25 %) + compute {compute:.1f} s ({compute / wall:.1%}) + other "
          f"{wall - startup - compute:.1f} s")
    slots = spec.resources.max_concurrent or os.cpu_count()
    print(f"  sweep: {compute:.1f} s of compute in {ended - started:.1f} s x {slots} slots -> "
          f"{1 - compute / (slots * (ended - started)):.1%} not computing (Ray start-up, actor "
          f"start, the last wave's imbalance)")
    first_compute = min(r["timing"]["started_at"] + r["timing"]["startup_s"] for r in records)
    last_end = max(r["timing"]["started_at"] + r["timing"]["wall_s"] for r in records)
    busy = [(p, own) for t, p, own in sampler.samples if first_compute <= t <= last_end]
    whole = [(p, own) for _, p, own in sampler.samples]
    mean = statistics.fmean
    print(f"  CPU busy after start-up: {mean(p for p, _ in busy):.0f} % (goal: >= 85 %), by this "
          f"sweep's processes {mean(o for _, o in busy):.0f} %; over the whole sweep: "
          f"{mean(p for p, _ in whole):.0f} %, by this sweep's processes "
          f"{mean(o for _, o in whole):.0f} %")
    print(f"  load average (1, 5, 15 min) before: {_load(load_before)}, after: "
          f"{_load(os.getloadavg())}")


def _load(values) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
