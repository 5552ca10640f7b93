"""The study on a real shared instance database: the session's ``dagster dev`` stack runs on a throwaway
PostgreSQL server (conftest.py: dagster-postgres storage in dagster.yaml, the block docs/CLUSTER.md shows), and its
daemon ran the UI backfill of the whole study. Here: everything the backfill did is in PostgreSQL.

Without Debian's ``postgresql`` the stack runs on SQLite and this test skips (a failure under CI: ``.ci/run``
installs the package).
"""

from __future__ import annotations

import json

import pytest
from dagster import AssetKey, DagsterInstance

from fly64_assets.core.bookkeeping import RECONSTRUCTED
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets_tests.dagster_dev import CHECK_EXECUTIONS

pytestmark = pytest.mark.timeout(1200)  # may wait for the session's server and backfill
SKIP_REASON = "sparse view not written by Phase D"


def test_a_backfill_of_the_study_through_the_daemon_on_a_postgres_instance(study_server, study_backfill):
    if not study_server.on_postgres:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql): the session's server runs on SQLite")
    assert study_backfill.backfill["status"] == "COMPLETED_SUCCESS", study_backfill.backfill
    backfill_runs = {run["runId"] for run in study_backfill.backfill["runs"]}

    with DagsterInstance.from_config(str(study_server.home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        runs = [run for run in instance.get_runs() if run.run_id in backfill_runs]
        assert len(runs) == 4 and all(run.is_success for run in runs)  # one per dose, one for the summaries
        statuses = instance.get_status_by_partition(
            AssetKey("ptychi_reconstruction"), STUDY_PARTITIONS.get_partition_keys(), STUDY_PARTITIONS
        )
        assert len(statuses) == 18 and {status.value for status in statuses.values()} == {"MATERIALIZED"}

    executions = study_server.server.graphql(
        CHECK_EXECUTIONS, {"key": {"path": ["ptychi_reconstruction"]}, "check": "input_data001"}
    )["assetCheckExecutions"]
    evaluations = [e["evaluation"] for e in executions if e["runId"] in backfill_runs]
    assert sum(e["success"] for e in evaluations) == 12
    warned = [e for e in evaluations if not e["success"]]
    assert len(warned) == 6 and all(e["severity"] == "WARN" and SKIP_REASON in e["description"] for e in warned)
    manifest = json.loads((study_server.root / "artifacts" / "reconstruction_manifest.json").read_text())
    assert [r["status"] for r in manifest["execution_results"]] == [RECONSTRUCTED] * 12
    assert len(manifest["missing_jobs"]) == 6
