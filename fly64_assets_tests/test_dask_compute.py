"""The reconstruction step on dask: configuration, a running scheduler's warm workers, and the faults a cluster
meets, with real processes (a scheduler and two worker processes on 127.0.0.1, real SIGKILLs).

The module's cluster is what ``fly64 ui`` starts (``lib.dask_compute.local_cluster``), owned by the test so that
it can watch the scheduler and kill workers; runs reach it as users' runs do, by its address
(``StudyCompute.scheduler`` / ``FLY64_DASK_SCHEDULER``), over TLS with the cluster's client credentials as files
(``FLY64_DASK_SECURITY``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from dagster import AssetKey, DagsterEventType, instance_for_test

from fly64_assets import launch
from fly64_assets.core.artifacts import PARTIAL_SUFFIX
from fly64_assets.core.bookkeeping import RECONSTRUCTION_RECORD
from fly64_assets.core.design import Dataset
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.defs.compute import (
    DASK_CLUSTER_FILE_ENV, DASK_PLAIN_LOOPBACK_ENV, DASK_SCHEDULER_ENV, DASK_SECURITY_ENV, DASK_WORKERS_ENV, StudyCompute,
)
from fly64_assets.defs.reconstruction.assets import GPU_POOL, reconstruction_pool
from fly64_assets.defs.resources import StudyPaths
from fly64_assets.lib.cluster_preflight import SHARED_ARTIFACT_ROOT_ENV, SHARED_INPUT_ROOTS_ENV, DaskSetupError
from fly64_assets.lib.dask_compute import cluster_from_file, local_cluster
from fly64_assets.lib.dask_security import KEY_FILE, temporary_security, write_credentials
from fly64_assets_tests.dagster_dev import study_environment
from fly64_assets_tests.support import REPO_ROOT, copy_study, try_to_run_a_task

pytestmark = pytest.mark.timeout(420)
EPOCHS = 5
LONG_EPOCHS = 2000
"""A reconstruction that would run for minutes: the tests that use it interrupt it."""
CHOICE_EPOCHS = 600
"""An ``auto`` choice with a short shared start (120 epochs), then 60 epochs per candidate: long enough to be caught."""
BASELINE_1000 = ["1000|baseline_train", "1000|baseline_test"]
SPARSE_1000 = ["1000|sparse_train", "1000|sparse_test"]
"""Absent from the demo tree: expected skips."""


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two single-threaded, warm worker processes on 127.0.0.1; the test's own client."""
    from distributed import Client

    with local_cluster(2, 0) as started, Client(started, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=120)
        yield started, client


@pytest.fixture(scope="module")
def shared(cluster, tmp_path_factory) -> StudyCompute:
    """The module's cluster as a run reaches it: its TLS address and its client credentials as files."""
    started, _ = cluster
    credentials = write_credentials(started.security, tmp_path_factory.mktemp("dask") / "tls")
    return StudyCompute(scheduler=started.scheduler_address, security=str(credentials))


def _shared_env(compute: StudyCompute) -> dict[str, str]:
    return {DASK_SCHEDULER_ENV: compute.scheduler, DASK_SECURITY_ENV: compute.security}


@pytest.fixture
def study(synthetic_study, tmp_path) -> StudyPaths:
    inputs = copy_study(synthetic_study, tmp_path / "inputs")
    return StudyPaths(phase_c_root=str(inputs / "phase_c"), phase_d_root=str(inputs / "phase_d"),
                      artifact_root=str(tmp_path / "artifacts"))


def _worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def _materializations(instance, run_id: str) -> list:
    return [
        entry for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        if entry.asset_materialization.asset_key == AssetKey("ptychi_reconstruction")
    ]


def _record(paths: StudyPaths, key: str) -> dict:
    return json.loads((paths.artifact_dir(Dataset.from_partition_key(key)) / RECONSTRUCTION_RECORD).read_text())


