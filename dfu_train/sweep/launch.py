"""Run a planned sweep on Ray: the cluster's resources checked, then Tuner + search +
scheduler + storage. Each piece is made by a small factory; the planning is in `plan.py`."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable

import ray
from ray import tune

from dfu_train.errors import ConfigError
from dfu_train.location import Location
from dfu_train.results import store
from dfu_train.results.lease import SweepLease
from dfu_train.sweep.console import keep_ray_quiet, quiet_console
from dfu_train.sweep.events import TrialLines
from dfu_train.sweep.local_ray import connect_ray, start_local_ray
from dfu_train.sweep.plan import SweepPlan, check_same_sweep, record_promotion, write_manifest
from dfu_train.sweep.reservations import ReleaseOrphanedReservations
from dfu_train.sweep.search import study_storage
from dfu_train.sweep.session import Session, plan_session, warm_started
from dfu_train.sweep.space import SweepSpec, search_domains
from dfu_train.sweep.trainable import fold_trainable, inline_fold_trainable

DRIVER_CPUS = 0.25  # the Tune driver only waits on its TorchTrainer
DRIVER_SHARE = 0.01  # of a custom driver resource: 100 trial drivers per unit on the head
BUCKET_SYNC_S = 15  # seconds between uploads of Tune's experiment state to the storage


def max_concurrent_trials(spec: SweepSpec, cluster: dict[str, float]) -> int:
    """Tune cannot see Train's resources: derive the limit from the cluster and one trial's needs."""
    if spec.resources.max_concurrent:
        return spec.resources.max_concurrent
    drives_on_cpu = spec.resources.trains and not spec.resources.driver_resource
    per_trial_cpu = spec.resources.cpus_per_trial + (DRIVER_CPUS if drives_on_cpu else 0)
    limit = math.floor(cluster.get("CPU", 1) / per_trial_cpu)
    if spec.resources.gpus_per_trial > 0:
        limit = min(limit, math.floor(cluster.get("GPU", 0) / spec.resources.gpus_per_trial))
    return max(1, limit)


def trial_demands(spec: SweepSpec) -> list[dict[str, float]]:
    """What one trial asks of the nodes: the worker (or inline trial) and, for Train, its driver.
    Each dict must fit on one node."""
    res = spec.resources
    worker = {"CPU": res.cpus_per_trial, **({"GPU": res.gpus_per_trial}
                                             if res.gpus_per_trial else {})}
    if not res.trains:
        return [worker]
    driver = {res.driver_resource: DRIVER_SHARE} if res.driver_resource else {"CPU": DRIVER_CPUS}
    return [worker, driver]


def check_cluster_fits(spec: SweepSpec, nodes: list[dict[str, float]]) -> None:
    """Refuse a sweep none of whose trials the cluster can hold: Tune would wait forever."""
    worker, *driver = trial_demands(spec)

    def fits(demand: dict, node: dict) -> bool:
        return all(node.get(k, 0.0) + 1e-9 >= v for k, v in demand.items())

    for i, node in enumerate(nodes):
        if not fits(worker, node):
            continue
        left = {k: v - worker.get(k, 0.0) for k, v in node.items()}
        if not driver or fits(driver[0], left) or any(
                fits(driver[0], other) for j, other in enumerate(nodes) if j != i):
            return
    asked = f"{_resources_text(worker)} for its worker" + (
        f" and {_resources_text(driver[0])} for its Train driver" if driver else "")
    keys = ("CPU", "GPU", *(driver[0] if driver else ()))
    have = "; ".join(_resources_text(n, keys=keys) for n in nodes) or "no nodes"
    raise ConfigError(f"a trial asks for {asked}, but no node of the cluster can hold it "
                      f"(nodes: {have}); lower resources.cpus_per_trial / gpus_per_trial or run "
                      "on a cluster that has them")


def _resources_text(resources: dict[str, float], keys=None) -> str:
    keys = keys or resources
    return ", ".join(f"{resources.get(k, 0.0):g} {k}" for k in dict.fromkeys(keys))


def alive_nodes() -> list[dict[str, float]]:
    """The resources of each alive node of the connected cluster."""
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def local_cpus(spec: SweepSpec) -> int:
    """Logical CPUs of a private local Ray: the machine's cores for the trials, plus the
    drivers' quarter CPUs when trials run on Train, so trials never outnumber the cores."""
    cores = os.cpu_count() or 1
    if spec.resources.trains and not spec.resources.driver_resource:
        return cores + math.ceil(DRIVER_CPUS * cores)
    return cores


