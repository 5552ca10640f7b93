"""The fly64 dose/overlap study design: doses, views, splits, seeds, partitions and the file layout.

Plain data, no Dagster: a notebook or the CLI can plan the study without importing the asset graph (the
Dagster partitions are built from these names in ``defs/*/partitions.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

VIEW_SPLITS: tuple[str, ...] = tuple(f"{view}_{split}" for view in VIEWS for split in SPLITS)
"""The second key of a study partition, e.g. ``dense_train``."""
PHASE_D_VIEW_SPLITS: tuple[str, ...] = tuple(f"{view}_{split}" for view in PHASE_D_VIEWS for split in SPLITS)


def spacing_threshold(view: str) -> float:
    """Minimum distance (object pixels) between positions kept in a Phase D view."""
    return (1.0 - OVERLAP_FRACTION[view]) * SPACING_REFERENCE_PX


@dataclass(frozen=True, order=True)
class Dataset:
    """One (dose, view, split) dataset of the study: one partition, one reconstruction.

    (Called a dataset, not a job: in Dagster a job is something else.)"""

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
    def from_partition_key(cls, key: str) -> Dataset:
        """Parse ``"1000|dense_train"`` (a Dagster multi-partition key is such a string), rejecting malformed keys."""
        dose_text, sep, view_split = str(key).partition("|")
        view, sep2, split = view_split.partition("_")
        if not (sep and sep2 and dose_text.isdigit()):
            raise ValueError(
                f"partition key {str(key)!r} is not of the form '<dose>|<view>_<split>', e.g. '1000|dense_train'"
            )
        return cls(int(dose_text), view, split)


ALL_DATASETS: tuple[Dataset, ...] = tuple(Dataset(d, v, s) for d in DOSES for v in VIEWS for s in SPLITS)


def select_datasets(
    doses: list[int] | None = None, views: list[str] | None = None, splits: list[str] | None = None
) -> list[Dataset]:
    """The datasets matching every given filter (None or empty: no filter); unknown values raise ValueError."""
    for values, allowed, name in ((doses, DOSES, "dose"), (views, VIEWS, "view"), (splits, SPLITS, "split")):
        unknown = sorted(set(values or ()) - set(allowed), key=str)
        if unknown:
            raise ValueError(f"unknown {name} {unknown}: expected values from {list(allowed)}")
    return [
        dataset
        for dataset in ALL_DATASETS
        if (not doses or dataset.dose in doses)
        and (not views or dataset.view in views)
        and (not splits or dataset.split in splits)
    ]


def dataset_for_source_key(key: str) -> Dataset:
    """The dataset that reads the file of a Phase C (``"1000|train"``) or Phase D (``"1000|dense_train"``) partition."""
    dose_text, _, rest = str(key).partition("|")
    if rest in SPLITS:
        return Dataset(int(dose_text), "baseline", rest)
    return Dataset.from_partition_key(key)
