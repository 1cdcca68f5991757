"""`dfu`: the command line. Each command group is a module over library functions; this one only
joins them.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 internal error.
`--json` and `--format json` write nothing but JSON to stdout; progress goes to stderr.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dfu_train import __version__
from dfu_train.cli import cache, data, folds, models, results, sweeps

app = typer.Typer(help="Hyperparameter sweeps for DFU healing-phase classification.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode=None)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dfu {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="print the version and exit")] = None,
) -> None:
    """Hyperparameter sweeps for DFU healing-phase classification."""


app.add_typer(data.data_app, name="data")
app.add_typer(sweeps.sweep_app, name="sweep")
app.add_typer(cache.cache_app, name="cache")
app.command("fold")(folds.fold_command)
app.command("cv")(folds.cv_command)
app.command("leaderboard")(results.leaderboard_command)
app.command("report")(results.report_command)
app.command("ensemble")(models.ensemble_command)
app.command("refit")(models.refit_command)
app.command("predict")(models.predict_command)
app.command("demo")(sweeps.demo)


def main() -> None:
    app()
