"""The study on a real Slurm (the session's one-node ``slurm`` fixture), with the cluster file exactly as
docs/CLUSTER.md shows it: ``fly64 run``, ``dagster asset materialize`` and a UI backfill (through ``dagster dev``'s
daemon) reconstruct their partitions in workers inside Slurm jobs; each record names its job and node, the jobs'
logs land in the run's job folder (not the folder the command started from), every connection is TLS, and no job
is left when the command ends, even when it is killed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from fly64_assets.core.artifacts import PARTIAL_SUFFIX
from fly64_assets.core.bookkeeping import RECONSTRUCTION_RECORD
from fly64_assets.core.partition import worker_identity
from fly64_assets.defs.compute import CLUSTER_JOBS_FOLDER, DASK_CLUSTER_FILE_ENV
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets.lib.cluster_preflight import SHARED_ARTIFACT_ROOT_ENV, SHARED_INPUT_ROOTS_ENV
from fly64_assets.lib.dask_compute import batch_cluster, cluster_from_file
from fly64_assets_tests.dagster_dev import (
    TERMINATE_RUN, DagsterDev, launch_run, run_ui_backfill, study_environment, wait_for_run,
)
from fly64_assets_tests.support import REPO_ROOT, copy_study

EPOCHS = 5
COMMAND_TIMEOUT_S = 240
BACKFILL_TIMEOUT_S = 240
SQUEUE_EMPTY_WITHIN_S = 15.0
CANCEL_EPOCHS = 20
NEVER_START_TIMEOUT_S = 20
TERMINATE_WITHIN_S = 30.0
LOST_WORKER_TIMEOUT_ENV, LOST_WORKER_TIMEOUT = "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT", "3s"
"""dask's wait before it counts a job without workers as gone (15 s by default): shorter, for quicker tests."""
WALLTIME_EPOCHS = 80
"""12-20 s a partition here: one fits in a 90-second job's worker lifetime (45 s from the worker's start, its
imports first: 25-30 s left for tasks), four do not."""
"""Terminate -> the step stops its tasks and closes the cluster (``scancel``); slurmd ends a job within seconds."""
"""``scancel`` returns before the jobs are gone: slurmd ends them (a running worker gets SIGTERM) within seconds."""


def documented_cluster_file() -> str:
    """The Slurm cluster file as docs/CLUSTER.md shows it (its first YAML block in the batch-system section)."""
    section = (REPO_ROOT / "docs/CLUSTER.md").read_text().split("## A batch-system cluster per run", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def _on_slurm(env: dict, slurm, cluster_file: Path) -> dict:
    """``env`` as on a Slurm login node with the documented cluster file; the roots declared shared (they are on
    one machine's disk, which every job here sees)."""
    cluster_file.write_text(documented_cluster_file())
    return {**env, **slurm.env, DASK_CLUSTER_FILE_ENV: str(cluster_file), SHARED_ARTIFACT_ROOT_ENV: "1",
            SHARED_INPUT_ROOTS_ENV: "1", "FLY64_EPOCHS": str(EPOCHS), "FLY64_REGULARIZATION": "off"}


@pytest.fixture
def slurm_study(slurm, study_paths, tmp_path) -> tuple[dict, Path]:
    """A command's environment on a Slurm login node, and an empty folder to start it from."""
    home, start_folder = tmp_path / "dagster_home", tmp_path / "start_here"
    home.mkdir()
    start_folder.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "FLY64_PHASE_C_ROOT": study_paths.phase_c_root,
           "FLY64_PHASE_D_ROOT": study_paths.phase_d_root, "FLY64_ARTIFACT_ROOT": study_paths.artifact_root}
    return _on_slurm(env, slurm, tmp_path / "slurm.yaml"), start_folder


