"""The inputs as source assets: per-partition DATA-001 checks and content data versions, on a tree with broken files."""

import numpy as np
from dagster import AssetCheckSeverity, DataVersionsByPartition

from fly64_assets.definitions import build_definitions
from fly64_assets.defs.inputs.assets import ABSENT, observe_files
from fly64_assets.core.design import Dataset
from fly64_assets.defs.inputs.partitions import PHASE_C_PARTITIONS, PHASE_D_PARTITIONS


def _run_check(defs, job_name, partition_key, instance):
    partitions = PHASE_C_PARTITIONS if job_name == "check_phase_c_inputs" else PHASE_D_PARTITIONS
    tags = partitions.get_tags_for_partition_key(partition_key)
    result = defs.resolve_job_def(job_name).execute_in_process(tags=tags, instance=instance)
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_checks_pass_fail_and_skip_per_partition(study_paths, instance):
    float64_file = study_paths.input_path(Dataset(1000, "baseline", "train"))
    arrays = dict(np.load(float64_file, allow_pickle=False))
    arrays["diffraction"] = arrays["diffraction"].astype(np.float64)
    arrays["probeGuess"] = arrays["probeGuess"].astype(np.complex128)
    np.savez(float64_file, **arrays)
    study_paths.input_path(Dataset(10000, "dense", "test")).write_bytes(b"not a zip file")
    defs = build_definitions(study_paths)

    bad = _run_check(defs, "check_phase_c_inputs", "1000|train", instance)
    assert not bad.passed and bad.severity == AssetCheckSeverity.ERROR
    assert str(float64_file) in bad.description
    assert "diffraction" in bad.description and "probeGuess" in bad.description
    assert bad.metadata["violation_count"].value == 2

    good = _run_check(defs, "check_phase_c_inputs", "1000|test", instance)
    assert good.passed and good.metadata["status"].value == "ok"

    not_zip = _run_check(defs, "check_phase_d_inputs", "10000|dense_test", instance)
    assert not not_zip.passed and not_zip.severity == AssetCheckSeverity.ERROR and "<file>" in not_zip.description

    missing = _run_check(defs, "check_phase_d_inputs", "10000|sparse_test", instance)
    assert not missing.passed and missing.severity == AssetCheckSeverity.WARN
    assert missing.metadata["status"].value == "missing" and "skip" in missing.description


def test_data_versions_follow_file_content_and_mark_missing_files_absent(study_paths):
    before = observe_files(study_paths, PHASE_D_PARTITIONS.get_partition_keys())
    assert isinstance(before, DataVersionsByPartition)
    absent = {key for key, version in before.data_versions_by_partition.items() if version == ABSENT}
    assert absent == {f"{d}|sparse_{s}" for d in (1000, 10000, 100000) for s in ("train", "test")}
    assert len(before.data_versions_by_partition) == 12  # the dense files have their content hashes

    changed = study_paths.input_path(Dataset(1000, "baseline", "train"))
    versions = observe_files(study_paths, PHASE_C_PARTITIONS.get_partition_keys()).data_versions_by_partition
    arrays = dict(np.load(changed, allow_pickle=False))
    arrays["diffraction"] = arrays["diffraction"] * np.float32(1.01)
    np.savez(changed, **arrays)
    after = observe_files(study_paths, PHASE_C_PARTITIONS.get_partition_keys()).data_versions_by_partition
    assert after["1000|train"] != versions["1000|train"]
    assert all(after[key] == versions[key] for key in versions if key != "1000|train")
