"""Shared fixtures: a real synthetic study on disk, study roots in temporary folders, a test instance."""

import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test

from fly64_assets.defs.resources import StudyPaths
from fly64_assets.core.synthetic import simulate_study

FAST_EPOCHS = 30
"""Enough LSQML epochs for the demo scale to converge well past the initial guess, on a 2-core CPU."""


@pytest.fixture(scope="session")
def synthetic_study(tmp_path_factory) -> Path:
    """The default (demo) synthetic tree, simulated once per session; tests copy it before changing it."""
    root = tmp_path_factory.mktemp("synthetic")
    simulate_study(root, scale="demo")
    return root


@pytest.fixture
def study_tree(synthetic_study, tmp_path) -> Path:
    """A private copy of the synthetic tree that a test may break."""
    root = tmp_path / "inputs"
    shutil.copytree(synthetic_study, root)
    return root


@pytest.fixture
def study_paths(study_tree, tmp_path) -> StudyPaths:
    return StudyPaths(
        phase_c_root=str(study_tree / "phase_c"),
        phase_d_root=str(study_tree / "phase_d"),
        artifact_root=str(tmp_path / "artifacts"),
    )


@pytest.fixture
def instance() -> DagsterInstance:
    with instance_for_test() as test_instance:
        yield test_instance
