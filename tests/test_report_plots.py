"""`dfu report` on hand-made sweep folders (no Ray): every plot renders for one config on one
fold, for `null` choices, stopped trials, promotions and the study's recipe, and index.html
shows every plot with its header and no `None` or long floats."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from dfu_train.results import store
from dfu_train.results.leaderboard import build_leaderboard, query
from dfu_train.results.report import (_encode, _qwk_limits, _value_text, param_importance,
                                      trial_curves, write_report)
from dfu_train.training.metrics import classification_metrics, kappa
from sweep_files import fold_record, manifest

PLOTS = ("top_configs.png", "fusion_vs_metadata.png", "learning_curves.png",
         "parallel_coordinates.png", "param_importance.png", "best_confusion.png",
         "optimisation_history.png", "class_metrics.png", "best_roc_pr.png",
         "best_calibration.png")
FUSION = ["metadata", "thermal_map"]
N_FOLDS = 3
SAMPLES = 24  # validation samples per fold


def _proba(labels: np.ndarray, skill: float, rng) -> np.ndarray:
    """Probabilities leaning towards each label by `skill`."""
    noise = rng.dirichlet(np.ones(3), size=len(labels))
    return (1 - skill) * noise + skill * np.eye(3)[labels]


def _samples(fold: int, labels: np.ndarray, proba: np.ndarray) -> list[dict]:
    """A fold's validation samples (two per patient)."""
    return [{"sample_id": f"P{(fold * SAMPLES + j) // 2:03d}A{j % 2:02d}D1", "label": int(label),
             "proba": [round(float(p), 6) for p in row]}
            for j, (label, row) in enumerate(zip(labels, proba))]


def _record(config_id: str, seed: int, fold: int, *, skill: float, params: dict,
            modalities=FUSION, trial_id: str | None = None) -> dict:
    labels = np.random.default_rng(seed * 100 + fold).choice(3, SAMPLES, p=[0.3, 0.5, 0.2])
    rng = np.random.default_rng([seed, fold, int(config_id, 16) % 2**31])
    proba = _proba(labels, skill, rng)
    samples = _samples(fold, labels, proba)
    metrics = classification_metrics(labels, proba)
    forest = _proba(labels, 0.12, rng)
    meta_qwk = kappa(labels, forest.argmax(axis=1)) if "metadata" in modalities else None
    return fold_record(
        config_id, seed, fold, metrics["qwk"], n_folds=N_FOLDS, params=params,
        config={"modalities": list(modalities)}, metrics={**metrics, "qwk_imaged": None},
        meta_qwk=meta_qwk, val_samples=samples,
        fusion_gain=None if meta_qwk is None else metrics["qwk"] - meta_qwk,
        stages={"decode": {"rule": "argmax", "cuts": None, "fitted_on": 0}},
        versions={"git_revision": "1a2b3c4", "dfu_train": "0.1.0"},
        timing={"started_at": 1_700_000_000.0 + 60 * fold}, trial_id=trial_id or "")


def _write_trial(sweep_dir, config_id: str, seed: int, fold: int, trial_id: str,
                 reports: list[dict]) -> None:
    """A Tune trial folder as Tune leaves it: params.json and one JSON line per report."""
    folder = sweep_dir / store.TUNE_DIR / f"{config_id}-s{seed}-f{fold}-{trial_id}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps({"trial": {
        "config_id": config_id, "config": {"cv": {"seed": seed}}, "fold": fold, "params": {}}}))
    (folder / "result.json").write_text("".join(
        json.dumps({**r, "trial_id": trial_id}) + "\n" for r in reports) + "{not json\n")


def _fusion_reports(forest: float, branch: list[float], fused: list[float]) -> list[dict]:
    """forest (step 1), pretraining the branch, then fusion stage 1."""
    reports = [{"progress": 1, "stage": "forest", "val_qwk": forest, "fused_qwk": forest}]
    step = 1
    for qwk in branch:
        step += 1
        reports.append({"progress": step, "stage": "pretrain:thermal_map", "val_qwk": qwk,
                        "fused_qwk": forest})
    best = -1.0
    for qwk in fused:
        step += 1
        best = max(best, qwk)
        reports.append({"progress": step, "stage": "stage1", "val_qwk": qwk, "fused_qwk": best})
    return reports


