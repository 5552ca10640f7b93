"""The study on a real dask cluster: executor choice, the GPU resource tag, the multi-node refusals, and a
small study on a scheduler with two worker processes (one declaring GPU=1) compared with a local run."""

import io
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    build_reconstructable_job,
    execute_job,
    in_process_executor,
    instance_for_test,
    multiprocess_executor,
)

from fly64_assets import launch
from fly64_assets.lib.progress import PlainProgress
from fly64_assets.cli import main
from fly64_assets.core.bookkeeping import plan_study
from fly64_assets.core.design import select_datasets
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.definitions import build_definitions
from fly64_assets.defs.jobs import RECONSTRUCT_JOB, SUMMARIZE_JOB
from fly64_assets.defs.resources import StudyPaths
from fly64_assets.lib.cluster_preflight import DaskSetupError, SHARED_ARTIFACT_ROOT_ENV, SHARED_INPUT_ROOTS_ENV, dask_setup_problems
from fly64_assets.lib.executor import DASK_CLUSTER_FILE_ENV, DASK_SCHEDULER_ENV, EXECUTOR_ENV, GPU_STEP_TAGS, study_executor
from fly64_assets_tests.support import free_port

EPOCHS = 20
REMOTE = {"existing": {"address": "tcp://10.20.30.40:8786"}}
ALL_ENV = (EXECUTOR_ENV, DASK_SCHEDULER_ENV, DASK_CLUSTER_FILE_ENV, SHARED_ARTIFACT_ROOT_ENV, SHARED_INPUT_ROOTS_ENV, "FLY64_PARTITIONS_PER_RUN")


@pytest.fixture
def clean_env(monkeypatch):
    for name in ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- choosing the executor is configuration --------------------------------------------------------------


def test_the_executor_is_chosen_by_fly64_executor_and_defaults_to_in_process(clean_env, tmp_path, study_paths):
    roots = study_paths.roots()
    assert study_executor(roots) is in_process_executor
    clean_env.setenv(EXECUTOR_ENV, "multiprocess")
    assert study_executor(roots) is multiprocess_executor

    clean_env.setenv(EXECUTOR_ENV, "dask")
    local = study_executor(roots)
    assert local.name == "dask"
    assert local.config_schema.config_type.fields["cluster"].default_value == {"local": {"n_workers": 1, "resources": {"GPU": 1}}}

    clean_env.setenv(DASK_SCHEDULER_ENV, "tcp://10.0.0.7:8786")
    existing = study_executor(roots)
    assert existing.config_schema.config_type.fields["cluster"].default_value == {"existing": {"address": "tcp://10.0.0.7:8786"}}

    cluster_file = tmp_path / "slurm.yaml"
    cluster_file.write_text("slurm:\n  queue: gpu\n  cores: 1\n  job_extra_directives: ['--gres=gpu:1']\n")
    clean_env.setenv(DASK_CLUSTER_FILE_ENV, str(cluster_file))
    with pytest.raises(ValueError, match="set one"):
        study_executor(roots)
    clean_env.delenv(DASK_SCHEDULER_ENV)
    slurm = study_executor(roots).config_schema.config_type.fields["cluster"].default_value
    assert slurm == {"slurm": {"queue": "gpu", "cores": 1, "job_extra_directives": ["--gres=gpu:1"]}}

    cluster_file.write_text("torque: {}\n")
    with pytest.raises(ValueError, match="expected exactly one of"):
        study_executor(roots)
    clean_env.setenv(EXECUTOR_ENV, "spark")
    with pytest.raises(ValueError, match=r"unknown executor 'spark' in FLY64_EXECUTOR"):
        study_executor(roots)


def test_only_the_reconstruction_step_asks_dask_for_a_gpu(study_paths):
    from dagster_dask.executor import (
        DASK_RESOURCE_REQUIREMENTS_KEY,
        get_dask_resource_requirements,
    )

    assert set(GPU_STEP_TAGS) == {DASK_RESOURCE_REQUIREMENTS_KEY}
    defs = build_definitions(study_paths)
    requirements = {}
    for job_name in (RECONSTRUCT_JOB, SUMMARIZE_JOB):
        job = defs.resolve_job_def(job_name)
        for node in job.graph.node_dict.values():
            requirements[node.name] = get_dask_resource_requirements(node.tags)
    assert requirements == {
        "ptychi_reconstruction": {"GPU": 1},  # reconstructs and scores each partition of the run
        "reconstruction_manifest": {},
        "skip_summary": {},
        "study_report": {},
    }


