"""`dfu`: the command line. Each command parses, calls one library function and prints.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 internal error.
`--json` and `--format json` write nothing but JSON to stdout; progress goes to stderr.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import Progress, TimeElapsedColumn
from rich.table import Table

from dfu_train.errors import ConfigError, DfuError

app = typer.Typer(help="Hyperparameter sweeps for DFU healing-phase classification.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Create, validate and summarise cohorts.", no_args_is_help=True)
sweep_app = typer.Typer(help="Launch sweeps on a Ray cluster.", no_args_is_help=True)
app.add_typer(data_app, name="data")
cache_app = typer.Typer(help="The artifact cache that trials share.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")
app.add_typer(cache_app, name="cache")

# Piped output is not squeezed into 80 columns: tables stay readable in logs and CI.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, highlight=False)

DataRoot = Annotated[Path, typer.Option("--data-root", envvar="DFU_DATA_ROOT",
                                        help="cohort folder in the clinical layout")]
Storage = Annotated[str, typer.Option(
    "--storage", envvar="DFU_STORAGE",
    help="where sweeps live: a folder, file://, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX")]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output only")]
def _check_jobs(value: int) -> int:
    if value == 0 or value < -1:
        raise typer.BadParameter("use -1 (all cores) or a positive number of threads")
    return value


Jobs = Annotated[int, typer.Option("--jobs", callback=_check_jobs,
                                   help="forest threads; -1 = all cores (no Ray here)")]
CacheDir = Annotated[str, typer.Option(
    "--cache-dir", envvar="DFU_CACHE_DIR",
    help="artifact cache (crops, forest outputs, pretrained branches): a folder or a URI")]
CacheRoot = Annotated[Optional[str], typer.Option(
    "--cache-dir", envvar="DFU_CACHE_DIR", help="the cache folder or URI (default: STORAGE/cache)")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="compute everything, store nothing")]
SweepName = Annotated[str, typer.Argument(help="sweep name under --storage, or its folder")]
Address = Annotated[Optional[str], typer.Option(envvar="RAY_ADDRESS", help="Ray cluster address")]
DEMO_DATA = Path("results/demo-data")


def user_errors(command):
    """Turn a DfuError into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DfuError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _progress(line: str) -> None:
    err.print(line, soft_wrap=True)


ProgressMode = Annotated[str, typer.Option(
    "--progress", help="auto (live on a terminal, else lines), live, lines, json (a JSON line "
                       "per update on stderr; the leaderboard as JSON on stdout) or quiet")]
PROGRESS_MODES = ("auto", "live", "lines", "json", "quiet")
MlflowUri = Annotated[Optional[str], typer.Option(
    "--mlflow", help="log every trial to MLflow at this tracking URI (file:, http:, sqlite:)")]
TensorBoard = Annotated[bool, typer.Option(
    "--tensorboard", help="write TensorBoard event files into each trial's folder")]


def _run_watched(plan, *, address: str | None, mode: str, mlflow: str | None = None,
                 tensorboard: bool = False):
    """`run_sweep` with the progress view `mode` asks for and the trackers asked for."""
    from rich.live import Live

    from dfu_train.sweep.launch import create_trackers, run_sweep
    from dfu_train.results.progress import ProgressWatcher

    run = functools.partial(_interruptible, run_sweep, plan, address=address,
                            trackers=create_trackers(plan.name, mlflow=mlflow,
                                                     tensorboard=tensorboard))
    if mode == "auto":
        mode = "live" if err.is_terminal else "lines"
    if mode == "lines":
        return run(on_event=_progress)
    quiet = lambda line: None  # noqa: E731
    if mode == "quiet":
        return run(on_event=quiet, trial_lines=False)
    live = Live(console=err, refresh_per_second=2, redirect_stderr=True) if mode == "live" else None

    def show(snap: dict) -> None:
        if live is not None:
            live.update(_progress_table(plan.name, snap))
        else:
            print(json.dumps(snap), file=sys.stderr, flush=True)

    watcher = ProgressWatcher(plan.sweep_dir, experiment=plan.experiment, planned=plan.n_trials,
                              show=show)
    if live is not None:
        live.start()
    watcher.start()
    try:
        return run(on_event=quiet if live is None else _progress, trial_lines=False)
    finally:
        watcher.stop()
        if live is not None:
            live.stop()


