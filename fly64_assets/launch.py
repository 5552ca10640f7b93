"""Running the study's jobs from a script (the ``fly64`` command, the bench, tests), through Dagster's public
API only: ``execute_in_process``. Every run lands in the instance the UI shows (``$DAGSTER_HOME``).

The selected partitions run as few *range* runs as cover them (the whole study: one run); the reconstruction
step sends them where the ``study_compute`` resource says (warm dask workers, or this process); then one run
writes the manifest and the skip summary, and one the report. Nothing here starts a process, a thread or a pool.

Ctrl-C (``lib/interrupts.py``) stops the run executing and no other starts: each stage raises ``Stopped``, saying
where the study stopped and what of it is whole.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dagster import AssetKey, DagsterInstance, PartitionKeyRange

from fly64_assets.core.bookkeeping import StudyPlan
from fly64_assets.core.design import Dataset
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.partition import RECONSTRUCTION_FILE
from fly64_assets.core.repeat import Comparison, RepeatPlan, compare
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
from fly64_assets.lib.interrupts import Stopped, ctrl_c_pressed
from fly64_assets.lib.progress import StudyProgress, reporting_to

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
"""Keep Dagster's per-event console lines, tracebacks included, out of the command's output: the command prints
one line per partition (and per failed run) itself; the run's event log (the UI) and each partition's own log
keep every detail."""

SUMMARY_ASSETS = ("reconstruction_manifest", "skip_summary")
REPORT_ASSET = "study_report"
NOT_SUMMARIZED = "no manifest, skip summary or report was written (earlier ones stay as they were)"


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    error: str | None
    values: dict = field(default_factory=dict)
    """The requested steps' output values, by step name (after a success)."""
    failed_partitions: list[str] = field(default_factory=list)
    """The partitions the reconstruction step reported failed (each already reported on its own line)."""


class RunInterrupted(Exception):
    """Ctrl-C stopped run ``run_id`` (or came right after it); ``recorded``: the partitions whose reconstruction (or
    skip) it recorded before that."""

    def __init__(self, run_id: str, recorded: list[str]) -> None:
        super().__init__(f"run {run_id} interrupted")
        self.run_id, self.recorded = run_id, recorded


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
    asset_selection: list[AssetKey] | None = None,
) -> RunOutcome:
    """One run of a study job in ``instance``; ``outputs`` names the steps whose values to return. ``progress``
    gets the reconstruction step's live reports; ``compute`` (default: from the environment) is where it sends
    its partitions; ``asset_selection``, the job's assets to run (default: all). Raises ``RunInterrupted`` when
    Ctrl-C was pressed during the run."""
    run_config = {**QUIET, **(run_config or {})}
    job = build_definitions(paths, compute).resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    try:
        with reporting_to(progress or StudyProgress()):
            result = job.execute_in_process(instance=instance, run_config=run_config, tags=tags, raise_on_error=False,
                                            run_id=run_id, asset_selection=asset_selection)
    except KeyboardInterrupt:  # Ctrl-C before Dagster's handler was in place, or after: the run may be left open
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            instance.report_run_canceled(run, "stopped by Ctrl-C")
        raise RunInterrupted(run_id, []) from None
    if ctrl_c_pressed():  # Dagster's handler stopped the step executing (the run failed), or dropped a late press
        raise RunInterrupted(run_id, [event.partition for event in result.get_asset_materialization_events()
                                         if event.asset_key == RECONSTRUCTION])
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
    for job_name in OBSERVATION_JOBS:
        outcome = execute(paths, job_name, instance, tags=observation_tags(job_name))
        if not outcome.success:
            raise RuntimeError(f"observing the inputs failed: {outcome.error}")


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
    outcomes, finished = [], 0
    try:
        for start, end in covering_ranges(datasets):
            started = time.perf_counter()
            keys = STUDY_PARTITIONS.get_partition_keys_in_range(PartitionKeyRange(start, end))
            outcome = execute(paths, RECONSTRUCT_JOB, instance, config, partition_tags(start, end), progress=progress, compute=compute)
            outcomes.append(outcome)
            finished += len(keys)
            progress.message(f"run {outcome.run_id[:8]} ({start} ... {end}): {len(keys)} partition(s) in {time.perf_counter() - started:.1f} s")
            if outcome.failed_partitions:  # each one's reason is on its own line already; the traceback is in its log
                progress.message(f"{len(outcome.failed_partitions)} partition(s) failed: each one's whole log is its "
                                 f"ptychi.log under the artifact root, and the run's event log is in the UI (run {outcome.run_id})")
            elif outcome.error:
                progress.message(outcome.error)
    except (RunInterrupted, KeyboardInterrupt) as error:
        if isinstance(error, RunInterrupted):
            finished += len(error.recorded)
        raise Stopped("during the reconstructions", f"{finished} of {len(datasets)} partition(s) finished, their files "
                      f"whole, the others not; {NOT_SUMMARIZED}") from None
    return outcomes