# --- refusing multi-node runs that cannot work -----------------------------------------------------------


def test_a_cluster_beyond_this_machine_needs_a_shared_instance_and_shared_roots(clean_env, study_paths, instance):
    on_this_machine = [{"local": {}}, {"existing": {"address": "tcp://127.0.0.1:8786"}}, {"existing": {"address": "localhost:8786"}}]
    for cluster in on_this_machine:
        assert dask_setup_problems(instance, cluster, study_paths.roots()) == []

    for cluster in (REMOTE, {"slurm": {"queue": "gpu"}}, {"pbs": {}}):
        problems = dask_setup_problems(instance, cluster, study_paths.roots(), mounts_text="rootfs / ext4 rw 0 0\n")
        assert len(problems) == 4, problems
        instance_problem, artifact_problem, phase_c_problem, phase_d_problem = problems
        assert "local-only" in instance_problem and "SqliteRunStorage" in instance_problem and "dagster-postgres" in instance_problem
        assert study_paths.artifact_root in artifact_problem and "ext4" in artifact_problem
        assert SHARED_ARTIFACT_ROOT_ENV in artifact_problem
        assert study_paths.phase_c_root in phase_c_problem and study_paths.phase_d_root in phase_d_problem
        assert SHARED_INPUT_ROOTS_ENV in phase_c_problem

    # Roots on a network filesystem pass; so do roots declared shared.
    shared_mounts = f"rootfs / ext4 rw 0 0\nserver:/export {Path(study_paths.artifact_root).parent} nfs4 rw 0 0\n"
    assert len(dask_setup_problems(instance, REMOTE, study_paths.roots(), mounts_text=shared_mounts)) == 1
    clean_env.setenv(SHARED_ARTIFACT_ROOT_ENV, "1")
    clean_env.setenv(SHARED_INPUT_ROOTS_ENV, "1")
    (only,) = dask_setup_problems(instance, REMOTE, study_paths.roots(), mounts_text="rootfs / ext4 rw 0 0\n")
    assert "local-only" in only

    class PostgresRunStorage: ...

    class PostgresEventLogStorage: ...

    shared_instance = SimpleNamespace(run_storage=PostgresRunStorage(), event_log_storage=PostgresEventLogStorage())
    assert dask_setup_problems(shared_instance, REMOTE, study_paths.roots()) == []