def _interruptible(run_sweep, plan, **options) -> dict:
    """Run the sweep and say how it ended (`store.experiment_outcome`). Tune ends a run at the
    first Ctrl-C after saving its state; a second one reaches here as KeyboardInterrupt."""
    from dfu_train.results import store

    try:
        run_sweep(plan, **options)
    except KeyboardInterrupt:
        return {"interrupted": True, "errors": [], "planned": plan.n_trials}
    return store.experiment_outcome(plan.sweep_dir, experiment=plan.experiment,
                                    planned=plan.n_trials)


def _conclude(sweep_dir, outcome: dict, mode: str, *, again: str, top: int = 10) -> None:
    """The leaderboard, then the exit code: 0 when every planned trial finished or was pruned,
    1 with the errors listed when a trial failed, 130 (and how to go on) when interrupted."""
    if outcome["interrupted"]:
        err.print(f"interrupted: finished folds are kept; continue with `{again}`",
                  soft_wrap=True)
        raise typer.Exit(code=130)
    _finish(sweep_dir, mode, top=top)
    if outcome["errors"]:
        for trial in outcome["errors"]:
            err.print(f"error in config {trial['config_id']} fold {trial['fold']} "
                      f"(fold seed {trial['fold_seed']}): {trial['error']}", soft_wrap=True)
        err.print(f"{len(outcome['errors'])} of {outcome['planned']} trials failed; fix the "
                  f"cause and run `{again}` to retry them", soft_wrap=True)
        raise typer.Exit(code=1)


def _again(command: str, storage: str) -> str:
    """The command that continues a sweep, with the storage when it is not the default."""
    return command if storage == "results" else f"{command} --storage {storage}"


def _progress_table(name: str, snap: dict) -> Table:
    table = Table(title=f"sweep {name} ({snap['experiment']})")
    for column in ("running", "pending", "finished", "pruned", "error", "best so far",
                   "elapsed", "remaining"):
        table.add_column(column, justify="right")
    best = (f"{snap['best_config']} {snap['best_qwk']:.3f}" if snap["best_config"] else "-")
    remaining = snap["remaining_s"]
    table.add_row(*(str(snap[k]) for k in ("running", "pending", "finished", "pruned", "error")),
                  best, _duration(snap["elapsed_s"]),
                  "-" if remaining is None else f"~{_duration(remaining)}")
    return table


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _finish(sweep_dir, mode: str, *, top: int = 10) -> None:
    """The leaderboard after a sweep: a table, JSON for `--progress json`, nothing when quiet."""
    if mode == "quiet":
        return
    if mode == "json":
        from dfu_train.results.leaderboard import build_leaderboard, query

        board = query(build_leaderboard(sweep_dir), top=top, include_partial=True)
        typer.echo(board.to_json(orient="records", indent=1))
        return
    _print_board(sweep_dir, top=top)


def _emit_json(data) -> None:
    typer.echo(json.dumps(data, indent=1, default=str))


@data_app.command("synth")
@user_errors
def data_synth(
    out_dir: Annotated[Path, typer.Argument(help="folder to write the cohort into")],
    patients: Annotated[int, typer.Option(min=3, max=999)] = 120,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    meta_signal: Annotated[float, typer.Option(help="strength of the phase in metadata")] = 1.0,
    image_signal: Annotated[float, typer.Option(help="strength of the phase in images")] = 1.0,
    images: Annotated[bool, typer.Option(help="write image folders and boxes")] = True,
) -> None:
    """Write a synthetic cohort in exactly the real file layout."""
    from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort

    spec = SynthSpec(patients=patients, seed=seed, meta_signal=meta_signal,
                     image_signal=image_signal, images=images)
    write_synthetic_cohort(out_dir, spec)
    err.print(f"wrote a synthetic cohort of {patients} patients to {out_dir}")


@data_app.command("check")
@user_errors
def data_check(data_root: DataRoot = DEMO_DATA, as_json: AsJson = False) -> None:
    """Validate a cohort (tables, file names, images, boxes) and summarise it."""
    summary = _checked_summary(data_root)
    if as_json:
        _emit_json(summary)
        return
    table = Table(title=f"cohort {summary['data_root']}", show_header=False)
    table.add_row("samples / patients", f"{summary['samples']} / {summary['patients']}")
    table.add_row("classes I / P / R", " / ".join(str(v) for v in summary["classes"].values()))
    table.add_row("modalities", ", ".join(summary["modalities"]))
    for modality, count in summary["image_rows"].items():
        table.add_row(f"image rows {modality}", str(count))
    table.add_row("samples with images", str(summary["samples_with_images"]))
    for column, share in summary["missing_share"].items():
        table.add_row(f"missing {column}", f"{share:.1%}")
    for note in summary["notes"]:
        table.add_row("note", note)
    table.add_row("fingerprint", summary["fingerprint"])
    out.print(table)


