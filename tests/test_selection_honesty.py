"""The leaderboard tells screening, promotion and confirmation apart, and does not over-claim."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from scipy.stats import t as student_t
from scipy.stats import ttest_rel
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.results import store
from dfu_train.results.leaderboard import build_leaderboard, compare_to_baseline, query
from sweep_files import fold_record, manifest

runner = CliRunner()


def _record(config_id: str, seed: int, fold: int, qwk: float, n_folds: int = 3) -> dict:
    return fold_record(config_id, seed, fold, qwk, n_folds=n_folds)


@pytest.fixture
def staged_sweep(tmp_path):
    """Three configs screened on fold 0 of seed 42; `b` promoted to all 3 folds of seeds 42 and
    7, then confirmed on seed 100; `a` screened best of all on its single fold."""
    sweep_dir = store.storage_path(tmp_path) / "staged"
    store.write_json_atomic(sweep_dir / store.MANIFEST, manifest(
        "staged", ["aaaaaa", "bbbbbb", "cccccc"],
        promotions=[{"experiment": "promote-1", "configs": ["bbbbbb"], "fold_seeds": [42, 7],
                     "folds": [0, 1, 2]}]))
    screened = {"aaaaaa": 0.60, "bbbbbb": 0.50, "cccccc": 0.30}
    for config_id, qwk in screened.items():
        store.write_fold_result(sweep_dir, _record(config_id, 42, 0, qwk))
    for seed, fold, qwk in ((42, 1, 0.40), (42, 2, 0.45), (7, 0, 0.42), (7, 1, 0.38),
                            (7, 2, 0.44)):
        store.write_fold_result(sweep_dir, _record("bbbbbb", seed, fold, qwk))
    for fold, qwk in enumerate((0.36, 0.40, 0.38)):
        store.write_confirmation(sweep_dir, _record("bbbbbb", 100, fold, qwk))
    return sweep_dir


def test_screening_promoted_and_confirmed_qwk_and_the_optimism(staged_sweep):
    board = build_leaderboard(staged_sweep).set_index("config_id")
    b = board.loc["bbbbbb"]
    assert b["qwk_screen_mean"] == 0.5
    assert b["qwk_promoted_mean"] == pytest.approx(statistics.fmean(
        [0.50, 0.40, 0.45, 0.42, 0.38, 0.44]), abs=1e-4)
    assert b["qwk_confirmed_mean"] == pytest.approx(0.38, abs=1e-4)
    assert b["folds_confirmed"] == 3
    assert b["optimism"] == pytest.approx(0.5 - 0.38, abs=1e-4)
    assert math.isnan(board.loc["aaaaaa", "optimism"]) or board.loc["aaaaaa", "optimism"] is None
    assert board.loc["aaaaaa", "folds_confirmed"] == 0


def test_configs_on_fewer_folds_rank_apart_unless_asked(staged_sweep):
    board = build_leaderboard(staged_sweep)
    assert list(board["config_id"]) == ["bbbbbb", "aaaaaa", "cccccc"]  # a's 0.60 on one fold ranks after b
    assert list(board["fewer_folds"]) == [False, True, True]
    assert list(query(board, fewer_folds_apart=False)["config_id"]) == ["aaaaaa", "bbbbbb", "cccccc"]
    shown = runner.invoke(app, ["leaderboard", "staged", "--storage",
                                str(staged_sweep.parent)])
    assert shown.exit_code == 0, shown.output
    assert "fewer folds" in shown.stdout and "optimism" in shown.stdout
    rows = json.loads(runner.invoke(app, ["leaderboard", "staged", "--storage",
                                          str(staged_sweep.parent), "--format", "json"]).stdout)
    assert rows[0]["config_id"] == "bbbbbb"
    assert rows[0]["qwk_confirmed_mean"] == pytest.approx(0.38, abs=1e-4)
    assert rows[0]["optimism"] == pytest.approx(0.12, abs=1e-4)
    together = runner.invoke(app, ["leaderboard", "staged", "--storage",
                                   str(staged_sweep.parent), "--format", "json", "--any-folds"])
    assert json.loads(together.stdout)[0]["config_id"] == "aaaaaa"


def test_baseline_uses_the_corrected_resampled_t_test(tmp_path):
    sweep_dir = store.storage_path(tmp_path) / "paired"
    store.write_json_atomic(sweep_dir / store.MANIFEST, manifest(
        "paired", ["ba5e00", "0e1100"], folds=range(5), n_folds=5))
    base = [0.30, 0.35, 0.28, 0.40, 0.33]
    new = [0.34, 0.36, 0.33, 0.43, 0.35]
    for fold, (b, n) in enumerate(zip(base, new)):
        store.write_fold_result(sweep_dir, _record("ba5e00", 42, fold, b, n_folds=5))
        store.write_fold_result(sweep_dir, _record("0e1100", 42, fold, n, n_folds=5))
    board = compare_to_baseline(build_leaderboard(sweep_dir), "ba5e00", n_folds=5)
    row = board.set_index("config_id").loc["0e1100"]
    diffs = [n - b for b, n in zip(base, new)]
    t = statistics.fmean(diffs) / math.sqrt((1 / 5 + 1 / 4) * statistics.variance(diffs))
    assert row["baseline_p"] == pytest.approx(2 * student_t.sf(abs(t), df=4), abs=1e-4)
    assert row["baseline_p"] > ttest_rel(new, base).pvalue  # less confident than the plain test
    assert row["baseline_test"] == "Nadeau-Bengio corrected resampled t-test"
    shown = runner.invoke(app, ["leaderboard", "paired", "--storage", str(tmp_path),
                                "--baseline", "ba5e00"])
    assert shown.exit_code == 0, shown.output
    assert "Nadeau-Bengio" in shown.stderr


def test_export_best_takes_the_config_from_its_fold_records(tmp_path, synthetic_root, cohort):
    """A proposed (Optuna) sweep lists no configs in its manifest: the export comes from the
    records, and `dfu cv` accepts it unchanged."""
    from dfu_train.config import TrialConfig
    from dfu_train.training.fold import run_fold

    sweep_dir = store.storage_path(tmp_path) / "proposed"
    config = TrialConfig().override({"forest.n_estimators": 15, "forest.inner_folds": 3,
                                     "cv.n_folds": 3, "cv.seed": 42})
    base = TrialConfig().override({"forest.inner_folds": 3, "cv.n_folds": 3, "cv.seed": 42})
    store.write_json_atomic(sweep_dir / store.MANIFEST, {**manifest("proposed", []),
        "data_root": str(synthetic_root), "cohort_fingerprint": cohort.fingerprint,
        "base_config": base.to_dict()})
    store.write_fold_result(sweep_dir, {**run_fold(config, cohort, 0).to_dict(),
                                        "params": {"forest.n_estimators": 15}})
    best = tmp_path / "best.json"
    exported = runner.invoke(app, ["leaderboard", "proposed", "--storage", str(tmp_path),
                                   "--export-best", str(best)])
    assert exported.exit_code == 0, exported.output
    assert json.loads(best.read_text())["config_id"] == config.config_id
    assert "--sweep proposed" in exported.stderr


def test_confirmation_is_recorded_in_the_sweep_on_fresh_seeds_only(tmp_path, synthetic_root,
                                                                    cohort):
    from dfu_train.config import TrialConfig
    from dfu_train.training.fold import run_fold

    storage = store.storage_path(tmp_path / "results")
    sweep_dir = storage / "screened"
    config = TrialConfig().override({"forest.n_estimators": 15, "forest.inner_folds": 3,
                                     "cv.n_folds": 3, "cv.seed": 42})
    store.write_json_atomic(sweep_dir / store.MANIFEST, {
        **manifest("screened", [config.config_id], folds=[0, 1, 2]),
        "data_root": str(synthetic_root), "cohort_fingerprint": cohort.fingerprint})
    for fold in range(3):
        store.write_fold_result(sweep_dir, {**run_fold(config, cohort, fold).to_dict(),
                                            "params": {}})
    export = tmp_path / "best.json"
    export.write_text(json.dumps({"config_id": config.config_id, "config": config.to_dict()}))
    args = ["cv", str(export), "--sweep", "screened", "--storage", str(storage)]

    reused = runner.invoke(app, [*args, "--fold-seeds", "5,42"])
    assert reused.exit_code == 2 and "fold seed 42 took part in choosing" in reused.stderr
    assert not (sweep_dir / store.CONFIRMATIONS).is_dir()
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "--fold-seeds" in missing.stderr

    confirmed = runner.invoke(app, [*args, "--fold-seeds", "5", "--json"])
    assert confirmed.exit_code == 0, confirmed.output
    summary = json.loads(confirmed.stdout)
    assert len(list((sweep_dir / store.CONFIRMATIONS).glob("*.json"))) == 3
    row = build_leaderboard(sweep_dir).iloc[0]
    assert row["qwk_confirmed_mean"] == pytest.approx(summary["qwk_mean"], abs=1e-4)
    assert row["optimism"] == pytest.approx(summary["optimism"], abs=1e-4)
    assert row["optimism"] == pytest.approx(row["qwk_screen_mean"] - row["qwk_confirmed_mean"],
                                            abs=1e-4)
    assert row["folds_done"] == 3  # confirmation folds are not folds of the sweep

    before = {p.name: p.local_path.stat().st_mtime_ns
              for p in (sweep_dir / store.CONFIRMATIONS).glob("*.json")}
    again = runner.invoke(app, [*args, "--fold-seeds", "5", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["qwk_mean"] == summary["qwk_mean"]
    assert {p.name: p.local_path.stat().st_mtime_ns
            for p in (sweep_dir / store.CONFIRMATIONS).glob("*.json")} == before  # not re-run


def test_seeds_outside_the_range_libraries_accept_are_refused_up_front(tmp_path,
                                                                        synthetic_root):
    for args, text in (
        (["cv", "default", "--data-root", str(synthetic_root), "--fold-seeds", "-1"],
         "--fold-seeds: -1 is not a seed"),
        (["cv", "default", "--data-root", str(synthetic_root), "--fold-seeds", str(2**32)],
         "is not a seed"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert text in result.stderr and "Traceback" not in result.output
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\ncv: {seed: -1}\n")
    result = runner.invoke(app, ["sweep", "run", str(sweep), "--data-root", str(synthetic_root),
                                 "--storage", str(tmp_path / "r")])
    assert result.exit_code == 2 and "cv.seed" in result.stderr
    assert not (tmp_path / "r").exists()


def test_an_older_sweep_folder_keeps_its_recorded_ids_through_promotion_and_confirmation(
        tmp_path, synthetic_root, cohort):
    """Configs recorded under the ids an earlier version gave them: a promotion runs them under
    those ids (so promoted folds join the screened ones), and a confirmation finds them."""
    from dfu_train.config import TrialConfig
    from dfu_train.results.confirm import check_confirmation
    from dfu_train.sweep.launch import _param_space
    from dfu_train.sweep.plan import plan_promotion
    from dfu_train.sweep.session import plan_session

    sweep_dir = store.storage_path(tmp_path) / "older"
    configs = [TrialConfig().override({"modalities": ["metadata", "thermal_map"],
                                       "fusion.residual_bound": bound, "cv.n_folds": 3})
               for bound in (0.5, 2.0)]
    ids = [c.earlier_config_id for c in configs]
    assert ids != [c.config_id for c in configs]
    store.write_json_atomic(sweep_dir / store.MANIFEST, {
        "name": "older", "spec": {"cv": {"seed": 42, "n_folds": 3, "run_folds": [0]},
                                  "search": {"algorithm": "grid"}, "fixed": {}, "space": {}},
        "folds": [0], "configs": [{"config_id": i, "params": {}} for i in ids],
        "data_root": str(synthetic_root), "cohort_fingerprint": cohort.fingerprint})
    for config, config_id, qwk in zip(configs, ids, (0.3, 0.4)):
        store.write_fold_result(sweep_dir, {**_record(config_id, 42, 0, qwk),
                                            "cohort_fingerprint": cohort.fingerprint,
                                            "config": config.to_dict()})
    plan = plan_promotion(sweep_dir, top=1, fold_seeds=(7,))
    assert set(plan.recorded_ids) == {ids[1]} and plan.promotion["configs"] == [ids[1]]
    trials = _param_space(plan, plan_session(plan))["trial"]["grid_search"]
    assert {t["config_id"] for t in trials} == {ids[1]}
    # the screened fold is recorded: the promotion plans the 5 others of seeds 42 and 7
    assert sorted((t["config"]["cv"]["seed"], t["fold"]) for t in trials) == [
        (7, 0), (7, 1), (7, 2), (42, 1), (42, 2)]
    root, screening, recorded = check_confirmation(sweep_dir, configs[1], [100])
    assert recorded == ids[1] and screening == 0.4
