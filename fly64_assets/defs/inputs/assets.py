"""The study's inputs as observable source assets: a content hash per present file as its data version."""

from dagster import DataVersion, DataVersionsByPartition, observable_source_asset

from fly64_assets.core.artifacts import file_sha256
from fly64_assets.core.design import dataset_for_source_key
from fly64_assets.defs.inputs.partitions import PHASE_C_PARTITIONS, PHASE_D_PARTITIONS
from fly64_assets.defs.resources import StudyPaths

INPUTS_GROUP = "inputs"


ABSENT = DataVersion("absent")
"""The data version of a file that does not exist (e.g. a sparse view Phase D did not write). Observing the
absence, rather than nothing, lets the automation record that partition's skip, and makes the file's
later appearance a new version that triggers its reconstruction."""


def observe_files(study_paths: StudyPaths, partition_keys: list[str]) -> DataVersionsByPartition:
    """A content hash per present file, so a changed input marks its reconstruction stale; ``ABSENT`` otherwise."""
    versions = {}
    for key in partition_keys:
        path = study_paths.input_path(dataset_for_source_key(key))
        versions[key] = DataVersion(file_sha256(path)) if path.is_file() else ABSENT
    return DataVersionsByPartition(versions)


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
