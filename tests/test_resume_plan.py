"""What a resumed sweep plans from the sweep folder alone (no Ray started): the pairs left, the
configs a search algorithm is told about, the checkpoint each unfinished trial continues from,
and the prune marks that keep stopped trials stopped."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from dfu_train.results import store
from dfu_train.sweep.launch import _param_space, _recording_prunes, create_search
from dfu_train.sweep.plan import plan_sweep, write_manifest
from dfu_train.sweep.session import flat_params, plan_session
from dfu_train.sweep.space import parse_sweep
from dfu_train.training.checkpoint import FoldCheckpoint
from sweep_files import fold_record

GRID = {"name": "left", "cv": {"n_folds": 3, "run_folds": [0, 1]}, "baseline": False,
        "search": {"algorithm": "grid"}, "scheduler": {"type": "none"},
        "resources": {"use_train": False},
        "fixed": {"modalities": ["metadata"], "forest.n_estimators": 10},
        "space": {"forest.max_depth": {"grid": [3, 5, None]}}}
OPTUNA = {**GRID, "name": "tpe", "cv": {"n_folds": 3, "run_folds": [0]},
          "search": {"algorithm": "optuna", "num_samples": 5, "seed": 1},
          "space": {"forest.max_depth": {"choice": [3, 5, 7]},
                    "forest.min_samples_leaf": {"choice": [1, 2]}}}


def _planned(spec: dict, synthetic_root, tmp_path, cohort):
    plan = plan_sweep(parse_sweep(spec), data_root=synthetic_root, storage=tmp_path / "results")
    write_manifest(plan)
    manifest = store.read_manifest(plan.sweep_dir)
    fingerprint = manifest["fold_fingerprints"][str(plan.spec.cv.seed)]

    def record(config, params, fold, qwk):
        return fold_record(config.config_id, config.cv.seed, fold, qwk, params=params,
                           cohort_fingerprint=cohort.fingerprint, fold_fingerprint=fingerprint)
    return plan, record


def test_a_resume_plans_only_the_pairs_without_a_record_or_a_prune_mark(synthetic_root, tmp_path,
                                                                        cohort):
    plan, record = _planned(GRID, synthetic_root, tmp_path, cohort)
    (c0, p0), (c1, p1), (c2, _) = plan.configs
    store.write_fold_result(plan.sweep_dir, record(c0, p0, 0, 0.4))
    store.write_fold_result(plan.sweep_dir, record(c0, p0, 1, 0.5))
    store.write_pruned(plan.sweep_dir, {"config_id": c1.config_id, "fold_seed": 42, "fold": 0,
                                        "experiment": "tune", "progress": 1, "val_qwk": 0.1,
                                        "params": p1})
    session = plan_session(plan)
    assert session.trials == ((1, 42, 1), (2, 42, 0), (2, 42, 1)) and session.done == 3
    trials = _param_space(plan, session)["trial"]["grid_search"]
    assert [(t["config_id"], t["fold"]) for t in trials] == [
        (c1.config_id, 1), (c2.config_id, 0), (c2.config_id, 1)]
    assert all(store.trial_key({"trial": t}) == (t["config_id"], 42, t["fold"]) for t in trials)


def test_an_unfinished_trial_continues_from_its_newest_checkpoint(synthetic_root, tmp_path,
                                                                  cohort):
    plan, _ = _planned(GRID, synthetic_root, tmp_path, cohort)
    config, params = plan.configs[1]
    trial = {"config_id": config.config_id, "params": params, "config": config.to_dict(),
             "fold": 1}
    folder = plan.sweep_dir.local_path / "tune" / f"{config.config_id}-f1-abcde_00003"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"settings": {}, "trial": trial}))
    for step in (1, 2):
        (folder / f"checkpoint_00000{step}").mkdir()
        FoldCheckpoint(config.config_id, 1, "forest", step, {}, None, {}, None).save(
            folder / f"checkpoint_00000{step}" / "fold.pt")
    train_run = plan.sweep_dir.local_path / "train" / "train-abcde_00003" / "checkpoint_2026"
    train_run.mkdir(parents=True)
    FoldCheckpoint(config.config_id, 1, "stage1", 5, {}, None, {}, None).save(
        train_run / "fold.pt")
    checkpoints = plan_session(plan).checkpoints
    assert list(checkpoints) == [f"{config.config_id}-s42-f1"]
    assert checkpoints[f"{config.config_id}-s42-f1"] == str(train_run / "fold.pt")  # newest

    from dfu_train.sweep.trainable import _earlier_checkpoint

    resumed = _earlier_checkpoint({"resume_from": checkpoints}, (config.config_id, 42, 1))
    assert resumed.progress == 5 and resumed.stage == "stage1"
    assert _earlier_checkpoint({"resume_from": checkpoints}, (config.config_id, 42, 0)) is None


def test_a_resumed_search_is_told_the_configs_tried_and_proposes_the_unfinished_first(
        synthetic_root, tmp_path, cohort):
    plan, record = _planned(OPTUNA, synthetic_root, tmp_path, cohort)
    base = plan.spec.base_config()
    tried = [({"forest.max_depth": 3, "forest.min_samples_leaf": 1}, 0.3),
             ({"forest.max_depth": 7, "forest.min_samples_leaf": 2}, 0.6)]
    for params, qwk in tried:
        store.write_fold_result(plan.sweep_dir, record(base.override(params), params, 0, qwk))
    pruned = {"forest.max_depth": 5, "forest.min_samples_leaf": 1}
    store.write_pruned(plan.sweep_dir, {
        "config_id": base.override(pruned).config_id, "fold_seed": 42, "fold": 0,
        "experiment": "tune", "progress": 1, "val_qwk": 0.2, "params": pruned})
    unfinished = {"forest.max_depth": 5, "forest.min_samples_leaf": 2}
    folder = plan.sweep_dir.local_path / "tune" / "x-f0-abcde_00001"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({
        "settings": {"base_config": base.to_dict()}, "fold": 0, "params": unfinished}))
    session = plan_session(plan)
    assert session.samples == 2 and session.done == 3  # 5 planned, 3 tried and ended
    assert sorted(q for _, q in session.evaluated) == [0.2, 0.3, 0.6]
    assert session.unfinished == (flat_params(unfinished),)

    searcher = create_search(plan, session)
    space = _param_space(plan, session)
    searcher.set_search_properties("val_qwk", "max", space)
    study = searcher._ot_study
    assert len(study.trials) == 4  # three told, one enqueued
    first = searcher.suggest("trial-1")
    assert first["params"] == unfinished  # the unfinished config is proposed again first

    # The study is kept in the sweep folder (`search.storage: auto`), named after the sweep.
    # Killed now, with trial-1 running: a resume's searcher loads it and adds nothing twice.
    import optuna

    url = f"sqlite:///{plan.sweep_dir.local_path.resolve() / 'optuna.db'}"
    again = create_search(plan, session)
    again.set_search_properties("val_qwk", "max", space)
    kept = optuna.load_study(study_name="tpe", storage=url)
    states = [t.state.name for t in kept.trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1  # the killed trial
    assert sorted(t.value for t in kept.trials if t.value is not None) == [0.2, 0.3, 0.6]
    assert again.suggest("trial-2")["params"] == unfinished
    in_memory = parse_sweep({**OPTUNA, "search": {**OPTUNA["search"], "storage": None}})
    no_study = create_search(dataclasses.replace(plan, spec=in_memory), session)
    no_study.set_search_properties("val_qwk", "max", space)
    assert len(no_study._ot_study.trials) == 4  # in memory: told afresh


@pytest.mark.parametrize(("final", "marked"), [(False, True), (True, False)])
def test_the_scheduler_marks_the_trials_it_stops_early(synthetic_root, tmp_path, cohort, final,
                                                       marked):
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    plan, _ = _planned(GRID, synthetic_root, tmp_path, cohort)
    config, params = plan.configs[0]

    class Stops(FIFOScheduler):
        def on_trial_result(self, controller, trial, result):
            return TrialScheduler.STOP

    trial = SimpleNamespace(trial_id="abcde_00000", config={"trial": {
        "config_id": config.config_id, "params": params, "config": config.to_dict(), "fold": 1}})
    scheduler = _recording_prunes(Stops(), plan)
    result = {"progress": 2, "val_qwk": 0.25, **({"final": 1} if final else {})}
    assert scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP
    marks = store.read_pruned(plan.sweep_dir)
    assert bool(marks) == marked
    if marked:
        assert marks[(config.config_id, 42, 1)]["val_qwk"] == 0.25
        assert marks[(config.config_id, 42, 1)]["params"] == params


def test_a_config_stopped_on_every_fold_stays_stopped_after_a_resume(synthetic_root, tmp_path,
                                                                     cohort):
    """fold-asha stopped config 0 after its fold 0 ran (fold 1 never started): the resume runs
    neither fold of it, and status counts both as pruned rather than pending."""
    from dfu_train.results.leaderboard import sweep_status

    plan, record = _planned(GRID, synthetic_root, tmp_path, cohort)
    (c0, p0), (c1, p1), _ = plan.configs
    store.write_pruned(plan.sweep_dir, {"config_id": c0.config_id, "fold_seed": 42, "fold": 0,
                                        "experiment": "tune", "progress": 3, "val_qwk": 0.1,
                                        "params": p0, "scope": "config"})
    store.write_fold_result(plan.sweep_dir, record(c1, p1, 0, 0.5))
    session = plan_session(plan)
    assert [(plan.configs[i][0].config_id, fold) for i, _, fold in session.trials] == [
        (c1.config_id, 1), (plan.configs[2][0].config_id, 0), (plan.configs[2][0].config_id, 1)]
    counts = sweep_status(plan.sweep_dir)["trials"]
    assert (counts["pruned"], counts["finished"], counts["pending"]) == (2, 1, 3)


def test_repeated_cv_plans_every_config_on_the_folds_of_each_fold_seed(synthetic_root, tmp_path,
                                                                       cohort):
    from dfu_train.results.leaderboard import build_leaderboard

    spec = {**GRID, "cv": {**GRID["cv"], "seeds": [42, 7]}}
    plan, _ = _planned(spec, synthetic_root, tmp_path, cohort)
    manifest = store.read_manifest(plan.sweep_dir)
    assert set(manifest["fold_fingerprints"]) == {"42", "7"}
    assert plan.n_trials == 3 * 2 * 2
    (c0, p0), *_ = plan.configs
    store.write_fold_result(plan.sweep_dir, fold_record(
        c0.config_id, 7, 1, 0.4, params=p0, cohort_fingerprint=cohort.fingerprint,
        fold_fingerprint=manifest["fold_fingerprints"]["7"]))
    session = plan_session(plan)
    assert session.done == 1 and (0, 7, 1) not in session.trials and (0, 42, 1) in session.trials
    trials = _param_space(plan, session)["trial"]["grid_search"]
    assert {(t["config"]["cv"]["seed"], t["fold"]) for t in trials} == {
        (42, 0), (42, 1), (7, 0), (7, 1)}
    board = build_leaderboard(plan.sweep_dir).set_index("config_id")
    assert board.loc[c0.config_id, "folds_total"] == 4
    assert board.loc[c0.config_id, "qwk_screen_mean"] == 0.4


def test_a_proposing_search_refuses_several_fold_seeds():
    from dfu_train.errors import ConfigError

    with pytest.raises(ConfigError, match="one fold of one fold seed"):
        parse_sweep({**OPTUNA, "cv": {**OPTUNA["cv"], "seeds": [1, 2]}})


def test_the_study_is_kept_in_the_sweep_folder_unless_that_is_a_bucket(tmp_path):
    from dfu_train.location import Location
    from dfu_train.sweep.search import study_storage

    local = Location(tmp_path / "results" / "tpe")
    assert study_storage("auto", local) == f"sqlite:///{tmp_path / 'results' / 'tpe' / 'optuna.db'}"
    assert study_storage("auto", Location("s3://bucket/results/tpe")) is None  # sqlite: local
    assert study_storage("postgresql://db/studies", Location("s3://bucket/results/tpe")) == (
        "postgresql://db/studies")
    assert study_storage(None, local) is None
    from dfu_train.errors import ConfigError
    from dfu_train.sweep.plan import spec_hash

    spec = parse_sweep({**OPTUNA, "search": {**OPTUNA["search"], "storage": "none"}})
    assert spec.search.storage is None
    # where the study is kept is not part of the sweep: a resume may move it
    assert spec_hash(spec, "c0ffee") == spec_hash(parse_sweep(OPTUNA), "c0ffee")
    with pytest.raises(ConfigError, match="not an RDB URL"):
        parse_sweep({**OPTUNA, "search": {**OPTUNA["search"], "storage": "optuna.db"}})
    with pytest.raises(ConfigError, match="search.algorithm grid keeps none"):
        parse_sweep({**GRID, "search": {"algorithm": "grid", "storage": "sqlite:///x.db"}})