def _reconstruct(paths: StudyPaths, keys: list[str], compute: StudyCompute, instance, epochs: int = EPOCHS,
                 regularization: str = "off"):
    options = ReconstructionOptions(epochs=epochs, regularization=regularization)
    (outcome,) = launch.reconstruct(paths, [Dataset.from_partition_key(key) for key in keys], options, instance,
                                    compute=compute)
    return outcome


# --- configuration -------------------------------------------------------------------------------------------


def test_compute_comes_from_the_environment_only_over_tls_and_a_cluster_beyond_this_machine_needs_shared_roots(
    monkeypatch, study, tmp_path
):
    for name in (DASK_SCHEDULER_ENV, DASK_SECURITY_ENV, DASK_PLAIN_LOOPBACK_ENV, DASK_CLUSTER_FILE_ENV, DASK_WORKERS_ENV,
                 SHARED_ARTIFACT_ROOT_ENV, SHARED_INPUT_ROOTS_ENV):
        monkeypatch.delenv(name, raising=False)
    default = StudyCompute.from_env()
    assert (default.scheduler, default.cluster_file, default.workers) == ("", "", -1)
    assert default.local_workers() == (0, 0)  # this CPU-only machine: the step's own process (measured fastest)
    assert default.describe() == "this process, one partition after another"
    assert reconstruction_pool() == GPU_POOL  # each run brings its own compute: the instance's pool bounds them

    monkeypatch.setenv(DASK_WORKERS_ENV, "3")
    assert StudyCompute.from_env().describe() == "a local dask cluster of 3 worker(s)"
    monkeypatch.setenv(DASK_SCHEDULER_ENV, "tls://127.0.0.1:8786")
    credentials = write_credentials(temporary_security(), tmp_path / "tls")
    monkeypatch.setenv(DASK_SECURITY_ENV, str(credentials))
    shared = StudyCompute.from_env()
    assert shared.shared and reconstruction_pool() is None  # one cluster for every run: its workers are the bound
    assert shared.configuration_errors(study.folders()) == []  # loopback: its workers are on this machine

    # A scheduler runs any client's code: plain TCP is refused in one line that says how to give TLS settings (on
    # loopback too, unless the deployment opts in); TLS needs credentials only their owner can read.
    plain = StudyCompute(scheduler="tcp://10.1.2.3:8786").configuration_errors(study.folders())
    assert plain[0] == ("the scheduler at tcp://10.1.2.3:8786 is not encrypted (whoever reaches its port runs code as "
                        f"you): give its tls:// address and {DASK_SECURITY_ENV}=<folder with ca.pem, cert.pem, key.pem> "
                        "(docs/CLUSTER.md)")
    (loopback,) = StudyCompute(scheduler="tcp://127.0.0.1:8786").configuration_errors(study.folders())
    assert loopback.endswith(f"or {DASK_PLAIN_LOOPBACK_ENV}=1 on a machine no one else uses (docs/CLUSTER.md)")
    monkeypatch.setenv(DASK_PLAIN_LOOPBACK_ENV, "1")
    monkeypatch.setenv(DASK_SCHEDULER_ENV, "tcp://127.0.0.1:8786")
    assert StudyCompute.from_env().configuration_errors(study.folders()) == []
    assert StudyCompute(scheduler="tls://127.0.0.1:1").scheduler_errors() == [
        f"the scheduler at tls://127.0.0.1:1 speaks TLS: set {DASK_SECURITY_ENV} to the folder of its client "
        "credentials (ca.pem, cert.pem, key.pem; docs/CLUSTER.md)"]
    (credentials / KEY_FILE).chmod(0o644)
    assert shared.scheduler_errors() == [f"the dask TLS key {credentials / KEY_FILE} is readable by others (mode 644): chmod 600 it"]
    (credentials / KEY_FILE).chmod(0o600)

    remote = StudyCompute(scheduler="tls://10.1.2.3:8786", security=str(credentials))
    problems = remote.configuration_errors(study.folders())
    assert len(problems) == 3, problems  # the artifact root and both input roots are on this machine's disk
    assert f"the artifact root {study.artifact_root} is on a" in problems[0] and SHARED_ARTIFACT_ROOT_ENV in problems[0]
    assert f"the Phase C root {study.phase_c_root}" in problems[1] and SHARED_INPUT_ROOTS_ENV in problems[1]
    with pytest.raises(DaskSetupError, match="the scheduler at tls://10.1.2.3:8786 may run partitions on other machines"):
        with remote.dispatch("run", study.folders(), 1):
            pass
    monkeypatch.setenv(SHARED_ARTIFACT_ROOT_ENV, "1")
    monkeypatch.setenv(SHARED_INPUT_ROOTS_ENV, "yes")
    assert remote.configuration_errors(study.folders()) == []  # declared shared by the deployment
    both = StudyCompute(scheduler="tcp://127.0.0.1:1", cluster_file="slurm.yaml")
    assert both.configuration_errors(study.folders()) == ["both a scheduler (tcp://127.0.0.1:1) and a cluster file (slurm.yaml) are set: set one"]


