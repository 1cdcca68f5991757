"""`dfu ensemble`, `dfu refit` and `dfu predict`: from a sweep's configs to a model, no Ray."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dfu_train.cli.common import (DEMO_DATA, AsJson, DataRoot, Jobs, Storage, SweepName,
                                  checked_cohort, emit_json, err, fmt_number, out, output_dir,
                                  output_file, parse_seeds, user_errors)
from dfu_train.errors import ConfigError


@user_errors
def ensemble_command(
    name: SweepName,
    top: Annotated[int, typer.Option(min=2, help="members: the top K configs")] = 3,
    by_modalities: Annotated[bool, typer.Option(
        "--by-modalities", help="members: the best config of each modality combination")] = False,
    rule: Annotated[Optional[str], typer.Option(
        help="selection rule: mean, mean_minus_std or one_se (default: the sweep's)")] = None,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out", help="ensemble file for `dfu cv` (default: ensemble-NAME.yaml)")] = None,
    storage: Storage = "results",
    as_json: AsJson = False,
) -> None:
    """Average the validation probabilities of the sweep's top configs over the folds they
    share, score it beside the best single config (screening: the members were chosen on
    these folds), and write an ensemble file that `dfu cv` confirms on fresh fold seeds."""
    from dfu_train.results.ensemble import screen_ensemble, write_ensemble_file
    from dfu_train.results.store import resolve_sweep

    sweep_dir = resolve_sweep(name, storage=storage)
    out_file = output_file(out_file or Path(f"ensemble-{sweep_dir.name}.yaml"), "--out")
    ensemble, comparison = screen_ensemble(sweep_dir, top=top, rule=rule,
                                           by_modalities=by_modalities)
    write_ensemble_file(out_file, ensemble)
    comparison["file"] = str(out_file)
    err.print(f"wrote ensemble {ensemble.ensemble_id} to {out_file}; confirm it on fresh fold "
              f"seeds with `dfu cv {out_file} --sweep {sweep_dir.name} --fold-seeds "
              "100,101,102`", soft_wrap=True)
    if as_json:
        emit_json(comparison)
        return
    _print_comparison(comparison)


def _print_comparison(c: dict) -> None:
    from rich.table import Table

    table = Table(title=f"screening: ensemble of {len(c['members'])} vs the best single config, "
                        f"on the {len(c['fold_keys'])} folds the members were chosen on "
                        f"(sweep {c['sweep']}, rule {c['rule']})")
    for column in ("", "QWK mean ± std", "accuracy", "macro F1", "AUC", "members"):
        table.add_column(column, no_wrap=column != "members", overflow="fold")
    for label, s, members in (
            (f"ensemble {c['ensemble_id']} (screening)", c["ensemble"], ", ".join(c["members"])),
            (f"best single {c['best_single']['config_id']}", c["best_single"], "-")):
        table.add_row(label, f"{fmt_number(s['qwk_mean'])} ± {fmt_number(s['qwk_std'])}",
                      fmt_number(s["accuracy_mean"]), fmt_number(s["macro_f1_mean"]),
                      fmt_number(s["roc_auc_mean"]), members)
    out.print(table)
    out.print(f"paired QWK difference (ensemble - best single): "
              f"{fmt_number(c['qwk_diff_mean'])}; equal weights, decode {c['decode']}")


def cv_ensemble(ensemble, *, data_root: Path | None, fold_seeds: str | None, sweep: str | None,
                storage: str, jobs: int, cache_dir: str, no_cache: bool, as_json: bool) -> None:
    """`dfu cv ENSEMBLE.yaml`: every member on every fold, their probabilities averaged per
    fold; with `--sweep`, each member's folds are recorded as its confirmation and the
    ensemble's summary under `ensembles/` of the sweep."""
    from dfu_train.cache import ArtifactCache
    from dfu_train.data.check import check_cohort_for
    from dfu_train.results import store
    from dfu_train.results.confirm import Confirmation, check_confirmation
    from dfu_train.results.ensemble import ensemble_fold, summarize
    from dfu_train.training.cv import bootstrap_qwk_ci, fold_summary, run_cv

    configs = ensemble.configs()
    seeds = parse_seeds(fold_seeds) if fold_seeds else [configs[0].cv.seed]
    confirmations: list = [None] * len(configs)
    sweep_dir = None
    if sweep is not None:
        if fold_seeds is None:
            raise ConfigError("--sweep confirms on fresh fold seeds: pass --fold-seeds, e.g. "
                              "--fold-seeds 100,101,102")
        sweep_dir = store.resolve_sweep(sweep, storage=storage)
        for i, config in enumerate(configs):
            data_root, _, recorded_id = check_confirmation(sweep_dir, config, seeds,
                                                           data_root=data_root)
            confirmations[i] = Confirmation(sweep_dir, recorded_id)
    cohort = check_cohort_for(data_root or DEMO_DATA, n_folds=configs[0].cv.n_folds,
                              modalities=sorted({m for c in configs for m in c.modalities}))
    cache = ArtifactCache(cache_dir, enabled=not no_cache)
    folds: dict[tuple[int, int], list[dict]] = {}
    for config, confirmation in zip(configs, confirmations):
        def recorded(seed: int, fold: int, confirmation=confirmation):
            record = confirmation.recorded(seed, fold) if confirmation else None
            if record is not None:
                folds.setdefault((seed, fold), []).append(record)
            return record

        def finished(result, confirmation=confirmation) -> None:
            if confirmation is not None:
                confirmation.record(result)
            folds.setdefault((result.fold_seed, result.fold), []).append(result.to_dict())
            if not as_json:
                err.print(f"  member {result.config_id} seed {result.fold_seed} fold "
                          f"{result.fold}: qwk {fmt_number(result.qwk)}")

        run_cv(config, cohort, seeds=seeds, n_jobs=jobs, cache=cache, done=recorded,
               on_fold=finished, config_id=confirmation and confirmation.config_id)
    scored = [ensemble_fold(records, decode=ensemble.decode) for _, records in sorted(
        folds.items())]
    summary = {"ensemble_id": ensemble.ensemble_id, "members": ensemble.member_ids,
               "fold_seeds": seeds, **summarize(scored)}
    interval = bootstrap_qwk_ci([fold_summary(f) for f in scored],
                                dict(zip(cohort.samples["sample_id"], cohort.groups)))
    summary.update({k: interval[k] for k in ("qwk_pooled", "qwk_ci95", "bootstrap")})
    screening = ensemble.screening.get("qwk_mean")
    if sweep_dir is not None:
        summary.update({"sweep": sweep_dir.name, "qwk_screen_mean": screening,
                        "optimism": None if screening is None or summary["qwk_mean"] is None
                        else round(screening - summary["qwk_mean"], 4)})
        store.write_json_atomic(sweep_dir / "ensembles" / f"{ensemble.ensemble_id}.json",
                                {**summary, "ensemble": ensemble.to_file()})
    if as_json:
        emit_json(summary)
        return
    out.print(f"ensemble {ensemble.ensemble_id} of {len(configs)} configs: qwk "
              f"{fmt_number(summary['qwk_mean'])} +/- {fmt_number(summary['qwk_std'])} over "
              f"{len(scored)} folds")
    if summary["qwk_ci95"] is not None:
        low, high = summary["qwk_ci95"]
        out.print(f"  pooled qwk {fmt_number(summary['qwk_pooled'])}, 95% CI [{fmt_number(low)}, "
                  f"{fmt_number(high)}] (patient bootstrap)")
    out.print(f"  accuracy {fmt_number(summary['accuracy_mean'])}, macro F1 "
              f"{fmt_number(summary['macro_f1_mean'])}, ROC AUC "
              f"{fmt_number(summary['roc_auc_mean'])}")
    if sweep_dir is not None:
        out.print(f"sweep {sweep_dir.name}: screened {fmt_number(screening)}, confirmed "
                  f"{fmt_number(summary['qwk_mean'])}: optimism {fmt_number(summary['optimism'])}"
                  f" (members' folds recorded as their confirmations)")


