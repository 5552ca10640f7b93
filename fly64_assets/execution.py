"""Running the study through Dagster from a script: the same jobs, the same instance as the UI."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

from dagster import AssetKey, DagsterInstance

from fly64_assets.bookkeeping import StudyPlan
from fly64_assets.definitions import (
    CHECK_PHASE_C_JOB,
    CHECK_PHASE_D_JOB,
    RECONSTRUCT_JOB,
    REPORT_JOB,
    SCORE_JOB,
    SUMMARIZE_JOB,
    build_definitions,
)
from fly64_assets.resources import StudyPaths
from fly64_assets.study import PHASE_C_PARTITIONS, PHASE_D_PARTITIONS, Job

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
"""Keep Dagster's per-event console lines out of the command's output; the UI has them all."""


def _failure_message(result) -> str:
    failures = [event.step_failure_data.error for event in result.get_step_failure_events()]
    messages = [error.message.strip() for error in failures if error is not None]
    return messages[0] if messages else "the run failed"


def record_input_checks(paths: StudyPaths, instance: DagsterInstance) -> dict[str, int]:
    """Run the DATA-001 source checks for every input partition, so the UI shows each file's result.

    A check-only run of a partitioned check takes its partition from tags (Dagster 1.13 refuses
    ``partition_key`` there). Returns how many files were ok, invalid and missing.
    """
    defs = build_definitions(paths)
    counts = {"ok": 0, "invalid": 0, "missing": 0}
    for job_name, partitions in ((CHECK_PHASE_C_JOB, PHASE_C_PARTITIONS), (CHECK_PHASE_D_JOB, PHASE_D_PARTITIONS)):
        job = defs.resolve_job_def(job_name)
        for key in partitions.get_partition_keys():
            result = job.execute_in_process(
                tags=partitions.get_tags_for_partition_key(key), instance=instance, run_config=QUIET
            )
            for evaluation in result.get_asset_check_evaluations():
                counts[evaluation.metadata["status"].value] += 1
    return counts


def reconstruct_partitions(
    paths: StudyPaths,
    jobs: list[Job],
    reconstruction_config: dict,
    progress: Callable[[str], None] = print,
    instance: DagsterInstance | None = None,
) -> None:
    """Reconstruct and score the given partitions one after another, a Dagster run each, in this process
    (the code location, torch and the CUDA context are loaded once for all of them)."""
    instance = instance or DagsterInstance.get()
    reconstruct = build_definitions(paths).resolve_job_def(RECONSTRUCT_JOB)
    run_config = {**QUIET, "ops": {"ptychi_reconstruction": {"config": reconstruction_config}}}
    for job in jobs:
        started = time.perf_counter()
        result = reconstruct.execute_in_process(
            partition_key=job.partition_key, instance=instance, run_config=run_config, raise_on_error=False
        )
        if not paths.input_path(job).exists():
            outcome = "skipped (input missing)"
        elif result.success:
            outcome = "reconstructed"
        else:
            outcome = f"FAILED: {_failure_message(result)}"
        progress(f"{job.partition_key}: {outcome} in {time.perf_counter() - started:.1f} s")


def share_out(jobs: list[Job], paths: StudyPaths, workers: int) -> list[list[Job]]:
    """Split the jobs over the workers, largest input first to the least-loaded worker (input size
    stands in for reconstruction time, which grows with the number of patterns)."""
    def size(job: Job) -> int:
        path = paths.input_path(job)
        return path.stat().st_size if path.is_file() else 0

    shares: list[list[Job]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for job in sorted(jobs, key=size, reverse=True):
        lightest = loads.index(min(loads))
        shares[lightest].append(job)
        loads[lightest] += size(job)
    return [share for share in shares if share]


def _reconstruct_in_workers(
    paths: StudyPaths, jobs: list[Job], reconstruction_config: dict, workers: int, progress: Callable[[str], None]
) -> None:
    """Run the shares in parallel worker processes of ``fly64 run-partitions`` and relay their progress.

    Each worker pays Python/torch/CUDA start-up once and then reconstructs its share back to back; on a
    GPU machine each step leases a GPU slot, so the workers pack the GPUs.
    """
    roots = ["--phase-c-root", paths.phase_c_root, "--phase-d-root", paths.phase_d_root, "--artifact-root", paths.artifact_root]
    options = [f"--{name.replace('_', '-')}={value}" for name, value in reconstruction_config.items()]
    processes = []
    for share in share_out(jobs, paths, workers):
        keys = [argument for job in share for argument in ("--partition", job.partition_key)]
        command = [sys.executable, "-m", "fly64_assets.cli", "run-partitions", *roots, *options, *keys]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    def relay(worker: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            progress(f"worker {worker}: {line.rstrip()}")

    relays = [threading.Thread(target=relay, args=(n, p)) for n, p in enumerate(processes, start=1)]
    for thread in relays:
        thread.start()
    for thread, process in zip(relays, processes):
        thread.join()
        process.wait()


def run_study(
    paths: StudyPaths,
    plan: StudyPlan,
    reconstruction_config: dict,
    progress: Callable[[str], None] = print,
    instance: DagsterInstance | None = None,
    workers: int = 1,
) -> dict:
    """Check every input, reconstruct and score every selected partition (a Dagster run each, in this
    process or in ``workers`` parallel processes), then materialize the manifest, the skip summary and
    the report; returns those three values by asset name.

    Partitions whose input is missing run too: they finish at once as recorded skips, so the UI shows them.
    """
    instance = instance or DagsterInstance.get()
    counts = record_input_checks(paths, instance)
    progress(f"DATA-001 on the inputs: {counts['ok']} ok, {counts['invalid']} invalid, {counts['missing']} missing")
    if workers > 1:
        _reconstruct_in_workers(paths, plan.selected, reconstruction_config, workers, progress)
    else:
        reconstruct_partitions(paths, plan.selected, reconstruction_config, progress, instance)
    summary = build_definitions(paths).resolve_job_def(SUMMARIZE_JOB).execute_in_process(
        instance=instance, run_config={**QUIET, "ops": {"reconstruction_manifest": {"config": plan.filters}}}
    )
    return {name: summary.output_for_node(name) for name in ("reconstruction_manifest", "skip_summary", "study_report")}


def write_report(paths: StudyPaths, instance: DagsterInstance | None = None) -> dict:
    """Score every reconstructed partition again and write the study report; returns the report."""
    instance = instance or DagsterInstance.get()
    defs = build_definitions(paths)
    score = defs.resolve_job_def(SCORE_JOB)
    for key in sorted(instance.get_materialized_partitions(AssetKey("ptychi_reconstruction"))):
        score.execute_in_process(partition_key=key, instance=instance, run_config=QUIET)
    return defs.resolve_job_def(REPORT_JOB).execute_in_process(instance=instance, run_config=QUIET).output_for_node("study_report")
