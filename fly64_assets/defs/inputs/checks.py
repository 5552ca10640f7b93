"""DATA-001 on every input file, one check result per partition (file): passed, WARN for a missing file
(an expected skip, not a violation), ERROR naming every violation (file, key, rule, what was found)."""

from pathlib import Path

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from fly64_assets.core.contract import Violation, check_file
from fly64_assets.core.design import dataset_for_source_key
from fly64_assets.defs.inputs.assets import phase_c_patched, phase_d_overlap
from fly64_assets.defs.inputs.partitions import PHASE_C_PARTITIONS, PHASE_D_PARTITIONS
from fly64_assets.defs.resources import StudyPaths

DATA001_CHECK = "data001"


def missing_check_metadata() -> dict:
    return {"status": "missing"}


def violations_check_metadata(path: Path, violations: list[Violation]) -> dict:
    return {
        "status": "invalid" if violations else "ok",
        "path": MetadataValue.path(str(path)),
        "violation_count": len(violations),
        "violations": MetadataValue.json([{"key": v.key, "rule": v.rule, "found": v.found} for v in violations]),
    }


def data001_result(path: Path) -> AssetCheckResult:
    if not path.exists():
        return AssetCheckResult(
            passed=False, severity=AssetCheckSeverity.WARN,
            description=f"missing (recorded as a skip, not a violation): {path}", metadata=missing_check_metadata(),
        )
    violations = check_file(path)
    return AssetCheckResult(
        passed=not violations,
        severity=AssetCheckSeverity.ERROR,
        description="\n".join(str(v) for v in violations) or f"DATA-001 satisfied: {path}",
        metadata=violations_check_metadata(path, violations),
    )


@asset_check(asset=phase_c_patched, name=DATA001_CHECK, partitions_def=PHASE_C_PARTITIONS,
             description="The Phase C file satisfies the DATA-001 NPZ contract.")
def phase_c_patched_data001(context: AssetCheckExecutionContext, study_paths: StudyPaths) -> AssetCheckResult:
    return data001_result(study_paths.input_path(dataset_for_source_key(context.partition_key)))


@asset_check(asset=phase_d_overlap, name=DATA001_CHECK, partitions_def=PHASE_D_PARTITIONS,
             description="The Phase D file satisfies the DATA-001 NPZ contract (a missing view is a skip).")
def phase_d_overlap_data001(context: AssetCheckExecutionContext, study_paths: StudyPaths) -> AssetCheckResult:
    return data001_result(study_paths.input_path(dataset_for_source_key(context.partition_key)))
