"""Running the study's jobs from a script (the ``fly64`` command, the bench, tests), through Dagster's public
API only: ``execute_in_process``. Every run lands in the instance the UI shows (``$DAGSTER_HOME``).

The selected partitions run as few *range* runs as cover them (the whole study: one run); the reconstruction
step sends them where the ``study_compute`` resource says (warm dask workers, or this process); then one run
writes the manifest, the skip summary and the report. Nothing here starts a process, a thread or a pool.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from dagster import DagsterInstance, PartitionKeyRange

from fly64_assets.core.bookkeeping import StudyPlan
from fly64_assets.core.design import Dataset
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.definitions import build_definitions
from fly64_assets.defs.jobs import (
    OBSERVATION_JOBS,
    RECONSTRUCT_JOB,
    REPORT_JOB,
    SCORE_JOB,
    SUMMARIZE_JOB,
    observation_tags,
)
from fly64_assets.defs.reconstruction.assets import RECONSTRUCTION
from fly64_assets.defs.compute import StudyCompute
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS, covering_ranges, range_tags
from fly64_assets.defs.resources import StudyPaths
from fly64_assets.lib.progress import StudyProgress, reporting_to

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
"""Keep Dagster's per-event console lines, tracebacks included, out of the command's output: the command prints
one line per partition (and per failed run) itself; the run's event log (the UI) and each partition's own log
keep every detail."""

SUMMARY_ASSETS = ("reconstruction_manifest", "skip_summary", "study_report")


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    error: str | None
    values: dict = field(default_factory=dict)
    """The requested steps' output values, by step name (after a success)."""
    failed_partitions: list[str] = field(default_factory=list)
    """The partitions the reconstruction step reported failed (each already reported on its own line)."""


def failed_partitions(result) -> list[str]:
    """The partition keys a failed reconstruction step names in its failure's ``failed_partitions`` metadata."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data is not None:
            listed = event.step_failure_data.user_failure_data.metadata.get("failed_partitions")
            if listed is not None:
                return list(listed.value)
    return []


def failure_message(result) -> str | None:
    """The step failures' descriptions (they name the failed partitions), else the run failure's message."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            data = event.step_failure_data
            described = data.user_failure_data.description if data.user_failure_data else None
            error = data.error.cause or data.error  # an unexpected exception: Dagster's wrapper names only the step
            messages.append((described or error.message).strip())
    if not messages:
        messages = [event.message for event in result.all_events if event.is_run_failure and event.message]
    return "\n".join(messages) or None


def execute(
    paths: StudyPaths,
    job_name: str,
    instance: DagsterInstance,
    run_config: dict | None = None,
    tags: dict | None = None,
    outputs: tuple[str, ...] = (),
    progress: StudyProgress | None = None,
    compute: StudyCompute | None = None,
) -> RunOutcome:
    """One run of a study job in ``instance``; ``outputs`` names the steps whose values to return. ``progress``
    gets the reconstruction step's live reports; ``compute`` (default: from the environment) is where it sends
    its partitions."""
    run_config = {**QUIET, **(run_config or {})}
    job = build_definitions(paths, compute).resolve_job_def(job_name)
    with reporting_to(progress or StudyProgress()):
        result = job.execute_in_process(instance=instance, run_config=run_config, tags=tags, raise_on_error=False)
    if not result.success:
        return RunOutcome(result.run_id, False, failure_message(result), failed_partitions=failed_partitions(result))
    return RunOutcome(result.run_id, True, None, {name: result.output_for_node(name) for name in outputs})


def partition_tags(start: str, end: str) -> dict[str, str]:
    """A single partition's tags (as the UI's Materialize sets them), or a range's."""
    if start == end:
        return dict(STUDY_PARTITIONS.get_tags_for_partition_key(start))
    return range_tags(start, end)


