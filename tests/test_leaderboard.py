"""The leaderboard aggregates fold records offline, de-duplicates folds and marks partial configs."""

from __future__ import annotations

import pandas as pd
import pytest

from dfu_train.errors import ConfigError
from dfu_train.results import store
from dfu_train.sweep.plan import plan_sweep, write_manifest
from dfu_train.results.leaderboard import build_leaderboard, query
from dfu_train.sweep.space import parse_sweep
from dfu_train.training.fold import run_fold

SWEEP = {"name": "board", "cv": {"n_folds": 3, "seed": 42}, "baseline": False,
         "search": {"algorithm": "grid"}, "fixed": {"forest.n_estimators": 20, "forest.inner_folds": 3},
         "space": {"forest.min_samples_leaf": {"grid": [1, 10, 30]}}}


@pytest.fixture
def sweep_dir(tmp_path, cohort, synthetic_root):
    """A sweep folder as the trainable leaves it: every fold of two configs, one fold of the third."""
    plan = plan_sweep(parse_sweep(SWEEP), data_root=synthetic_root, storage=tmp_path)
    write_manifest(plan)
    for index, (config, params) in enumerate(plan.configs):
        for fold in plan.folds if index < 2 else plan.folds[:1]:
            result = run_fold(config, cohort, fold)
            store.write_fold_result(plan.sweep_dir, {**result.to_dict(), "params": params,
                                                     "wall_s": 2.0, "compute_s": 1.0})
    return plan.sweep_dir


def test_complete_configs_rank_by_mean_with_fold_lists(sweep_dir):
    board = build_leaderboard(sweep_dir)
    assert len(board) == 3
    complete = board[board["complete"]]
    assert len(complete) == 2
    assert list(complete["qwk_mean"]) == sorted(complete["qwk_mean"], reverse=True)
    for row in complete.itertuples():
        assert row.folds_done == row.folds_total == 3
        assert row.qwk_mean == pytest.approx(sum(row.qwk_folds) / 3, abs=1e-4)
        assert row.wall_s == 6.0 and row.compute_s == 3.0
    partial = board[~board["complete"]].iloc[0]
    assert partial["folds_done"] == 1 and pd.isna(partial["qwk_std"])


def test_partial_configs_are_hidden_unless_asked(sweep_dir):
    board = build_leaderboard(sweep_dir)
    assert len(query(board)) == 2
    assert len(query(board, include_partial=True)) == 3


def test_a_fold_recorded_twice_counts_once(sweep_dir):
    before = build_leaderboard(sweep_dir)
    first = sorted((sweep_dir / store.FOLD_RESULTS).glob("*.json"))[0]
    (first.parent / ("copy-" + first.name)).write_bytes(first.read_bytes())
    after = build_leaderboard(sweep_dir)
    assert list(after["folds_done"]) == list(before["folds_done"])
    assert list(after["qwk_mean"]) == list(before["qwk_mean"])


def test_half_written_files_are_ignored_while_a_sweep_runs(sweep_dir):
    (sweep_dir / store.FOLD_RESULTS / "zzz-s42-f0.json").write_text('{"config_id": ')
    assert len(build_leaderboard(sweep_dir)) == 3


def test_where_top_and_by(sweep_dir):
    board = build_leaderboard(sweep_dir)
    only = query(board, where=("forest.min_samples_leaf=10",))
    assert list(only["params"].map(lambda p: p["forest.min_samples_leaf"])) == [10]
    assert len(query(board, top=1)) == 1
    fastest = query(board, by="wall_s")
    assert list(fastest["wall_s"]) == sorted(fastest["wall_s"])
    with pytest.raises(ConfigError, match="not a sortable column"):
        query(board, by="qwk_mean; rm -rf /")
    with pytest.raises(ConfigError, match="no such column or parameter"):
        query(board, where=("forest.min_leaf=1",))


def test_ranking_by_spread_puts_the_steadiest_first(sweep_dir):
    board = query(build_leaderboard(sweep_dir), by="qwk_std")
    assert list(board["qwk_std"]) == sorted(board["qwk_std"])


def test_a_stopped_config_with_a_fold_that_ended_is_listed_not_ranked(sweep_dir):
    """fold-asha stops a config on every fold, but a fold already on its last report still
    ends: the board ranks complete configs only, and `--all` lists it without a rank."""
    from typer.testing import CliRunner

    from dfu_train.cli import app

    board = build_leaderboard(sweep_dir)
    partial = board.loc[~board["complete"], "config_id"].item()
    params = board.loc[~board["complete"], "params"].item()
    for fold in (1, 2):
        store.write_pruned(sweep_dir, {"config_id": partial, "fold_seed": 42, "fold": fold,
                                       "experiment": "tune", "progress": 4, "val_qwk": 0.1,
                                       "params": params, "scope": "config"})
    ranked = board.loc[board["complete"], "config_id"].tolist()
    for extra, listed in (([], {}), (["--all"], {partial: "-"})):
        shown = CliRunner().invoke(app, ["leaderboard", sweep_dir.name, "--storage",
                                         str(sweep_dir.parent), *extra], terminal_width=250)
        assert shown.exit_code == 0, shown.output
        rows = {line.split("│")[2].strip(): line.split("│")[1].strip()
                for line in shown.stdout.splitlines() if line.count("│") > 3}
        assert rows == {**dict(zip(ranked, ["1", "2"])), **listed}, shown.stdout