def _command(name: str, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([str(Path(sys.executable).parent / name), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def _records(artifact_root: Path) -> dict[str, dict]:
    return {str(path.parent.relative_to(artifact_root)): json.loads(path.read_text())
            for path in artifact_root.rglob(RECONSTRUCTION_RECORD)}


def _assert_ran_in_the_runs_slurm_jobs(slurm, artifact_root: Path, records: dict[str, dict], start_folder: Path | None) -> dict:
    """Each record names one of the run's Slurm jobs and the node; those jobs' logs are in the run's job folder
    (the documented place), say the workers spoke TLS, and no credentials are left; none went to the folder the
    command started from; no job is left in ``squeue``. Returns the jobs' ids by record."""
    jobs_wanted = yaml.safe_load(documented_cluster_file())["slurm"]["jobs"]
    (run_folder,) = (artifact_root / CLUSTER_JOBS_FOLDER).iterdir()
    logs = sorted(path.name for path in run_folder.iterdir())
    job_ids = {name.removeprefix("dask-worker-").split(".")[0] for name in logs}
    assert len(job_ids) == jobs_wanted and logs == sorted(f"dask-worker-{i}.{e}" for i in job_ids for e in ("err", "out")), logs
    for job_id in job_ids:
        worker_log = (run_folder / f"dask-worker-{job_id}.err").read_text()
        assert "Registered to:" in worker_log and "tls://" in worker_log and "tcp://" not in worker_log, worker_log[-2000:]
    ran_in = {}
    for folder, record in records.items():
        job = record["worker"]["batch_job"]
        assert job["system"] == "slurm" and job["node"] == slurm.node and job["id"] in job_ids, (folder, record["worker"])
        ran_in[folder] = job["id"]
    assert start_folder is None or list(start_folder.iterdir()) == []  # no slurm-N.out where the command started
    deadline = time.monotonic() + SQUEUE_EMPTY_WITHIN_S
    while slurm.jobs() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm.jobs() == [], slurm.command("squeue")
    return ran_in


@pytest.mark.timeout(300)
def test_fly64_run_reconstructs_its_partitions_in_slurm_jobs(slurm, slurm_study, study_paths):
    env, start_folder = slurm_study
    started = time.monotonic()
    done = _command("fly64", "run", "--dose", "1000", "--dose", "10000", "--view", "dense", "--epochs", str(EPOCHS),
                    "--regularization", "off", env=env, cwd=start_folder)
    print(f"fly64 run of 4 partitions on Slurm: {time.monotonic() - started:.1f} s")
    assert f"on the dask cluster of {env[DASK_CLUSTER_FILE_ENV]}" in done.stdout
    artifact_root = Path(study_paths.artifact_root)
    records = _records(artifact_root)
    assert sorted(records) == [f"dose_{dose}/dense/{split}" for dose in (1000, 10000) for split in ("test", "train")]
    assert all(record["status"] == "succeeded" and record["options"]["epochs"] == EPOCHS for record in records.values())
    _assert_ran_in_the_runs_slurm_jobs(slurm, artifact_root, records, start_folder)


@pytest.mark.timeout(300)
def test_dagster_asset_materialize_reconstructs_its_partition_in_a_slurm_job(slurm, slurm_study, study_paths):
    env, start_folder = slurm_study
    _command("dagster", "asset", "materialize", "-m", "fly64_assets.definitions", "--select", "ptychi_reconstruction",
             "--partition", "1000|dense_train", env=env, cwd=start_folder)
    artifact_root = Path(study_paths.artifact_root)
    records = _records(artifact_root)
    assert list(records) == ["dose_1000/dense/train"]
    (job_id,) = _assert_ran_in_the_runs_slurm_jobs(slurm, artifact_root, records, start_folder).values()
    _assert_materialized_in(env["DAGSTER_HOME"], {"1000|dense_train": job_id}, slurm.node)


def _assert_materialized_in(dagster_home: str, jobs: dict[str, str], node: str) -> None:
    """Each partition's newest materialization names its Slurm job and node."""
    with DagsterInstance.from_config(dagster_home) as instance:
        records = instance.fetch_materializations(AssetKey("ptychi_reconstruction"), limit=100).records
    workers = {r.partition_key: r.asset_materialization.metadata["worker"].value for r in reversed(records)}
    assert sorted(workers) == sorted(jobs)
    for key, job_id in jobs.items():
        assert workers[key].endswith(f", slurm job {job_id} on {node}"), workers


@pytest.mark.timeout(480)
def test_a_ui_backfill_reconstructs_its_partitions_in_slurm_jobs_and_terminate_ends_a_runs_jobs(slurm, synthetic_study, tmp_path):
    """``dagster dev`` started on the login node with the cluster file; the UI's backfill of two partitions runs
    (one run: the dose's single-run policy) through the daemon and sends them to the run's Slurm jobs. Then
    *Terminate* (the UI's request) of a run while it reconstructs: the run is CANCELED, its jobs leave ``squeue``
    and no worker process of it is left, within ``TERMINATE_WITHIN_S``."""
    copy_study(synthetic_study, tmp_path / "inputs")
    (tmp_path / "dagster_home").mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster_home")  # the shipped instance settings
    env = _on_slurm(study_environment(tmp_path, str(EPOCHS)), slurm, tmp_path / "slurm.yaml")
    server = DagsterDev(REPO_ROOT, env, log_path=tmp_path / "dagster_dev.log")
    keys = ["1000|dense_train", "1000|dense_test"]
    try:
        server.start()
        _, backfill, seconds = run_ui_backfill(server, keys, BACKFILL_TIMEOUT_S, assets=["ptychi_reconstruction"])
        print(f"UI backfill of {len(keys)} partitions on Slurm: {backfill['status']} in {seconds:.0f} s")
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
        artifact_root = tmp_path / "artifacts"
        records = _records(artifact_root)
        assert sorted(records) == ["dose_1000/dense/test", "dose_1000/dense/train"]
        ran_in = _assert_ran_in_the_runs_slurm_jobs(slurm, artifact_root, records, None)
        _assert_materialized_in(env["DAGSTER_HOME"], {key: ran_in[f"dose_1000/dense/{key.split('_')[1]}"] for key in keys}, slurm.node)
        _assert_terminate_ends_the_runs_jobs(server, slurm, artifact_root, "10000|dense_train")
    finally:
        server.stop()


def _assert_terminate_ends_the_runs_jobs(server: DagsterDev, slurm, artifact_root: Path, key: str) -> None:
    long_run = {"ops": {"ptychi_reconstruction": {"config": {"epochs": 100000, "regularization": "off"}}}}
    run_id = launch_run(server, "reconstruct_study", dict(STUDY_PARTITIONS.get_tags_for_partition_key(key)), long_run)
    _wait_for_partial_epoch(artifact_root, 2)
    assert slurm.jobs() and _worker_processes(str(artifact_root))
    terminated = server.graphql(TERMINATE_RUN, {"runId": run_id})["terminateRun"]
    asked = time.monotonic()
    assert terminated["__typename"] == "TerminateRunSuccess", terminated
    status, _ = wait_for_run(server, run_id, timeout_s=TERMINATE_WITHIN_S)
    canceled_s = time.monotonic() - asked
    squeue_s = canceled_s + _squeue_empty_within(slurm, TERMINATE_WITHIN_S)
    workers_s = squeue_s + _no_worker_process_within(str(artifact_root), TERMINATE_WITHIN_S)
    print(f"Terminate on Slurm: run {status} after {canceled_s:.1f} s, squeue empty after {squeue_s:.1f} s, "
          f"no worker process after {workers_s:.1f} s")
    assert status == "CANCELED"


@pytest.mark.timeout(300)
def test_a_killed_fly64_run_leaves_no_slurm_job_behind(slurm, slurm_study, study_paths):
    """SIGKILL the command while its workers reconstruct: its scheduler dies with it, no ``scancel`` is sent, and
    the workers, having lost their scheduler, end their jobs themselves; the credentials left behind are the
    owner's alone."""
    env, start_folder = slurm_study
    command = [str(Path(sys.executable).parent / "fly64"), "run", "--dose", "1000", "--view", "dense", "--epochs", "100000",
               "--regularization", "off"]
    with open(start_folder.parent / "fly64_run.log", "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=start_folder, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not _worker_logs_say(Path(study_paths.artifact_root), "Starting established connection"):
            assert process.poll() is None and time.monotonic() < deadline, (start_folder.parent / "fly64_run.log").read_text()[-3000:]
            time.sleep(1)
        assert slurm.jobs()
        time.sleep(5)  # into the reconstructions
    finally:
        process.kill()
        process.wait()
    killed = time.monotonic()
    while slurm.jobs() and time.monotonic() - killed < 120:
        time.sleep(1)
    print(f"the killed run's Slurm jobs ended {time.monotonic() - killed:.0f} s after the kill")
    assert slurm.jobs() == [], slurm.command("squeue")
    _no_worker_process_within(study_paths.artifact_root, SQUEUE_EMPTY_WITHIN_S)
    # Nobody deleted the workers' credentials, but only their owner can read them.
    (private,) = Path(study_paths.artifact_root).glob(f"{CLUSTER_JOBS_FOLDER}/*/.tls-*")
    modes = {str(path.relative_to(private)): path.stat().st_mode & 0o777 for path in [private, *private.rglob("*")]}
    assert modes == {".": 0o700, "worker": 0o700, "worker/ca.pem": 0o600, "worker/cert.pem": 0o600, "worker/key.pem": 0o600}, modes


def _worker_logs_say(artifact_root: Path, text: str) -> bool:
    return any(text in log.read_text(errors="replace") for log in artifact_root.glob(f"{CLUSTER_JOBS_FOLDER}/*/*.err"))


def test_a_record_names_a_pbs_job_too_and_no_job_outside_a_batch_system(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURMD_NODENAME", "PBS_JOBID"):
        monkeypatch.delenv(name, raising=False)
    assert worker_identity() == {"host": socket.gethostname(), "pid": os.getpid(), "batch_job": None}
    monkeypatch.setenv("PBS_JOBID", "4242.pbs01")  # PBS names no node: the host is the node
    assert worker_identity()["batch_job"] == {"system": "pbs", "id": "4242.pbs01", "node": socket.gethostname()}


def test_a_cluster_file_whose_jobs_slurm_refuses_fails_at_once_instead_of_waiting(slurm, tmp_path, monkeypatch):
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    refused = tmp_path / "refused.yaml"
    refused.write_text(documented_cluster_file().replace("slurm:\n", "slurm:\n  queue: no-such-partition\n", 1))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"refused.yaml: the batch system accepted none of its 2 job\(s\); sbatch's error"):
        with cluster_from_file(refused, tmp_path / "jobs"):
            pass
    assert time.monotonic() - started < 30 and slurm.jobs() == []


def _cluster_file(tmp_path: Path, slurm, name: str, **changes) -> dict:
    """The documented cluster file with ``changes`` (e.g. ``jobs=1``) as ``tmp_path/name``: a ``fly64 run``'s
    environment on the Slurm login node (declared shared roots, demo study in ``tmp_path``)."""
    document = yaml.safe_load(documented_cluster_file())
    document["slurm"].update(changes)
    (tmp_path / name).write_text(yaml.safe_dump(document))
    return {**os.environ, **slurm.env, DASK_CLUSTER_FILE_ENV: str(tmp_path / name), SHARED_ARTIFACT_ROOT_ENV: "1",
            SHARED_INPUT_ROOTS_ENV: "1", LOST_WORKER_TIMEOUT_ENV: LOST_WORKER_TIMEOUT}


def _start_fly64_run(env: dict, log_path: Path, epochs: int, *args: str) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "fly64"), "run", "--dose", "1000", "--view", "dense", "--epochs",
               str(epochs), "--regularization", "off", *args]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, env=env, cwd=log_path.parent, stdout=log, stderr=subprocess.STDOUT)


def _wait_for_partial_epoch(artifact_root: Path, epoch: int, running: Callable[[], None] = lambda: None) -> Path:
    """The partition folder whose reconstruction (its log still a ``.partial`` file) reached ``epoch``;
    ``running`` asserts meanwhile that what should produce it still runs."""
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while time.monotonic() < deadline:
        running()
        for partial in artifact_root.rglob(f".ptychi.log*{PARTIAL_SUFFIX}"):
            if f"epoch {epoch}/" in partial.read_text(errors="replace"):
                return partial.parent
        time.sleep(0.3)
    raise TimeoutError(f"no reconstruction reached epoch {epoch} under {artifact_root}")


def _still_running(process: subprocess.Popen, log_path: Path) -> None:
    assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]


