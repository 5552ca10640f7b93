"""Faults and hostile input: killed runs, concurrent runs, GPU faults, bad files, bad configuration."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dagster import (
    AssetKey,
    AssetPartitionStatus,
    DagsterInstance,
    DagsterRunStatus,
    ReexecutionOptions,
    execute_job,
    reconstructable,
)

from fly64_assets import launch
from fly64_assets.core import lsqml
from fly64_assets.core.artifacts import PARTIAL_SUFFIX, inside_root
from fly64_assets.core.bookkeeping import QUALITY_RECORD, plan_study, read_record
from fly64_assets.core.design import Dataset, select_datasets
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.synthetic import simulate_split
from fly64_assets.definitions import build_definitions
from fly64_assets.defs.jobs import RECONSTRUCT_JOB
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets.defs.resources import StudyPaths
from fly64_assets_tests.support import FAST_EPOCHS


def reconstruct_study_job():
    """The study's reconstruction job for the roots in the environment (reconstructable across processes)."""
    return build_definitions(StudyPaths.from_env()).resolve_job_def(RECONSTRUCT_JOB)


RUNNER = """
import sys
from dagster import DagsterInstance, execute_job, reconstructable
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets_tests.test_reliability import reconstruct_study_job
key, epochs = sys.argv[1], int(sys.argv[2])
with DagsterInstance.get() as instance:
    result = execute_job(
        reconstructable(reconstruct_study_job), instance,
        run_config={"ops": {"ptychi_reconstruction": {"config": {"epochs": epochs, "regularization": "off"}}}},
        tags=STUDY_PARTITIONS.get_tags_for_partition_key(key),
    )
sys.exit(0 if result.success else 1)
"""


