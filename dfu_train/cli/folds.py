"""`dfu fold` and `dfu cv`: one fold, or cross-validation, of one config without Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress, TimeElapsedColumn

from dfu_train.cli.common import (DEMO_DATA, AsJson, CacheDir, DataRoot, Jobs, NoCache, Storage,
                                  checked_cohort, emit_json, err, fmt_number, out, parse_seeds,
                                  user_errors)
from dfu_train.errors import ConfigError

@user_errors
def fold_command(
    config: Annotated[str, typer.Argument(help="config file (YAML/JSON, exported best), "
                                          "`default` or `baseline` (the study's recipe)")],
    fold: Annotated[int, typer.Option("--fold", min=0)],
    data_root: DataRoot = DEMO_DATA,
    jobs: Jobs = -1,
    cache_dir: CacheDir = "results/cache",
    no_cache: NoCache = False,
    as_json: AsJson = False,
) -> None:
    """Run one fold of a config, without Ray."""
    from dfu_train.cache import ArtifactCache
    from dfu_train.config import load_trial_config
    from dfu_train.training.fold import run_fold

    trial = load_trial_config(config)
    cohort = checked_cohort(data_root, trial)
    result = run_fold(trial, cohort, fold, report=_print_report, n_jobs=jobs,
                      cache=ArtifactCache(cache_dir, enabled=not no_cache))
    if as_json:
        emit_json(result.to_dict())
    else:
        out.print(f"config {result.config_id} fold {fold}: qwk {fmt_number(result.qwk)}, "
                  f"accuracy {result.metrics['accuracy']:.3f}, "
                  f"macro F1 {result.metrics['macro_f1']:.3f}")


def _print_clinical(summary: dict) -> None:
    """The patient-bootstrap interval and the clinical metrics of a CV summary."""
    from dfu_train.data.schema import CLASS_NAMES

    interval = summary.get("qwk_ci95")
    if interval is not None:
        boot = summary["bootstrap"]
        out.print(f"  pooled qwk {fmt_number(summary['qwk_pooled'])}, 95% CI "
                  f"[{fmt_number(interval[0])}, {fmt_number(interval[1])}] "
                  f"({boot['resamples']} resamples of {boot['patients']} patients)")
    out.print(f"  accuracy {fmt_number(summary['accuracy_mean'])}, macro F1 "
              f"{fmt_number(summary['macro_f1_mean'])}, weighted F1 "
              f"{fmt_number(summary['weighted_f1_mean'])}, ROC AUC (one-vs-rest) "
              f"{fmt_number(summary['roc_auc_mean'])}")
    for kind in ("sensitivity", "specificity"):
        values = ", ".join(f"{name} {fmt_number(summary[f'{kind}_{name}_mean'])}"
                           for name in CLASS_NAMES)
        out.print(f"  {kind}: {values}")
    if summary.get("qwk_imaged_mean") is not None:
        out.print(f"  qwk on samples with every image modality "
                  f"{fmt_number(summary['qwk_imaged_mean'])}")


def _print_report(metrics: dict, checkpoint) -> None:
    err.print(f"  {metrics['stage']} progress {metrics['progress']}: "
              f"val_qwk {fmt_number(metrics.get('val_qwk'))}")


@user_errors
def cv_command(
    config: Annotated[str, typer.Argument(help="config file (YAML/JSON, exported best, an "
                                          "ensemble file), `default` or `baseline` (the "
                                          "study's recipe)")],
    data_root: Annotated[Optional[Path], typer.Option(
        "--data-root", envvar="DFU_DATA_ROOT",
        help="cohort folder (default: the sweep's with --sweep, else results/demo-data)")] = None,
    fold_seeds: Annotated[Optional[str], typer.Option(help="comma-separated fold seeds")] = None,
    sweep: Annotated[Optional[str], typer.Option(
        help="record the folds in this sweep as the confirmation of a config it ran "
             "(fresh --fold-seeds; the leaderboard then shows its optimism)")] = None,
    storage: Storage = "results",
    jobs: Jobs = -1,
    cache_dir: CacheDir = "results/cache",
    no_cache: NoCache = False,
    as_json: AsJson = False,
) -> None:
    """Full cross-validation of a config (or of an ensemble file of `dfu ensemble`) on every
    fold (and fold seed), without Ray."""
    from dfu_train.cache import ArtifactCache
    from dfu_train.config import load_trial_config
    from dfu_train.results.ensemble import read_ensemble_file
    from dfu_train.training.cv import run_cv, summarize_cv

    ensemble = read_ensemble_file(config)
    if ensemble is not None:
        from dfu_train.cli.models import cv_ensemble

        return cv_ensemble(ensemble, data_root=data_root, fold_seeds=fold_seeds, sweep=sweep,
                           storage=storage, jobs=jobs, cache_dir=cache_dir, no_cache=no_cache,
                           as_json=as_json)
    trial = load_trial_config(config)
    seeds = parse_seeds(fold_seeds) if fold_seeds else [trial.cv.seed]
    confirmation = screening = None
    if sweep is not None:
        from dfu_train.results import store
        from dfu_train.results.confirm import Confirmation, check_confirmation

        if fold_seeds is None:
            raise ConfigError("--sweep confirms on fresh fold seeds: pass --fold-seeds, e.g. "
                              "--fold-seeds 100,101,102")
        sweep_dir = store.resolve_sweep(sweep, storage=storage)
        data_root, screening, recorded_id = check_confirmation(sweep_dir, trial, seeds,
                                                               data_root=data_root)
        confirmation = Confirmation(sweep_dir, recorded_id)
    cohort = checked_cohort(data_root or DEMO_DATA, trial)
    cache = ArtifactCache(cache_dir, enabled=not no_cache)
    with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=err,
                  disable=as_json) as bar:
        task = bar.add_task(f"config {trial.config_id}", total=len(seeds) * trial.cv.n_folds)

        def recorded(seed: int, fold: int):
            record = confirmation.recorded(seed, fold) if confirmation else None
            if record is not None:
                bar.advance(task)
            return record

        def finished(result) -> None:
            if confirmation is not None:
                confirmation.record(result)
            if not as_json:
                bar.console.print(f"  seed {result.fold_seed} fold {result.fold}: "
                                  f"qwk {fmt_number(result.qwk)}")
            bar.advance(task)

        folds = run_cv(trial, cohort, seeds=seeds, n_jobs=jobs, cache=cache, done=recorded,
                       on_fold=finished, config_id=confirmation and confirmation.config_id)
    summary = summarize_cv(trial, seeds, folds, cohort=cohort)
    if confirmation is not None:
        summary["config_id"] = confirmation.config_id  # as the sweep recorded it
    if screening is not None:
        summary["sweep"] = sweep
        summary["qwk_screen_mean"] = screening
        summary["optimism"] = (None if summary["qwk_mean"] is None or screening is None
                               else round(screening - summary["qwk_mean"], 4))
    if as_json:
        emit_json(summary)
        return
    out.print(f"config {trial.config_id}: qwk {fmt_number(summary['qwk_mean'])} +/- "
              f"{fmt_number(summary['qwk_std'])} over {len(folds)} folds")
    _print_clinical(summary)
    if screening is not None:
        out.print(f"sweep {sweep}: screened {fmt_number(screening)}, confirmed "
                  f"{fmt_number(summary['qwk_mean'])}: optimism {fmt_number(summary['optimism'])} "
                  f"(recorded; see `dfu leaderboard {sweep}`)")