def _finish(process: subprocess.Popen, log_path: Path) -> tuple[int, str]:
    try:
        process.wait(timeout=COMMAND_TIMEOUT_S)
    finally:
        process.kill()
    return process.returncode, log_path.read_text(errors="replace")


def _squeue_empty_within(slurm, seconds: float) -> float:
    started = time.monotonic()
    while slurm.jobs() and time.monotonic() - started < seconds:
        time.sleep(0.5)
    assert slurm.jobs() == [], slurm.command("squeue")
    return time.monotonic() - started


@pytest.mark.timeout(300)
def test_a_cancelled_only_job_is_replaced_and_its_partition_runs_again_whole(slurm, study_paths, tmp_path):
    """``scancel`` (what preemption does) of a one-job cluster's job while a partition reconstructs: the run asks
    for a new job, that partition runs again there, the other finishes too, and no partial file stays."""
    env = {**_cluster_file(tmp_path, slurm, "one_job.yaml", jobs=1), "DAGSTER_HOME": str(tmp_path),
           "FLY64_PHASE_C_ROOT": study_paths.phase_c_root, "FLY64_PHASE_D_ROOT": study_paths.phase_d_root,
           "FLY64_ARTIFACT_ROOT": study_paths.artifact_root}
    artifact_root, log_path = Path(study_paths.artifact_root), tmp_path / "fly64_run.log"
    process = _start_fly64_run(env, log_path, CANCEL_EPOCHS)
    try:
        interrupted = _wait_for_partial_epoch(artifact_root, 2, lambda: _still_running(process, log_path))
        (cancelled,) = slurm.jobs()
        slurm.command("scancel", cancelled)
        cancelled_at = time.monotonic()
        returncode, output = _finish(process, log_path)
    finally:
        process.kill()
    print(f"run with its only job cancelled: done {time.monotonic() - cancelled_at:.0f} s after the scancel")
    assert returncode == 0, output[-4000:]
    records = _records(artifact_root)
    assert sorted(records) == ["dose_1000/dense/test", "dose_1000/dense/train"]
    assert all(r["status"] == "succeeded" and r["options"]["epochs"] == CANCEL_EPOCHS for r in records.values())
    again = records[str(interrupted.relative_to(artifact_root))]["worker"]["batch_job"]["id"]
    assert again != cancelled, "the interrupted partition ran again in a new job"
    assert list(artifact_root.rglob(f"*{PARTIAL_SUFFIX}")) == []
    _squeue_empty_within(slurm, SQUEUE_EMPTY_WITHIN_S)


