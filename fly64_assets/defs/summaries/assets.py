"""Study-wide bookkeeping over all 18 partitions: the reconstruction manifest and the skip summary."""

from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetPartitionStatus,
    MetadataValue,
    Output,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from fly64_assets.core.artifacts import write_json
from fly64_assets.core.bookkeeping import RECONSTRUCTION_RECORD, FAILED, build_manifest, build_skip_summary, plan_study, read_record
from fly64_assets.core.design import Dataset, select_datasets
from fly64_assets.core.provenance import describe
from fly64_assets.defs.automation import react_to_inputs
from fly64_assets.defs.reconstruction.assets import RECONSTRUCTION
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets.defs.resources import StudyPaths
from fly64_assets.defs.summaries.config import StudyFilter

MANIFEST_FILE = "reconstruction_manifest.json"
SKIP_SUMMARY_FILE = "skip_summary.json"
SUMMARIES_GROUP = "summaries"


def records_table(records: list[dict], columns: list[str]) -> MetadataValue:
    """A UI table of the given columns (values shown as plain text, numbers or booleans)."""

    def cell(value):
        return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)

    return MetadataValue.table(
        records=[TableRecord({column: cell(record.get(column)) for column in columns}) for record in records],
        schema=TableSchema(columns=[TableColumn(column) for column in columns]),
    )


def written(path: Path, value: dict, **metadata) -> Output[dict]:
    """Write ``value`` as JSON at ``path``; the asset's output, showing the path and ``metadata`` in the UI."""
    write_json(path, value)
    return Output(value, metadata={"path": MetadataValue.path(str(path)), **metadata})


def latest_failures(context: AssetExecutionContext, datasets: list[Dataset]) -> set[Dataset]:
    """Datasets whose latest reconstruction attempt failed (the instance knows; the records on disk do not)."""
    statuses = context.instance.get_status_by_partition(
        RECONSTRUCTION, [dataset.partition_key for dataset in datasets], STUDY_PARTITIONS
    )
    return {Dataset.from_partition_key(key) for key, status in (statuses or {}).items() if status == AssetPartitionStatus.FAILED}


@asset(
    deps=[RECONSTRUCTION],
    group_name=SUMMARIES_GROUP,
    automation_condition=react_to_inputs(),
    description="reconstruction_manifest.json: planned jobs, each execution's result, and the missing inputs.",
)
def reconstruction_manifest(
    context: AssetExecutionContext, config: StudyFilter, study_paths: StudyPaths
) -> Output[dict]:
    plan = plan_study(select_datasets(config.dose, config.view, config.split), study_paths.input_path, config.as_dict())
    outcomes = {}
    for dataset in plan.runnable:
        record = read_record(study_paths.artifact_dir(dataset), RECONSTRUCTION_RECORD)
        if record is not None:
            outcomes[dataset] = record
    for dataset in latest_failures(context, plan.runnable):
        outcomes[dataset] = {"status": FAILED, "error": "the latest run of this partition failed: see its log_path"}
    manifest = build_manifest(plan, outcomes, study_paths.input_path, study_paths.artifact_root, run_id=context.run.run_id)
    results = manifest["execution_results"]
    return written(
        study_paths.artifact_file(MANIFEST_FILE),
        manifest,
        total_jobs=manifest["total_jobs"],
        filtered_jobs=manifest["filtered_jobs"],
        succeeded=sum(1 for r in results if r["status"] == "succeeded"),
        failed_or_not_run=sum(1 for r in results if r["status"] != "succeeded"),
        missing=len(manifest["missing_jobs"]),
        **{"made by": describe(manifest["provenance"])},
        execution_results=records_table(
            results,
            ["dose", "view", "split", "status", "n_patterns", "wall_time_s", "device", "final_loss", "acceptance_rate", "n_accepted"],
        ),
        missing_jobs=records_table(manifest["missing_jobs"], ["dose", "view", "split", "reason"]),
    )


@asset(
    group_name=SUMMARIES_GROUP,
    automation_condition=react_to_inputs(),
    description="skip_summary.json: every job not reconstructed by design, with its reason.")
def skip_summary(study_paths: StudyPaths, reconstruction_manifest: dict) -> Output[dict]:
    summary = build_skip_summary(reconstruction_manifest)
    return written(
        study_paths.artifact_file(SKIP_SUMMARY_FILE),
        summary,
        skipped_count=summary["skipped_count"],
        missing_phase_d_count=summary["missing_phase_d_count"],
        skipped_jobs=records_table(summary["skipped_jobs"], ["dose", "view", "split", "reason"]),
    )
