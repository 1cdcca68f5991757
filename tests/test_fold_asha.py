"""Fold-aware, config-level early stopping (`scheduler.type: fold-asha`), against plain ASHA, on
curves where one fold is much easier than the others (replayed without Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ray.tune.schedulers import ASHAScheduler

from dfu_train.sweep.fold_asha import FoldAwareASHA, rung_milestones
from dfu_train.sweep.replay import ReplayController, ReplayTrial, replay

FOLDS = {0: 0.30, 1: 0.0, 2: -0.15}  # fold 0 is much easier than folds 1 and 2
EPOCHS = 8


RANKS = [3, 0, 6, 1, 7, 2, 5, 4]  # config c's quality rank: configs arrive in no order of merit


def _curves(configs: int = 8, seed: int = 0) -> dict:
    """Config c's fold f climbs to 0.3 + 0.02 rank(c) + the fold's offset, with a little noise;
    configs are named by their rank."""
    rng = np.random.default_rng(seed)
    curves = {}
    for c in RANKS[:configs]:
        for fold, offset in FOLDS.items():
            top = 0.3 + 0.02 * c + offset
            curve = [top - 0.1 * (0.7 ** e) + rng.normal(0, 0.003) for e in range(EPOCHS)]
            curves[(f"{c:06x}", 42, fold)] = list(np.maximum.accumulate(curve))
    return curves


def _plain_asha():
    return ASHAScheduler(time_attr="fusion_epochs", metric="fused_qwk", mode="max",
                         max_t=EPOCHS + 1, grace_period=1, reduction_factor=2)


def _fold_asha(**options):
    return FoldAwareASHA(max_t=EPOCHS + 1, grace_period=1, reduction_factor=2, **options)


def _outcome(ran: dict) -> dict[str, set[int]]:
    """config -> the folds that ran to the end."""
    done: dict[str, set[int]] = {}
    for (config_id, _, fold), epochs in ran.items():
        done.setdefault(config_id, set())
        if epochs == EPOCHS:
            done[config_id].add(fold)
    return done


def test_plain_asha_prunes_by_fold_and_fold_asha_by_config():
    curves = _curves()
    plain = _outcome(replay(_plain_asha(), curves, workers=3))
    aware = _outcome(replay(_fold_asha(), curves, workers=3))
    best = f"{7:06x}"
    # plain ASHA: the best config loses its hard folds, and easy folds of weak configs survive
    assert plain[best] != {0, 1, 2}
    assert sum(0 in folds for folds in plain.values()) > sum(2 in folds for folds in plain.values())
    # fold-asha: every config runs on all folds or on none to the end; the best two are kept
    assert all(folds in (set(), {0, 1, 2}) for folds in aware.values()), aware
    assert aware[best] == aware[f"{6:06x}"] == {0, 1, 2}
    kept = [int(c, 16) for c, folds in aware.items() if folds]
    stopped = [int(c, 16) for c, folds in aware.items() if not folds]
    assert stopped and np.mean(stopped) < np.mean(kept) - 2  # by merit (asynchronous: the
    # first configs to reach a rung pass it unopposed, as in ASHA)
    assert any(folds not in (set(), {0, 1, 2}) for folds in plain.values())  # plain: partial


def test_all_folds_of_a_config_stop_together_started_or_not():
    curves = _curves(configs=4)
    marked = []
    scheduler = _fold_asha(on_stop=lambda trial, result: marked.append(trial.key))
    ran = replay(scheduler, curves, workers=2)
    for config_id in scheduler.stopped:
        folds = {key: ran[key] for key in curves if key[0] == config_id}
        assert all(epochs < EPOCHS for epochs in folds.values())
        assert set(folds) <= set(marked)  # every fold of it marked, run or never started
    assert scheduler.stopped


def test_a_fold_that_ends_before_a_rung_is_judged_there_on_its_restored_result():
    scheduler = _fold_asha()
    trial = ReplayTrial(("aaaaaa", 42, 0), "t1")
    controller = ReplayController([trial])
    scheduler.on_trial_result(controller, trial, {"fusion_epochs": 2, "fused_qwk": 0.4})
    scheduler.on_trial_complete(controller, trial, {"fusion_epochs": 2, "fused_qwk": 0.45,
                                                    "final": 1})
    assert scheduler.rungs == [1, 2, 4, 8]
    assert [scheduler.values[r][(42, 0)]["aaaaaa"] for r in scheduler.rungs] == [
        0.4, 0.4, 0.45, 0.45]  # rungs 1, 2 from its reports, 4 and 8 from its restored result


def test_rungs_fall_on_fusion_epochs_actually_trained():
    assert rung_milestones(1, 2, 9) == [1, 2, 4, 8]
    assert rung_milestones(2, 3, 41) == [2, 6, 18]
    scheduler = _fold_asha()
    trial = ReplayTrial(("aaaaaa", 42, 0), "t1")
    controller = ReplayController([trial])
    # pretraining (and a reused branch) reports no fusion epoch: no rung is reached
    assert scheduler.on_trial_result(controller, trial, {"fusion_epochs": 0, "fused_qwk": 0.1,
                                                         "progress": 30}) == "CONTINUE"
    assert all(not scheduler.values[r] for r in scheduler.rungs)


@pytest.mark.parametrize("sweep", ["fusion.yaml", "joint.yaml"])
def test_the_ready_sweep_files_stop_configs_on_the_fused_metric(sweep):
    from dfu_train.sweep.space import load_sweep

    spec = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / sweep)
    assert spec.scheduler.type == "fold-asha"
    scheduler = spec.scheduler.build(100, 60)
    assert isinstance(scheduler, FoldAwareASHA)
    assert scheduler.rungs and all(1 <= rung <= 60 for rung in scheduler.rungs)


def test_a_config_with_a_fold_run_to_its_end_is_not_stopped_any_more():
    """Stopping it then would leave a partial row: its finished fold stays, the others stop."""
    scheduler = _fold_asha()
    finished, later = ReplayTrial(("aaaaaa", 42, 0), "t1"), ReplayTrial(("aaaaaa", 42, 1), "t2")
    rivals = [ReplayTrial((f"{c * 3:06x}", 42, 1), f"r{c}") for c in range(1, 4)]
    controller = ReplayController([finished, later, *rivals])
    scheduler.on_trial_complete(controller, finished, {"fusion_epochs": 8, "fused_qwk": 0.5,
                                                       "final": 1})
    for rival in rivals:  # three configs far better on fold 1
        scheduler.on_trial_result(controller, rival, {"fusion_epochs": 1, "fused_qwk": 0.9})
    decision = scheduler.on_trial_result(controller, later, {"fusion_epochs": 1,
                                                             "fused_qwk": 0.1})
    assert decision == "CONTINUE" and "aaaaaa" not in scheduler.stopped
    assert scheduler.score("aaaaaa", 1) < 0  # it trails: without its finished fold, it would stop


def test_a_config_that_passed_a_rung_early_stops_once_later_configs_outrank_it():
    """Config 0 reaches the first rung alone and passes; as better configs arrive there, its
    score falls below the cutoff and it stops at its next report, before the next rung."""
    scheduler = FoldAwareASHA(max_t=20, grace_period=2, reduction_factor=2)
    trials = {c: ReplayTrial((f"{c:06x}", 42, 0), f"t{c}") for c in range(4)}
    controller = ReplayController(list(trials.values()))

    def report(c: int, epoch: int, value: float) -> str:
        return scheduler.on_trial_result(controller, trials[c], {
            "fusion_epochs": epoch, "fused_qwk": value, "progress": epoch})

    assert report(0, 2, 0.30) == "CONTINUE"  # alone at the rung: nothing to compare with
    for c, value in ((1, 0.40), (2, 0.45), (3, 0.50)):
        report(c, 2, value)
    assert report(0, 3, 0.31) == "STOP" and "000000" in scheduler.stopped
    assert report(3, 3, 0.51) == "CONTINUE"


def test_fold_asha_sweeps_run_the_first_fold_of_every_config_first(tmp_path, synthetic_root):
    from dfu_train.sweep.plan import plan_sweep, write_manifest
    from dfu_train.sweep.session import plan_session
    from dfu_train.sweep.space import parse_sweep

    spec = {"name": "order", "cv": {"n_folds": 3}, "search": {"algorithm": "grid"},
            "baseline": False, "fixed": {"modalities": ["metadata"]},
            "space": {"forest.max_depth": {"grid": [2, 3, 4]}}}
    for scheduler, expected in (("fold-asha", [0, 0, 0, 1, 1, 1, 2, 2, 2]),
                                ("none", [0, 1, 2] * 3)):
        plan = plan_sweep(parse_sweep({**spec, "name": scheduler, "scheduler": {
            "type": scheduler}}), data_root=synthetic_root, storage=tmp_path)
        write_manifest(plan)
        assert [fold for _, _, fold in plan_session(plan).trials] == expected