@pytest.mark.timeout(300)
def test_a_job_at_its_walltime_hands_its_partition_to_a_fresh_job_before_slurm_kills_it(slurm, study_paths, tmp_path):
    """A one-job cluster with a 90-second walltime: its worker leaves after its lifetime (45 s) instead of being
    killed by Slurm, the partition it was reconstructing runs again, whole, in a fresh job."""
    env = {**_cluster_file(tmp_path, slurm, "walltime.yaml", jobs=1, walltime="00:01:30"), "DAGSTER_HOME": str(tmp_path),
           "FLY64_PHASE_C_ROOT": study_paths.phase_c_root, "FLY64_PHASE_D_ROOT": study_paths.phase_d_root,
           "FLY64_ARTIFACT_ROOT": study_paths.artifact_root}
    artifact_root, log_path = Path(study_paths.artifact_root), tmp_path / "fly64_run.log"
    started = time.monotonic()
    returncode, output = _finish(_start_fly64_run(env, log_path, WALLTIME_EPOCHS, "--dose", "10000"), log_path)
    print(f"run of 4 partitions on 90-second jobs: {time.monotonic() - started:.0f} s")
    assert returncode == 0, output[-4000:]
    records = _records(artifact_root)
    assert len(records) == 4 and all(r["status"] == "succeeded" and r["options"]["epochs"] == WALLTIME_EPOCHS for r in records.values())
    jobs = sorted({r["worker"]["batch_job"]["id"] for r in records.values()}, key=int)
    assert len(jobs) >= 2, records  # the partition cut short ran again in a fresh job
    (job_folder,) = (artifact_root / CLUSTER_JOBS_FOLDER).iterdir()
    first_job_log = (job_folder / f"dask-worker-{jobs[0]}.err").read_text()
    assert "worker-lifetime-reached" in first_job_log and "TIME LIMIT" not in first_job_log, first_job_log[-3000:]
    assert list(artifact_root.rglob(f"*{PARTIAL_SUFFIX}")) == []
    _squeue_empty_within(slurm, SQUEUE_EMPTY_WITHIN_S)