@user_errors
def refit_command(
    export: Annotated[str, typer.Argument(help="config file: an export (--export-best), YAML/"
                                               "JSON config, `default` or `baseline`")],
    out_dir: Annotated[Path, typer.Option("--out", help="model folder to write")],
    data_root: DataRoot = DEMO_DATA,
    sweep: Annotated[Optional[str], typer.Option(
        help="take each stage's epochs from this sweep's folds of the config (else the "
             "config's epochs)")] = None,
    storage: Storage = "results",
    jobs: Jobs = -1,
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1")] = "cpu",
) -> None:
    """Train a config on every patient of the cohort and write a model folder (config, skops
    pipeline, torch weights, versions, cohort fingerprint) for `dfu predict`."""
    from dfu_train.config import load_trial_config
    from dfu_train.training.refit import refit, refit_epochs
    from dfu_train.training.saved_model import INFO_FILE, save_model

    config = load_trial_config(export)
    out_dir = output_dir(out_dir, "--out")
    if (out_dir / INFO_FILE).exists():
        raise ConfigError(f"--out {out_dir} holds a model already; give an empty or new folder")
    records = []
    if sweep is not None:
        from dfu_train.results import store

        ids = (config.config_id, config.earlier_config_id)
        records = [r for r in store.read_fold_results(store.resolve_sweep(sweep, storage=storage))
                   if r["config_id"] in ids]
        if not records:
            raise ConfigError(f"config {config.config_id} has no finished fold in sweep {sweep}")
    _check_device(device)
    cohort = checked_cohort(data_root, config)
    epochs, source = refit_epochs(config, records)
    err.print(f"refitting config {config.config_id} on {len(cohort.samples)} samples"
              + (f"; epochs from {source}: {epochs}" if epochs else " (metadata only)"),
              soft_wrap=True)
    fitted = refit(config, cohort, epochs=epochs, epochs_source=source, n_jobs=jobs,
                   device=device)
    written = save_model(out_dir, fitted)
    out.print(f"wrote model {config.config_id} to {out_dir} ({', '.join(p.name for p in written)})")