def observe_inputs(paths: StudyPaths, instance: DagsterInstance) -> None:
    """Observe both sources, so the UI shows each input file's data version (its content hash) and the
    automation sees a changed file as changed, whoever ran the study."""
    defs = build_definitions(paths)
    for job_name in OBSERVATION_JOBS:
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, tags=observation_tags(job_name), run_config=QUIET
        )
        if not result.success:
            raise RuntimeError(f"observing the inputs failed: {failure_message(result)}")


def reconstruct(
    paths: StudyPaths,
    datasets: Iterable[Dataset],
    options: ReconstructionOptions,
    instance: DagsterInstance,
    progress: StudyProgress | None = None,
    compute: StudyCompute | None = None,
) -> list[RunOutcome]:
    """Reconstruct and score ``datasets``: one run per covering range, its partitions on ``compute`` (default:
    from the environment). Each partition's outcome is reported to ``progress`` as it finishes."""
    progress = progress or StudyProgress()
    datasets = sorted(datasets)
    progress.study_started(len(datasets))
    # The command's run is alone on its machine: on a CPU every core goes to its reconstructions (the default study,
    # standard scale: 144 s with one thread of two, measured; less with both).
    config = {"ops": {"ptychi_reconstruction": {"config": {**options.as_dict(), "share_cores": False}}}}
    outcomes = []
    for start, end in covering_ranges(datasets):
        started = time.perf_counter()
        outcome = execute(paths, RECONSTRUCT_JOB, instance, config, partition_tags(start, end), progress=progress, compute=compute)
        outcomes.append(outcome)
        keys = STUDY_PARTITIONS.get_partition_keys_in_range(PartitionKeyRange(start, end))
        progress.message(f"run {outcome.run_id[:8]} ({start} ... {end}): {len(keys)} partition(s) in {time.perf_counter() - started:.1f} s")
        if outcome.failed_partitions:  # each one's reason is on its own line already; the traceback is in its log
            progress.message(f"{len(outcome.failed_partitions)} partition(s) failed: each one's whole log is its "
                             f"ptychi.log under the artifact root, and the run's event log is in the UI (run {outcome.run_id})")
        elif outcome.error:
            progress.message(outcome.error)
    return outcomes


def summarize(paths: StudyPaths, filters: dict, instance: DagsterInstance) -> dict:
    """Materialize the manifest, the skip summary and the report; returns their values by asset name."""
    run_config = {"ops": {"reconstruction_manifest": {"config": filters}}}
    outcome = execute(paths, SUMMARIZE_JOB, instance, run_config, outputs=SUMMARY_ASSETS)
    if not outcome.success:
        raise RuntimeError(f"the summaries failed: {outcome.error}")
    return outcome.values


def run_study(
    paths: StudyPaths,
    plan: StudyPlan,
    options: ReconstructionOptions,
    instance: DagsterInstance,
    progress: StudyProgress | None = None,
    compute: StudyCompute | None = None,
) -> dict:
    """The inputs' observation (one run per source: each file's content hash as its data version), the selected
    partitions (skips included: they are recorded, so the UI shows them; each one's DATA-001 check is recorded
    inside its run, as ``input_data001``), then the summaries; returns the manifest, skip summary and report
    values by asset name."""
    progress = progress or StudyProgress()
    observe_inputs(paths, instance)
    reconstruct(paths, plan.selected, options, instance, progress, compute)
    return summarize(paths, plan.filters, instance)


def rescore(paths: StudyPaths, instance: DagsterInstance, progress: StudyProgress | None = None) -> dict:
    """Score every reconstructed partition again and rewrite the report; returns the report's value."""
    progress = progress or StudyProgress()
    materialized = instance.get_materialized_partitions(RECONSTRUCTION)
    datasets = [Dataset.from_partition_key(key) for key in materialized]
    for start, end in covering_ranges(datasets):
        outcome = execute(paths, SCORE_JOB, instance, tags=partition_tags(start, end))
        progress.message(f"scored {start} ... {end}: {'ok' if outcome.success else outcome.error}")
    outcome = execute(paths, REPORT_JOB, instance, outputs=("study_report",))
    if not outcome.success:
        raise RuntimeError(f"the report failed: {outcome.error}")
    return outcome.values["study_report"]