@pytest.mark.timeout(180)
def test_jobs_that_never_start_fail_the_run_in_one_line_with_slurms_reason(slurm, study_paths, tmp_path):
    """A held job (``sbatch --hold``): after the file's ``worker_start_timeout`` the run fails, in one line naming
    the queue and Slurm's pending reason, and its job is cancelled."""
    env = {**_cluster_file(tmp_path, slurm, "held.yaml", jobs=1, worker_start_timeout=NEVER_START_TIMEOUT_S,
                           job_extra_directives=["--hold"]),
           "DAGSTER_HOME": str(tmp_path), "FLY64_PHASE_C_ROOT": study_paths.phase_c_root,
           "FLY64_PHASE_D_ROOT": study_paths.phase_d_root, "FLY64_ARTIFACT_ROOT": study_paths.artifact_root}
    log_path = tmp_path / "fly64_run.log"
    started = time.monotonic()
    returncode, output = _finish(_start_fly64_run(env, log_path, 2, "--split", "train"), log_path)
    seconds = time.monotonic() - started
    print(f"a run whose job is held failed after {seconds:.0f} s (worker_start_timeout {NEVER_START_TIMEOUT_S} s)")
    assert returncode != 0
    (line,) = [line for line in output.splitlines() if "worker_start_timeout" in line]
    assert f"no dask worker for {NEVER_START_TIMEOUT_S} s" in line and f"queue {slurm.partition} (JobHeldUser)" in line, output
    assert NEVER_START_TIMEOUT_S <= seconds < NEVER_START_TIMEOUT_S + 60
    _squeue_empty_within(slurm, SQUEUE_EMPTY_WITHIN_S)


