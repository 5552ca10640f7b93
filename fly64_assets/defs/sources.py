"""The study's inputs as observable source assets, each partition checked against DATA-001."""

import hashlib
from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    DataVersion,
    DataVersionsByPartition,
    MetadataValue,
    asset_check,
    observable_source_asset,
)

from fly64_assets.contract import Violation, check_file
from fly64_assets.resources import StudyPaths
from fly64_assets.study import PHASE_C_PARTITIONS, PHASE_D_PARTITIONS, job_for_source_partition

DATA001_CHECK = "data001"
INPUTS_GROUP = "inputs"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def observe_files(study_paths: StudyPaths, partition_keys: list[str]) -> DataVersionsByPartition:
    """A content hash per present file, so a changed input marks its reconstruction stale."""
    versions = {}
    for key in partition_keys:
        path = study_paths.input_path(job_for_source_partition(key))
        if path.is_file():
            versions[key] = DataVersion(file_sha256(path))
    return DataVersionsByPartition(versions)


def missing_result(description: str, check_name: str | None = None) -> AssetCheckResult:
    """A missing input is a skip, not a violation: WARN, with the reason."""
    return AssetCheckResult(
        check_name=check_name,
        passed=False,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={"status": "missing"},
    )


def violations_result(path: Path, violations: list[Violation], check_name: str | None = None) -> AssetCheckResult:
    """Passed for a valid file; ERROR naming every violation (file, key, rule, what was found) otherwise."""
    return AssetCheckResult(
        check_name=check_name,
        passed=not violations,
        severity=AssetCheckSeverity.ERROR,
        description="\n".join(str(v) for v in violations) or f"DATA-001 satisfied: {path}",
        metadata={
            "status": "invalid" if violations else "ok",
            "path": MetadataValue.path(str(path)),
            "violation_count": len(violations),
            "violations": MetadataValue.json([{"key": v.key, "rule": v.rule, "found": v.found} for v in violations]),
        },
    )


def data001_result(path: Path) -> AssetCheckResult:
    if not path.exists():
        return missing_result(f"missing (recorded as a skip, not a violation): {path}")
    return violations_result(path, check_file(path))


@observable_source_asset(
    partitions_def=PHASE_C_PARTITIONS,
    group_name=INPUTS_GROUP,
    description="Phase C patched NPZ files (baseline view, all positions), written by the upstream tools.",
)
def phase_c_patched(study_paths: StudyPaths) -> DataVersionsByPartition:
    return observe_files(study_paths, PHASE_C_PARTITIONS.get_partition_keys())


@observable_source_asset(
    partitions_def=PHASE_D_PARTITIONS,
    group_name=INPUTS_GROUP,
    description="Phase D overlap views (dense, sparse): Phase C thinned to a minimum spacing. "
    "A view with too few positions is not written at all.",
)
def phase_d_overlap(study_paths: StudyPaths) -> DataVersionsByPartition:
    return observe_files(study_paths, PHASE_D_PARTITIONS.get_partition_keys())


@asset_check(asset=phase_c_patched, name=DATA001_CHECK, partitions_def=PHASE_C_PARTITIONS,
             description="The Phase C file satisfies the DATA-001 NPZ contract.")
def phase_c_patched_data001(context: AssetCheckExecutionContext, study_paths: StudyPaths) -> AssetCheckResult:
    return data001_result(study_paths.input_path(job_for_source_partition(context.partition_key)))


@asset_check(asset=phase_d_overlap, name=DATA001_CHECK, partitions_def=PHASE_D_PARTITIONS,
             description="The Phase D file satisfies the DATA-001 NPZ contract (a missing view is a skip).")
def phase_d_overlap_data001(context: AssetCheckExecutionContext, study_paths: StudyPaths) -> AssetCheckResult:
    return data001_result(study_paths.input_path(job_for_source_partition(context.partition_key)))
