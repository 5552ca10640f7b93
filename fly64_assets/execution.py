"""Running the study through Dagster from a script: the same jobs, the same instance as the UI."""

from __future__ import annotations

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
from fly64_assets.study import PHASE_C_PARTITIONS, PHASE_D_PARTITIONS

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


def run_study(
    paths: StudyPaths,
    plan: StudyPlan,
    reconstruction_config: dict,
    progress: Callable[[str], None] = print,
    instance: DagsterInstance | None = None,
) -> dict:
    """Check every input, reconstruct and score every selected partition (a run each, in this process), then
    materialize the manifest, the skip summary and the report; returns those three values by asset name.

    Partitions whose input is missing run too: they finish at once as recorded skips, so the UI shows them.
    """
    instance = instance or DagsterInstance.get()
    counts = record_input_checks(paths, instance)
    progress(f"DATA-001 on the inputs: {counts['ok']} ok, {counts['invalid']} invalid, {counts['missing']} missing")
    defs = build_definitions(paths)
    reconstruct = defs.resolve_job_def(RECONSTRUCT_JOB)
    run_config = {**QUIET, "ops": {"ptychi_reconstruction": {"config": reconstruction_config}}}
    for index, job in enumerate(plan.selected, start=1):
        started = time.perf_counter()
        result = reconstruct.execute_in_process(
            partition_key=job.partition_key, instance=instance, run_config=run_config, raise_on_error=False
        )
        if job in plan.missing:
            outcome = "skipped (input missing)"
        elif result.success:
            outcome = "reconstructed"
        else:
            outcome = f"FAILED: {_failure_message(result)}"
        progress(f"[{index}/{len(plan.selected)}] {job.partition_key}: {outcome} in {time.perf_counter() - started:.1f} s")
    summary = defs.resolve_job_def(SUMMARIZE_JOB).execute_in_process(
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