def _checked_summary(data_root: Path) -> dict:
    from dfu_train.data.check import check_images, summarize
    from dfu_train.data.cohort import load_cohort

    cohort = load_cohort(data_root)
    return summarize(cohort, check_images(cohort))


@app.command("fold")
@user_errors
def fold_command(
    config: Annotated[str, typer.Argument(help="config file (YAML/JSON, exported best) or 'default'")],
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
    cohort = _checked_cohort(data_root, trial)
    result = run_fold(trial, cohort, fold, report=_print_report, n_jobs=jobs,
                      cache=ArtifactCache(cache_dir, enabled=not no_cache))
    if as_json:
        _emit_json(result.to_dict())
    else:
        out.print(f"config {result.config_id} fold {fold}: qwk {_fmt(result.qwk)}, "
                  f"accuracy {result.metrics['accuracy']:.3f}, "
                  f"macro F1 {result.metrics['macro_f1']:.3f}")


def _checked_cohort(data_root: Path, trial):
    """The cohort, refused before any training if it lacks a modality the config uses, has
    too few patients per class for its folds, or holds a broken image or box."""
    from dfu_train.data.check import check_images
    from dfu_train.data.cohort import load_cohort
    from dfu_train.data.folds import check_fold_count

    cohort = load_cohort(data_root)
    absent = [m for m in trial.modalities if m not in cohort.modalities]
    if absent:
        raise ConfigError(f"modality {absent[0]!r} requested, but the cohort at {data_root} has "
                          f"only {', '.join(cohort.modalities)}")
    check_fold_count(cohort, trial.cv.n_folds)
    check_images(cohort, trial.modalities)
    return cohort


def _print_report(metrics: dict, checkpoint) -> None:
    err.print(f"  {metrics['stage']} progress {metrics['progress']}: "
              f"val_qwk {_fmt(metrics.get('val_qwk'))}")


@app.command("cv")
@user_errors
def cv_command(
    config: Annotated[str, typer.Argument(help="config file (YAML/JSON, exported best) or 'default'")],
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
    """Full cross-validation of a config on every fold (and fold seed), without Ray."""
    from dfu_train.cache import ArtifactCache
    from dfu_train.config import load_trial_config
    from dfu_train.training.cv import run_cv, summarize_cv

    trial = load_trial_config(config)
    seeds = _parse_seeds(fold_seeds) if fold_seeds else [trial.cv.seed]
    done = on_fold = None
    screening = None
    if sweep is not None:
        from dfu_train.results import store
        from dfu_train.results.confirm import check_confirmation

        if fold_seeds is None:
            raise ConfigError("--sweep confirms on fresh fold seeds: pass --fold-seeds, e.g. "
                              "--fold-seeds 100,101,102")
        sweep_dir = store.resolve_sweep(sweep, storage=storage)
        data_root, screening = check_confirmation(sweep_dir, trial, seeds, data_root=data_root)

        def done(seed: int, fold: int):
            return store.read_fold_result(sweep_dir, trial.config_id, seed, fold,
                                          folder=store.CONFIRMATIONS)

        def on_fold(result) -> None:
            store.write_confirmation(sweep_dir, {**result.to_dict(), "role": "confirmation"})
    cohort = _checked_cohort(data_root or DEMO_DATA, trial)
    cache = ArtifactCache(cache_dir, enabled=not no_cache)
    with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=err,
                  disable=as_json) as bar:
        task = bar.add_task(f"config {trial.config_id}", total=len(seeds) * trial.cv.n_folds)

        def finished(result) -> None:
            if on_fold is not None:
                on_fold(result)
            if not as_json:
                bar.console.print(f"  seed {result.fold_seed} fold {result.fold}: "
                                  f"qwk {_fmt(result.qwk)}")
            bar.advance(task)

        folds = run_cv(trial, cohort, seeds=seeds, n_jobs=jobs, cache=cache,
                       done=done or (lambda seed, fold: None), on_fold=finished)
    summary = summarize_cv(trial, seeds, folds)
    if screening is not None:
        summary["sweep"] = sweep
        summary["qwk_screen_mean"] = screening
        summary["optimism"] = (None if summary["qwk_mean"] is None or screening is None
                               else round(screening - summary["qwk_mean"], 4))
    if as_json:
        _emit_json(summary)
        return
    out.print(f"config {trial.config_id}: qwk {_fmt(summary['qwk_mean'])} +/- "
              f"{_fmt(summary['qwk_std'])} over {len(folds)} folds")
    if screening is not None:
        out.print(f"sweep {sweep}: screened {_fmt(screening)}, confirmed "
                  f"{_fmt(summary['qwk_mean'])}: optimism {_fmt(summary['optimism'])} "
                  f"(recorded; see `dfu leaderboard {sweep}`)")


def _parse_seeds(text: str) -> list[int]:
    from dfu_train.config import MAX_SEED

    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--fold-seeds {text!r}: expected comma-separated integers") from None
    if not seeds:
        raise ConfigError("--fold-seeds is empty")
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"--fold-seeds: {seed} is not a seed (use 0 to {MAX_SEED})")
    return list(dict.fromkeys(seeds))


