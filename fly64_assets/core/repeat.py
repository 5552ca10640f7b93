"""Repeating a reconstruction from its record: what to run (the same input, options, seed and CPU threads), whether
the input is still the one the record read, and how the repeat compares with the original. No Dagster here: the
``fly64 repeat`` command runs the partition through Dagster (``launch.repeat``).

On the CPU a repeat is bitwise identical: pty-chi's LSQML is deterministic for a given seed and thread count, and
the record keeps both. On a GPU the same sums are added by parallel atomic operations in an order that changes
from run to run, so a repeat differs in the last bits: ``GPU_TOLERANCE`` bounds that (relative to the largest
value of each array), unmeasured on a GPU by this project so far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fly64_assets.core.artifacts import file_sha256
from fly64_assets.core.design import Dataset
from fly64_assets.core.options import ReconstructionOptions

COMPARED_ARRAYS = ("reconstructed_object", "reconstructed_probe", "loss_per_epoch")
GPU_TOLERANCE = 1e-4
"""The largest difference a GPU repeat may show, relative to the largest magnitude of each array."""


class RecordRefused(ValueError):
    """The record cannot be repeated (its one-line reason names the file and what is wrong)."""


@dataclass(frozen=True)
class RepeatPlan:
    """What repeating one record runs: the dataset from the same input roots with the same options."""

    record_path: Path
    dataset: Dataset
    phase_c_root: Path
    phase_d_root: Path
    options: ReconstructionOptions
    cpu_threads: int | None
    device: str
    original: Path
    """The original reconstruction (NPZ) that the repeat is compared with."""

    def default_artifact_root(self, stamp: str) -> Path:
        """Beside the original, in its artifact root: ``repeats/<dose>_<view>_<split>-<stamp>``."""
        original_root = self.original.parents[3]  # <root>/dose_<d>/<view>/<split>/ptychi_reconstruction.npz
        return original_root / "repeats" / f"{self.dataset.dose}_{self.dataset.view}_{self.dataset.split}-{stamp}"


def _read(record_path: Path) -> dict:
    try:
        record = json.loads(Path(record_path).read_text())
    except (OSError, ValueError) as error:
        raise RecordRefused(f"{record_path}: cannot read it as a JSON record: {error}") from error
    missing = [key for key in ("dose", "view", "split", "input_path", "input_sha256", "requested_options", "roots",
                               "reconstruction_path") if key not in record] if isinstance(record, dict) else ["all"]
    if missing:
        raise RecordRefused(f"{record_path}: not a reconstruction record that can be repeated (it lacks {', '.join(missing)}; "
                            "records written before fly64_assets recorded its roots and requested options cannot be)")
    return record


def plan_repeat(record_path: Path) -> RepeatPlan:
    """The repeat of ``record_path`` (a ``reconstruction.json``); ``RecordRefused`` when its input is gone or has
    changed since (SHA-256), or the file is no such record."""
    record = _read(record_path)
    input_path = Path(record["input_path"])
    if not input_path.is_file():
        raise RecordRefused(f"{record_path}: its input {input_path} no longer exists: nothing was run")
    now = file_sha256(input_path)
    if now != record["input_sha256"]:
        raise RecordRefused(f"{record_path}: its input {input_path} has changed since (SHA-256 {record['input_sha256'][:12]}… "
                            f"then, {now[:12]}… now): nothing was run")
    return RepeatPlan(
        record_path=Path(record_path),
        dataset=Dataset(int(record["dose"]), record["view"], record["split"]),
        phase_c_root=Path(record["roots"]["phase_c"]),
        phase_d_root=Path(record["roots"]["phase_d"]),
        options=ReconstructionOptions(**record["requested_options"]),
        cpu_threads=record.get("cpu_threads"),
        device=record.get("device", "cpu"),
        original=Path(record["reconstruction_path"]),
    )


@dataclass(frozen=True)
class Comparison:
    """The repeat against the original, array by array: the largest absolute difference (0.0: bitwise equal)."""

    differences: dict[str, float]
    bitwise: bool
    tolerance: float
    """0 on the CPU (bitwise), ``GPU_TOLERANCE`` on a GPU (relative)."""
    within: bool

    def summary(self) -> str:
        if self.bitwise:
            return f"identical to the original, bit for bit ({', '.join(self.differences)})"
        listed = ", ".join(f"{name} {difference:.3g}" for name, difference in self.differences.items())
        verdict = "within" if self.within else "beyond"
        return f"differs from the original ({verdict} the tolerance {self.tolerance:g}, relative): largest differences {listed}"


def compare(original: Path, repeated: Path, device: str) -> Comparison:
    """Compare two reconstruction NPZ files' arrays (``COMPARED_ARRAYS``); the tolerance follows the ``device``."""
    differences, relative = {}, {}
    with np.load(original, allow_pickle=False) as first, np.load(repeated, allow_pickle=False) as second:
        for name in COMPARED_ARRAYS:
            a, b = first[name], second[name]
            if a.shape != b.shape:
                differences[name], relative[name] = float("inf"), float("inf")
                continue
            differences[name] = float(np.max(np.abs(a - b))) if a.size else 0.0
            relative[name] = differences[name] / max(float(np.max(np.abs(a))) if a.size else 0.0, np.finfo(float).tiny)
    bitwise = all(difference == 0.0 for difference in differences.values())
    tolerance = GPU_TOLERANCE if device.startswith("cuda") else 0.0
    return Comparison(differences, bitwise, tolerance, bitwise or all(value <= tolerance for value in relative.values()))