def test_a_cluster_file_describes_a_dask_jobqueue_cluster_with_tls_and_a_job_folder(tmp_path):
    pytest.importorskip("dask_jobqueue")  # a dev dependency: installed wherever the suite runs
    good = tmp_path / "slurm.yaml"
    good.write_text("slurm:\n  queue: gpu\n  cores: 8\n  memory: 64GB\n  job_extra_directives: ['--gres=gpu:1']\n  jobs: 0\n")
    jobs = tmp_path / "jobs"
    with cluster_from_file(good, jobs) as slurm:
        script = slurm.job_script()
        dashboard_port = int(slurm.dashboard_link.rsplit(":", 1)[1].split("/")[0])
        listening = {c.laddr.port: c.laddr.ip for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        scheduler_address = slurm.scheduler_address
        credentials = [Path(path) for path in re.findall(r"--tls-(?:ca-file|cert|key) (\S+)", script)]
        modes = {path.name: path.stat().st_mode & 0o777 for path in credentials}
        folder_mode = credentials[0].parent.stat().st_mode & 0o777
    assert "#SBATCH -p gpu" in script and "#SBATCH --gres=gpu:1" in script
    assert "--nthreads 1 " in script and "--nworkers 8 " in script  # single-threaded workers: one task at a time
    # The scheduler listens where the batch jobs' workers can reach it; its dashboard on this machine only.
    assert listening[dashboard_port] == "127.0.0.1"
    # TLS by default: the workers' credentials are files in the job folder that only the owner can read, gone after.
    assert scheduler_address.startswith("tls://") and "--protocol tls://" in script
    assert modes == {"ca.pem": 0o600, "cert.pem": 0o600, "key.pem": 0o600}, modes
    assert folder_mode == 0o700 and credentials[0].parents[2] == jobs and not credentials[0].parent.parent.exists()
    assert f"#SBATCH -o {jobs}/dask-worker-%J.out" in script and "--preload fly64_assets.lib.dask_compute" in script
    bad = tmp_path / "bad.yaml"
    bad.write_text("kubernetes: {}\n")
    with pytest.raises(ValueError, match=r"cluster file .*bad.yaml: expected exactly one of \['htcondor', 'lsf', 'moab'"):
        with cluster_from_file(bad, jobs):
            pass
    broken = tmp_path / "broken.yaml"
    broken.write_text("slurm: [unclosed\n")
    with pytest.raises(ValueError, match="cannot read it as YAML"):
        with cluster_from_file(broken, jobs):
            pass
    plain = tmp_path / "plain.yaml"
    plain.write_text("slurm: {cores: 1, memory: 1GB, security: false}\n")
    with pytest.raises(ValueError, match="security must be true"):
        with cluster_from_file(plain, jobs):
            pass


def test_every_address_a_local_cluster_opens_is_on_loopback_and_tls(cluster):
    started, client = cluster
    info = client.scheduler_info()
    assert started.scheduler_address.startswith("tls://127.0.0.1:")
    assert started.dashboard_link.startswith("http://127.0.0.1:")
    assert {worker.rsplit(":", 1)[0] for worker in info["workers"]} == {"tls://127.0.0.1"}
    assert {w["nanny"].rsplit(":", 1)[0] for w in info["workers"].values()} == {"tls://127.0.0.1"}
    listening = []
    for pid in [os.getpid(), *_worker_pids(client).values()]:  # the scheduler and nannies live in this process
        listening += [c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and set(listening) == {"127.0.0.1"}, listening
    assert set(client.run(lambda: os.environ["CUDA_VISIBLE_DEVICES"]).values()) == {""}  # no GPU: none pinned


def test_a_local_cluster_refuses_a_plain_client_and_a_tls_client_without_its_credentials(cluster, tmp_path):
    started, client = cluster
    clients = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.clients))
    marker = tmp_path / "ran"
    plain_address = "tcp://" + started.scheduler_address.split("://", 1)[1]
    plain = try_to_run_a_task(plain_address, None, str(marker))
    stranger = try_to_run_a_task(started.scheduler_address, temporary_security(), str(marker))
    assert plain.startswith("refused: CommClosedError") and stranger.startswith("refused:"), (plain, stranger)
    assert not marker.exists()
    assert client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.clients)) == clients
    print(f"plain TCP: {plain}; TLS with other credentials: {stranger}")


