"""`dfu leaderboard` and `dfu report`: read a sweep folder (no Ray, no torch)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from dfu_train.cli.common import (Storage, SweepName, err, fmt_number, out, output_dir,
                                  output_file, user_errors)
from dfu_train.errors import ConfigError


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@user_errors
def leaderboard_command(
    name: SweepName,
    storage: Storage = "results",
    top: Annotated[Optional[int], typer.Option(min=1)] = None,
    by: Annotated[Optional[str], typer.Option(
        help="column to rank by instead of the selection rule (with --trials: default qwk)")] = None,
    rule: Annotated[Optional[str], typer.Option(
        help="selection rule: mean, mean_minus_std or one_se (default: the sweep's)")] = None,
    where: Annotated[Optional[list[str]], typer.Option(help="FIELD=VALUE, repeatable")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="include partial configs")] = False,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out", help="write here instead of stdout (parquet needs it)")] = None,
    export_best: Annotated[Optional[Path], typer.Option(help="write the best config here")] = None,
    baseline: Annotated[Optional[str], typer.Option(
        help="config_id to compare against, paired over shared folds (default: the study's "
             "recipe the sweep ran beside its configs)")] = None,
    trials: Annotated[bool, typer.Option(
        "--trials", help="one row per finished fold: timing and reused artifacts")] = False,
    any_folds: Annotated[bool, typer.Option(
        "--any-folds", help="rank configs run on fewer folds (screened only) among the "
                            "best-covered ones instead of after them")] = False,
    by_modalities: Annotated[bool, typer.Option(
        "--by-modalities", help="one row per modality combination: its best config, and the "
                                "gain over metadata alone paired over the same folds")] = False,
) -> None:
    """Configs ranked by the sweep's selection rule over their folds (read offline from the
    sweep folder), each compared with the study's recipe on the same folds."""
    from dfu_train.results.leaderboard import query, query_trials, trial_table
    from dfu_train.results.selection import SELECTION_RULES, checked_rule
    from dfu_train.results.store import (read_manifest, recorded_config, rejected_files,
                                         resolve_sweep, selection_rule, write_json_atomic)

    fmt = fmt.value
    if fmt == "parquet" and out_file is None:
        raise ConfigError("--format parquet needs --out FILE")
    if by_modalities and (trials or by):
        raise ConfigError(f"--by-modalities ranks by the selection rule; it does not go with "
                          f"{'--trials' if trials else '--by'}")
    out_file, export_best = output_file(out_file, "--out"), output_file(export_best,
                                                                         "--export-best")
    sweep_dir = resolve_sweep(name, storage=storage)
    if trials:
        rows = query_trials(trial_table(sweep_dir), by=by or "qwk", top=top,
                            where=tuple(where or ()))
        _write_frame(rows, fmt, out_file, title=f"trials of {sweep_dir.name}")
        return
    seen: dict = {}  # each file read once, for the board and for the list of rejected files
    manifest = read_manifest(sweep_dir)
    rule = checked_rule(rule or selection_rule(manifest))
    full = paired_board(sweep_dir, manifest, seen=seen, baseline=baseline)
    board = query(full, by=by, rule=rule, top=top, include_partial=show_all,
                  where=tuple(where or ()), fewer_folds_apart=not any_folds)
    if export_best is not None:
        if board.empty:
            raise ConfigError("no complete config to export (see --all)")
        best = board.iloc[0]["config_id"]
        export = recorded_config(sweep_dir, best)
        write_json_atomic(export_best, {"config_id": best, "config": export.to_dict()})
        err.print(f"wrote config {best} to {export_best}; confirm it on fresh fold seeds with "
                  f"`dfu cv {export_best} --sweep {sweep_dir.name} --fold-seeds 100,101,102`",
                  soft_wrap=True)
    if board.empty and (hint := _empty_hint(full, show_all, bool(where))):
        err.print(hint, soft_wrap=True)
    if by_modalities:
        from dfu_train.results.ablation import modality_board

        rows = modality_board(full, manifest, rule=rule, include_partial=show_all,
                              where=tuple(where or ()), fewer_folds_apart=not any_folds)
        rows = rows.head(top) if top else rows
        if fmt == "table":
            _modality_table(rows, sweep_dir.name, out_file=out_file, rule=rule)
        else:
            _write_frame(rows.assign(rule=rule), fmt, out_file)
        print_rejected([r.__dict__ for r in rejected_files(sweep_dir, seen=seen)])
        return
    if fmt == "table":
        ranked = f"by {by}" if by else f"by {rule}: {SELECTION_RULES[rule].description}"
        _board_table(board, sweep_dir.name, out_file=out_file, ranked=ranked)
    else:
        _write_frame(board.assign(rule=None if by else rule), fmt, out_file)
    print_rejected([r.__dict__ for r in rejected_files(sweep_dir, seen=seen)])


