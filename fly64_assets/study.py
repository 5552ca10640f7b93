"""The fly64 dose/overlap study design: doses, views, splits, seeds, partitions and the file layout.

Everything here is plain data except ``STUDY_PARTITIONS`` (the one Dagster object), so a notebook or
the CLI can plan the study without importing the asset graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dagster import MultiPartitionKey, MultiPartitionsDefinition, StaticPartitionsDefinition

DOSES: tuple[int, ...] = (1000, 10000, 100000)
"""Photons per diffraction pattern."""

VIEWS: tuple[str, ...] = ("baseline", "dense", "sparse")
SPLITS: tuple[str, ...] = ("train", "test")
PHASE_D_VIEWS: tuple[str, ...] = ("dense", "sparse")

OVERLAP_FRACTION: dict[str, float] = {"dense": 0.7, "sparse": 0.2}
SPACING_REFERENCE_PX = 128.0
"""A view keeps positions at least ``(1 - overlap) * SPACING_REFERENCE_PX`` apart."""

MIN_ACCEPTANCE = 0.10
"""Phase D writes no file for a view that keeps fewer than this fraction of the positions."""

SIMULATION_SEED = 42
GROUPING_SEED = 123
SUBSAMPLING_SEED = 456

PATTERN_SIZE = 64
"""Diffraction patterns (and the probe) are PATTERN_SIZE x PATTERN_SIZE pixels."""

DOSE_DIMENSION = "dose"
VIEW_SPLIT_DIMENSION = "view_split"


def spacing_threshold(view: str) -> float:
    """Minimum distance (object pixels) between positions kept in a Phase D view."""
    return (1.0 - OVERLAP_FRACTION[view]) * SPACING_REFERENCE_PX


@dataclass(frozen=True, order=True)
class Job:
    """One (dose, view, split) dataset of the study: one partition, one reconstruction."""

    dose: int
    view: str
    split: str

    def __post_init__(self) -> None:
        if self.dose not in DOSES:
            raise ValueError(f"unknown dose {self.dose!r}: expected one of {list(DOSES)}")
        if self.view not in VIEWS:
            raise ValueError(f"unknown view {self.view!r}: expected one of {list(VIEWS)}")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}: expected one of {list(SPLITS)}")

    @property
    def view_split(self) -> str:
        return f"{self.view}_{self.split}"

    @property
    def partition_key(self) -> str:
        """The study partition key, e.g. ``"1000|dense_train"``."""
        return f"{self.dose}|{self.view_split}"

    @property
    def is_phase_d(self) -> bool:
        return self.view in PHASE_D_VIEWS

    def input_path(self, phase_c_root: Path, phase_d_root: Path) -> Path:
        """Where the other tools write this job's NPZ (the spec's layout)."""
        if self.is_phase_d:
            return Path(phase_d_root) / f"dose_{self.dose}" / self.view / f"{self.view}_{self.split}.npz"
        return Path(phase_c_root) / f"dose_{self.dose}" / f"patched_{self.split}.npz"

    def artifact_dir(self, artifact_root: Path) -> Path:
        """This job's output folder: ``<artifact_root>/dose_{d}/{view}/{split}``."""
        return Path(artifact_root) / f"dose_{self.dose}" / self.view / self.split

    def as_record(self) -> dict:
        """The ``{dose, view, split}`` triple of the old reports (dose as an int)."""
        return {"dose": self.dose, "view": self.view, "split": self.split}

    @classmethod
    def from_partition_key(cls, key: str | MultiPartitionKey) -> Job:
        """Parse ``"1000|dense_train"`` (or a ``MultiPartitionKey``), rejecting malformed keys clearly."""
        if isinstance(key, MultiPartitionKey):
            dims = key.keys_by_dimension
            dose_text, view_split = dims[DOSE_DIMENSION], dims[VIEW_SPLIT_DIMENSION]
        else:
            dose_text, sep, view_split = str(key).partition("|")
            if not sep:
                raise ValueError(
                    f"partition key {key!r} is not of the form '<dose>|<view>_<split>', e.g. '1000|dense_train'"
                )
        view, sep, split = view_split.partition("_")
        if not sep or not dose_text.isdigit():
            raise ValueError(
                f"partition key {str(key)!r} is not of the form '<dose>|<view>_<split>', e.g. '1000|dense_train'"
            )
        return cls(int(dose_text), view, split)


ALL_JOBS: tuple[Job, ...] = tuple(Job(d, v, s) for d in DOSES for v in VIEWS for s in SPLITS)


def select_jobs(
    doses: list[int] | None = None, views: list[str] | None = None, splits: list[str] | None = None
) -> list[Job]:
    """The jobs matching every given filter (None or empty: no filter); unknown values raise ValueError."""
    for values, allowed, name in ((doses, DOSES, "dose"), (views, VIEWS, "view"), (splits, SPLITS, "split")):
        unknown = sorted(set(values or ()) - set(allowed), key=str)
        if unknown:
            raise ValueError(f"unknown {name} {unknown}: expected values from {list(allowed)}")
    return [
        job
        for job in ALL_JOBS
        if (not doses or job.dose in doses) and (not views or job.view in views) and (not splits or job.split in splits)
    ]


STUDY_PARTITIONS = MultiPartitionsDefinition(
    {
        DOSE_DIMENSION: StaticPartitionsDefinition([str(d) for d in DOSES]),
        VIEW_SPLIT_DIMENSION: StaticPartitionsDefinition([f"{v}_{s}" for v in VIEWS for s in SPLITS]),
    }
)
"""The 18 study partitions, keys like ``"1000|dense_train"`` (dimensions order alphabetically)."""

SPLIT_DIMENSION = "split"

PHASE_C_PARTITIONS = MultiPartitionsDefinition(
    {
        DOSE_DIMENSION: StaticPartitionsDefinition([str(d) for d in DOSES]),
        SPLIT_DIMENSION: StaticPartitionsDefinition(list(SPLITS)),
    }
)
"""Phase C files: one per dose and split (the baseline view), keys like ``"1000|train"``."""

PHASE_D_PARTITIONS = MultiPartitionsDefinition(
    {
        DOSE_DIMENSION: StaticPartitionsDefinition([str(d) for d in DOSES]),
        VIEW_SPLIT_DIMENSION: StaticPartitionsDefinition([f"{v}_{s}" for v in PHASE_D_VIEWS for s in SPLITS]),
    }
)
"""Phase D files: one per dose and thinned view and split, keys like ``"1000|dense_train"``."""


def job_for_source_partition(key: str | MultiPartitionKey) -> Job:
    """The study job that reads the file of a Phase C (``"1000|train"``) or Phase D partition."""
    dose_text, _, rest = str(key).partition("|")
    if rest in SPLITS:
        return Job(int(dose_text), "baseline", rest)
    return Job.from_partition_key(key)