def test_a_dask_run_with_a_local_instance_on_a_remote_scheduler_is_refused_before_it_starts(
    clean_env, study_paths, tmp_path, capsys
):
    clean_env.setenv(EXECUTOR_ENV, "dask")
    clean_env.setenv(DASK_SCHEDULER_ENV, REMOTE["existing"]["address"])
    clean_env.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    roots = ["--phase-c-root", study_paths.phase_c_root, "--phase-d-root", study_paths.phase_d_root,
             "--artifact-root", study_paths.artifact_root]
    assert main(["run", *roots, "--allow-missing-phase-d", "--epochs", "1"]) == 2
    error = capsys.readouterr().err
    assert "the Dagster instance is local-only" in error and "artifact root" in error

    # The executor itself refuses too (runs launched from the UI or `dagster asset materialize`): the run
    # fails before any step reaches a worker.
    (tmp_path / "other_home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "other_home")) as local_instance:
        job = build_reconstructable_job(launch.__name__, "study_job", reconstructable_kwargs={
            "job_name": RECONSTRUCT_JOB, "phase_c_root": study_paths.phase_c_root,
            "phase_d_root": study_paths.phase_d_root, "artifact_root": study_paths.artifact_root,
        })
        with pytest.raises(DaskSetupError, match="local-only"):
            execute_job(job, local_instance, tags={"dagster/partition": "1000|dense_train"})
        assert local_instance.get_materialized_partitions(AssetKey("ptychi_reconstruction")) == set()


# --- a real scheduler and two worker processes -----------------------------------------------------------


@contextmanager
def _dask_cluster(log_dir: Path):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, started as docs/CLUSTER.md starts
    them: one worker pinned to GPU 0 declaring GPU=1, one CPU-only. Yields a function that connects a client
    once the workers are up (they start while the caller does other work) and returns (client, {worker
    name: worker address})."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    processes, clients = [], []

    def start(name: str, arguments: list[str], **env) -> None:
        with open(log_dir / f"{name}.log", "w") as log:
            command = [sys.executable, "-m", *arguments]
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}))

    def connect():
        client = Client(address, timeout=120)
        clients.append(client)
        client.wait_for_workers(2, timeout=180)
        return client, {info["name"]: worker for worker, info in client.scheduler_info()["workers"].items()}

    worker = [
        "distributed.cli.dask_worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
        "--death-timeout", "120", "--local-directory", str(log_dir),
    ]
    try:
        start("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"])
        start("gpu-0", [*worker, "--name", "gpu-0", "--resources", "GPU=1"], CUDA_VISIBLE_DEVICES="0")
        start("cpu-0", [*worker, "--name", "cpu-0"], CUDA_VISIBLE_DEVICES="")
        yield connect
    finally:
        for client in clients:
            client.close()
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _comparable(manifest: dict, artifact_root: str) -> dict:
    """The manifest without its timestamp, artifact-root prefixes and timings; losses rounded."""

    def strip(value):
        if isinstance(value, str):
            return value.replace(artifact_root, "<artifacts>")
        return value

    results = []
    for record in manifest["execution_results"]:
        kept = {key: strip(value) for key, value in record.items() if key not in ("wall_time_s", "final_loss")}
        kept["final_loss"] = None if record["final_loss"] is None else float(f"{record['final_loss']:.3g}")
        results.append(kept)
    return {**{k: v for k, v in manifest.items() if k != "timestamp"}, "execution_results": results}