@sweep_app.command("run")
@user_errors
def sweep_run(
    sweep_file: Annotated[Path, typer.Argument(help="sweep YAML file")],
    data_root: Annotated[Optional[Path], typer.Option(envvar="DFU_DATA_ROOT")] = None,
    storage: Storage = "results",
    name: Annotated[Optional[str], typer.Option(help="sweep name (default: the file's)")] = None,
    address: Address = None,
    progress: ProgressMode = "auto",
    mlflow: MlflowUri = None,
    tensorboard: TensorBoard = False,
) -> None:
    """Validate a sweep file and cohort, then run the sweep on Ray (local by default)."""
    _check_mode(progress)
    plan, outcome = _run_sweep_file(sweep_file, data_root=data_root, storage=storage, name=name,
                                    address=address, progress=progress, mlflow=mlflow,
                                    tensorboard=tensorboard)
    _conclude(plan.sweep_dir, outcome, progress,
              again=_again(f"dfu sweep resume {plan.name}", storage))


def _check_mode(mode: str) -> None:
    if mode not in PROGRESS_MODES:
        raise ConfigError(f"--progress {mode!r}: choose {', '.join(PROGRESS_MODES)}")


def _run_sweep_file(sweep_file: Path, **options):
    from dfu_train.sweep.launch import plan_sweep
    from dfu_train.sweep.space import load_sweep

    watched = {"address": options.pop("address"), "mode": options.pop("progress", "lines"),
               "mlflow": options.pop("mlflow", None),
               "tensorboard": options.pop("tensorboard", False)}
    spec = load_sweep(sweep_file)
    plan = plan_sweep(spec, source=str(sweep_file), **options)
    return plan, _run_watched(plan, **watched)


@sweep_app.command("resume")
@user_errors
def sweep_resume(
    name: SweepName,
    storage: Storage = "results",
    address: Address = None,
    progress: ProgressMode = "auto",
) -> None:
    """Continue a sweep after a crash or Ctrl-C: finished folds are kept, the rest continue."""
    from dfu_train.sweep.launch import plan_sweep
    from dfu_train.sweep.space import parse_sweep
    from dfu_train.results.store import read_manifest, resolve_sweep

    _check_mode(progress)
    sweep_dir = resolve_sweep(name, storage=storage)
    manifest = read_manifest(sweep_dir)
    spec = parse_sweep(manifest["spec"], source=str(sweep_dir / "sweep.json"))
    plan = plan_sweep(spec, data_root=manifest["data_root"], storage=sweep_dir.parent,
                      name=sweep_dir.name)
    outcome = _run_watched(plan, address=address, mode=progress)
    _conclude(sweep_dir, outcome, progress, again=_again(f"dfu sweep resume {name}", storage))


