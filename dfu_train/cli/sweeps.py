"""`dfu sweep` (run, resume, promote, status, schema) and `dfu demo`: sweeps on Ray, watched."""

from __future__ import annotations

import functools
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from dfu_train.cli.common import (DEMO_DATA, Address, AsJson, CacheRoot, Storage, SweepName,
                                  emit_json, err, fmt_number, out, parse_seeds, progress_line,
                                  user_errors)
from dfu_train.cli.results import print_board, print_rejected
from dfu_train.errors import ConfigError

sweep_app = typer.Typer(help="Launch sweeps on a Ray cluster.", no_args_is_help=True)


class ProgressView(str, Enum):
    auto = "auto"
    live = "live"
    lines = "lines"
    json = "json"
    quiet = "quiet"


ProgressMode = Annotated[ProgressView, typer.Option(
    "--progress", help="auto (live on a terminal, else lines), live, lines, json (a JSON line "
                       "per update on stderr; the leaderboard as JSON on stdout) or quiet")]
MlflowUri = Annotated[Optional[str], typer.Option(
    "--mlflow", help="log the sweep to MLflow at this tracking URI (file:, http:, sqlite:): a "
                     "run per config, a child run per fold")]


TensorBoard = Annotated[bool, typer.Option(
    "--tensorboard", help="write TensorBoard event files into each trial's folder")]