CONFIGS = {  # config_id: (params, skill)
    "aaaa000001": ({"forest.max_depth": 3, "stage1.lr": 1e-3, "modalities": FUSION}, 0.3),
    "aaaa000002": ({"forest.max_depth": None, "stage1.lr": 1e-4, "modalities": FUSION}, 0.25),
    "aaaa000003": ({"forest.max_depth": 3, "stage1.lr": 1e-5, "modalities": FUSION}, 0.2),
    "aaaa000004": ({"forest.max_depth": None, "stage1.lr": 3e-4, "modalities": FUSION}, 0.15),
    "aaaa000005": ({"forest.max_depth": 3, "modalities": ["metadata"]}, 0.12),
    "aaaa000006": ({"forest.max_depth": None, "stage1.lr": 1e-3, "modalities": FUSION}, 0.1),
}
BASELINE = "bbbb000001"  # the study's recipe: metadata only
PROMOTED = ["aaaa000001", "aaaa000002"]


@pytest.fixture
def rich_sweep(tmp_path):
    """Six configs and the study's recipe on folds 0 and 1 of fold seed 42; a `null` choice,
    a learning rate over two decades and a parameter a metadata-only config does not use; two
    configs promoted to every fold of fold seeds 42 and 7; one fold stopped by the scheduler
    after its config finished another, one config stopped before any fold finished; Tune
    trial folders for the learning curves."""
    sweep_dir = tmp_path / "rich"
    promotion = {"experiment": "promote-1", "configs": PROMOTED, "fold_seeds": [42, 7],
                 "folds": [0, 1, 2]}
    data = manifest("rich", [], folds=(0, 1), n_folds=N_FOLDS, promotions=[promotion],
                    created="2025-01-02T03:04:05+0000", spec_hash="5eed" * 8)
    data["configs"] = [{"config_id": c, "params": p} for c, (p, _) in CONFIGS.items()]
    recipe = {"config_id": BASELINE, "params": {"forest.max_depth": 6, "modalities": ["metadata"]}}
    data["configs"].append(recipe)
    data["baseline"] = recipe
    records = []
    for config_id, (params, skill) in CONFIGS.items():
        if config_id == "aaaa000006":
            continue  # stopped on its first fold
        folds = [(42, f) for f in (0, 1)]
        if config_id in PROMOTED:
            folds = [(s, f) for s in (42, 7) for f in range(N_FOLDS)]
        if config_id == "aaaa000004":
            folds = [(42, 0)]  # its fold 1 was stopped
        for seed, fold in folds:
            records.append(_record(config_id, seed, fold, skill=skill, params=params,
                                   modalities=params["modalities"],
                                   trial_id=f"t{config_id[-1]}{seed}{fold}_0000{fold}"))
    for fold in (0, 1):
        records.append(_record(BASELINE, 42, fold, skill=0.12, params=recipe["params"],
                               modalities=["metadata"]))
    store.write_json_atomic(sweep_dir / store.MANIFEST, data)
    for record in records:
        store.write_fold_result(sweep_dir, record)
    for config_id, fold, qwk in (("aaaa000004", 1, 0.12), ("aaaa000006", 0, 0.05)):
        store.write_pruned(sweep_dir, {
            "config_id": config_id, "fold_seed": 42, "fold": fold, "experiment": "tune",
            "progress": 4, "val_qwk": qwk, "params": CONFIGS[config_id][0],
            "trial_id": f"stop{config_id[-1]}_0000{fold}", "scope": "trial"})
    _write_trial(sweep_dir, "aaaa000001", 42, 0, "t1420_00000",
                 _fusion_reports(0.30, [0.05, 0.12, 0.20], [0.35, 0.41, 0.38])
                 + [{"progress": 7, "stage": "final", "final": 1, "val_qwk": 0.40}])
    _write_trial(sweep_dir, "aaaa000006", 42, 0, "stop6_00000",
                 _fusion_reports(0.28, [0.02, 0.05], [0.05]))
    _write_trial(sweep_dir, "aaaa000005", 42, 0, "t5420_00000",
                 [{"progress": 1, "stage": "forest", "val_qwk": 0.25, "fused_qwk": 0.25}])
    return sweep_dir


