"""Inputs that trigger their own reconstructions (fly64_assets/defs/automation.py): the input sensor observes a
source when one of its files changes, and eager automation re-runs exactly the partitions (and the summaries)
that a new data version affects. First with ``evaluate_automation_conditions`` step by step, then once end to
end with a real daemon."""

from __future__ import annotations

import datetime
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, build_sensor_context, evaluate_automation_conditions

from fly64_assets import launch
from fly64_assets.core.bookkeeping import RECONSTRUCTION_RECORD, read_record
from fly64_assets.core.design import ALL_DATASETS, Dataset
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.definitions import build_definitions
from fly64_assets.core.artifacts import file_sha256
from fly64_assets.defs.inputs.assets import ABSENT
from fly64_assets.defs.inputs.sensors import input_files_sensor
from fly64_assets.defs.jobs import OBSERVE_PHASE_C_JOB, OBSERVE_PHASE_D_JOB
from fly64_assets.defs.resources import StudyPaths
from fly64_assets_tests.dagster_dev import SeparateServices, study_environment
from fly64_assets_tests.support import REPO_ROOT, copy_study

RECONSTRUCTION, QUALITY = AssetKey("ptychi_reconstruction"), AssetKey("reconstruction_quality")
SUMMARIES = {AssetKey(name) for name in ("reconstruction_manifest", "skip_summary", "study_report")}
ONE_EPOCH = ReconstructionOptions(epochs=1, device="cpu")


def study_paths(root: Path) -> StudyPaths:
    (root / "artifacts").mkdir(exist_ok=True)
    return StudyPaths(
        phase_c_root=str(root / "inputs" / "phase_c"), phase_d_root=str(root / "inputs" / "phase_d"),
        artifact_root=str(root / "artifacts"),
    )


def change_content(path: Path) -> None:
    """Rewrite an input with other (still valid) diffraction data, atomically as upstream tools do."""
    with np.load(path, allow_pickle=False) as saved:
        arrays = dict(saved)
    arrays["diffraction"] = arrays["diffraction"] * np.float32(1.01)
    temporary = path.with_name(f".{path.name}")
    with open(temporary, "wb") as stream:
        np.savez(stream, **arrays)
    temporary.replace(path)


class Automation:
    """``evaluate_automation_conditions`` ticks 30 s apart, as the daemon would run them."""

    def __init__(self, paths: StudyPaths, instance: DagsterInstance) -> None:
        self.defs, self.instance, self.cursor = build_definitions(paths), instance, None
        self.time = datetime.datetime(2026, 1, 1, 0, 0, 10)

    def tick(self) -> dict[AssetKey, list[str | None]]:
        self.time += datetime.timedelta(seconds=30)
        result = evaluate_automation_conditions(self.defs, self.instance, evaluation_time=self.time, cursor=self.cursor)
        self.cursor = result.cursor
        requested = {}
        for asset_result in result.results:
            partitions = asset_result.true_subset.expensively_compute_asset_partitions()
            if partitions:
                requested[asset_result.key] = sorted(partition.partition_key or "" for partition in partitions)
        return requested


def test_sensor_observes_a_source_only_when_one_of_its_files_changes(synthetic_study, tmp_path):
    copy_study(synthetic_study, tmp_path / "inputs")
    paths = study_paths(tmp_path)

    def tick(cursor):
        context = build_sensor_context(cursor=cursor, resources={"study_paths": paths})
        requests = list(input_files_sensor(context))
        return [request.job_name for request in requests], requests, context.cursor

    jobs, requests, cursor = tick(None)
    assert jobs == [OBSERVE_PHASE_C_JOB, OBSERVE_PHASE_D_JOB]  # the first tick shows every data version
    assert requests[0].tags["dagster/partition"]  # a run of a partitioned source needs one partition's tags
    assert tick(cursor)[0] == []  # nothing changed: no run at all
    change_content(Dataset(10000, "dense", "test").input_path(paths.phase_c_root, paths.phase_d_root))
    jobs, _, cursor = tick(cursor)
    assert jobs == [OBSERVE_PHASE_D_JOB]
    Dataset(1000, "baseline", "train").input_path(paths.phase_c_root, paths.phase_d_root).unlink()
    assert tick(cursor)[0] == [OBSERVE_PHASE_C_JOB]  # a vanished file is a change too