# --- a running scheduler's warm workers -------------------------------------------------------------------------


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_partitions_run_at_once_on_the_running_schedulers_warm_workers_each_recorded_as_it_finishes(
    cluster, shared, study
):
    started, client = cluster
    pids = set(_worker_pids(client).values())
    compute = shared
    reconstructed = [*BASELINE_1000, "1000|dense_train", "1000|dense_test"]  # with the skips: one range, one run
    with instance_for_test() as instance:
        outcome = _reconstruct(study, reconstructed + SPARSE_1000, compute, instance)
        assert outcome.success, outcome.error
        records = {key: _record(study, key) for key in reconstructed}
        # Where each partition ran: a warm worker of the cluster (not this process), on the CPU, with UTC times.
        assert {record["worker"]["pid"] for record in records.values()} <= pids and os.getpid() not in pids
        assert {record["device"] for record in records.values()} == {"cpu"}
        train, test = records["1000|baseline_train"], records["1000|baseline_test"]
        assert _utc(train["started_utc"]) < _utc(test["ended_utc"]) and _utc(test["started_utc"]) < _utc(train["ended_utc"])
        messages = [entry.user_message for entry in instance.all_logs(outcome.run_id)]
        assert f"6 partition(s) on the dask scheduler at {started.scheduler_address}" in messages
        assert "at most 2 partition(s) ran at once" in messages  # two workers, four reconstructions
        assert any(message.startswith("1000|baseline_train epoch 5/5 loss") for message in messages)  # from the worker
        # Every partition has its materialization (the skips too), recorded when that partition finished: the first
        # reconstruction to end is recorded before the last one (which waited for a free worker) ends.
        materialized = {entry.asset_materialization.partition: entry for entry in _materializations(instance, outcome.run_id)}
        assert set(materialized) == set(reconstructed + SPARSE_1000)
        assert materialized["1000|sparse_train"].asset_materialization.metadata["status"].value == "skipped"
        for key, record in records.items():
            metadata = materialized[key].asset_materialization.metadata
            assert metadata["worker"].value == f"{record['worker']['host']} pid {record['worker']['pid']}"
            assert metadata["started (UTC)"].value == record["started_utc"]
        first, *_, last = sorted(records, key=lambda key: records[key]["ended_utc"])
        assert materialized[first].timestamp < _utc(records[last]["ended_utc"])