@sweep_app.command("promote")
@user_errors
def sweep_promote(
    name: SweepName,
    top: Annotated[int, typer.Option(help="how many of the best screened configs")] = 3,
    fold_seeds: Annotated[Optional[str], typer.Option(
        help="extra fold seeds, e.g. 1,2: repeated CV under other patient splits")] = None,
    storage: Storage = "results",
    address: Address = None,
    progress: ProgressMode = "auto",
    mlflow: MlflowUri = None,
    tensorboard: TensorBoard = False,
) -> None:
    """Run the top screened configs on every fold (and extra fold seeds) into the same sweep.
    Recorded folds are not re-run; running the same promotion again continues it."""
    from dfu_train.sweep.launch import plan_promotion
    from dfu_train.results.store import resolve_sweep

    _check_mode(progress)
    seeds = tuple(_parse_seeds(fold_seeds)) if fold_seeds else ()
    sweep_dir = resolve_sweep(name, storage=storage)
    plan = plan_promotion(sweep_dir, top=top, fold_seeds=seeds)
    outcome = _run_watched(plan, address=address, mode=progress, mlflow=mlflow,
                           tensorboard=tensorboard)
    again = f"dfu sweep promote {name} --top {top}" + (f" --fold-seeds {fold_seeds}"
                                                        if fold_seeds else "")
    _conclude(sweep_dir, outcome, progress, again=_again(again, storage), top=top)


@sweep_app.command("status")
@user_errors
def sweep_status(
    name: SweepName,
    storage: Storage = "results",
    as_json: AsJson = False,
) -> None:
    """Trial counts (finished, running, pending, pruned, error) and the current best config."""
    from dfu_train.results.leaderboard import sweep_status
    from dfu_train.results.store import resolve_sweep

    status = sweep_status(resolve_sweep(name, storage=storage))
    if as_json:
        _emit_json(status)
        return
    out.print(f"sweep {status['sweep']}: " + ", ".join(f"{v} {k}"
                                                     for k, v in status["trials"].items()))
    best = status["best"]
    if best:
        out.print(f"best so far: {best['config_id']} qwk {_fmt(best['qwk_mean'])} ± "
                  f"{_fmt(best['qwk_std'])} ({best['folds_done']}/{best['folds_total']} folds)")
    for trial in status["errors"]:
        out.print(f"error in config {trial['config_id']} fold {trial['fold']}: {trial['error']}")


@sweep_app.command("schema")
def sweep_schema(markdown: Annotated[bool, typer.Option(
        "--markdown", help="the human reference (docs/sweep-reference.md) instead")] = False,
) -> None:
    """Print the JSON schema of the sweep-file format (and the dotted parameter names)."""
    from dfu_train.config import TrialConfig
    from dfu_train.sweep.space import SweepSpec

    if markdown:
        from dfu_train.sweep.reference import sweep_reference

        typer.echo(sweep_reference(), nl=False)
        return

    schema = SweepSpec.model_json_schema()
    schema["x-parameters"] = list(TrialConfig.dotted_names())
    _emit_json(schema)


@app.command("leaderboard")
@user_errors
def leaderboard_command(
    name: SweepName,
    storage: Storage = "results",
    top: Annotated[Optional[int], typer.Option(min=1)] = None,
    by: str = "qwk_mean",
    where: Annotated[Optional[list[str]], typer.Option(help="FIELD=VALUE, repeatable")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="include partial configs")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table|csv|json|parquet")] = "table",
    out_file: Annotated[Optional[Path], typer.Option("--out")] = None,
    export_best: Annotated[Optional[Path], typer.Option(help="write the best config here")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="config_id to compare against, "
                                                    "paired over shared folds")] = None,
    trials: Annotated[bool, typer.Option(
        "--trials", help="one row per finished fold: timing and reused artifacts")] = False,
    any_folds: Annotated[bool, typer.Option(
        "--any-folds", help="rank configs run on fewer folds (screened only) among the "
                            "best-covered ones instead of after them")] = False,
) -> None:
    """Configs ranked by mean QWK over folds (read offline from the sweep folder)."""
    from dfu_train.results.leaderboard import (build_leaderboard, compare_to_baseline, query,
                                             trial_table)
    from dfu_train.results.store import (read_manifest, recorded_config, resolve_sweep,
                                       write_json_atomic)

    if fmt not in ("table", "csv", "json", "parquet"):
        raise ConfigError(f"--format {fmt!r}: choose table, csv, json or parquet")
    if fmt == "parquet" and out_file is None:
        raise ConfigError("--format parquet needs --out FILE")
    sweep_dir = resolve_sweep(name, storage=storage)
    if trials:
        _write_frame(trial_table(sweep_dir), fmt, out_file, title=f"trials of {sweep_dir.name}")
        return
    board = build_leaderboard(sweep_dir)
    if baseline is not None:
        n_folds = read_manifest(sweep_dir)["spec"]["cv"]["n_folds"]
        board = compare_to_baseline(board, baseline, n_folds=n_folds)
    board = query(board, by=by, top=top, include_partial=show_all, where=tuple(where or ()),
                  fewer_folds_apart=not any_folds)
    if export_best is not None:
        if board.empty:
            raise ConfigError("no complete config to export (see --all)")
        best = board.iloc[0]["config_id"]
        export = recorded_config(sweep_dir, best)
        write_json_atomic(export_best, {"config_id": best, "config": export.to_dict()})
        err.print(f"wrote config {best} to {export_best}; confirm it on fresh fold seeds with "
                  f"`dfu cv {export_best} --sweep {sweep_dir.name} --fold-seeds 100,101,102`",
                  soft_wrap=True)
    if fmt == "table":
        _board_table(board, sweep_dir.name)
        return
    _write_frame(board, fmt, out_file)


