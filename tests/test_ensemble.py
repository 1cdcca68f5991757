"""`dfu ensemble` and `dfu cv ENSEMBLE`: members' validation probabilities averaged over shared
folds, screened beside the best single config, confirmed on fresh fold seeds (no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from sweep_files import fold_record, manifest, write_sweep
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.errors import ConfigError, DataError
from dfu_train.results import store
from dfu_train.results.ensemble import (choose_members, ensemble_fold, read_ensemble_file,
                                        screen_ensemble, write_ensemble_file)
from dfu_train.results.leaderboard import build_leaderboard, query
from dfu_train.sweep.plan import plan_sweep, write_manifest
from dfu_train.sweep.space import parse_sweep
from dfu_train.training.fold import run_fold
from dfu_train.training.metrics import classification_metrics

SWEEP = {"name": "ens", "cv": {"n_folds": 3, "seed": 42}, "baseline": False,
         "search": {"algorithm": "grid"},
         "fixed": {"forest.n_estimators": 20, "forest.inner_folds": 3},
         "space": {"forest.min_samples_leaf": {"grid": [1, 10, 30]}}}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, cohort, synthetic_root):
    """Every fold of three metadata-only configs, as the trainable records them."""
    storage = tmp_path_factory.mktemp("storage")
    plan = plan_sweep(parse_sweep(SWEEP), data_root=synthetic_root, storage=storage)
    write_manifest(plan)
    for config, params in plan.configs:
        for fold in plan.folds:
            result = run_fold(config, cohort, fold)
            store.write_fold_result(plan.sweep_dir, {**result.to_dict(), "params": params})
    return plan.sweep_dir


def _record(config_id, probas, labels, ids=None, fold=0):
    ids = ids or [f"S{i}" for i in range(len(labels))]
    return {"config_id": config_id, "fold_seed": 1, "fold": fold,
            "val_samples": [{"sample_id": s, "label": y, "proba": p}
                            for s, y, p in zip(ids, labels, probas)]}


def test_a_fold_averages_members_per_sample_whatever_their_order():
    labels = [0, 1, 2, 1]
    a = [[0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1]]
    b = [[0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.2, 0.7, 0.1]]
    reversed_b = _record("b", b[::-1], labels[::-1], ids=["S3", "S2", "S1", "S0"])
    fold = ensemble_fold([_record("a", a, labels), reversed_b], decode="argmax")
    mean = (np.array(a) + np.array(b)) / 2
    assert np.allclose([s["proba"] for s in fold["val_samples"]], mean)
    assert fold["metrics"] == classification_metrics(np.array(labels), mean)
    assert [s["sample_id"] for s in fold["val_samples"]] == ["S0", "S1", "S2", "S3"]


def test_members_validated_on_other_samples_are_refused():
    labels = [0, 1]
    with pytest.raises(DataError, match="not the same folds"):
        ensemble_fold([_record("a", [[1, 0, 0]] * 2, labels),
                       _record("b", [[1, 0, 0]] * 2, labels, ids=["S0", "X"])], decode="argmax")


def test_screening_takes_the_top_configs_under_the_rule_and_scores_the_best_single(sweep_dir):
    ensemble, comparison = screen_ensemble(sweep_dir, top=2)
    board = query(build_leaderboard(sweep_dir), rule=store.selection_rule(
        store.read_manifest(sweep_dir)))
    assert ensemble.member_ids == list(board["config_id"][:2])
    assert comparison["label"] == "screening"
    assert comparison["best_single"]["config_id"] == board["config_id"].iloc[0]
    assert comparison["best_single"]["qwk_mean"] == pytest.approx(board["qwk_mean"].iloc[0],
                                                                  abs=1e-4)
    assert len(comparison["fold_keys"]) == 3 and comparison["ensemble"]["folds"] == 3
    records = {(r["config_id"], r["fold"]): r for r in store.read_fold_results(sweep_dir)}
    first = ensemble_fold([records[(c, 0)] for c in ensemble.member_ids], decode="argmax")
    assert comparison["ensemble"]["qwk_folds"][0] == first["metrics"]["qwk"]


def test_the_ensemble_file_round_trips_and_an_edited_one_is_refused(sweep_dir, tmp_path):
    ensemble, _ = screen_ensemble(sweep_dir, top=3)
    path = tmp_path / "ens.yaml"
    write_ensemble_file(path, ensemble)
    again = read_ensemble_file(str(path))
    assert again.ensemble_id == ensemble.ensemble_id and again.member_ids == ensemble.member_ids
    data = yaml.safe_load(path.read_text())
    data["members"][0]["config"]["forest"]["n_estimators"] = 999
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="edited"):
        read_ensemble_file(str(path))
    assert read_ensemble_file("default") is None


def test_by_modalities_needs_two_combinations(sweep_dir):
    with pytest.raises(ConfigError, match="modality combinations"):
        screen_ensemble(sweep_dir, top=3, by_modalities=True)


def test_by_modalities_takes_the_best_config_of_each_combination(tmp_path):
    combos = {"aaaaaa": ["metadata"], "bbbbbb": ["metadata"],
              "cccccc": ["metadata", "thermal_map"], "dddddd": ["metadata", "thermal_map"],
              "eeeeee": ["thermal_map"]}
    qwks = dict(zip(combos, (0.5, 0.45, 0.4, 0.3, 0.2)))
    write_sweep(tmp_path, manifest("mods", list(combos)), [
        fold_record(c, 42, 0, qwks[c], config={"modalities": combos[c]}) for c in combos])
    assert choose_members(tmp_path, top=3, by_modalities=True)[:2] == (
        ["aaaaaa", "cccccc", "eeeeee"], "aaaaaa")
    assert choose_members(tmp_path, top=2, by_modalities=True)[0] == ["aaaaaa", "cccccc"]
    assert choose_members(tmp_path, top=3)[0] == ["aaaaaa", "bbbbbb", "cccccc"]


def test_cli_screens_writes_the_file_and_cv_confirms_it_on_fresh_seeds(sweep_dir, tmp_path):
    runner, storage = CliRunner(), str(sweep_dir.parent)
    path = tmp_path / "ens.yaml"
    shown = runner.invoke(app, ["ensemble", "ens", "--storage", storage, "--top", "2",
                                "--out", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "screening" in shown.stdout and "best single" in shown.stdout
    ensemble = read_ensemble_file(str(path))
    reused = runner.invoke(app, ["cv", str(path), "--sweep", "ens", "--storage", storage,
                                 "--fold-seeds", "42", "--no-cache", "--json"])
    assert reused.exit_code == 2 and "took part in choosing" in reused.stderr
    confirmed = runner.invoke(app, ["cv", str(path), "--sweep", "ens", "--storage", storage,
                                    "--fold-seeds", "7", "--no-cache", "--json"])
    assert confirmed.exit_code == 0, confirmed.output
    summary = json.loads(confirmed.stdout)
    assert summary["ensemble_id"] == ensemble.ensemble_id and summary["folds"] == 3
    assert summary["qwk_screen_mean"] == ensemble.screening["qwk_mean"]
    confirmations = store.read_confirmations(sweep_dir)
    assert {r["config_id"] for r in confirmations} == set(ensemble.member_ids)
    assert {r["fold_seed"] for r in confirmations} == {7}
    assert (sweep_dir / "ensembles" / f"{ensemble.ensemble_id}.json").is_file()


def test_refit_reads_a_sweeps_folds_of_the_config(sweep_dir, synthetic_root, tmp_path):
    runner, storage = CliRunner(), str(sweep_dir.parent)
    member = screen_ensemble(sweep_dir, top=2)[0].member_ids[0]
    export = tmp_path / "best.json"
    export.write_text(json.dumps({"config_id": member, "config": store.recorded_config(
        sweep_dir, member).to_dict()}))
    made = runner.invoke(app, ["refit", str(export), "--sweep", "ens", "--storage", storage,
                               "--data-root", str(synthetic_root), "--out", str(tmp_path / "m")])
    assert made.exit_code == 0, made.output
    assert json.loads((tmp_path / "m" / "model.json").read_text())["config_id"] == member
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"config": {"forest": {"n_estimators": 7}}}))
    refused = runner.invoke(app, ["refit", str(other), "--sweep", "ens", "--storage", storage,
                                  "--data-root", str(synthetic_root), "--out",
                                  str(tmp_path / "m2")])
    assert refused.exit_code == 2 and "no finished fold in sweep ens" in refused.stderr
