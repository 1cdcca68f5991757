"""The real path: Tune function trainable -> TorchTrainer -> run_fold, on a private local Ray."""

from __future__ import annotations

import json

import pytest

from dfu_train.sweep import store
from dfu_train.sweep.launch import plan_sweep, run_sweep
from dfu_train.sweep.leaderboard import build_leaderboard
from dfu_train.sweep.space import parse_sweep

pytestmark = pytest.mark.ray


def test_sweep_runs_torchtrainer_trials_and_a_rerun_repeats_nothing(local_ray, tmp_path,
                                                                    tables_only_root):
    spec = parse_sweep({"name": "real", "cv": {"n_folds": 3, "run_folds": [0, 2]},
                        "search": {"algorithm": "grid"}, "scheduler": {"type": "asha"},
                        "resources": {"cpus_per_trial": 1},
                        "fixed": {"forest.n_estimators": 20, "forest.inner_folds": 3}})
    plan = plan_sweep(spec, data_root=tables_only_root, storage=tmp_path)
    events: list[str] = []
    sweep_dir = run_sweep(plan, on_event=events.append)

    records = store.read_fold_results(sweep_dir)
    assert sorted(r["fold"] for r in records) == [0, 2]
    for record in records:
        assert record["trial_id"] and record["status"] == "finished"
        assert record["wall_s"] >= record["compute_s"] > 0
    trainer_runs = list((sweep_dir / store.TRAIN_DIR).glob("train-*"))
    assert len(trainer_runs) == 2  # each trial ran as its own TorchTrainer
    board = build_leaderboard(sweep_dir)
    assert board.iloc[0]["folds_done"] == 2 and bool(board.iloc[0]["complete"])

    results = sorted((sweep_dir / store.FOLD_RESULTS).glob("*.json"))
    written = {p.name: p.stat().st_mtime_ns for p in results}
    run_sweep(plan, on_event=events.append)  # same sweep again: restored, nothing re-run
    assert {p.name: p.stat().st_mtime_ns for p in results} == written
    assert any("continuing the recorded sweep" in e for e in events)
    params = [json.loads(p.read_text()) for p in (sweep_dir / "tune").glob("*/params.json")]
    assert sorted(p["fold"] for p in params) == [0, 2]
