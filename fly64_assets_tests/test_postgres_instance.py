"""The study on a real shared instance database: a throwaway PostgreSQL server, `dagster-postgres` storage in
dagster.yaml, `dagster dev` and its daemon running a UI backfill of the whole study.

The server (Debian's `postgresql` package) lives in a temporary folder and listens only on a unix socket there;
the test starts and stops it. Without the package the test skips, except in CI (`.ci/run` installs it).
docs/CLUSTER.md shows the `storage:` block this test writes.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from fly64_assets.core.synthetic import simulate_study
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets_tests.dagster_dev import CHECK_EXECUTIONS, DagsterDev, run_ui_backfill, study_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
DATABASE_USER = "fly64"
SKIP_REASON = "sparse view not written by Phase D"


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_server_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as Debian's `postgres` account then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres_url() -> str:
    binaries = _postgres_bin()
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    # Not under pytest's folders (private to this user): the server's account must be able to enter it.
    folder = Path(tempfile.mkdtemp(prefix="fly64-postgres-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (folder, sockets):
            shutil.chown(path, "postgres")
    subprocess.run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", DATABASE_USER, "-A", "trust"]),
                   check=True, capture_output=True)
    options = f"-k {sockets} -c listen_addresses='' -p 5432"
    subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"),
                                    "-w", "start"]), check=True, capture_output=True)
    try:
        # dagster-postgres installs psycopg2; SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
        yield f"postgresql+psycopg2://{DATABASE_USER}@/postgres?host={sockets}&port=5432"
    finally:
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def postgres_instance_config(url: str) -> dict:
    """The shipped dagster.yaml with every storage in PostgreSQL (what docs/CLUSTER.md shows)."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config["storage"] = {"postgres": {"postgres_url": url}}
    return config


def test_a_backfill_of_the_study_through_the_daemon_on_a_postgres_instance(postgres_url, tmp_path):
    simulate_study(tmp_path / "inputs", scale="demo")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(postgres_instance_config(postgres_url), sort_keys=False))
    server = DagsterDev(REPO_ROOT, study_environment(tmp_path, "5"), log_path=tmp_path / "dagster_dev.log")
    try:
        server.start()
        _, backfill, seconds = run_ui_backfill(server, STUDY_PARTITIONS.get_partition_keys(), timeout_s=600)
        executions = server.graphql(CHECK_EXECUTIONS, {"key": {"path": ["ptychi_reconstruction"]}, "check": "input_data001"})
    finally:
        server.stop()
    print(f"backfill on PostgreSQL: {backfill['status']} in {seconds:.0f} s")
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill

    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert all(run.is_success for run in instance.get_runs()) and len(instance.get_runs()) == 4
        statuses = instance.get_status_by_partition(
            AssetKey("ptychi_reconstruction"), STUDY_PARTITIONS.get_partition_keys(), STUDY_PARTITIONS
        )
        assert len(statuses) == 18 and {status.value for status in statuses.values()} == {"MATERIALIZED"}
    evaluations = [e["evaluation"] for e in executions["assetCheckExecutions"]]
    assert sum(e["success"] for e in evaluations) == 12
    warned = [e for e in evaluations if not e["success"]]
    assert len(warned) == 6 and all(e["severity"] == "WARN" and SKIP_REASON in e["description"] for e in warned)
    manifest = json.loads((tmp_path / "artifacts" / "reconstruction_manifest.json").read_text())
    assert [r["status"] for r in manifest["execution_results"]] == ["succeeded"] * 12
    assert len(manifest["missing_jobs"]) == 6
