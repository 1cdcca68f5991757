"""Warm starts (`search.points_to_evaluate`, `dfu sweep run --warm-start OTHER --top K`) and the
searchers and schedulers added to the registries: Optuna's GP and CMA-ES samplers, HyperBand
with several brackets."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.config import TrialConfig
from dfu_train.errors import ConfigError
from dfu_train.results import store
from dfu_train.sweep.session import Session, flat_params, untried, warm_started
from dfu_train.sweep.space import SchedulerSection, expand_configs, parse_sweep, search_domains
from dfu_train.sweep.warm import warm_start_points, with_points
from sweep_files import fold_record, manifest, write_sweep

GRID = {"name": "warm", "cv": {"n_folds": 3}, "baseline": False, "search": {"algorithm": "grid"},
        "fixed": {"forest.inner_folds": 3},
        "space": {"forest.n_estimators": {"grid": [20, 40]},
                  "forest.min_samples_leaf": {"grid": [1, 5]}}}
PROPOSING = {"name": "gp", "cv": {"n_folds": 3, "run_folds": [0]}, "baseline": False,
             "search": {"algorithm": "optuna-gp", "num_samples": 2, "seed": 1},
             "scheduler": {"type": "none"},
             "resources": {"cpus_per_trial": 1, "use_train": False},
             "fixed": {"forest.inner_folds": 3},
             "space": {"forest.n_estimators": {"randint": [5, 40]},
                       "forest.min_samples_leaf": {"choice": [1, 3, 5]}}}


def _with_points(sweep: dict, *points) -> dict:
    return {**sweep, "search": {**sweep["search"], "points_to_evaluate": list(points)}}


def test_points_to_evaluate_come_first_in_an_expanded_search_at_the_base_values():
    spec = parse_sweep(_with_points(GRID, {"forest.n_estimators": 77}))
    configs = expand_configs(spec)
    assert len(configs) == 5
    config, params = configs[0]
    # the parameter the point leaves out takes the base (default) value, and shows it
    assert params == {"forest.n_estimators": 77,
                      "forest.min_samples_leaf": TrialConfig().forest.min_samples_leaf}
    assert config.forest.n_estimators == 77
    # a point that is a grid config is not run twice
    again = parse_sweep(_with_points(GRID, {"forest.n_estimators": 40,
                                            "forest.min_samples_leaf": 5}))
    assert len(expand_configs(again)) == 4
    assert expand_configs(again)[0][1] == {"forest.n_estimators": 40, "forest.min_samples_leaf": 5}


@pytest.mark.parametrize("sweep, message", [
    (_with_points(GRID, {"forest.n_estimator": 10}), "did you mean 'forest.n_estimators'"),
    (_with_points(GRID, {"forest.max_depth": 3}), "not swept in `space`"),
    (_with_points(GRID, {}), "an empty point"),
    (_with_points(GRID, {"forest.n_estimators": -3}), "n_estimators"),
    (_with_points(PROPOSING, {"forest.min_samples_leaf": 2}), "outside its distribution"),
    (_with_points(PROPOSING, {"forest.n_estimators": 40}), "outside its distribution"),
    (_with_points(PROPOSING, *({"forest.n_estimators": n} for n in (5, 6, 7))),
     "3 points, more than the 2 configs"),
])
def test_bad_points_are_refused_before_anything_runs(sweep, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(sweep)


def test_a_proposing_search_asks_for_the_points_first_and_samples_what_they_leave_out(tmp_path):
    spec = parse_sweep(_with_points({**PROPOSING, "search": {**PROPOSING["search"],
                                                             "num_samples": 3}},
                                    {"forest.n_estimators": 17, "forest.min_samples_leaf": 3},
                                    {"forest.min_samples_leaf": 5}))
    searcher = warm_started(spec.search.searcher.build(spec.search.seed),
                            Session(points=tuple(map(flat_params,
                                                     spec.search.points_to_evaluate))))
    searcher.set_search_properties("val_qwk", "max", {"params": search_domains(spec)})
    first, second = searcher.suggest("t1"), searcher.suggest("t2")
    assert first["params"] == {"forest.n_estimators": 17, "forest.min_samples_leaf": 3}
    assert second["params"]["forest.min_samples_leaf"] == 5
    assert 5 <= second["params"]["forest.n_estimators"] < 40
    searcher.save(str(tmp_path / "searcher.pkl"))  # as Tune's experiment checkpoints do


def test_a_resumed_search_does_not_enqueue_a_point_already_tried():
    tried = [{"params/a": 1, "params/b": 2}]
    assert untried([{"params/a": 1}, {"params/a": 2}, {"params/a": 1, "params/b": 3}],
                   tried) == ({"params/a": 2}, {"params/a": 1, "params/b": 3})


@pytest.mark.parametrize("algorithm, sampler", [("optuna-gp", "GPSampler"),
                                                ("optuna-cmaes", "CmaEsSampler")])
def test_gp_and_cmaes_searchers_propose_configs_inside_the_space(algorithm, sampler):
    """Ray's OptunaSearch driven by hand (no cluster) past the samplers' random start-up."""
    spec = parse_sweep({**PROPOSING, "search": {"algorithm": algorithm, "num_samples": 14},
                        "space": {"forest.n_estimators": {"randint": [5, 40]},
                                  "forest.max_features": {"uniform": [0.2, 0.9]},
                                  "forest.min_samples_leaf": {"choice": [1, 3, 5]}}})
    searcher = spec.search.searcher.build(4)
    assert type(searcher._sampler).__name__ == sampler
    searcher.set_search_properties("val_qwk", "max", {"params": search_domains(spec)})
    proposed = []
    for i in range(14):
        params = searcher.suggest(f"t{i}")["params"]
        proposed.append(params)
        value = (-abs(params["forest.max_features"] - 0.6)
                 - abs(params["forest.n_estimators"] - 30) / 40)
        searcher.on_trial_complete(f"t{i}", {"val_qwk": value})
    assert all(5 <= p["forest.n_estimators"] < 40 and 0.2 <= p["forest.max_features"] <= 0.9
               and p["forest.min_samples_leaf"] in (1, 3, 5) for p in proposed)
    assert len({json.dumps(p, sort_keys=True) for p in proposed}) == 14


def test_hyperband_builds_several_brackets_on_the_fused_qwk_per_fusion_epoch():
    from dfu_train.sweep.hyperband import FusedHyperBand

    section = SchedulerSection(type="hyperband", grace_period=2, reduction_factor=2, brackets=3)
    scheduler = section.build(schedule_length=40, fusion_length=20)
    assert isinstance(scheduler, FusedHyperBand)
    assert scheduler._time_attr == "fusion_epochs" and scheduler._metric == "fused_qwk"
    assert scheduler.rungs == [[2, 4, 8, 16], [4, 8, 16], [8, 16]]  # one rung later each
    assert scheduler._max_t == 21  # past the longest fusion schedule: trials end by themselves
    # the Tuner's metric (val_qwk) does not replace the fused QWK
    assert scheduler.set_search_properties("val_qwk", "max") and scheduler._metric == "fused_qwk"
    assert type(section.build(schedule_length=1, fusion_length=0)).__name__ == "FIFOScheduler"
    with pytest.raises(ConfigError, match="brackets"):
        parse_sweep({**GRID, "scheduler": {"type": "hyperband", "brackets": 0}})


def test_hyperband_stops_the_weak_trial_at_a_rung_and_ignores_empty_reports():
    from ray.tune.schedulers import TrialScheduler

    scheduler = SchedulerSection(type="hyperband", grace_period=1, reduction_factor=2,
                                 brackets=1).build(schedule_length=12, fusion_length=8)
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(4)]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    # a trial that ended before any work reports no fused QWK: no decision, no error
    assert scheduler.on_trial_result(None, trials[0], {"fusion_epochs": 0, "fused_qwk": None,
                                                       "val_qwk": None}) == "CONTINUE"
    decisions = [scheduler.on_trial_result(None, t, {"fusion_epochs": 1, "fused_qwk": q})
                 for t, q in zip(trials, (0.4, 0.5, 0.6, 0.1))]
    assert decisions[-1] == TrialScheduler.STOP and decisions[2] == TrialScheduler.CONTINUE
    scheduler.on_trial_complete(None, trials[0], {"fusion_epochs": 0, "fused_qwk": None})


def _other_sweep(tmp_path, *, n_estimators=(30, 10, 20), qwk=(0.3, 0.5, 0.4)):
    """A finished sweep `other` of three metadata configs, each on two folds."""
    configs = [TrialConfig().override({"forest.n_estimators": n, "forest.max_depth": 4})
               for n in n_estimators]
    data = manifest("other", [c.config_id for c in configs], folds=(0, 1))
    records = [fold_record(c.config_id, 42, fold, q + fold / 100,
                           params={"forest.n_estimators": c.forest.n_estimators},
                           config=c.to_dict())
               for c, q in zip(configs, qwk) for fold in (0, 1)]
    data["configs"] = [{"config_id": c.config_id,
                        "params": {"forest.n_estimators": c.forest.n_estimators}}
                       for c in configs]
    write_sweep(tmp_path / "other", data, records)
    return tmp_path / "other"


def test_warm_start_takes_the_other_sweeps_best_on_this_sweeps_keys(tmp_path):
    other = _other_sweep(tmp_path)
    spec = parse_sweep({**GRID, "space": {**GRID["space"], "forest.max_depth": {"grid": [3, 6]}}})
    points = warm_start_points(store.resolve_sweep(other), spec, top=2)
    # ranked as its leaderboard ranks them; only this space's keys, with the values it ran
    assert points == [{"forest.n_estimators": 10, "forest.min_samples_leaf": 1,
                       "forest.max_depth": 4},
                      {"forest.n_estimators": 20, "forest.min_samples_leaf": 1,
                       "forest.max_depth": 4}]
    seeded = with_points(spec, points, source="test")
    assert [p for _, p in expand_configs(seeded)][:2] == points
    # a proposing search leaves out what its space cannot propose (40 > randint's top, 39)
    proposing = parse_sweep(PROPOSING)
    assert warm_start_points(store.resolve_sweep(_other_sweep(tmp_path / "b", n_estimators=(
        45, 12, 8))), proposing, top=3) == [
        {"forest.n_estimators": 12, "forest.min_samples_leaf": 1},
        {"forest.n_estimators": 8, "forest.min_samples_leaf": 1},
        {"forest.min_samples_leaf": 1}]


def test_warm_start_from_a_sweep_with_nothing_to_offer_is_refused(tmp_path):
    write_sweep(tmp_path / "empty", manifest("empty", ["abcdef"]))
    with pytest.raises(ConfigError, match="no finished fold"):
        warm_start_points(store.resolve_sweep(tmp_path / "empty"), parse_sweep(GRID), top=1)
    other = _other_sweep(tmp_path)
    with pytest.raises(ConfigError, match="share no parameter"):
        warm_start_points(store.resolve_sweep(other), parse_sweep(
            {**GRID, "space": {"image.size": {"grid": [16, 32]}}}), top=1)


def test_warm_start_from_a_missing_sweep_exits_2_before_anything_is_written(tmp_path,
                                                                            synthetic_root):
    sweep_file = tmp_path / "warm.yaml"
    sweep_file.write_text(yaml.safe_dump(GRID))
    result = CliRunner().invoke(app, ["sweep", "run", str(sweep_file), "--data-root",
                                      str(synthetic_root), "--storage", str(tmp_path / "store"),
                                      "--warm-start", "nosuch", "--top", "2"])
    assert result.exit_code == 2
    assert "no sweep 'nosuch'" in result.output
    assert not (tmp_path / "store" / "warm").exists()


@pytest.mark.ray
def test_gp_search_warm_started_from_another_sweep_runs_its_best_config(local_ray, tmp_path,
                                                                        synthetic_root):
    _other_sweep(tmp_path / "store", n_estimators=(30, 17, 20))
    sweep_file = tmp_path / "gp.yaml"
    sweep_file.write_text(yaml.safe_dump(PROPOSING))
    result = CliRunner().invoke(app, ["sweep", "run", str(sweep_file), "--data-root",
                                      str(synthetic_root), "--storage", str(tmp_path / "store"),
                                      "--warm-start", "other", "--top", "1", "--progress",
                                      "quiet"])
    assert result.exit_code == 0, result.output
    sweep_dir = tmp_path / "store" / "gp"
    recorded = store.read_manifest(sweep_dir)["spec"]["search"]["points_to_evaluate"]
    assert recorded == [{"forest.n_estimators": 17, "forest.min_samples_leaf": 1}]
    params = [r["params"] for r in store.read_fold_results(sweep_dir)]
    assert len(params) == 2 and recorded[0] in params


@pytest.mark.ray
def test_hyperband_runs_a_tiny_fusion_sweep_to_the_end(local_ray, tmp_path, synthetic_root):
    from dfu_train.results.leaderboard import build_leaderboard
    from dfu_train.sweep.launch import run_sweep
    from dfu_train.sweep.plan import plan_sweep

    spec = parse_sweep({
        "name": "hb", "baseline": False, "cv": {"n_folds": 3, "run_folds": [0]},
        "search": {"algorithm": "grid"},
        "scheduler": {"type": "hyperband", "grace_period": 1, "reduction_factor": 2,
                      "brackets": 2},
        "resources": {"cpus_per_trial": 1, "use_train": False},
        "fixed": {"modalities": ["metadata", "thermal_map"], "forest.n_estimators": 20,
                  "forest.inner_folds": 3, "image.size": 16, "thermal_map.pretrain_epochs": 1,
                  "stage1.epochs": 4, "stage2.epochs": 0, "fusion.head": "residual"},
        "space": {"stage1.lr": {"grid": [1e-4, 1e-3, 1e-2]}},
    })
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    sweep_dir = run_sweep(plan, on_event=lambda line: None)
    outcome = store.experiment_outcome(sweep_dir, experiment=plan.experiment,
                                       planned=plan.n_trials)
    assert not outcome["errors"] and outcome["finished"] + outcome["pruned"] == 3
    board = build_leaderboard(sweep_dir)
    assert len(board) == 3 and (board["folds_done"] + board["pruned"] == 1).all()