def test_an_auto_choice_runs_its_candidates_as_tasks_at_once_and_chooses_as_in_one_process(
    cluster, shared, study, tmp_path
):
    _, client = cluster
    pids = set(_worker_pids(client).values())
    key = "1000|baseline_train"
    inline = StudyPaths(phase_c_root=study.phase_c_root, phase_d_root=study.phase_d_root,
                        artifact_root=str(tmp_path / "inline"))
    with instance_for_test() as instance:
        on_cluster = _reconstruct(study, [key], shared, instance, 10, "auto")
        in_process = _reconstruct(inline, [key], StudyCompute(workers=0), instance, 10, "auto")
    assert on_cluster.success and in_process.success, (on_cluster.error, in_process.error)
    choice, reference = _record(study, key)["regularization"], _record(inline, key)["regularization"]
    ran_on = [candidate["ran_on"]["pid"] for candidate in choice["candidates"]]
    assert len(ran_on) == 6 and set(ran_on) == pids  # six candidate tasks, spread over both warm workers
    assert {candidate["ran_on"]["pid"] for candidate in reference["candidates"]} == {os.getpid()}
    assert choice["chosen"] == reference["chosen"]
    for task, local in zip(choice["candidates"], reference["candidates"]):
        assert task["poisson_deviance"] == pytest.approx(local["poisson_deviance"], rel=1e-3)


def test_a_partition_whose_task_raises_fails_alone_with_its_reason(shared, study):
    blocked = study.artifact_dir(Dataset.from_partition_key("1000|baseline_test"))
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the partition's folder should be")
    with instance_for_test() as instance:
        outcome = _reconstruct(study, BASELINE_1000, shared, instance)
        assert not outcome.success and outcome.failed_partitions == ["1000|baseline_test"]
        assert "1000|baseline_test: FileExistsError" in outcome.error or "NotADirectoryError" in outcome.error, outcome.error
        assert _record(study, "1000|baseline_train")["status"] == "succeeded"
        errors = [entry.user_message for entry in instance.all_logs(outcome.run_id) if entry.level >= 40]
        assert any(message.startswith("1000|baseline_test failed:") and "Traceback" in message for message in errors)


def _busy_worker(client, key_part: str, timeout_s: float = 120) -> str:
    """The address of the worker running a task whose key contains ``key_part``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for worker, tasks in client.processing().items():
            if any(key_part in str(task) for task in tasks):
                return worker
        time.sleep(0.2)
    raise TimeoutError(f"no task {key_part} started within {timeout_s} s")


def _wait_for_epoch(folder: Path, epoch: int, timeout_s: float = 180) -> None:
    """Until the reconstruction's log (a .partial file while it runs) shows ``epoch``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(f"epoch {epoch}/" in partial.read_text() for partial in folder.glob(f".ptychi.log*{PARTIAL_SUFFIX}")):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no reconstruction reached epoch {epoch} in {folder}")


def test_a_worker_killed_mid_task_costs_its_partition_a_retry_and_the_others_finish(cluster, shared, study):
    _, client = cluster
    pids = _worker_pids(client)
    killed = {}

    def kill_a_busy_worker() -> None:
        _wait_for_epoch(study.artifact_dir(Dataset.from_partition_key("1000|baseline_train")), 2)
        worker = _busy_worker(client, "1000|baseline_train")
        killed["pid"] = pids[worker]
        os.kill(pids[worker], signal.SIGKILL)  # what the kernel's out-of-memory killer does

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    with instance_for_test() as instance:
        outcome = _reconstruct(study, BASELINE_1000, shared, instance, epochs=30)
    killer.join()
    assert outcome.success, outcome.error
    record = _record(study, "1000|baseline_train")
    assert record["worker"]["pid"] != killed["pid"] and len(record["options"]) and record["n_patterns"] > 0
    # the nanny restarted the killed worker; its new process imports torch and pty-chi again, which took over 120 s
    # while the rest of the suite loaded both cores (alone: a few seconds)
    client.wait_for_workers(2, timeout=240)


def _materialize_command(paths: StudyPaths, key: str, epochs: int, lease_timeout_s: float | None = None,
                         regularization: str = "off") -> list[str]:
    config = {"ops": {"ptychi_reconstruction": {"config": {"epochs": epochs, "regularization": regularization}}}}
    if lease_timeout_s is not None:
        config["resources"] = {"study_compute": {"config": {"lease_timeout_s": lease_timeout_s}}}
    return [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "fly64_assets.definitions",
            "--select", "ptychi_reconstruction", "--partition", key, "--config-json", json.dumps(config)]


