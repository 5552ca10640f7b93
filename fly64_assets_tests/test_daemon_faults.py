"""Faults in the daemon path, with real parts: `dagster dev` (webserver, daemon, code server), runs launched and
terminated through the GraphQL requests the UI's buttons send, real processes killed.

A server of the module's own (one test kills it whole and starts it again), the shipped dagster.yaml with run
monitoring's max_runtime_seconds shortened to 45 s so that that test can show it working. Its inputs are a copy
of the session's demo tree with two broken files planted from the start (for the bad-input test; the other tests
use other partitions), so the tests hold in any order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from dagster import DagsterInstance

from fly64_assets.core.artifacts import PARTIAL_SUFFIX
from fly64_assets.core.design import Dataset
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets_tests.dagster_dev import (
    CHECK_EXECUTIONS,
    REEXECUTE_FROM_FAILURE,
    TERMINATE_RUN,
    DagsterDev,
    launch_run,
    launch_ui_backfill,
    run_status,
    study_environment,
    wait_for_backfill,
    wait_for_run,
)
from fly64_assets_tests.support import REPO_ROOT, copy_study

pytestmark = pytest.mark.timeout(600)
TEST_MAX_RUNTIME_S = 45
SERVER_EPOCHS = 5
"""``FLY64_EPOCHS`` of the module's server: what a backfill (which takes no run config) reconstructs with."""
LONG = {"ops": {"ptychi_reconstruction": {"config": {"epochs": 3000, "regularization": "off"}}}}
"""A reconstruction that would run for minutes: every test here interrupts it. Regularization off: with auto the
final reconstruction's epochs (which the tests wait for in the log) would start only after the choice's 2400."""


@dataclass
class Study:
    root: Path
    env: dict[str, str]
    server: DagsterDev

    def artifact_dir(self, key: str) -> Path:
        return Dataset.from_partition_key(key).artifact_dir(self.root / "artifacts")

    def restart(self) -> None:
        self.server = DagsterDev(REPO_ROOT, self.env, log_path=self.root / f"dagster_dev_{time.monotonic_ns()}.log")
        self.server.start()


BAD_INPUTS = {
    "10000|dense_train": ("phase_d/dose_10000/dense/dense_train.npz", "diffraction", "float32"),
    "100000|baseline_test": ("phase_c/dose_100000/patched_test.npz", "<file>", "truncated"),
}
"""Partition -> (its input file, relative to the inputs, the key and the rule word its error names)."""


def _plant_bad_inputs(inputs: Path) -> None:
    """float64 diffraction in one Phase D file, a truncated Phase C file: the faults users meet."""
    float64_file = inputs / BAD_INPUTS["10000|dense_train"][0]
    arrays = dict(np.load(float64_file, allow_pickle=False))
    np.savez(float64_file, **{**arrays, "diffraction": arrays["diffraction"].astype(np.float64)})
    truncated = inputs / BAD_INPUTS["100000|baseline_test"][0]
    truncated.write_bytes(truncated.read_bytes()[:2000])


@pytest.fixture(scope="module")
def study(synthetic_study, tmp_path_factory) -> Study:
    root = tmp_path_factory.mktemp("daemon_faults")
    _plant_bad_inputs(copy_study(synthetic_study, root / "inputs"))
    home = root / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config["run_monitoring"].update(max_runtime_seconds=TEST_MAX_RUNTIME_S, poll_interval_seconds=5,
                                    free_slots_after_run_end_seconds=5)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    # Regularization off: faults, not the choice, are under test, and every run stays well under the max runtime.
    env = {**study_environment(root, str(SERVER_EPOCHS)), "FLY64_REGULARIZATION": "off"}
    current = Study(root, env, DagsterDev(REPO_ROOT, env, log_path=root / "dagster_dev.log"))
    try:
        current.server.start()
        yield current
    finally:
        current.server.stop()


def _tags(key: str) -> dict[str, str]:
    return dict(STUDY_PARTITIONS.get_tags_for_partition_key(key))


