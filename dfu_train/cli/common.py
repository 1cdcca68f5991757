"""What every command module shares: consoles, option types, the error handler, formatting."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from dfu_train.errors import ConfigError, DfuError, one_line

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
    """Turn a DfuError into one line on stderr and exit code 2. The message is printed as plain
    text (a quoted value may look like console markup), on one bounded line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DfuError as exc:
            err.print(Text.assemble(("error:", "bold red"), " ", one_line(str(exc))),
                      soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def output_file(path: Path | None, what: str) -> Path | None:
    """An output file's path, checked before any work: not a folder, and its folder (made if
    missing) writable."""
    if path is None:
        return None
    if path.is_dir() or str(path).endswith(("/", os.sep)):
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    _writable_folder(path.parent, what, path)
    return path


def output_dir(path: Path, what: str) -> Path:
    """An output folder, checked before any work: not a file, and made if missing."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; give a folder")
    _writable_folder(path, what, path)
    return path


def _writable_folder(folder: Path, what: str, given: Path) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {given}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {given}: {existing} is not writable")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{what} {given}: cannot create {folder} ({exc.strerror})") from None


def progress_line(line: str) -> None:
    err.print(line, soft_wrap=True)


def emit_json(data) -> None:
    typer.echo(json.dumps(data, indent=1, default=str))


def fmt_number(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def parse_seeds(text: str) -> list[int]:
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


def checked_cohort(data_root: Path, trial):
    """The cohort, checked for everything `trial` needs before any training."""
    from dfu_train.data.check import check_cohort_for

    return check_cohort_for(data_root, modalities=trial.modalities, n_folds=trial.cv.n_folds)