def _check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device here")


class PredictFormat(str, Enum):
    csv = "csv"
    json = "json"


@user_errors
def predict_command(
    model_dir: Annotated[Path, typer.Argument(help="model folder written by `dfu refit`")],
    data_root: DataRoot = DEMO_DATA,
    fmt: Annotated[PredictFormat, typer.Option("--format")] = PredictFormat.csv,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="write here, not stdout")] = None,
) -> None:
    """Per-sample phase probabilities and the phase of a cohort, from a model folder (loaded
    without running code from it); a cohort whose columns differ from the model's is refused."""
    from dfu_train.data.check import check_images
    from dfu_train.data.cohort import load_cohort
    from dfu_train.errors import DataError
    from dfu_train.training.refit import check_columns, predict
    from dfu_train.training.saved_model import load_model

    out_file = output_file(out_file, "--out")
    fitted = load_model(model_dir)
    if not Path(data_root).is_dir():
        raise DataError(f"data root {data_root} not found")
    cohort = load_cohort(data_root, labelled=False)  # new patients need no phase yet
    check_columns(fitted, cohort)
    check_images(cohort, fitted.config.image_modalities)
    table = predict(fitted, cohort)
    text = (table.to_json(orient="records", indent=1) if fmt == PredictFormat.json
            else table.to_csv(index=False))
    if out_file is not None:
        out_file.write_text(text, encoding="utf-8")
    else:
        typer.echo(text.rstrip("\n"))
