"""The study design and the code location's shape, pinned: keys users type and scripts read."""

from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey

from fly64_assets.study import (
    ALL_JOBS,
    PHASE_C_PARTITIONS,
    PHASE_D_PARTITIONS,
    STUDY_PARTITIONS,
    Job,
    job_for_source_partition,
    select_jobs,
    spacing_threshold,
)

EXPECTED_KEYS = [
    f"{dose}|{view}_{split}"
    for dose in (1000, 10000, 100000)
    for view in ("baseline", "dense", "sparse")
    for split in ("train", "test")
]


def test_study_has_exactly_the_18_partition_keys():
    keys = STUDY_PARTITIONS.get_partition_keys()
    assert sorted(keys) == sorted(EXPECTED_KEYS)
    assert len(keys) == 18
    assert sorted(job.partition_key for job in ALL_JOBS) == sorted(EXPECTED_KEYS)


def test_partition_key_round_trips_through_the_definition():
    key = STUDY_PARTITIONS.get_partition_key_from_str("1000|dense_train")
    assert key.keys_by_dimension == {"dose": "1000", "view_split": "dense_train"}
    assert Job.from_partition_key(key) == Job(1000, "dense", "train")
    assert Job.from_partition_key("100000|baseline_test") == Job(100000, "baseline", "test")


@pytest.mark.parametrize("bad", ["1000-dense_train", "1000|densetrain", "abc|dense_train", "999|dense_train", "1000|dense_val"])
def test_malformed_partition_keys_are_rejected_clearly(bad):
    with pytest.raises(ValueError, match=r"1000\|dense_train|unknown"):
        Job.from_partition_key(bad)


def test_source_partitions_map_to_their_jobs():
    assert sorted(PHASE_C_PARTITIONS.get_partition_keys()) == sorted(f"{d}|{s}" for d in (1000, 10000, 100000) for s in ("train", "test"))
    assert len(PHASE_D_PARTITIONS.get_partition_keys()) == 12
    assert job_for_source_partition("1000|train") == Job(1000, "baseline", "train")
    assert job_for_source_partition("10000|sparse_test") == Job(10000, "sparse", "test")


def test_file_layout_follows_the_spec():
    c, d = Path("C"), Path("D")
    assert Job(1000, "baseline", "train").input_path(c, d) == Path("C/dose_1000/patched_train.npz")
    assert Job(1000, "dense", "test").input_path(c, d) == Path("D/dose_1000/dense/dense_test.npz")
    assert Job(100000, "sparse", "train").input_path(c, d) == Path("D/dose_100000/sparse/sparse_train.npz")
    assert Job(10000, "dense", "train").artifact_dir(Path("A")) == Path("A/dose_10000/dense/train")


def test_spacing_thresholds_and_filters():
    assert spacing_threshold("dense") == pytest.approx(38.4)
    assert spacing_threshold("sparse") == pytest.approx(102.4)
    assert select_jobs([1000], ["dense"], ["train"]) == [Job(1000, "dense", "train")]
    assert len(select_jobs()) == 18
    with pytest.raises(ValueError, match="unknown view"):
        select_jobs(views=["medium"])


def test_definitions_pin_assets_checks_and_jobs():
    from fly64_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "phase_c_patched",
        "phase_d_overlap",
        "ptychi_reconstruction",
        "reconstruction_quality",
        "reconstruction_manifest",
        "skip_summary",
        "study_report",
    }
    assert graph.asset_check_keys == {
        AssetCheckKey(AssetKey("phase_c_patched"), "data001"),
        AssetCheckKey(AssetKey("phase_d_overlap"), "data001"),
        AssetCheckKey(AssetKey("ptychi_reconstruction"), "input_data001"),
    }
    assert graph.get(AssetKey("ptychi_reconstruction")).partitions_def.get_partition_keys() == STUDY_PARTITIONS.get_partition_keys()
    jobs = ("reconstruct_study", "summarize_study", "score_study", "report_study", "check_phase_c_inputs", "check_phase_d_inputs")
    for job in jobs:
        assert defs.resolve_job_def(job).name == job


@pytest.mark.parametrize(
    "key, parent",
    [
        ("1000|baseline_train", ("phase_c_patched", "1000|train")),
        ("100000|baseline_test", ("phase_c_patched", "100000|test")),
        ("1000|dense_test", ("phase_d_overlap", "1000|dense_test")),
        ("10000|sparse_train", ("phase_d_overlap", "10000|sparse_train")),
    ],
)
def test_each_reconstruction_partition_has_exactly_its_input_file_as_parent(key, parent):
    from fly64_assets.definitions import defs

    result = defs.resolve_asset_graph().get_parents_partitions(AssetKey("ptychi_reconstruction"), key)
    parents = {(p.asset_key.to_user_string(), p.partition_key) for p in result.parent_partitions}
    assert parents == {parent}