def _write_frame(frame, fmt: str, out_file: Path | None, *, title: str = "") -> None:
    """A DataFrame as a rich table, CSV, JSON or Parquet, to stdout or `out_file`."""
    if fmt == "table":
        table = Table(title=title)
        for column in frame.columns:
            table.add_column(column, overflow="fold")
        for row in frame.itertuples(index=False):
            table.add_row(*(_fmt(v) if isinstance(v, float) else str(v) for v in row))
        out.print(table)
        return
    if fmt == "parquet":
        frame.to_parquet(out_file, index=False)
        return
    text = (frame.to_json(orient="records", indent=1) if fmt == "json"
            else frame.to_csv(index=False))
    if out_file is not None:
        out_file.write_text(text, encoding="utf-8")
    else:
        typer.echo(text)


def _print_board(sweep_dir, *, top: int) -> None:
    from dfu_train.results.leaderboard import build_leaderboard, query

    _board_table(query(build_leaderboard(sweep_dir), top=top, include_partial=True),
                 sweep_dir.name)


def _board_table(board, title: str) -> None:
    table = Table(title=f"leaderboard {title}")
    paired = "baseline_diff" in board.columns
    staged = board["qwk_promoted_mean"].notna().any() or board["qwk_confirmed_mean"].notna().any()
    for column in ("#", "config", "QWK mean ± std", "folds", "meta QWK", "macro F1",
                   *(("screened", "promoted", "confirmed", "optimism") if staged else ()),
                   *(("Δ vs baseline (p)",) if paired else ()), "reused"):
        table.add_column(column, no_wrap=True)
    table.add_column("params", overflow="fold")
    for rank, row in enumerate(board.itertuples(index=False), start=1):
        folds = f"{row.folds_done}/{row.folds_total}" + ("" if row.complete else " partial")
        folds += " fewer folds" * bool(row.fewer_folds)
        folds += f" {row.pruned} pruned" * bool(row.pruned) + f" {row.errors} error" * bool(row.errors)
        params = ", ".join(f"{k}={v}" for k, v in row.params.items()) or "-"
        stages = (_fmt(row.qwk_screen_mean), _fmt(row.qwk_promoted_mean),
                  _fmt(row.qwk_confirmed_mean) + (f" ({row.folds_confirmed} folds)"
                                                  if row.folds_confirmed else ""),
                  _fmt(row.optimism)) if staged else ()
        extra = (f"{_fmt(row.baseline_diff)} ({_fmt(row.baseline_p)})",) if paired else ()
        table.add_row(str(rank), row.config_id, f"{_fmt(row.qwk_mean)} ± {_fmt(row.qwk_std)}",
                      folds, _fmt(row.meta_qwk_mean), _fmt(row.macro_f1_mean), *stages, *extra,
                      row.reused or "-", params)
    out.print(table)
    if paired:
        err.print(f"Δ vs baseline: mean paired QWK difference over shared folds; p from the "
                  f"{board['baseline_test'].iloc[0]}", soft_wrap=True)
    if board["fewer_folds"].any():
        err.print("configs marked 'fewer folds' were run on fewer folds than the best-covered "
                  "ones and rank after them (--any-folds ranks them together)", soft_wrap=True)


CacheName = Annotated[Optional[str], typer.Argument(
    help="an artifact kind (crops, forest, branch) or the start of a key; none = every entry")]