def test_a_small_study_on_a_real_dask_cluster_runs_every_reconstruction_on_the_gpu_worker(study_tree, tmp_path, clean_env):
    from distributed import get_task_stream

    started = time.perf_counter()
    filters = {"dose": [1000], "view": ["dense", "sparse"], "split": ["train", "test"]}
    roots = {"phase_c_root": str(study_tree / "phase_c"), "phase_d_root": str(study_tree / "phase_d")}
    dask_paths = StudyPaths(**roots, artifact_root=str(tmp_path / "dask_artifacts"))
    local_paths = StudyPaths(**roots, artifact_root=str(tmp_path / "local_artifacts"))
    plan = plan_study(select_datasets(filters["dose"], filters["view"], filters["split"]), dask_paths.input_path, filters)
    assert [dataset.partition_key for dataset in plan.runnable] == ["1000|dense_train", "1000|dense_test"]
    assert sorted(dataset.partition_key for dataset in plan.missing) == ["1000|sparse_test", "1000|sparse_train"]
    for folder in ("dask_home", "local_home", "logs"):
        (tmp_path / folder).mkdir()
    options = ReconstructionOptions(epochs=EPOCHS)

    log = io.StringIO()
    with _dask_cluster(tmp_path / "logs") as connect:
        # The local reference: the same study, executed in this process, while the workers start.
        with instance_for_test(temp_dir=str(tmp_path / "local_home")) as local_instance:
            launch.reconstruct(local_paths, plan.selected, options, local_instance)
            local = launch.summarize(local_paths, plan.filters, local_instance)

        client, workers = connect()
        assert set(workers) == {"gpu-0", "cpu-0"}
        worker_pids = client.run(os.getpid)
        clean_env.setenv(EXECUTOR_ENV, "dask")  # what a deployment sets; read when the definitions are built
        clean_env.setenv(DASK_SCHEDULER_ENV, client.scheduler.address)
        with instance_for_test(temp_dir=str(tmp_path / "dask_home")) as instance:
            with get_task_stream(client) as stream:
                launch.reconstruct(dask_paths, plan.selected, options, instance, PlainProgress(log))
                outputs = launch.summarize(dask_paths, plan.filters, instance)
            dask_seconds = time.perf_counter() - started

            runs = instance.get_runs()
            (reconstruct_run,) = [run for run in runs if run.job_name == RECONSTRUCT_JOB]  # the 4 keys are one range
            assert all(run.is_success for run in runs), log.getvalue()
            # the steps ran on the workers: each partition is reported when the run ends
            assert "[4/4] 1000|sparse_test: skipped (input missing)" in log.getvalue()
            assert "1000|dense_train: reconstructed" in log.getvalue()
            assert [run.job_name for run in runs if run.job_name != RECONSTRUCT_JOB] == [SUMMARIZE_JOB]

            # Every partition materialized, as a reconstruction or as a recorded skip, with its own metadata.
            statuses = {
                entry.asset_materialization.partition: entry.asset_materialization.metadata["status"].value
                for entry in instance.all_logs(reconstruct_run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
                if entry.asset_materialization.asset_key == AssetKey("ptychi_reconstruction")
            }
            assert statuses == {
                "1000|dense_train": "succeeded",
                "1000|dense_test": "succeeded",
                "1000|sparse_train": "skipped",
                "1000|sparse_test": "skipped",
            }

            # The reconstruction step ran on the GPU worker: the scheduler's task stream (the task key carries
            # the run id, so concurrent runs of one job never share a task) and the process that emitted the
            # step's STEP_START event both say so.
            placed = {task["key"]: task["worker"] for task in stream.data}
            assert placed[f"{RECONSTRUCT_JOB}.ptychi_reconstruction-{reconstruct_run.run_id}"] == workers["gpu-0"]
            (step_start,) = [
                entry.dagster_event
                for entry in instance.all_logs(reconstruct_run.run_id, of_type=DagsterEventType.STEP_START)
                if entry.step_key == "ptychi_reconstruction"
            ]
            assert step_start.pid == worker_pids[workers["gpu-0"]]
            # ...and the summary steps (manifest, skip summary, report) ran as dask tasks too.
            assert len(placed) == 1 + 3 and set(placed.values()) <= set(workers.values())

    # The manifest and the skip summary match the local run's (paths relative to each artifact root).
    assert _comparable(outputs["reconstruction_manifest"], dask_paths.artifact_root) == _comparable(
        local["reconstruction_manifest"], local_paths.artifact_root
    )
    assert [r["status"] for r in outputs["reconstruction_manifest"]["execution_results"]] == ["succeeded", "succeeded"]
    dask_summary, local_summary = outputs["skip_summary"], local["skip_summary"]
    assert {k: v for k, v in dask_summary.items() if k != "timestamp"} == {k: v for k, v in local_summary.items() if k != "timestamp"}
    assert (Path(dask_paths.artifact_root) / "dose_1000/dense/train/ptychi_reconstruction.npz").is_file()
    print(f"local run and dask study {dask_seconds:.1f} s, all {time.perf_counter() - started:.1f} s")


def test_the_backfill_policy_follows_the_executor_unless_set(clean_env):
    from dagster import BackfillPolicy

    from fly64_assets.lib.executor import PARTITIONS_PER_RUN_ENV, reconstruction_backfill_policy

    assert reconstruction_backfill_policy() == BackfillPolicy.single_run()  # in process: torch once per run
    clean_env.setenv(EXECUTOR_ENV, "dask")
    assert reconstruction_backfill_policy() == BackfillPolicy.multi_run(1)  # warm workers: a run per partition
    clean_env.setenv(PARTITIONS_PER_RUN_ENV, "6")
    assert reconstruction_backfill_policy() == BackfillPolicy.multi_run(6)
    clean_env.setenv(PARTITIONS_PER_RUN_ENV, "all")
    assert reconstruction_backfill_policy() == BackfillPolicy.single_run()
    clean_env.setenv(PARTITIONS_PER_RUN_ENV, "0")
    with pytest.raises(ValueError, match="FLY64_PARTITIONS_PER_RUN"):
        reconstruction_backfill_policy()