def _check_report(out_dir, figures) -> str:
    assert [f.file for f in figures] == list(PLOTS)
    page = (out_dir / "index.html").read_text()
    for plot in PLOTS:
        path = out_dir / plot
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
        with Image.open(path) as image:
            image.verify()
            assert min(image.size) > 200, plot
        assert f'src="{plot}"' in page
    assert "None" not in page and "nan" not in page.lower().replace("nan-", "")
    assert not re.search(r"\d\.\d{6,}", page), re.search(r".{40}\d\.\d{6,}.{20}", page)
    assert not re.search(r"(src|href)=\"https?://", page)  # viewable offline
    return page


def test_a_sweep_with_one_config_on_one_fold_renders_every_plot(tmp_path):
    sweep_dir = tmp_path / "single"
    data = manifest("single", ["c0ffee0001"], folds=(0,), n_folds=N_FOLDS)
    data["configs"][0]["params"] = {"forest.max_depth": None}
    store.write_json_atomic(sweep_dir / store.MANIFEST, data)
    store.write_fold_result(sweep_dir, _record("c0ffee0001", 42, 0, skill=0.4,
                                               params={"forest.max_depth": None}))
    figures = write_report(sweep_dir, tmp_path / "report")
    page = _check_report(tmp_path / "report", figures)
    notes = {f.file: f.note for f in figures}
    assert "Not enough configs" in notes["param_importance.png"]
    assert "fANOVA" in page and "c0ffee0001" in page
    assert "one fold" in page  # a single fold has no spread, and says so


def test_a_sweep_with_nulls_stops_promotions_and_the_recipe_renders_every_plot(rich_sweep,
                                                                                tmp_path):
    figures = write_report(rich_sweep, tmp_path / "report")
    page = _check_report(tmp_path / "report", figures)
    # the header: the sweep file, cohort fingerprint and size, date, git revision
    for fact in ("c0ffee00c0ffee00", "2025-01-02T03:04:05+0000", "1a2b3c4", "mean_minus_std",
                 "samples of", "patients", "modalities metadata, thermal_map", "5eed5eed"):
        assert fact in page, fact
    assert "macro F1" in page and "weighted F1" in page
    # the ranking table: the configs by the rule, the recipe and the config stopped early
    table = page.split("<h2>Ranking</h2>", 1)[1].split("</table>", 1)[0]
    assert BASELINE in table and "study recipe" in table
    assert "aaaa000006" in table and "last value 0.050" in table
    assert "max_depth=null" in table and "lr=1.00e-3" in table
    assert "fold(s) stopped" in table  # aaaa000004: its fold 1 was stopped
    ranked = query(build_leaderboard(rich_sweep), rule="mean_minus_std", include_partial=True)
    expected = [c for c in ranked.loc[ranked["qwk_mean"].notna(), "config_id"]]
    assert re.findall(r"<tr><td>\d+</td><td><code>(\w+)</code>", table) == expected
    assert "sensitivity I " in page and "specificity I " in page  # the best config summary
    assert {f.file: f.note for f in figures}["param_importance.png"] == ""


def test_a_modality_ablation_gets_its_table_a_single_set_none(rich_sweep, tmp_path):
    from dfu_train.results.ablation import modality_board

    page = _check_report(tmp_path / "r", write_report(rich_sweep, tmp_path / "r"))
    table = page.split("<h2>Modality ablation</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([\w +]+)</td><td><code>(\w+)</code></td><td>(\d+)</td>", table)
    expected = modality_board(build_leaderboard(rich_sweep), store.read_manifest(rich_sweep),
                              rule="mean_minus_std")
    assert rows == [(" + ".join(r["modalities"]), r["config_id"], str(r["configs"]))
                    for _, r in expected.iterrows()]
    assert [m for m, _, _ in rows] == ["metadata + thermal_map", "metadata"]
    gain = expected.iloc[0]["gain_vs_metadata"]
    assert f"<td>{gain:+.3f} (p " in table and "corrected resampled t-test" in page
    single = tmp_path / "single"
    store.write_json_atomic(single / store.MANIFEST, manifest("single", ["c0ffee0001"]))
    store.write_fold_result(single, _record("c0ffee0001", 42, 0, skill=0.4, params={}))
    assert "Modality ablation" not in _check_report(
        tmp_path / "s", write_report(single, tmp_path / "s"))