def _wait_for_epoch(folder: Path, epoch: int, timeout_s: float = 180) -> Path:
    """The reconstruction's log while it is being written (a .partial file), once it reached ``epoch``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for partial in folder.glob(f".ptychi.log*{PARTIAL_SUFFIX}"):
            if f"epoch {epoch}/" in partial.read_text():
                return partial
        time.sleep(0.3)
    raise TimeoutError(f"no reconstruction reached epoch {epoch} in {folder}")


def _fresh_artifact_dir(study: Study, key: str) -> Path:
    """The partition's artifact folder, emptied of whatever an earlier test's run left there (tests run in any
    order, and the backfill tests reconstruct these partitions too)."""
    folder = study.artifact_dir(key)
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _gpu_slots_of(study: Study, run_id: str) -> list:
    """The ``gpu`` pool slots the run holds."""
    with DagsterInstance.from_config(study.env["DAGSTER_HOME"]) as instance:
        return [slot for slot in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots if slot.run_id == run_id]


def _outputs(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_terminate_from_the_ui_cancels_promptly_leaves_no_partial_output_and_frees_the_pool(study):
    key = "1000|baseline_test"
    folder = _fresh_artifact_dir(study, key)
    run_id = launch_run(study.server, "reconstruct_study", _tags(key), LONG)
    _wait_for_epoch(folder, 3)
    terminated = study.server.graphql(TERMINATE_RUN, {"runId": run_id})["terminateRun"]
    assert terminated["__typename"] == "TerminateRunSuccess", terminated
    status, seconds = wait_for_run(study.server, run_id, timeout_s=60)
    print(f"terminated run {run_id}: {status} {seconds:.1f} s after the request")
    assert status == "CANCELED" and seconds < 30
    # The log of what happened stays (whole); no reconstruction output, record or temporary file does.
    assert _outputs(folder) == ["ptychi.log"], _outputs(folder)
    assert _gpu_slots_of(study, run_id) == []

    again = launch_run(study.server, "reconstruct_study", _tags(key), {"ops": {"ptychi_reconstruction": {"config": {"epochs": 5}}}})
    assert wait_for_run(study.server, again, timeout_s=180)[0] == "SUCCESS"
    saved = np.load(folder / "ptychi_reconstruction.npz", allow_pickle=False)
    assert saved["loss_per_epoch"].shape == (5,)


def test_a_killed_run_process_is_marked_failed_by_dagster_and_reexecution_from_failure_completes(study):
    key = "1000|baseline_train"
    folder = _fresh_artifact_dir(study, key)
    epochs = 60  # long enough to be killed at epoch 3, short to re-execute
    run_id = launch_run(study.server, "reconstruct_study", _tags(key), {"ops": {"ptychi_reconstruction": {"config": {"epochs": epochs, "regularization": "off"}}}})
    partial = _wait_for_epoch(folder, 3)
    run_process = int(partial.name.split("~")[2])  # the writer's pid is in the name: the run's own process
    os.kill(run_process, signal.SIGKILL)
    status, seconds = wait_for_run(study.server, run_id, timeout_s=60)
    print(f"killed run process {run_process}: the run is {status} {seconds:.1f} s later")
    assert status == "FAILURE"  # recorded by the code server that launched the process, not by code of ours
    assert "ptychi_reconstruction.npz" not in _outputs(folder)

    relaunched = study.server.graphql(REEXECUTE_FROM_FAILURE, {"parentRunId": run_id})["launchRunReexecution"]
    assert relaunched["__typename"] == "LaunchRunSuccess", relaunched
    assert wait_for_run(study.server, relaunched["run"]["runId"], timeout_s=300)[0] == "SUCCESS"
    saved = np.load(folder / "ptychi_reconstruction.npz", allow_pickle=False)
    assert saved["loss_per_epoch"].shape == (epochs,)
    assert not list(folder.glob(f".*{PARTIAL_SUFFIX}"))  # the killed writer's leftover was removed


RECONSTRUCTION_ASSETS = ["ptychi_reconstruction", "reconstruction_quality"]


def test_two_backfills_of_the_same_partitions_at_once_both_finish_and_every_file_is_whole(study):
    keys = [f"1000|{view}_{split}" for view in ("baseline", "dense") for split in ("train", "test")]
    first = launch_ui_backfill(study.server, keys, RECONSTRUCTION_ASSETS)
    second = launch_ui_backfill(study.server, keys, RECONSTRUCTION_ASSETS)
    for backfill_id in (first, second):
        backfill = wait_for_backfill(study.server, backfill_id, timeout_s=300)
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    for key in keys:
        folder = study.artifact_dir(key)
        with np.load(folder / "ptychi_reconstruction.npz", allow_pickle=False) as saved:
            assert saved["loss_per_epoch"].shape == (SERVER_EPOCHS,) and np.isfinite(saved["reconstructed_object"]).all()
        assert json.loads((folder / "quality.json").read_text())["status"] == "succeeded"
        assert not list(folder.glob(f".*{PARTIAL_SUFFIX}"))


def test_bad_inputs_through_the_ui_backfill_fail_only_their_partitions_with_file_key_and_rule(study):
    bad = {key: (str(study.root / "inputs" / path), array_key, rule) for key, (path, array_key, rule) in BAD_INPUTS.items()}

    backfill = wait_for_backfill(
        study.server, launch_ui_backfill(study.server, STUDY_PARTITIONS.get_partition_keys(), RECONSTRUCTION_ASSETS), 600
    )
    assert backfill["status"] == "COMPLETED_FAILED", backfill
    counts = {s["assetKey"]["path"][0]: s for s in backfill["assetBackfillData"]["assetBackfillStatuses"]}
    for name in RECONSTRUCTION_ASSETS:
        assert (counts[name]["numPartitionsMaterialized"], counts[name]["numPartitionsFailed"]) == (16, 2), counts[name]

    executions = study.server.graphql(CHECK_EXECUTIONS, {"key": {"path": ["ptychi_reconstruction"]}, "check": "input_data001"})
    backfill_runs = {run["runId"] for run in backfill["runs"]}
    latest = {}
    for execution in sorted(executions["assetCheckExecutions"], key=lambda e: e["timestamp"]):
        if execution["runId"] in backfill_runs:
            latest[execution["partition"]] = execution["evaluation"]
    assert len(latest) == 18
    errors = {key: evaluation for key, evaluation in latest.items() if evaluation["severity"] == "ERROR" and not evaluation["success"]}
    assert sorted(errors) == sorted(bad)
    for key, (path, array_key, rule_word) in bad.items():
        description = errors[key]["description"]
        assert path in description and array_key in description and rule_word in description, description


def test_runs_in_flight_when_the_whole_server_dies_do_not_stay_started(study):
    key = "10000|baseline_train"
    run_id = launch_run(study.server, "reconstruct_study", _tags(key), LONG)
    _wait_for_epoch(study.artifact_dir(key), 3)
    study.server.kill()
    shutil.copyfile(study.server.log_path, study.root / "killed_server.log")
    study.restart()
    assert run_status(study.server, run_id) == "STARTED"  # nobody was left to record its end
    status, seconds = wait_for_run(study.server, run_id, timeout_s=TEST_MAX_RUNTIME_S + 90)
    print(f"after the restart the run became {status} within {seconds:.1f} s (max_runtime_seconds {TEST_MAX_RUNTIME_S})")
    assert status in ("FAILURE", "CANCELED")  # run monitoring's max runtime ended it
    deadline = time.monotonic() + 60
    while _gpu_slots_of(study, run_id):  # and its gpu pool slot, which no process was left to free, comes back
        assert time.monotonic() < deadline, "the dead run's gpu pool slot was never freed"
        time.sleep(2)
