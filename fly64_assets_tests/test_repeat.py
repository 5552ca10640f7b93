"""A record is enough to repeat its partition: ``fly64 repeat reconstruction.json`` reconstructs it again through
Dagster, in the step's own process and on a dask worker, bit for bit as the original on the CPU; a record whose
input changed since is refused in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from dagster import instance_for_test

from fly64_assets import cli, launch
from fly64_assets.core.bookkeeping import RECONSTRUCTION_RECORD
from fly64_assets.core.design import Dataset
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.partition import RECONSTRUCTION_FILE
from fly64_assets.defs.compute import StudyCompute
from fly64_assets.defs.resources import StudyPaths
from fly64_assets_tests.support import copy_study

DATASET = Dataset(1000, "baseline", "test")
OPTIONS = ReconstructionOptions(epochs=5, regularization="auto", random_seed=7)
"""``auto``: the repeat makes the weight's choice again too (its held-out patterns follow the seed)."""


@pytest.fixture(scope="module")
def original(synthetic_study, tmp_path_factory):
    """One partition reconstructed through Dagster in the step's own process, once for the module: its record."""
    root = tmp_path_factory.mktemp("repeat")
    study_paths = StudyPaths(phase_c_root=str(copy_study(synthetic_study, root / "inputs") / "phase_c"),
                             phase_d_root=str(root / "inputs" / "phase_d"), artifact_root=str(root / "artifacts"))
    with instance_for_test() as instance:
        (outcome,) = launch.reconstruct(study_paths, [DATASET], OPTIONS, instance, compute=StudyCompute(workers=0))
    assert outcome.success, outcome.error
    return study_paths.artifact_dir(DATASET) / RECONSTRUCTION_RECORD


def _arrays(path):
    with np.load(path, allow_pickle=False) as saved:
        return {name: saved[name] for name in ("reconstructed_object", "reconstructed_probe", "loss_per_epoch")}


@pytest.mark.timeout(420)
@pytest.mark.parametrize("workers", [0, 1], ids=["in the step's process", "on a dask worker"])
def test_a_repeat_from_the_record_is_bitwise_the_original(original, tmp_path, capsys, workers):
    out = tmp_path / "repeat"
    assert cli.main(["repeat", str(original), "--artifact-root", str(out), "--workers", str(workers)]) == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert "identical to the original, bit for bit" in printed
    first = _arrays(original.parent / RECONSTRUCTION_FILE)
    repeated = out / "dose_1000" / "baseline" / "test"
    again = _arrays(repeated / RECONSTRUCTION_FILE)
    worker = json.loads((repeated / RECONSTRUCTION_RECORD).read_text())["worker"]
    assert (worker["pid"] == os.getpid()) == (workers == 0)  # where it says it ran: this process, or a dask worker
    for name, array in first.items():
        assert array.tobytes() == again[name].tobytes(), name
    assert (out / "dagster_home").is_dir()  # the repeat's own instance: the study's UI keeps the original


def test_a_record_whose_input_changed_is_refused_in_one_line(original, tmp_path, capsys):
    record = json.loads(original.read_text())
    input_path = tmp_path / "patched_test.npz"  # the record's input, changed since: a copy, so the others keep theirs
    input_path.write_bytes(Path(record["input_path"]).read_bytes() + b"\0")
    changed = tmp_path / RECONSTRUCTION_RECORD
    changed.write_text(json.dumps({**record, "input_path": str(input_path)}))
    assert cli.main(["repeat", str(changed)]) == cli.EXIT_USAGE
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(input_path) in error and "has changed since" in error and "nothing was run" in error
    assert not (original.parents[3] / "repeats").exists()  # nothing was run