def test_a_queue_set_down_fails_the_wait_naming_it_and_slurms_reason(slurm, tmp_path, monkeypatch):
    """The queue closed (``scontrol update ... State=DOWN``: jobs queue, none starts): the cluster's job keeper
    fails after ``worker_start_timeout`` naming the queue and ``(PartitionDown)``; the job is cancelled."""
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    down = tmp_path / "down.yaml"
    down.write_text(documented_cluster_file().replace("slurm:\n", "slurm:\n  worker_start_timeout: 5\n", 1))
    slurm.command("scontrol", "update", f"PartitionName={slurm.partition}", "State=DOWN")
    try:
        with pytest.raises(RuntimeError, match=rf"no dask worker for 5 s .* queue {slurm.partition} \(PartitionDown\); cancelled$"):
            with batch_cluster(down, tmp_path / "jobs") as (_, keeper):
                while True:
                    keeper.check(0)
                    time.sleep(0.2)
    finally:
        slurm.command("scontrol", "update", f"PartitionName={slurm.partition}", "State=UP")
    _squeue_empty_within(slurm, SQUEUE_EMPTY_WITHIN_S)


def _worker_processes(marker: str) -> list[psutil.Process]:
    """The dask worker processes (in Slurm jobs, children of slurmd) whose command line names ``marker``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "distributed.cli.dask_worker" in cmdline and marker in cmdline:
            found.append(process)
    return found


def _no_worker_process_within(marker: str, seconds: float) -> float:
    """Seconds until no dask worker process naming ``marker`` is left (asserted: within ``seconds``)."""
    started = time.monotonic()
    while (left := _worker_processes(marker)) and time.monotonic() - started < seconds:
        time.sleep(0.2)
    assert left == [], [process.info["cmdline"] for process in left]
    return time.monotonic() - started


def test_a_jobs_walltime_sets_its_workers_lifetime_and_bad_timeouts_are_refused(tmp_path):
    """No Slurm needed (no job is submitted): the job script's workers leave 2 minutes before the walltime, at
    most half of it; a walltime or a worker_start_timeout that means nothing is refused in one line."""
    scripts = {}
    for walltime in ("00:30:00", "1", "2-0", "90:00"):
        (tmp_path / "f.yaml").write_text(yaml.safe_dump({"slurm": {"cores": 1, "memory": "1GB", "jobs": 0, "walltime": walltime}}))
        with cluster_from_file(tmp_path / "f.yaml", tmp_path / "jobs") as cluster:
            scripts[walltime] = cluster.job_script().split("--lifetime ", 1)[1].split()[0]
    assert scripts == {"00:30:00": "1680s", "1": "30s", "2-0": "172680s", "90:00": "5280s"}
    for bad, message in ((dict(walltime="soon"), "walltime 'soon' is not"), (dict(worker_start_timeout=0), "worker_start_timeout must be")):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"slurm": {"cores": 1, "memory": "1GB", "jobs": 0, **bad}}))
        with pytest.raises(ValueError, match=message):
            with cluster_from_file(tmp_path / "bad.yaml", tmp_path / "jobs"):
                pass