def _empty_hint(full, show_all: bool, filtered: bool) -> str:
    """Why a leaderboard has no rows, and what to try."""
    if full.empty or not (full["folds_done"] > 0).any():
        return "no finished fold yet: see `dfu sweep status`"
    if filtered:
        return "no config matches --where"
    partial = int((~full["complete"]).sum())
    return f"no complete config yet; {partial} partial (--all shows them)" if not show_all else ""


def _write_frame(frame, fmt: str, out_file: Path | None, *, title: str = "") -> None:
    """A DataFrame as a rich table, CSV, JSON or Parquet, to stdout or `out_file`."""
    if fmt == "table":
        table = Table(title=title)
        for column in frame.columns:
            table.add_column(column, overflow="fold")
        for row in frame.itertuples(index=False):
            table.add_row(*(fmt_number(v) if isinstance(v, float) else str(v) for v in row))
        _print_table(table, out_file)
        return
    if fmt == "parquet":
        frame.to_parquet(out_file, index=False)
        return
    if fmt == "csv":  # nested values as JSON, not Python reprs
        frame = frame.assign(**{c: frame[c].map(json.dumps) for c in frame.columns
                                if frame[c].map(lambda v: isinstance(v, (dict, list))).any()})
    text = (frame.to_json(orient="records", indent=1) if fmt == "json"
            else frame.to_csv(index=False))
    if out_file is not None:
        out_file.write_text(text, encoding="utf-8")
    else:
        typer.echo(text)


def print_rejected(rejected: list[dict]) -> None:
    """The records not ranked, one line each on stderr: damaged, foreign or unplanned files."""
    for item in rejected:
        where = "quarantined" if item["quarantined"] else "not ranked"
        err.print(f"{where}: {item['path']}: {item['reason']}", soft_wrap=True, markup=False)
    if any(not item["quarantined"] for item in rejected):
        err.print("the next `dfu sweep resume` moves them to quarantine/ and runs their folds "
                  "again", soft_wrap=True)


def paired_board(sweep_dir, manifest: dict, *, seen: dict | None = None,
                 baseline: str | None = None):
    """The leaderboard with every config compared to `baseline`, by default the study's recipe
    the sweep ran beside its configs (no comparison when it has none)."""
    from dfu_train.results.leaderboard import build_leaderboard, compare_to_baseline

    board = build_leaderboard(sweep_dir, seen=seen, manifest=manifest)
    if baseline is None and board["baseline"].any():
        baseline = board.loc[board["baseline"], "config_id"].iloc[0]
    if baseline is None:
        return board
    return compare_to_baseline(board, baseline, n_folds=manifest["spec"]["cv"]["n_folds"])


def print_board(sweep_dir, *, top: int) -> None:
    from dfu_train.results.leaderboard import query
    from dfu_train.results.store import read_manifest, selection_rule

    manifest = read_manifest(sweep_dir)
    rule = selection_rule(manifest)
    _board_table(query(paired_board(sweep_dir, manifest), rule=rule, top=top,
                       include_partial=True), sweep_dir.name, ranked=f"by {rule}")


def _print_table(table: Table, out_file: Path | None) -> None:
    if out_file is None:
        out.print(table)
        return
    from rich.console import Console

    with out_file.open("w", encoding="utf-8") as handle:
        Console(file=handle, width=200, highlight=False).print(table)


