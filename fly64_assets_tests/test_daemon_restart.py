"""A daemon killed in the middle of a backfill, in the production layout (`dagster-webserver` and `dagster-daemon`
as processes of their own): the run in flight finishes (the daemon's code server waits for its runs), and once
the daemon is started again the backfill resumes to its end with every partition materialized exactly once."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance

from fly64_assets.core.artifacts import PARTIAL_SUFFIX
from fly64_assets.core.design import Dataset
from fly64_assets_tests.dagster_dev import (
    BACKFILL_STATUS,
    SeparateServices,
    launch_ui_backfill,
    study_environment,
    wait_for_backfill,
)
from fly64_assets_tests.support import REPO_ROOT, copy_study

KEYS = [f"1000|{view}_{split}" for view in ("baseline", "dense", "sparse") for split in ("train", "test")]
EPOCHS = 60


@pytest.mark.timeout(600)
def test_a_killed_daemon_restarted_resumes_its_backfill_and_each_partition_is_materialized_once(synthetic_study, tmp_path):
    copy_study(synthetic_study, tmp_path / "inputs")
    (tmp_path / "dagster_home").mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    # A run of some 20 s (regularization off: the daemon, not the choice, is under test): the daemon is killed as
    # soon as the run reconstructs, and is back 5 s later.
    env = {**study_environment(tmp_path, str(EPOCHS)), "FLY64_REGULARIZATION": "off"}
    services = SeparateServices(REPO_ROOT, env, log_path=tmp_path / "webserver.log")
    try:
        services.start()
        backfill_id = launch_ui_backfill(services, KEYS, ["ptychi_reconstruction", "reconstruction_quality"])
        first_log = Dataset.from_partition_key(KEYS[0]).artifact_dir(tmp_path / "artifacts")
        deadline = time.monotonic() + 180
        while not list(first_log.glob(f".ptychi.log*{PARTIAL_SUFFIX}")):  # the run is reconstructing
            assert time.monotonic() < deadline, "the backfill's run never started reconstructing"
            time.sleep(0.5)
        services.kill_daemon()
        runs = services.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]["runs"]
        # One run (the dose's range): it started, and lives on without the daemon (it may even have finished).
        assert len(runs) == 1 and runs[0]["status"] in ("STARTED", "SUCCESS"), runs
        time.sleep(5)
        services.start_daemon()
        backfill = wait_for_backfill(services, backfill_id, timeout_s=600)
    finally:
        services.stop()
    print(f"backfill after the daemon's restart: {backfill['status']}, runs {[run['status'] for run in backfill['runs']]}")
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    run_ids = {run["runId"] for run in backfill["runs"]}
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.fetch_materializations(AssetKey("ptychi_reconstruction"), limit=100).records
    assert sorted(record.partition_key for record in records if record.run_id in run_ids) == sorted(KEYS)  # once each
    for key in KEYS[:4]:
        folder = Dataset.from_partition_key(key).artifact_dir(tmp_path / "artifacts")
        with np.load(folder / "ptychi_reconstruction.npz", allow_pickle=False) as saved:
            assert saved["loss_per_epoch"].shape == (EPOCHS,)
        assert not list(folder.glob(f".*{PARTIAL_SUFFIX}"))