def _cache_at(storage: str, cache_dir: str | None):
    from dfu_train.cache import ArtifactCache

    from dfu_train.results.store import CACHE_DIR, storage_path

    return ArtifactCache(cache_dir or str(storage_path(storage) / CACHE_DIR))


@cache_app.command("ls")
@user_errors
def cache_ls(name: CacheName = None, storage: Storage = "results",
             cache_dir: CacheRoot = None, as_json: AsJson = False) -> None:
    """List cached artifacts: kind, key, size, when made and what they are."""
    entries = _cache_at(storage, cache_dir).entries(name)
    if as_json:
        _emit_json([entry.__dict__ for entry in entries])
        return
    table = Table(title=f"{len(entries)} cached artifacts")
    for column in ("kind", "key", "size", "created", "what"):
        table.add_column(column)
    for e in entries:
        table.add_row(e.kind, e.key[:12], _size(e.size), e.created, e.label)
    out.print(table)


@cache_app.command("du")
@user_errors
def cache_du(name: CacheName = None, storage: Storage = "results",
             cache_dir: CacheRoot = None, as_json: AsJson = False) -> None:
    """Disk use of the cache by artifact kind."""
    usage: dict[str, list[int]] = {}
    for entry in _cache_at(storage, cache_dir).entries(name):
        count_size = usage.setdefault(entry.kind, [0, 0])
        count_size[0] += 1
        count_size[1] += entry.size
    if as_json:
        _emit_json({kind: {"entries": n, "bytes": b} for kind, (n, b) in usage.items()})
        return
    for kind, (count, size) in sorted(usage.items()):
        out.print(f"{kind:8} {count:5} entries {_size(size):>10}")
    total = sum(b for _, b in usage.values())
    out.print(f"{'total':8} {sum(n for n, _ in usage.values()):5} entries {_size(total):>10}")


@cache_app.command("clear")
@user_errors
def cache_clear(
    name: Annotated[str, typer.Argument(help="an artifact kind, the start of a key, or 'all'")],
    storage: Storage = "results",
    cache_dir: CacheRoot = None,
) -> None:
    """Remove cached artifacts; trials that need them compute them again."""
    count, size = _cache_at(storage, cache_dir).clear(name)
    out.print(f"removed {count} cached artifacts ({_size(size)})")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@app.command("report")
@user_errors
def report_command(
    name: SweepName,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for index.html and the PNGs")] = (
        Path("report")),
    storage: Storage = "results",
    top: Annotated[int, typer.Option(min=1, help="configs in the ranking plots")] = 10,
) -> None:
    """Plots and a self-contained index.html: top configs over folds, fusion vs metadata,
    learning curves with ASHA stops, parameters, importance, the best config's errors."""
    from dfu_train.results.report import write_report
    from dfu_train.results.store import resolve_sweep

    sweep_dir = resolve_sweep(name, storage=storage)
    figures = write_report(sweep_dir, out_dir, top=top)
    out.print(f"wrote {out_dir / 'index.html'} with {len(figures)} plots")


@app.command("demo")
@user_errors
def demo(storage: Storage = "results") -> None:
    """Synthetic cohort (if missing) + the smoke sweep on a local Ray + the leaderboard."""
    from dfu_train.data import schema
    from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
    from dfu_train.location import Location

    location = Location(storage)
    data_root = location.local_path / "demo-data" if location.is_local else DEMO_DATA
    if not (data_root / schema.METADATA_CSV).is_file():
        err.print(f"writing the synthetic demo cohort to {data_root} ...")
        write_synthetic_cohort(data_root, SynthSpec(patients=120, seed=0))
    plan, outcome = _run_sweep_file(_ready_sweep("smoke.yaml"), data_root=data_root,
                                    storage=storage, name="demo", address=None)
    _conclude(plan.sweep_dir, outcome, "lines", again=_again("dfu sweep resume demo", storage))
    out.print(f"next: `dfu leaderboard demo --storage {storage} --format json`, "
              f"`dfu data check --data-root {data_root}`, or point `dfu sweep run sweeps/metadata.yaml "
              "--data-root YOUR_COHORT` at your own export.")


def _ready_sweep(file_name: str) -> Path:
    for folder in (Path.cwd() / "sweeps", Path(__file__).resolve().parents[1] / "sweeps"):
        if (folder / file_name).is_file():
            return folder / file_name
    raise ConfigError(f"ready sweep file sweeps/{file_name} not found; run from the repository")


def _fmt(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
