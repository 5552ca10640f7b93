"""Where the study reads and writes, as a Dagster resource configured from the environment."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from fly64_assets.core.artifacts import inside_root, unwritable_reason
from fly64_assets.core.design import Dataset
from fly64_assets.core.partition import StudyFolders

DATA_DIR_ENV = "FLY64_DATA_DIR"
DEFAULT_DATA_DIR = "fly64_data"
"""Relative to the working directory: the README's commands run from the project root."""


def default_data_dir() -> Path:
    """The folder the README's study command fills: the synthetic tree, artifacts and Dagster home."""
    return Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)).resolve()


def synthetic_root() -> Path:
    return default_data_dir() / "synthetic"


class StudyPaths(ConfigurableResource):
    """The input roots (written by other tools) and the artifact root (written by this study)."""

    phase_c_root: str = Field(description="Folder holding dose_<d>/patched_<split>.npz (Phase C, baseline view).")
    phase_d_root: str = Field(description="Folder holding dose_<d>/<view>/<view>_<split>.npz (Phase D, dense/sparse).")
    artifact_root: str = Field(description="Folder for reconstructions, logs, the manifest and the report.")

    @classmethod
    def from_env(cls) -> StudyPaths:
        """Roots from FLY64_PHASE_C_ROOT / FLY64_PHASE_D_ROOT / FLY64_ARTIFACT_ROOT, else the synthetic default."""
        return cls(
            phase_c_root=os.environ.get("FLY64_PHASE_C_ROOT", str(synthetic_root() / "phase_c")),
            phase_d_root=os.environ.get("FLY64_PHASE_D_ROOT", str(synthetic_root() / "phase_d")),
            artifact_root=os.environ.get("FLY64_ARTIFACT_ROOT", str(default_data_dir() / "artifacts")),
        )

    def folders(self) -> StudyFolders:
        """The roots as the science core takes them."""
        return StudyFolders(Path(self.phase_c_root), Path(self.phase_d_root), Path(self.artifact_root))

    def input_path(self, dataset: Dataset) -> Path:
        return self.folders().input_path(dataset)

    def artifact_dir(self, dataset: Dataset) -> Path:
        return self.folders().artifact_dir(dataset)

    def artifact_file(self, name: str) -> Path:
        return inside_root(Path(self.artifact_root), Path(self.artifact_root) / name)

    def configuration_errors(self) -> list[str]:
        """One clear message per problem with the roots (empty: usable)."""
        errors = []
        for label, root in (("Phase C root", self.phase_c_root), ("Phase D root", self.phase_d_root)):
            if not Path(root).is_dir():
                errors.append(f"{label} {root} does not exist or is not a folder")
        artifacts = Path(self.artifact_root).resolve()
        for label, root in (("Phase C root", self.phase_c_root), ("Phase D root", self.phase_d_root)):
            if artifacts.is_relative_to(Path(root).resolve()):
                errors.append(f"artifact root {artifacts} is inside the {label} {root}: outputs must not mix with inputs")
        unwritable = unwritable_reason(artifacts)
        return errors + ([unwritable] if unwritable else [])