def _environment(paths: StudyPaths, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = study_environment(tmp_path, "5")
    env.update(FLY64_PHASE_C_ROOT=paths.phase_c_root, FLY64_PHASE_D_ROOT=paths.phase_d_root,
               FLY64_ARTIFACT_ROOT=paths.artifact_root, **extra)
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return env


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(f".*{PARTIAL_SUFFIX}"))


def test_a_killed_run_stops_its_tasks_on_a_shared_cluster_within_an_epoch_of_its_lease(shared, study, tmp_path):
    """The scheduler forgets a dead client's tasks at once, but a running task is not interrupted: the worker
    goes on until the task itself sees that the run's lease is no longer renewed."""
    key = "1000|baseline_train"
    folder = study.artifact_dir(Dataset.from_partition_key(key))
    env = _environment(study, tmp_path, **_shared_env(shared))
    with open(tmp_path / "materialize.log", "wb") as log:
        run = subprocess.Popen(_materialize_command(study, key, LONG_EPOCHS, lease_timeout_s=3), cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_epoch(folder, 3)
            run.kill()  # SIGKILL: the run cannot tell anybody
            killed = time.monotonic()
            run.wait()
            while _partials(folder):  # the task's log, written while it runs
                assert time.monotonic() - killed < 3 + 20, "the orphaned task still runs long after its lease expired"
                time.sleep(0.1)
        finally:
            if run.poll() is None:
                run.kill()
    print(f"the orphaned task stopped {time.monotonic() - killed:.1f} s after its run was killed (lease 3 s)")
    assert "its run is gone or was terminated" in (folder / "ptychi.log").read_text()  # its log says why, whole
    assert sorted(path.name for path in folder.iterdir()) == ["ptychi.log"]  # no reconstruction, nothing partial


def test_a_killed_runs_candidate_tasks_stop_within_an_epoch_of_its_lease(cluster, shared, study, tmp_path):
    """The candidates of an ``auto`` choice are tasks of their own, on other workers: they watch the run too."""
    _, client = cluster
    key = "1000|baseline_test"
    folder = study.artifact_dir(Dataset.from_partition_key(key))
    env = _environment(study, tmp_path, **_shared_env(shared))
    with open(tmp_path / "materialize.log", "wb") as log:
        run = subprocess.Popen(_materialize_command(study, key, CHOICE_EPOCHS, lease_timeout_s=3, regularization="auto"),
                               cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _busy_worker(client, "_candidate_task", timeout_s=300)  # a candidate task runs
            run.kill()
            killed = time.monotonic()
            run.wait()
            while any(tasks for tasks in client.processing().values()):
                assert time.monotonic() - killed < 3 + 20, f"tasks still run after the lease expired: {client.processing()}"
                time.sleep(0.1)
        finally:
            if run.poll() is None:
                run.kill()
    print(f"the killed run's candidate tasks stopped {time.monotonic() - killed:.1f} s after the kill (lease 3 s)")
    while _partials(folder):  # the partition's task writes its log whole as it stops
        assert time.monotonic() - killed < 3 + 30
        time.sleep(0.1)
    assert sorted(path.name for path in folder.iterdir()) == ["ptychi.log"]


def test_a_killed_run_with_its_own_cluster_leaves_no_worker_behind(study, tmp_path):
    key = "1000|baseline_test"
    env = _environment(study, tmp_path, **{DASK_WORKERS_ENV: "2"})
    with open(tmp_path / "materialize.log", "wb") as log:
        run = subprocess.Popen(_materialize_command(study, key, LONG_EPOCHS), cwd=REPO_ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_epoch(study.artifact_dir(Dataset.from_partition_key(key)), 2)
            workers = psutil.Process(run.pid).children(recursive=True)
            assert len([p for p in workers if "spawn_main" in " ".join(p.cmdline())]) == 2, [p.cmdline() for p in workers]
            run.kill()
            run.wait()
            gone, alive = psutil.wait_procs(workers, timeout=30)
        finally:
            if run.poll() is None:
                run.kill()
    assert alive == [], [process.cmdline() for process in alive]
    print(f"{len(gone)} worker process(es) of the killed run exited by themselves")
