"""Sweep files are validated before Ray starts and expand reproducibly into configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfu_train.data.cohort import load_cohort
from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort
from dfu_train.errors import ConfigError, DataError
from dfu_train.sweep.launch import max_concurrent_trials
from dfu_train.sweep.plan import plan_sweep
from dfu_train.sweep.space import expand_configs, load_sweep, parse_sweep

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.mark.parametrize("name", ["smoke.yaml", "metadata.yaml", "fusion.yaml", "joint.yaml"])
def test_ready_sweep_files_are_valid(name):
    spec = load_sweep(SWEEPS / name)
    configs = expand_configs(spec)
    assert configs
    assert len({c.config_id for c, _ in configs}) == len(configs)


def test_random_search_is_reproducible_under_its_seed():
    data = {"search": {"num_samples": 6, "seed": 3},
            "space": {"forest.n_estimators": {"randint": [10, 500]},
                      "metadata.imputer_neighbors": {"choice": [3, 5, 7]}}}
    first = [c.config_id for c, _ in expand_configs(parse_sweep(data))]
    again = [c.config_id for c, _ in expand_configs(parse_sweep(data))]
    other = [c.config_id for c, _ in expand_configs(parse_sweep({**data, "search": {"num_samples": 6, "seed": 4}}))]
    assert first == again
    assert first != other
    assert len(first) == 6


def test_grid_crosses_values_and_fixed_values_apply():
    spec = parse_sweep({"search": {"algorithm": "grid"}, "fixed": {"forest.n_estimators": 7},
                        "space": {"forest.class_weight": {"grid": ["balanced", "none"]},
                                  "forest.min_samples_leaf": {"grid": [1, 2, 3]}}})
    configs = expand_configs(spec)
    assert len(configs) == 6
    assert {c.forest.n_estimators for c, _ in configs} == {7}
    assert {(p["forest.class_weight"], p["forest.min_samples_leaf"]) for _, p in configs} == {
        (w, leaf) for w in ("balanced", "none") for leaf in (1, 2, 3)}


@pytest.mark.parametrize("data, message", [
    ({"serach": {}}, r"unknown key 'serach' \(did you mean 'search'\?\)"),
    ({"space": {"forest.n_estimater": {"choice": [1]}}}, r"did you mean 'forest.n_estimators'"),
    ({"space": {"forest.n_estimators": {"choice": []}}}, "non-empty list"),
    ({"space": {"forest.n_estimators": {"randint": [50, 10]}}}, "empty or inverted"),
    ({"space": {"forest.n_estimators": {"normal": [1, 2]}}}, "unknown distribution 'normal'"),
    ({"space": {"forest.n_estimators": {"choice": [-1]}}}, "greater than or equal to 1"),
    ({"space": {"metadata.features": {"choice": [["Age", "Phase Confidence (%)"]]}}}, "never a feature"),
    ({"cv": {"n_folds": 3, "run_folds": [0, 4]}}, "fold 4 does not exist"),
    ({"fixed": {"cv.seed": 3}}, "cv section"),
    ({"search": {"algorithm": "grid"}, "space": {"forest.max_depth": {"randint": [2, 9]}}},
     "grid needs grid values only"),
    ({"search": {"algorithm": "optuna"}, "cv": {"run_folds": "all"}}, "screen on one fold"),
    ({"search": {"algorithm": "optuna"}, "cv": {"run_folds": [0]},
      "space": {"seed": {"grid": [0, 1]}}}, "optuna cannot take grid values"),
    ({"fixed": {"depth_rgb.backbone": "resnet5"}}, r"did you mean 'resnet50'"),
    ({"resources": {"gpus_per_trial": 1, "use_train": False}}, "needs resources.use_train"),
])
def test_bad_sweep_files_are_refused_with_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(data, source="x.yaml")


def test_yaml_is_read_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("search: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(path)


def test_plan_checks_data_and_folds_before_anything_is_written(tmp_path):
    spec = parse_sweep({"name": "x", "cv": {"n_folds": 5}})
    with pytest.raises(DataError, match="data root .* not found"):
        plan_sweep(spec, data_root=tmp_path / "none", storage=tmp_path / "results")
    small = write_synthetic_cohort(tmp_path / "small", SynthSpec(patients=8, images=False))
    rare = load_cohort(small).samples.groupby("label")["Patient#"].nunique().min()
    too_many = parse_sweep({"name": "x", "cv": {"n_folds": int(rare) + 1}})
    with pytest.raises(ConfigError, match="patients have class"):
        plan_sweep(too_many, data_root=small, storage=tmp_path / "results")
    assert not (tmp_path / "results" / "x").exists()


def test_concurrency_comes_from_cluster_resources():
    spec = parse_sweep({"resources": {"cpus_per_trial": 2}})
    assert max_concurrent_trials(spec, {"CPU": 8}) == 4  # auto on this machine: inline trials
    on_train = spec.on_train_path(on_cluster=True)
    assert max_concurrent_trials(on_train, {"CPU": 8}) == 3  # 2 + 0.25 driver per trial
    gpu = parse_sweep({"resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5}})
    assert max_concurrent_trials(gpu, {"CPU": 64, "GPU": 2}) == 4
    fixed = parse_sweep({"resources": {"max_concurrent": 3}})
    assert max_concurrent_trials(fixed, {"CPU": 64}) == 3


def test_a_recorded_sweep_is_recognised_after_an_upgrade_and_a_different_one_refused(
        synthetic_root, tmp_path):
    """A sweep recorded before a setting existed (its manifest lacks the key) is the same sweep
    with the default filled in: run and resume go on. Another sweep under the name is refused."""
    import json

    from dfu_train.results import store
    from dfu_train.sweep.plan import write_manifest

    spec = parse_sweep({"name": "upgraded", "space": {"seed": {"grid": [0, 1]}}})
    plan = plan_sweep(spec, data_root=synthetic_root, storage=tmp_path)
    write_manifest(plan)
    manifest_file = (plan.sweep_dir / store.MANIFEST).local_path
    manifest = json.loads(manifest_file.read_text())
    del manifest["spec"]["resources"]["driver_resource"]  # as an older version wrote it
    manifest["spec_hash"] = "from-an-older-version"
    manifest_file.write_text(json.dumps(manifest))
    write_manifest(plan_sweep(spec, data_root=synthetic_root, storage=tmp_path))  # no error

    other = parse_sweep({"name": "upgraded", "space": {"seed": {"grid": [0, 1, 2]}}})
    with pytest.raises(ConfigError, match="already holds a different sweep"):
        write_manifest(plan_sweep(other, data_root=synthetic_root, storage=tmp_path))


def test_search_algorithms_and_schedulers_come_from_their_registries():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from dfu_train.sweep.fold_asha import FoldAwareASHA
    from dfu_train.sweep.search import SCHEDULERS, SEARCHERS

    with pytest.raises(ConfigError, match=r"unknown search algorithm 'optna'.*did you mean "
                                          r"'optuna'.*choose from random, grid, optuna-tpe"):
        parse_sweep({"search": {"algorithm": "optna"}})
    with pytest.raises(ConfigError, match=r"unknown scheduler 'hyperbnd'.*did you mean "
                                          r"'hyperband'.*choose from fold-asha, none, asha"):
        parse_sweep({"scheduler": {"type": "hyperbnd"}})
    space = {"forest.n_estimators": {"choice": [10, 20]}}
    for name in ("optuna", "optuna-tpe"):
        spec = parse_sweep({"search": {"algorithm": name, "num_samples": 3},
                            "cv": {"run_folds": [0]}, "space": space})
        assert spec.search.searcher.proposes
        assert isinstance(spec.search.searcher.build(spec.search.seed), OptunaSearch)
        with pytest.raises(ConfigError, match=f"search.algorithm {name} proposes one config"):
            parse_sweep({"search": {"algorithm": name}, "space": space})
    assert not any(SEARCHERS[n].proposes for n in ("grid", "random"))
    built = {name: parse_sweep({"scheduler": {"type": name}}).scheduler.build(20, 10)
             for name in SCHEDULERS}
    assert isinstance(built["asha"], ASHAScheduler) and type(built["none"]) is FIFOScheduler
    assert isinstance(built["fold-asha"], FoldAwareASHA) and built["fold-asha"].rungs == [4]
    assert parse_sweep({}).scheduler.type == "fold-asha"  # the default
    # no fusion stage (metadata only): nothing for fold-asha to judge
    assert type(parse_sweep({}).scheduler.build(1, 0)) is FIFOScheduler


def test_use_train_auto_runs_train_trials_only_where_they_pay_for_their_start_up():
    """auto: inline on this machine's own Ray, Train on a cluster or when trials ask for GPUs;
    an explicit choice is kept either way, and GPUs still refuse an explicit `false`."""
    local = parse_sweep({})
    assert local.resources.use_train == "auto"
    assert local.on_train_path(on_cluster=False).resources.use_train is False
    assert local.on_train_path(on_cluster=True).resources.use_train is True
    gpu = parse_sweep({"resources": {"gpus_per_trial": 0.5}})
    assert gpu.on_train_path(on_cluster=False).resources.use_train is True
    for chosen in (True, False):
        spec = parse_sweep({"resources": {"use_train": chosen}})
        assert spec.on_train_path(on_cluster=not chosen).resources.use_train is chosen
    with pytest.raises(ConfigError, match="gpus_per_trial needs resources.use_train"):
        parse_sweep({"resources": {"gpus_per_trial": 1, "use_train": False}})
    with pytest.raises(ConfigError, match="use_train"):
        parse_sweep({"resources": {"use_train": "sometimes"}})


def test_a_sweep_resumed_on_another_path_or_cluster_is_the_same_sweep(tmp_path):
    """Resources say how trials run, not what they compute: a sweep started inline continues on
    Train (or with other CPUs per trial) under the same hash; its space still tells sweeps apart."""
    from dfu_train.sweep.plan import spec_hash

    inline = parse_sweep({"name": "s", "resources": {"use_train": False, "cpus_per_trial": 1}})
    train = parse_sweep({"name": "s", "resources": {"use_train": True, "cpus_per_trial": 4}})
    other = parse_sweep({"name": "s", "fixed": {"forest.n_estimators": 7}})
    assert spec_hash(inline, "c") == spec_hash(train, "c") == spec_hash(parse_sweep({}), "c")
    assert spec_hash(other, "c") != spec_hash(inline, "c")