def run_sweep(plan: SweepPlan, *, address: str | None = None,
              on_event: Callable[[str], None] = print, trial_lines: bool = True,
              trackers: list | tuple = (), command: str = "dfu sweep run") -> Location:
    """Run (or continue) the planned sweep; returns the sweep folder. `trial_lines` prints one
    line on stderr per ended trial (off when a live view or a script reads the progress);
    `trackers` are extra Tune callbacks (`trackers.create_trackers`, `TrialEvents`). The
    sweep's lease is held throughout (`SweepLease`): a second writer of the same sweep is
    refused before Ray starts. Ray's own output goes to a log in the sweep folder."""
    if plan.experiment == store.TUNE_DIR:
        check_same_sweep(plan)
    plan = dataclasses.replace(plan, spec=plan.spec.on_train_path(on_cluster=_on_cluster(address)))
    with SweepLease(plan.sweep_dir, command), quiet_console(plan.sweep_dir,
                                                             plan.experiment) as log:
        started_ray = not ray.is_initialized()
        if started_ray:
            if address:
                connect_ray(address, log_to_driver=False)
            else:
                start_local_ray(local_cpus(plan.spec), log_to_driver=False)
            keep_ray_quiet()
        try:
            _fit(plan, on_event=on_event, trial_lines=trial_lines, trackers=trackers)
        finally:
            if started_ray:
                ray.shutdown()
    on_event(f"Ray's own output: {log}")
    return plan.sweep_dir


def _on_cluster(address: str | None) -> bool:
    """Whether the sweep runs on a cluster: one it joins, or a Ray of several nodes that this
    program started (a test's or a notebook's)."""
    return address is not None or (ray.is_initialized() and len(alive_nodes()) > 1)