def _run_watched(plan, *, address: str | None, mode: str, mlflow: str | None = None,
                 tensorboard: bool = False, report_every: float = 10.0,
                 command: str = "dfu sweep run"):
    """`run_sweep` with the progress view `mode` asks for and the trackers asked for;
    `command` names the run in the sweep's lease."""
    from rich.live import Live

    from dfu_train.results.progress import ProgressWatcher
    from dfu_train.sweep.events import TrialEvents
    from dfu_train.sweep.launch import run_sweep
    from dfu_train.sweep.trackers import create_trackers

    trackers = create_trackers(plan.name, plan.sweep_dir, mlflow=mlflow, tensorboard=tensorboard)
    run = functools.partial(_interruptible, run_sweep, plan, address=address, command=command)
    if mode == "auto":
        mode = "live" if err.is_terminal else "lines"
    if mode == "lines":
        return run(on_event=progress_line, trackers=trackers)
    quiet = lambda line: None  # noqa: E731
    if mode == "quiet":
        return run(on_event=quiet, trial_lines=False, trackers=trackers)
    if mode == "json":  # JSON lines only on stderr: trial events, then the summary
        events = TrialEvents(report_every=report_every)
        return run(on_event=quiet, trial_lines=False, trackers=[*trackers, events])
    counts = {"running": 0}
    live = Live(console=err, refresh_per_second=2, redirect_stderr=True)

    def show(snap: dict) -> None:
        ended = snap["finished"] + snap["pruned"] + snap["error"]
        snap = {**snap, "running": counts["running"],
                "pending": max(snap["planned"] - ended - counts["running"], 0)}
        live.update(_progress_table(plan.name, snap))

    watcher = ProgressWatcher(plan.sweep_dir, experiment=plan.experiment, planned=plan.n_trials,
                              show=show)
    live.start()
    watcher.start()
    try:
        return run(on_event=progress_line, trial_lines=False,
                   trackers=[*trackers, TrialEvents(emit=False, counts=counts)])
    finally:
        watcher.stop()
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
    1 with the errors listed when a trial failed, 130 (and how to go on) when interrupted.
    With `--progress json` the ending is one JSON summary line on stderr."""
    code = 130 if outcome["interrupted"] else 1 if outcome["errors"] else 0
    if mode == "json":
        from dfu_train.results.leaderboard import sweep_status

        best = sweep_status(sweep_dir)["best"] or {}
        summary = {"event": "summary", "exit_code": code, "continue_with": again if code else None,
                   **{k: outcome.get(k) for k in ("planned", "finished", "pruned", "error",
                                                  "interrupted", "errors")},
                   "best_config": best.get("config_id"), "best_qwk": best.get("qwk_mean")}
        print(json.dumps(summary, default=str), file=sys.stderr, flush=True)
        if code != 130:
            _finish(sweep_dir, mode, top=top)
        raise typer.Exit(code=code)
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
        from dfu_train.results.store import read_manifest, selection_rule

        manifest = read_manifest(sweep_dir)
        board = query(build_leaderboard(sweep_dir, manifest=manifest), top=top,
                      rule=selection_rule(manifest), include_partial=True)
        typer.echo(board.to_json(orient="records", indent=1))
        return
    print_board(sweep_dir, top=top)


@sweep_app.command("run")
@user_errors
def sweep_run(
    sweep_file: Annotated[Path, typer.Argument(help="sweep YAML file")],
    data_root: Annotated[Optional[Path], typer.Option(envvar="DFU_DATA_ROOT")] = None,
    storage: Storage = "results",
    name: Annotated[Optional[str], typer.Option(help="sweep name (default: the file's)")] = None,
    address: Address = None,
    progress: ProgressMode = ProgressView.auto,
    cache_dir: CacheRoot = None,
    mlflow: MlflowUri = None,
    tensorboard: TensorBoard = False,
    report_every: Annotated[float, typer.Option(
        min=0, help="--progress json: seconds between a trial's report events (0: every "
                    "report)")] = 10.0,
    warm_start: Annotated[Optional[str], typer.Option(
        "--warm-start", help="another sweep under --storage whose best configs (in its "
                             "leaderboard's order) this one tries first")] = None,
    top: Annotated[int, typer.Option(
        "--top", min=1, help="with --warm-start: how many of its best configs")] = 3,
) -> None:
    """Validate a sweep file and cohort, then run the sweep on Ray (local by default)."""
    progress = progress.value
    plan, outcome = _run_sweep_file(sweep_file, data_root=data_root, storage=storage, name=name,
                                    address=address, progress=progress, mlflow=mlflow,
                                    tensorboard=tensorboard, report_every=report_every,
                                    cache_dir=cache_dir, warm_start=warm_start, top=top)
    _conclude(plan.sweep_dir, outcome, progress,
              again=_again(f"dfu sweep resume {plan.name}", storage))


def _run_sweep_file(sweep_file: Path, **options):
    from dfu_train.sweep.plan import plan_sweep
    from dfu_train.sweep.space import load_sweep

    watched = {"address": options.pop("address"), "mode": options.pop("progress", "lines"),
               "command": "dfu sweep run",
               "mlflow": options.pop("mlflow", None),
               "tensorboard": options.pop("tensorboard", False),
               "report_every": options.pop("report_every", 10.0)}
    warm_start, top = options.pop("warm_start", None), options.pop("top", 3)
    spec = load_sweep(sweep_file)
    if warm_start is not None:
        from dfu_train.results.store import resolve_sweep
        from dfu_train.sweep.warm import warm_start_points, with_points

        other = resolve_sweep(warm_start, storage=options.get("storage", "results"))
        spec = with_points(spec, warm_start_points(other, spec, top=top),
                           source=f"{sweep_file} with --warm-start {warm_start}")
    plan = plan_sweep(spec, source=str(sweep_file), **options)
    return plan, _run_watched(plan, **watched)


@sweep_app.command("resume")
@user_errors
def sweep_resume(
    name: SweepName,
    storage: Storage = "results",
    address: Address = None,
    progress: ProgressMode = ProgressView.auto,
    cache_dir: CacheRoot = None,
    mlflow: MlflowUri = None,
    tensorboard: TensorBoard = False,
) -> None:
    """Continue a sweep after a crash or Ctrl-C: finished folds are kept, the rest continue
    (from their last checkpoint), as a fresh run planned from the sweep's own records."""
    from dfu_train.sweep.plan import plan_sweep
    from dfu_train.sweep.space import parse_sweep
    from dfu_train.results.lease import check_free
    from dfu_train.results.store import read_manifest, recorded_spec, resolve_sweep

    progress = progress.value
    sweep_dir = resolve_sweep(name, storage=storage)
    manifest = read_manifest(sweep_dir)
    check_free(sweep_dir)
    spec = parse_sweep(recorded_spec(manifest), source=str(sweep_dir / "sweep.json"))
    plan = plan_sweep(spec, data_root=manifest["data_root"], storage=sweep_dir.parent,
                      name=sweep_dir.name, source=str(sweep_dir / "sweep.json"),
                      cache_dir=cache_dir)
    outcome = _run_watched(plan, address=address, mode=progress, mlflow=mlflow,
                           tensorboard=tensorboard, command="dfu sweep resume")
    _conclude(sweep_dir, outcome, progress, again=_again(f"dfu sweep resume {name}", storage))