def test_eager_automation_reruns_exactly_what_a_changed_or_new_input_affects(synthetic_study, tmp_path):
    copy_study(synthetic_study, tmp_path / "inputs")
    paths = study_paths(tmp_path)
    assert not list(Path(paths.phase_d_root).rglob("sparse_*.npz"))  # the demo's sparse views are not written
    instance = DagsterInstance.ephemeral()
    automation = Automation(paths, instance)
    assert automation.tick() == {}  # inputs never observed: nothing to react to

    launch.observe_inputs(paths, instance)
    observed = instance.fetch_observations(AssetRecordsFilter(asset_key=AssetKey("phase_d_overlap")), limit=100).records
    versions = {r.partition_key: r.event_log_entry.asset_observation.tags["dagster/data_version"] for r in observed}
    assert len(versions) == 12 and sum(version == ABSENT.value for version in versions.values()) == 6
    requested = automation.tick()  # a fresh study: every partition (the six skips too) is due
    all_keys = sorted(dataset.partition_key for dataset in ALL_DATASETS)
    assert requested == {RECONSTRUCTION: all_keys, QUALITY: all_keys}

    launch.reconstruct(paths, ALL_DATASETS, ONE_EPOCH, instance)
    launch.summarize(paths, {}, instance)
    assert automation.tick() == {}  # the study ran: nothing left to do
    launch.observe_inputs(paths, instance)
    assert automation.tick() == {}  # an unchanged file triggers nothing

    change_content(Dataset(1000, "baseline", "train").input_path(paths.phase_c_root, paths.phase_d_root))
    launch.observe_inputs(paths, instance)
    assert automation.tick() == {RECONSTRUCTION: ["1000|baseline_train"], QUALITY: ["1000|baseline_train"]}
    launch.reconstruct(paths, [Dataset(1000, "baseline", "train")], ONE_EPOCH, instance)
    assert set(automation.tick()) == SUMMARIES  # what depends on the partition follows
    launch.summarize(paths, {}, instance)
    assert automation.tick() == {}

    # Phase D writes a sparse view later: that partition is reconstructed, nothing else.
    dense = Dataset(10000, "dense", "test").input_path(paths.phase_c_root, paths.phase_d_root)
    sparse = Dataset(10000, "sparse", "test").input_path(paths.phase_c_root, paths.phase_d_root)
    sparse.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dense, sparse)
    launch.observe_inputs(paths, instance)
    assert automation.tick() == {RECONSTRUCTION: ["10000|sparse_test"], QUALITY: ["10000|sparse_test"]}


@pytest.mark.timeout(600)
def test_the_daemon_reconstructs_a_changed_input_by_itself(synthetic_study, tmp_path):
    """The shipped dagster.yaml, a real daemon, the automation on: a study already done, then one Phase C file
    rewritten. The sensor observes it, the automation reconstructs that partition and rewrites the report."""
    copy_study(synthetic_study, tmp_path / "inputs")
    paths = study_paths(tmp_path)
    (tmp_path / "dagster_home").mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    env = study_environment(tmp_path, "2", automation="on")
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        launch.observe_inputs(paths, instance)
        launch.reconstruct(paths, ALL_DATASETS, ONE_EPOCH, instance)
        launch.summarize(paths, {}, instance)
        before = instance.fetch_materializations(RECONSTRUCTION, limit=100).records[0].storage_id
        report_before = instance.fetch_materializations(AssetKey("study_report"), limit=1).records[0].storage_id
    changed = Dataset(1000, "baseline", "train")
    change_content(changed.input_path(paths.phase_c_root, paths.phase_d_root))

    daemon = SeparateServices(REPO_ROOT, env, log_path=tmp_path / "webserver.log")
    started = time.monotonic()
    try:
        daemon.start_daemon()
        with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            while True:
                report = instance.fetch_materializations(AssetKey("study_report"), limit=1).records
                if report and report[0].storage_id > report_before:
                    break
                assert time.monotonic() - started < 420, f"no automatic re-run within 420 s; see {tmp_path}/daemon_0.log"
                time.sleep(2)
            after = [record for record in instance.fetch_materializations(RECONSTRUCTION, limit=100).records
                     if record.storage_id > before]
            run_tags = instance.get_run_by_id(after[0].run_id).tags if after else {}
    finally:
        daemon.stop()
    print(f"changed input to rewritten report: {time.monotonic() - started:.0f} s; the run's tags {run_tags}")
    assert [record.partition_key for record in after] == [changed.partition_key]  # exactly the changed file's
    assert run_tags.get("dagster/sensor_name") == "study_automation"  # the automation's request, not a run of ours
    record = read_record(paths.artifact_dir(changed), RECONSTRUCTION_RECORD)
    assert record["input_sha256"] == file_sha256(changed.input_path(paths.phase_c_root, paths.phase_d_root))
