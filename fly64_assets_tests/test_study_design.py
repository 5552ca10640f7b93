"""The study design and the code location's shape, pinned: keys users type and scripts read."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, BackfillPolicy, PartitionKeyRange

from fly64_assets.core.design import ALL_DATASETS, Dataset, dataset_for_source_key, select_datasets, spacing_threshold
from fly64_assets.defs.inputs.partitions import PHASE_C_PARTITIONS, PHASE_D_PARTITIONS
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS, covering_ranges

PACKAGE = Path(__file__).resolve().parents[1] / "fly64_assets"

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
    assert sorted(dataset.partition_key for dataset in ALL_DATASETS) == sorted(EXPECTED_KEYS)


def test_partition_key_round_trips_through_the_definition():
    key = STUDY_PARTITIONS.get_partition_key_from_str("1000|dense_train")
    assert key.keys_by_dimension == {"dose": "1000", "view_split": "dense_train"}
    assert Dataset.from_partition_key(key) == Dataset(1000, "dense", "train")
    assert Dataset.from_partition_key("100000|baseline_test") == Dataset(100000, "baseline", "test")


@pytest.mark.parametrize("bad", ["1000-dense_train", "1000|densetrain", "abc|dense_train", "999|dense_train", "1000|dense_val"])
def test_malformed_partition_keys_are_rejected_clearly(bad):
    with pytest.raises(ValueError, match=r"1000\|dense_train|unknown"):
        Dataset.from_partition_key(bad)


def test_source_partitions_map_to_their_datasets():
    assert sorted(PHASE_C_PARTITIONS.get_partition_keys()) == sorted(f"{d}|{s}" for d in (1000, 10000, 100000) for s in ("train", "test"))
    assert len(PHASE_D_PARTITIONS.get_partition_keys()) == 12
    assert dataset_for_source_key("1000|train") == Dataset(1000, "baseline", "train")
    assert dataset_for_source_key("10000|sparse_test") == Dataset(10000, "sparse", "test")


def test_file_layout_follows_the_spec():
    c, d = Path("C"), Path("D")
    assert Dataset(1000, "baseline", "train").input_path(c, d) == Path("C/dose_1000/patched_train.npz")
    assert Dataset(1000, "dense", "test").input_path(c, d) == Path("D/dose_1000/dense/dense_test.npz")
    assert Dataset(100000, "sparse", "train").input_path(c, d) == Path("D/dose_100000/sparse/sparse_train.npz")
    assert Dataset(10000, "dense", "train").artifact_dir(Path("A")) == Path("A/dose_10000/dense/train")


def test_spacing_thresholds_and_filters():
    assert spacing_threshold("dense") == pytest.approx(38.4)
    assert spacing_threshold("sparse") == pytest.approx(102.4)
    assert select_datasets([1000], ["dense"], ["train"]) == [Dataset(1000, "dense", "train")]
    assert len(select_datasets()) == 18
    with pytest.raises(ValueError, match="unknown view"):
        select_datasets(views=["medium"])


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
    for name in ("ptychi_reconstruction", "reconstruction_quality"):
        node = graph.get(AssetKey(name))
        assert node.partitions_def.get_partition_keys() == STUDY_PARTITIONS.get_partition_keys()
        assert node.backfill_policy == BackfillPolicy.single_run()
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


def _keys_in(ranges):
    return sorted(key for start, end in ranges for key in STUDY_PARTITIONS.get_partition_keys_in_range(PartitionKeyRange(start, end)))


@pytest.mark.parametrize(
    "filters, expected_ranges",
    [
        ({}, 1),
        ({"doses": [1000], "views": ["dense"]}, 1),
        ({"doses": [1000, 10000], "views": ["dense", "sparse"]}, 1),
        ({"views": ["baseline"], "splits": ["train"]}, 1),
        ({"doses": [1000, 100000]}, 2),
        ({"views": ["baseline", "sparse"], "splits": ["test"]}, 2),
    ],
)
def test_a_selection_runs_as_few_ranges_that_cover_exactly_it(filters, expected_ranges):
    selected = select_datasets(**filters)
    ranges = covering_ranges(selected)
    assert len(ranges) == expected_ranges, ranges
    assert _keys_in(ranges) == sorted(dataset.partition_key for dataset in selected)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_layout_rules_hold_in_every_module():
    """The science core knows no Dagster; the Dagster layer never imports the launcher, the CLI or the
    definitions; nothing imports Dagster's private modules."""
    for path in sorted(PACKAGE.rglob("*.py")):
        modules = _imported_modules(path)
        where = path.relative_to(PACKAGE.parent)
        assert not any(m.startswith("dagster._") for m in modules), where
        if "core" in where.parts:
            assert not any(m == "dagster" or m.startswith(("dagster.", "dagster_")) for m in modules), where
            assert not any(m.startswith(("fly64_assets.defs", "fly64_assets.lib")) for m in modules), where
        if "defs" in path.parts or path.parent.name == "lib":
            assert not modules & {"fly64_assets.launch", "fly64_assets.cli", "fly64_assets.definitions"}, where


def test_loading_the_code_location_imports_neither_torch_nor_ptychi():
    """Every run process, the code server and the daemon load the code location: torch is for steps only."""
    probe = "import sys, fly64_assets.definitions; print(sorted({'torch', 'ptychi', 'matplotlib', 'skimage'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", loaded