def _fit(plan: SweepPlan, *, on_event, trial_lines: bool, trackers) -> None:
    check_cluster_fits(plan.spec, alive_nodes())
    if plan.experiment == store.TUNE_DIR:
        write_manifest(plan)
    for item in store.quarantine(plan.sweep_dir, store.rejected_files(plan.sweep_dir)):
        on_event(f"set aside {item.path} (its fold runs again): {item.reason}")
    session = plan_session(plan)
    concurrency = max_concurrent_trials(plan.spec, ray.cluster_resources())
    left = f"{session.n_trials} to run" + (f", {session.done} done before" if session.done else "")
    seeds = (f" x {len(plan.spec.cv.fold_seeds())} fold seeds"
             if plan.promotion is None and plan.spec.cv.seeds else "")
    on_event(f"sweep {plan.name}: {plan.n_configs} configs x {len(plan.folds)} folds{seeds} = "
             f"{plan.n_trials} trials ({left}), up to {concurrency} at once -> {plan.sweep_dir}")
    if plan.proposes and plan.spec.search.searcher.keeps_study:
        url = study_storage(plan.spec.search.storage, plan.sweep_dir)
        on_event(f"Optuna study {plan.name} kept in {url} (`optuna-dashboard {url}` opens it)"
                 if url else
                 f"Optuna study {plan.name}: in memory" + (
                     " (the sweep folder is a bucket: search.storage can name a database)"
                     if plan.spec.search.storage == "auto" else ""))
    if session.n_trials == 0:
        if plan.promotion is not None:
            record_promotion(plan)
        return
    # Every run is a fresh Tune experiment over what is left: Tune's own state (tuner.pkl, the
    # trials' pickles) is never restored, so nothing in the storage is unpickled (`session`).
    scheduler = plan.spec.scheduler.build(plan.schedule_length, plan.fusion_length)
    tuner = tune.Tuner(
        create_trainable(plan.spec),
        param_space=_param_space(plan, session),
        tune_config=tune.TuneConfig(
            metric="val_qwk", mode="max",
            num_samples=session.samples if plan.proposes else 1,
            search_alg=create_search(plan, session), max_concurrent_trials=concurrency,
            scheduler=_recording_prunes(scheduler, plan),
            trial_dirname_creator=_trial_dirname,
            reuse_actors=reuse_trial_actors(plan.spec, scheduler)),
        run_config=tune.RunConfig(
            name=plan.experiment, storage_path=str(plan.sweep_dir), verbose=0,
            failure_config=tune.FailureConfig(max_failures=plan.spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            # Trial states reach a bucket every 5 minutes by default; status and progress
            # read from a laptop should not lag that far.
            sync_config=tune.SyncConfig(sync_period=BUCKET_SYNC_S),
            callbacks=[*([TrialLines()] if trial_lines else []),
                       ReleaseOrphanedReservations(), *trackers]),
    )
    if plan.promotion is not None:
        record_promotion(plan)
    tuner.fit()


def _recording_prunes(scheduler, plan: SweepPlan):
    """The scheduler, marking each trial it stops early in the sweep folder (`store.write_pruned`)
    so that a resumed sweep does not run it again. A scheduler that stops whole configs (fold-asha)
    tells of every trial it stops, started or not; any other is watched for STOP decisions."""
    from ray.tune.schedulers import TrialScheduler

    if hasattr(scheduler, "on_stop"):
        scheduler.on_stop = functools.partial(_mark_pruned, plan, scope="config")
        return scheduler
    decide = scheduler.on_trial_result

    def on_trial_result(controller, trial, result):
        decision = decide(controller, trial, result)
        if decision == TrialScheduler.STOP and not result.get("final"):
            _mark_pruned(plan, trial, result, scope="trial")
        return decision

    scheduler.on_trial_result = on_trial_result
    return scheduler


def _mark_pruned(plan: SweepPlan, trial, result: dict | None, *, scope: str) -> None:
    config_id, fold_seed, fold = store.trial_key(trial.config)
    params = (trial.config["trial"]["params"] if "trial" in trial.config
              else trial.config.get("params", {}))
    result = result or {}
    store.write_pruned(plan.sweep_dir, {
        "config_id": config_id, "fold_seed": fold_seed, "fold": fold,
        "experiment": plan.experiment, "progress": int(result.get("progress", 0)),
        "val_qwk": result.get("fused_qwk", result.get("val_qwk")), "params": params,
        "trial_id": trial.trial_id, "scope": scope})


def reuse_trial_actors(spec: SweepSpec, scheduler) -> bool:
    """Whether Tune runs the next trial in a finished trial's actor, which saves a process start
    and the imports (torch with TorchTrainer) per trial. Inline trials always can. A Train
    trial's actor owns a TorchTrainer that keeps training until its fold ends: a trial the
    scheduler stops early must end its actor with it (Tune would keep that actor for the next
    trial, whose start then fails), so Train trials reuse actors only under a scheduler that
    never stops a trial (FIFO: `scheduler.type: none`, or a scheduler with nothing to judge)."""
    from ray.tune.schedulers import FIFOScheduler

    return not spec.resources.trains or type(scheduler) is FIFOScheduler


def create_trainable(spec: SweepSpec):
    """A TorchTrainer per trial (the driver holds a sliver of CPU), or the fold run inline."""
    if spec.resources.trains:
        driver = spec.resources.driver_resource
        return tune.with_resources(fold_trainable, {"CPU": 0, driver: DRIVER_SHARE} if driver
                                   else {"CPU": DRIVER_CPUS})
    return tune.with_resources(inline_fold_trainable, {"CPU": spec.resources.cpus_per_trial})


def create_search(plan: SweepPlan, session: Session | None = None):
    """The search algorithm of a sweep whose configs it proposes, told what earlier runs of the
    sweep tried (`session`); None when the configs were expanded before Ray started (grid,
    random, and every promotion, whatever searched first)."""
    if not plan.proposes:
        return None
    section = plan.spec.search
    study = {}
    if section.searcher.keeps_study and (url := study_storage(section.storage, plan.sweep_dir)):
        import optuna
        from optuna.storages import RDBStorage

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in RDB"
        study = {"storage": RDBStorage(url), "study_name": plan.name}
    searcher = section.searcher.build(section.seed, **study)
    return warm_started(searcher, session) if session is not None else searcher


def _param_space(plan: SweepPlan, session: Session) -> dict:
    settings = {
        "sweep_dir": str(plan.sweep_dir), "data_root": str(plan.data_root),
        "cpus_per_trial": plan.spec.resources.cpus_per_trial,
        "gpus_per_trial": plan.spec.resources.gpus_per_trial,
        "max_failures": plan.spec.resources.max_failures,
        "base_config": plan.spec.base_config().to_dict(),
        "cache": {"root": plan.cache_root, "enabled": plan.spec.cache.enabled},
        "resume_from": session.checkpoints,
        "cohort_fingerprint": plan.cohort.fingerprint,
        "experiment": plan.experiment,
    }
    if plan.proposes:
        return {"settings": settings, "fold": plan.folds[0], "params": search_domains(plan.spec)}
    ids = plan.recorded_ids or tuple(c.config_id for c, _ in plan.configs)
    trials = [{"config_id": ids[i], "params": plan.configs[i][1],
               "config": _with_fold_seed(plan.configs[i][0].to_dict(), seed), "fold": fold}
              for i, seed, fold in session.trials]
    return {"settings": settings, "trial": tune.grid_search(trials)}


def _with_fold_seed(config: dict, seed: int) -> dict:
    return {**config, "cv": {**config["cv"], "seed": seed}}


def _trial_dirname(trial) -> str:
    config_id, seed, fold = store.trial_key(trial.config)
    return f"{config_id}-s{seed}-f{fold}-{trial.trial_id}"