@pytest.fixture
def study_env(study_paths, tmp_path, monkeypatch):
    """Roots and a persistent Dagster instance in the environment, shared with child processes."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        "FLY64_PHASE_C_ROOT": study_paths.phase_c_root,
        "FLY64_PHASE_D_ROOT": study_paths.phase_d_root,
        "FLY64_ARTIFACT_ROOT": study_paths.artifact_root,
        "DAGSTER_HOME": str(home),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Create the instance's storage now: runners started together on a fresh home would race to create the same
    # SQLite tables (seen once in CI as "table ... already exists").
    DagsterInstance.get().dispose()
    return {**os.environ, **env}


def _start_runner(env, key, epochs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER, key, str(epochs)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _visible_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(PARTIAL_SUFFIX)]


def test_a_killed_run_leaves_no_torn_file_and_reexecution_from_failure_completes(study_paths, study_env):
    job_dir = study_paths.artifact_dir(Dataset(1000, "baseline", "train"))
    runner = _start_runner(study_env, "1000|baseline_train", 200)

    def mid_reconstruction():
        partial_logs = list(job_dir.glob(f".ptychi.log*{PARTIAL_SUFFIX}"))
        return partial_logs and "epoch 3/200" in partial_logs[0].read_text()

    _wait_for(mid_reconstruction, 120, "the reconstruction to reach epoch 3")
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait(timeout=30)

    assert not [p for p in _visible_files(Path(study_paths.artifact_root)) if "dose_1000" in str(p)]
    with DagsterInstance.get() as instance:
        (killed,) = instance.get_runs()
        assert killed.status == DagsterRunStatus.STARTED  # nobody was left to record the end
        instance.report_run_failed(killed)  # what Dagster's run monitoring does for a dead run worker
        result = execute_job(
            reconstructable(reconstruct_study_job), instance,
            reexecution_options=ReexecutionOptions.from_failure(killed.run_id, instance),
            run_config={"ops": {"ptychi_reconstruction": {"config": {"epochs": FAST_EPOCHS}}}},
            tags=STUDY_PARTITIONS.get_tags_for_partition_key("1000|baseline_train"),
        )
        assert result.success
    saved = np.load(job_dir / "ptychi_reconstruction.npz", allow_pickle=False)
    assert saved["loss_per_epoch"].shape == (FAST_EPOCHS,)
    assert not list(job_dir.glob(f"*{PARTIAL_SUFFIX}"))  # the killed writer's leftover was cleaned up


def test_two_runs_of_the_same_partition_at_once_never_tear_a_file(study_paths, study_env):
    runners = [_start_runner(study_env, "1000|dense_train", 60) for _ in range(2)]
    outcomes = [runner.wait(timeout=300) for runner in runners]
    assert outcomes == [0, 0], [runner.stderr.read()[-2000:] for runner in runners]
    job_dir = study_paths.artifact_dir(Dataset(1000, "dense", "train"))
    saved = np.load(job_dir / "ptychi_reconstruction.npz", allow_pickle=False)
    assert saved["loss_per_epoch"].shape == (60,)
    assert (job_dir / "ptychi.log").read_text().rstrip().splitlines()[-1].split(": ", 1)[1].startswith("done in")
    assert not list(job_dir.glob(f"*{PARTIAL_SUFFIX}"))


class _Payload:
    """Pickled into a `_metadata` member: unpickling it would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bad_inputs_fail_their_own_partition_with_a_clear_error(study_paths, instance, tmp_path):
    directory = study_paths.input_path(Dataset(1000, "baseline", "train"))
    directory.unlink()
    directory.mkdir()
    study_paths.input_path(Dataset(1000, "baseline", "test")).write_bytes(b"")
    marker = tmp_path / "payload_ran"
    hostile = study_paths.input_path(Dataset(10000, "dense", "train"))
    arrays = dict(np.load(hostile, allow_pickle=False))
    np.savez(hostile, **{**arrays, "_metadata": np.array(_Payload(marker), dtype=object)})
    not_json = study_paths.input_path(Dataset(10000, "dense", "test"))
    np.savez(not_json, **{**dict(np.load(not_json, allow_pickle=False)), "_metadata": np.array("{not json")})

    datasets = [Dataset(1000, "baseline", "train"), Dataset(1000, "baseline", "test"), Dataset(10000, "dense", "train"),
                Dataset(10000, "dense", "test"), Dataset(100000, "dense", "train")]
    plan = plan_study(datasets, study_paths.input_path)
    manifest = launch.run_study(study_paths, plan, ReconstructionOptions(epochs=FAST_EPOCHS), instance)["reconstruction_manifest"]

    assert not marker.exists()
    statuses = {Dataset(r["dose"], r["view"], r["split"]): r["status"] for r in manifest["execution_results"]}
    assert [statuses[dataset] for dataset in datasets] == ["failed"] * 4 + ["succeeded"]
    messages = {}  # a range run's failure lists each failed partition as "<key>: <message>"
    for run in instance.get_runs():
        if run.job_name == RECONSTRUCT_JOB and run.status == DagsterRunStatus.FAILURE:
            failures = [e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_step_failure]
            description = failures[0].dagster_event.step_failure_data.user_failure_data.description
            for part in description.split("\n\n")[1:]:
                key, _, message = part.partition(": ")
                messages[key] = message
    assert sorted(messages) == sorted(dataset.partition_key for dataset in datasets[:4])
    assert "found a directory" in messages["1000|baseline_train"] and str(directory) in messages["1000|baseline_train"]
    assert "empty" in messages["1000|baseline_test"]
    assert "_metadata" in messages["10000|dense_train"] and "refused" in messages["10000|dense_train"]
    assert "_metadata" in messages["10000|dense_test"] and "JSON" in messages["10000|dense_test"]