def test_a_config_a_search_proposed_and_stopped_is_reported(tmp_path):
    """A proposing search plans no configs: a config stopped before any fold finished is
    known only from its prune mark, and still shows with its last value."""
    from dfu_train.config import TrialConfig

    sweep_dir = tmp_path / "proposed"
    base = TrialConfig().override({"cv.n_folds": N_FOLDS, "cv.seed": 42})
    data = manifest("proposed", [], folds=(0,), n_folds=N_FOLDS, base_config=base.to_dict())
    data["spec"]["search"] = {"algorithm": "optuna", "num_samples": 3}
    store.write_json_atomic(sweep_dir / store.MANIFEST, data)
    for depth in (3, None):
        params = {"forest.max_depth": depth}
        store.write_fold_result(sweep_dir, _record(base.override(params).config_id, 42, 0,
                                                   skill=0.4, params=params))
    stopped = base.override({"forest.max_depth": 5}).config_id
    store.write_pruned(sweep_dir, {
        "config_id": stopped, "fold_seed": 42, "fold": 0, "experiment": "tune",
        "progress": 1, "val_qwk": 0.2, "params": {"forest.max_depth": 5}})
    page = _check_report(tmp_path / "r", write_report(sweep_dir, tmp_path / "r"))
    assert stopped in page and "last value 0.200" in page


def test_the_importance_is_optunas_fanova_with_null_as_a_choice():
    import pandas as pd

    params = [{"depth": d, "lr": lr, "sampler": s} for d, lr, s in
              ((3, 1e-3, "none"), (None, 1e-3, "none"), (3, 1e-5, "smote"),
               (None, 1e-5, "smote"), (6, 1e-4, "none"), (None, 1e-4, "smote"))]
    target = [0.5 if p["depth"] is None else 0.2 for p in params]  # only depth matters
    importance = param_importance(pd.DataFrame({"params": params, "_target": target}),
                                  ["depth", "lr", "sampler"])
    assert set(importance) == {"depth", "lr", "sampler"}
    assert max(importance, key=importance.get) == "depth"
    assert sum(importance.values()) == pytest.approx(1.0)


def test_numeric_axes_carry_their_values_with_null_and_unused_in_slots_of_their_own():
    from dfu_train.results.report import UNUSED

    lr = _encode("stage1.lr", [1e-3, 1e-5, 1e-4, UNUSED])
    assert lr.log and {"1.00e-3", "1.00e-5", "unused"} <= {label for _, label in lr.ticks}
    assert lr.positions[3] < lr.positions[1] < lr.positions[2] < lr.positions[0]
    depth = _encode("forest.max_depth", [3, None, 12])
    assert not depth.log and [label for _, label in sorted(depth.ticks)] == ["null", "3", "12"]
    words = _encode("metadata.sampler", ["none", "smote", None])
    assert sorted(label for _, label in words.ticks) == ["none", "null", "smote"]


def test_values_print_short_and_qwk_axes_never_need_an_offset():
    assert [_value_text(v) for v in (None, True, 0.30000000000000004, 3.1622776601683794e-4,
                                     [64, 32], ["metadata", "thermal_map"])] == [
        "null", "true", "0.3", "3.16e-4", "[64, 32]", "[metadata, thermal_map]"]
    low, high = _qwk_limits([0.41661, 0.41662])
    assert high - low >= 0.1 and low < 0.41661 < high


def test_trial_curves_keep_the_fused_value_apart_from_the_branch_alone(rich_sweep):
    curves = {c["trial_id"]: c for c in trial_curves(rich_sweep)}
    fusion = curves["t1420_00000"]
    assert fusion["status"] == "finished" and fusion["recorded"] == 0.40
    assert [q for _, q, s in fusion["fused"] if s.startswith("pretrain")] == [0.30] * 3
    assert [q for _, q, s in fusion["points"] if s.startswith("pretrain")] == [0.05, 0.12, 0.20]
    assert curves["stop6_00000"]["status"] == "pruned"