@sweep_app.command("promote")
@user_errors
def sweep_promote(
    name: SweepName,
    top: Annotated[int, typer.Option(help="how many of the best screened configs")] = 3,
    fold_seeds: Annotated[Optional[str], typer.Option(
        help="extra fold seeds, e.g. 1,2: repeated CV under other patient splits")] = None,
    rule: Annotated[Optional[str], typer.Option(
        help="selection rule that picks the top configs: mean, mean_minus_std or one_se "
             "(default: the sweep's)")] = None,
    storage: Storage = "results",
    address: Address = None,
    progress: ProgressMode = ProgressView.auto,
    cache_dir: CacheRoot = None,
    mlflow: MlflowUri = None,
    tensorboard: TensorBoard = False,
) -> None:
    """Run the top screened configs (by the selection rule) and the study's recipe on every
    fold (and extra fold seeds) into the same sweep. Recorded folds are not re-run; running the
    same promotion again continues it."""
    from dfu_train.results import store
    from dfu_train.results.lease import check_free
    from dfu_train.results.store import resolve_sweep
    from dfu_train.sweep.plan import plan_promotion

    progress = progress.value
    seeds = tuple(parse_seeds(fold_seeds)) if fold_seeds else ()
    sweep_dir = resolve_sweep(name, storage=storage)
    store.read_manifest(sweep_dir)
    check_free(sweep_dir)
    if rule is not None:
        from dfu_train.results.selection import checked_rule

        checked_rule(rule)
    plan = plan_promotion(sweep_dir, top=top, fold_seeds=seeds, cache_dir=cache_dir, rule=rule)
    outcome = _run_watched(plan, address=address, mode=progress, mlflow=mlflow,
                           tensorboard=tensorboard, command="dfu sweep promote")
    again = f"dfu sweep promote {name} --top {top}" + (f" --fold-seeds {fold_seeds}"
                                                        if fold_seeds else "") + (
        f" --rule {rule}" if rule else "")
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
        emit_json(status)
        return
    out.print(f"sweep {status['sweep']}: " + ", ".join(f"{v} {k}"
                                                     for k, v in status["trials"].items()))
    best = status["best"]
    if best:
        out.print(f"best so far: {best['config_id']} qwk {fmt_number(best['qwk_mean'])} ± "
                  f"{fmt_number(best['qwk_std'])} ({best['folds_done']}/{best['folds_total']} folds)")
    for trial in status["errors"]:
        out.print(f"error in config {trial['config_id']} fold {trial['fold']}: {trial['error']}")
    print_rejected(status["rejected"])


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
    emit_json(schema)


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
    for folder in (Path.cwd() / "sweeps", Path(__file__).resolve().parents[2] / "sweeps"):
        if (folder / file_name).is_file():
            return folder / file_name
    raise ConfigError(f"ready sweep file sweeps/{file_name} not found; run from the repository")