def test_out_of_memory_retries_with_half_the_batch_then_fails_clearly(monkeypatch):
    arrays = simulate_split("demo", 100000, "train")
    real_run = lsqml._run_lsqml

    def run_fitting_only_small_batches(data, options, device, batch_size, *args):
        if batch_size > 12:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_run(data, options, device, batch_size, *args)

    monkeypatch.setattr(lsqml, "_run_lsqml", run_fitting_only_small_batches)
    options = ReconstructionOptions(epochs=2, device="cpu", regularization="off")
    args = (arrays["diffraction"], arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"], options)
    result = lsqml.reconstruct(*args)
    assert result.batch_sizes_tried == (49, 24, 12) and result.loss_per_epoch.shape == (2,)

    def never_fits(*_):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(lsqml, "_run_lsqml", never_fits)
    with pytest.raises(lsqml.GpuOutOfMemoryError, match=r"batch sizes \[49, 24, 12, 6\]"):
        lsqml.reconstruct(*args)


@pytest.mark.may_skip_in_ci("a GPU machine cannot show a missing GPU")
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_required_gpu_that_is_absent_fails_the_step_instead_of_using_the_cpu(study_paths, instance):
    job = build_definitions(study_paths).resolve_job_def(RECONSTRUCT_JOB)
    result = job.execute_in_process(
        partition_key="1000|dense_train", instance=instance, raise_on_error=False,
        run_config={"ops": {"ptychi_reconstruction": {"config": {"device": "cuda:0"}}}},
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "'cuda:0' was requested but this machine has no CUDA GPU" in failure.step_failure_data.user_failure_data.description
    assert not study_paths.artifact_dir(Dataset(1000, "dense", "train")).joinpath("ptychi_reconstruction.npz").exists()


def test_configuration_errors_get_one_clear_message_each(study_paths, instance, tmp_path):
    inside = StudyPaths(phase_c_root=study_paths.phase_c_root, phase_d_root=study_paths.phase_d_root,
                        artifact_root=str(Path(study_paths.phase_c_root) / "out"))
    assert inside.configuration_errors() == [
        f"artifact root {Path(study_paths.phase_c_root) / 'out'} is inside the Phase C root "
        f"{study_paths.phase_c_root}: outputs must not mix with inputs"
    ]
    nowhere = StudyPaths(phase_c_root=str(tmp_path / "absent"), phase_d_root=study_paths.phase_d_root,
                         artifact_root=study_paths.artifact_root)
    result = build_definitions(nowhere).resolve_job_def(RECONSTRUCT_JOB).execute_in_process(
        partition_key="1000|dense_train", instance=instance, raise_on_error=False
    )
    (failure,) = result.get_step_failure_events()
    assert f"Phase C root {tmp_path / 'absent'} does not exist" in failure.step_failure_data.user_failure_data.description
    with pytest.raises(ValueError, match="not of the form"):
        Dataset.from_partition_key("1000/dense_train")
    with pytest.raises(ValueError, match="unknown view"):
        select_datasets(views=["dense", "medium"])


def test_artifact_paths_never_escape_the_artifact_root(study_paths):
    with pytest.raises(ValueError, match="outside the artifact root"):
        study_paths.artifact_file("../escaped.json")
    with pytest.raises(ValueError, match="outside the artifact root"):
        inside_root(Path(study_paths.artifact_root), Path("/etc/passwd"))
    with pytest.raises(ValueError, match="unknown view"):
        Dataset(1000, "../../etc", "train")
    with pytest.raises(ValueError, match="unknown view"):
        Dataset.from_partition_key("1000|../../etc_train")


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_mode_an_ordinary_new_file_gets_under_the_umask(tmp_path, umask, expected):
    from fly64_assets.core.artifacts import captured_log, write_bytes, write_json, write_npz, write_text

    saved = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_npz(tmp_path / "a.npz", {"x": np.zeros(3)})
        write_text(tmp_path / "a.md", "text")
        write_bytes(tmp_path / "a.png", b"png")
        with captured_log(tmp_path / "a.log", ("fly64_assets",)) as log:
            log.info("line")
    finally:
        os.umask(saved)
    modes = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["a.json", "a.npz", "a.md", "a.png", "a.log"], expected)


def test_a_broken_phase_c_file_fails_only_its_partition_and_siblings_are_scored_on_their_own_scan(study_paths, instance):
    broken = study_paths.input_path(Dataset(1000, "baseline", "test"))
    arrays = dict(np.load(broken, allow_pickle=False))
    arrays["diffraction"][0, 0, 0] = np.nan
    np.savez(broken, **arrays)

    plan = plan_study(select_datasets([1000], ["baseline", "dense"], ["test"]), study_paths.input_path)
    report = launch.run_study(study_paths, plan, ReconstructionOptions(epochs=5), instance)
    statuses = instance.get_status_by_partition(
        AssetKey("reconstruction_quality"), ["1000|baseline_test", "1000|dense_test"], STUDY_PARTITIONS
    )
    assert statuses == {"1000|baseline_test": AssetPartitionStatus.FAILED, "1000|dense_test": AssetPartitionStatus.MATERIALIZED}
    quality = read_record(study_paths.artifact_dir(Dataset(1000, "dense", "test")), QUALITY_RECORD)
    assert quality["scoring_area"].startswith("own scan: the split's Phase C file")
    assert str(broken) in quality["scoring_area"] and "finite" in quality["scoring_area"]
    html = Path(report["study_report"]["html_path"]).read_text()
    assert "1000|dense_test scored on its own scan" in html