def _board_table(board, title: str, *, out_file: Path | None = None, ranked: str = "") -> None:
    table = Table(title=f"leaderboard {title}" + (f", ranked {ranked}" if ranked else ""))
    paired = "baseline_diff" in board.columns and not board.empty
    staged = board["qwk_promoted_mean"].notna().any() or board["qwk_confirmed_mean"].notna().any()
    imaged = board["qwk_imaged_mean"].notna().any()  # the samples the earlier study scored
    for column in ("#", "config", "QWK mean ± std", "folds", "meta QWK",
                   *(("imaged QWK", "row QWK") if imaged else ()), "macro F1", "AUC",
                   *(("screened", "promoted", "confirmed", "optimism") if staged else ()),
                   *(("Δ vs baseline (p)",) if paired else ()), "reused"):
        table.add_column(column, no_wrap=True)
    table.add_column("params", overflow="fold")
    rank = 0
    for row in board.itertuples(index=False):
        # a config early stopping stopped is listed, never ranked, even with a fold that ended
        # before the stop reached it
        stopped = bool(row.pruned) and not row.complete
        rank += not stopped
        folds = f"{row.folds_done}/{row.folds_total}" + ("" if row.complete else " partial")
        folds += " fewer folds" * bool(row.fewer_folds)
        folds += f" {row.pruned} pruned" * bool(row.pruned) + f" {row.errors} error" * bool(row.errors)
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in row.params.items()) or "-"
        stages = (fmt_number(row.qwk_screen_mean), fmt_number(row.qwk_promoted_mean),
                  fmt_number(row.qwk_confirmed_mean) + (f" ({row.folds_confirmed} folds)"
                                                  if row.folds_confirmed else ""),
                  fmt_number(row.optimism)) if staged else ()
        extra = (f"{fmt_number(row.baseline_diff)} ({fmt_number(row.baseline_p)})",) if paired else ()
        config = row.config_id + (" baseline" if row.baseline else "")
        table.add_row("-" if stopped else str(rank), config, f"{fmt_number(row.qwk_mean)} ± {fmt_number(row.qwk_std)}",
                      folds, fmt_number(row.meta_qwk_mean),
                      *((fmt_number(row.qwk_imaged_mean), fmt_number(row.row_qwk_mean))
                        if imaged else ()),
                      fmt_number(row.macro_f1_mean), fmt_number(row.roc_auc_mean), *stages, *extra,
                      row.reused or "-", params)
    _print_table(table, out_file)
    if paired:
        err.print(f"Δ vs baseline: mean paired QWK difference over shared folds; p from the "
                  f"{board['baseline_test'].iloc[0]}"
                  + ("; baseline: the earlier study's metadata recipe (argmax decoding), run "
                     "beside the sweep's configs" if board["baseline"].any() else ""),
                  soft_wrap=True)
    if board["fewer_folds"].any():
        err.print("configs marked 'fewer folds' were run on fewer folds than the best-covered "
                  "ones and rank after them (--any-folds ranks them together)", soft_wrap=True)


def _modality_table(rows, title: str, *, out_file: Path | None, rule: str) -> None:
    """The ablation table: one row per modality combination, best first."""
    table = Table(title=f"modalities of {title}, each by its best config under {rule}")
    for column in ("#", "modalities", "configs", "best config", "QWK mean ± std", "folds",
                   "meta QWK", "Δ vs metadata (p)"):
        table.add_column(column, no_wrap=True)
    table.add_column("params", overflow="fold")
    for rank, row in enumerate(rows.itertuples(index=False), start=1):
        folds = f"{row.folds_done}/{row.folds_total}" + ("" if row.complete else " partial")
        gain = ("-" if row.gain_vs_metadata is None or row.gain_vs_metadata != row.gain_vs_metadata
                else f"{fmt_number(row.gain_vs_metadata)} ({fmt_number(row.gain_p)})")
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in row.params.items()
                           if k != "modalities") or "-"
        table.add_row(str(rank), " + ".join(row.modalities), str(row.configs),
                      row.config_id + (" baseline" if row.baseline else ""),
                      f"{fmt_number(row.qwk_mean)} ± {fmt_number(row.qwk_std)}", folds,
                      fmt_number(row.meta_qwk_mean), gain, params)
    _print_table(table, out_file)
    reference = rows["metadata_config"].dropna()
    err.print("Δ vs metadata: mean paired QWK difference over the folds both ran, against the "
              + (f"best metadata-only config {reference.iloc[0]}" if not reference.empty
                 else "best metadata-only config (none in this sweep)")
              + "; p from the Nadeau-Bengio corrected resampled t-test", soft_wrap=True)


@user_errors
def report_command(
    name: SweepName,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for index.html and the PNGs")] = (
        Path("report")),
    storage: Storage = "results",
    top: Annotated[int, typer.Option(min=1, help="configs in the ranking plots")] = 10,
) -> None:
    """Plots and a self-contained index.html: top configs over folds and fold seeds against the
    study's recipe, fusion vs metadata, learning curves with early stops, optimisation history,
    parameters and their fANOVA importance, and the best config's confusion matrix, per-class
    metrics, ROC / precision-recall curves and calibration."""
    from dfu_train.results.report import write_report
    from dfu_train.results.store import resolve_sweep

    out_dir = output_dir(out_dir, "--out")
    sweep_dir = resolve_sweep(name, storage=storage)
    figures = write_report(sweep_dir, out_dir, top=top)
    out.print(f"wrote {out_dir / 'index.html'} with {len(figures)} plots")
