"""`dfu report` on a finished synthetic sweep: every plot is a real PNG and the HTML shows them."""

from __future__ import annotations

import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from dfu_train.cli import app
from dfu_train.sweep.launch import plan_sweep, run_sweep
from dfu_train.sweep.report import trial_curves, write_report
from dfu_train.sweep.space import parse_sweep

pytestmark = pytest.mark.ray
PLOTS = ("top_configs.png", "fusion_vs_metadata.png", "learning_curves.png",
         "parallel_coordinates.png", "param_importance.png", "best_confusion.png")


@pytest.fixture(scope="module")
def finished_sweep(local_ray, synthetic_root, tmp_path_factory):
    """Fusion and metadata-only configs on two folds, with ASHA stopping some of them."""
    spec = parse_sweep({
        "name": "reported", "cv": {"n_folds": 3, "run_folds": [0, 1]},
        "search": {"algorithm": "grid"},
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
        "resources": {"cpus_per_trial": 1, "use_train": False},
        "fixed": {"forest.n_estimators": 20, "forest.inner_folds": 3, "image.size": 16,
                  "thermal_map.pretrain_epochs": 3, "stage1.epochs": 3, "stage2.epochs": 0},
        "space": {"modalities": {"grid": [["metadata"], ["metadata", "thermal_map"]]},
                  "stage1.lr": {"grid": [1e-3, 1e-9]},
                  "forest.min_samples_leaf": {"grid": [1, 8]}},
    })
    storage = tmp_path_factory.mktemp("storage")
    return run_sweep(plan_sweep(spec, data_root=synthetic_root, storage=storage),
                     on_event=lambda line: None), storage


def test_report_writes_every_plot_as_a_png_that_the_html_shows(finished_sweep, tmp_path):
    sweep_dir, _ = finished_sweep
    figures = write_report(sweep_dir, tmp_path / "report")
    assert [f.file for f in figures] == list(PLOTS)
    page = (tmp_path / "report" / "index.html").read_text()
    for plot in PLOTS:
        path = tmp_path / "report" / plot
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
            assert min(image.size) > 200
        assert f'src="{plot}"' in page
    assert not re.search(r"(src|href)=\"https?://", page)  # viewable offline
    assert sweep_dir.name in page


def test_learning_curves_come_from_every_trial_and_mark_the_pruned(finished_sweep):
    sweep_dir, _ = finished_sweep
    curves = trial_curves(sweep_dir)
    assert len(curves) == 6 * 2  # metadata-only configs ignore stage1.lr: 6 distinct configs
    assert all(c["points"][0][0] == 1 for c in curves)  # the forest step comes first
    fusion = [c for c in curves if any(s == "stage1" for _, _, s in c["points"])]
    assert fusion and all([p for p, _, _ in c["points"]] == sorted(p for p, _, _ in c["points"])
                          for c in curves)


def test_dfu_report_command_and_its_refusals(finished_sweep, tmp_path):
    sweep_dir, storage = finished_sweep
    runner = CliRunner()
    done = runner.invoke(app, ["report", "reported", "--storage", str(storage),
                               "--out", str(tmp_path / "r")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "r" / "index.html").is_file()
    missing = runner.invoke(app, ["report", "nope", "--storage", str(storage),
                                  "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "no sweep 'nope'" in missing.stderr
