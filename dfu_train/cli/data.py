"""`dfu data`: create, validate and summarise cohorts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dfu_train.cli.common import AsJson, DataRoot, DEMO_DATA, emit_json, err, out, user_errors

data_app = typer.Typer(help="Create, validate and summarise cohorts.", no_args_is_help=True)


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
        emit_json(summary)
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
