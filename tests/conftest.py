"""Shared fixtures: small synthetic cohorts written once per session in the real layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dfu_train.data import schema
from dfu_train.data.cohort import load_cohort
from dfu_train.data.synthetic import SynthSpec, write_synthetic_cohort


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A 60-patient cohort with all four image folders."""
    return write_synthetic_cohort(tmp_path_factory.mktemp("cohort"), SynthSpec(patients=60, seed=1))


@pytest.fixture(scope="session")
def cohort(synthetic_root):
    return load_cohort(synthetic_root)


@pytest.fixture(scope="session")
def tables_only_root(synthetic_root, tmp_path_factory) -> Path:
    """A hand-made style data root: the metadata CSV and both bbox CSVs, no image folders."""
    root = tmp_path_factory.mktemp("tables-only")
    for name in (schema.METADATA_CSV, schema.BBOX_DEPTH_CSV, schema.BBOX_THERMAL_CSV):
        shutil.copy(synthetic_root / name, root / name)
    return root


@pytest.fixture
def editable_root(synthetic_root, tmp_path) -> Path:
    """A private copy of the tables (images linked) that a test may break."""
    root = tmp_path / "cohort"
    root.mkdir()
    for name in (schema.METADATA_CSV, schema.BBOX_DEPTH_CSV, schema.BBOX_THERMAL_CSV):
        shutil.copy(synthetic_root / name, root / name)
    for folder, _ in schema.IMAGE_FOLDERS.values():
        (root / folder).symlink_to(synthetic_root / folder)
    return root


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray for one test module, shut down afterwards (never `ray stop`)."""
    import ray

    from dfu_train.sweep.local_ray import start_local_ray

    start_local_ray(3, log_to_driver=False)
    yield ray
    ray.shutdown()