def summarize(paths: StudyPaths, filters: dict, instance: DagsterInstance, progress: StudyProgress | None = None) -> dict:
    """Materialize the manifest and the skip summary (one run), then the report (another, so that Ctrl-C during
    the report leaves the first two whole and consistent); returns their values by asset name."""
    progress = progress or StudyProgress()
    run_config = {"ops": {"reconstruction_manifest": {"config": filters}}}
    try:
        progress.message("writing the manifest and the skip summary")
        outcome = execute(paths, SUMMARIZE_JOB, instance, run_config, outputs=SUMMARY_ASSETS,
                          asset_selection=[AssetKey(name) for name in SUMMARY_ASSETS])
    except (RunInterrupted, KeyboardInterrupt):
        raise Stopped("during the summaries", f"the reconstructions finished, their files whole; {NOT_SUMMARIZED}") from None
    if not outcome.success:
        raise RuntimeError(f"the summaries failed: {outcome.error}")
    progress.message("writing the report")
    report = write_report(paths, instance, "the reconstructions, the manifest and the skip summary are whole")
    return {**outcome.values, REPORT_ASSET: report}


def write_report(paths: StudyPaths, instance: DagsterInstance, whole: str) -> dict:
    """Materialize the report (a run of its own); its value. Ctrl-C stops with ``whole``: what is whole before it."""
    try:
        outcome = execute(paths, REPORT_JOB, instance, outputs=(REPORT_ASSET,))
    except (RunInterrupted, KeyboardInterrupt):
        raise Stopped("during the report", f"{whole}; no report was written (an earlier one stays as it was)") from None
    if not outcome.success:
        raise RuntimeError(f"the report failed: {outcome.error}")
    return outcome.values[REPORT_ASSET]


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
    try:
        observe_inputs(paths, instance)
    except (RunInterrupted, KeyboardInterrupt):
        raise Stopped("while observing the inputs", "nothing was written") from None
    reconstruct(paths, plan.selected, options, instance, progress, compute)
    return summarize(paths, plan.filters, instance, progress)


def rescore(paths: StudyPaths, instance: DagsterInstance, progress: StudyProgress | None = None) -> dict:
    """Score every reconstructed partition again and rewrite the report; returns the report's value."""
    progress = progress or StudyProgress()
    materialized = instance.get_materialized_partitions(RECONSTRUCTION)
    datasets = [Dataset.from_partition_key(key) for key in materialized]
    try:
        for start, end in covering_ranges(datasets):
            outcome = execute(paths, SCORE_JOB, instance, tags=partition_tags(start, end))
            progress.message(f"scored {start} ... {end}: {'ok' if outcome.success else outcome.error}")
    except (RunInterrupted, KeyboardInterrupt):
        raise Stopped("during the scoring", "each partition's score is whole, old or new; no report was written "
                      "(an earlier one stays as it was)") from None
    return write_report(paths, instance, "the scores are whole")


REPEAT_INSTANCE = "dagster_home"
"""The repeat's own Dagster instance, inside its artifact root: the study's instance (and its UI) keeps showing the
original as the partition's newest materialization."""


def repeat(
    plan: RepeatPlan, artifact_root: Path, progress: StudyProgress | None = None, compute: StudyCompute | None = None
) -> tuple[RunOutcome, Comparison | None]:
    """Reconstruct ``plan``'s partition again through Dagster (its input, requested options, seed and CPU threads),
    into ``artifact_root``, in an instance of its own there; the comparison with the original after a success."""
    paths = StudyPaths(phase_c_root=str(plan.phase_c_root), phase_d_root=str(plan.phase_d_root), artifact_root=str(artifact_root))
    config = {"ops": {"ptychi_reconstruction": {"config": {**plan.options.as_dict(), "cpu_threads": plan.cpu_threads}}}}
    key = plan.dataset.partition_key
    home = Path(artifact_root) / REPEAT_INSTANCE
    home.mkdir(parents=True, exist_ok=True)
    try:
        with DagsterInstance.local_temp(tempdir=str(home)) as instance:
            outcome = execute(paths, RECONSTRUCT_JOB, instance, config, partition_tags(key, key), progress=progress,
                              compute=compute)
    except (RunInterrupted, KeyboardInterrupt):
        raise Stopped("during the repeat", f"the original is untouched; {artifact_root} holds no whole repeat") from None
    if not outcome.success:
        return outcome, None
    return outcome, compare(plan.original, paths.artifact_dir(plan.dataset) / RECONSTRUCTION_FILE, plan.device)
