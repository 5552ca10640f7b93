"""``fly64 ui`` (``make ui``) as a user runs it: one warm dask cluster and ``dagster dev`` beside it, every run's
partitions on the same workers; only 127.0.0.1 listens, over TLS, and another user of the machine can neither
run a task there nor read the credentials; *Terminate* stops a run's reconstruction within an epoch while the
cluster goes on; a plain ``kill`` stops everything, the credentials too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

from pathlib import Path

import psutil
import pytest

from fly64_assets.core.artifacts import PARTIAL_SUFFIX
from fly64_assets.core.bookkeeping import LOG_NAME, RECONSTRUCTION_RECORD
from fly64_assets.core.design import Dataset
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets.lib.dask_security import CA_FILE, CERT_FILE, KEY_FILE, read_credentials, temporary_security
from fly64_assets_tests.dagster_dev import TERMINATE_RUN, StudyUI, launch_run, study_environment, wait_for_run
from fly64_assets_tests.support import (
    REPO_ROOT, call_as_plain_user, copy_study, kept_artifacts_dir, try_to_run_a_task,
)

pytestmark = pytest.mark.timeout(600)
LONG = {"ops": {"ptychi_reconstruction": {"config": {"epochs": 3000, "regularization": "off"}}}}
OTHER = {"ops": {"ptychi_reconstruction": {"config": {"epochs": 40, "regularization": "off"}}}}


def _tags(key: str) -> dict[str, str]:
    return dict(STUDY_PARTITIONS.get_tags_for_partition_key(key))


def _partials(folder) -> list:
    return sorted(folder.glob(f".*{PARTIAL_SUFFIX}")) if folder.exists() else []


def _stranger(address: str, credentials: str, stranger_security, marker: str) -> list[str]:
    """What another user of the machine gets: reading the credentials, running a task without them (plain, or TLS
    with credentials of their own)."""
    try:
        (Path(credentials) / KEY_FILE).read_bytes()
        read = "read the key"
    except OSError as error:
        read = f"refused: {type(error).__name__}"
    plain = try_to_run_a_task("tcp://" + address.split("://", 1)[1], None, marker)
    return [read, plain, try_to_run_a_task(address, stranger_security, marker)]


def _wait_for_epoch(folder, epoch: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(f"epoch {epoch}/" in partial.read_text() for partial in _partials(folder)):
        assert time.monotonic() < deadline, f"no reconstruction reached epoch {epoch} in {folder}"
        time.sleep(0.2)


def test_fly64_ui_shares_one_warm_loopback_cluster_terminates_within_an_epoch_and_stops_on_kill(
    synthetic_study, tmp_path, tmp_path_factory
):
    from distributed import Client

    root = tmp_path / "ui"
    copy_study(synthetic_study, root / "inputs")
    (root / "dagster_home").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    env = study_environment(root, "5")
    ui = StudyUI(REPO_ROOT, env, log_path=kept_artifacts_dir("ui_cluster", tmp_path_factory) / "fly64_ui.log")
    try:
        ui.start()
        address, credentials = ui.scheduler_address(), ui.credentials()
        assert address.startswith("tls://127.0.0.1:")
        with Client(address, security=read_credentials(credentials), timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)  # one per core on this CPU-only machine
            workers = set(client.run(os.getpid).values())
        tree = [psutil.Process(ui.process.pid), *psutil.Process(ui.process.pid).children(recursive=True)]

        # The runs' credentials: files only the owner reads, in a folder only the owner enters. Another user
        # (nobody) cannot read them, and reaches no worker: plain TCP and TLS with other credentials are refused.
        modes = {path.name: path.stat().st_mode & 0o777 for path in credentials.iterdir()}
        assert modes == {CA_FILE: 0o600, CERT_FILE: 0o600, KEY_FILE: 0o600} and credentials.stat().st_mode & 0o777 == 0o700
        marker = tmp_path / "stranger_ran"  # a task that ran would create it (the workers run as the owner)
        read, plain, other_tls = call_as_plain_user(_stranger, address, str(credentials), temporary_security(), str(marker))
        # (Run as a user other than root, call_as_plain_user stays that user, who may read its own key.)
        assert read == ("refused: PermissionError" if os.geteuid() == 0 else "read the key"), read
        assert not marker.exists()
        assert plain.startswith("refused:") and other_tls.startswith("refused:"), (plain, other_tls)
        print(f"another user: key {read}; plain TCP {plain}; TLS with other credentials {other_tls}")

        # Every TCP port the whole stack listens on (scheduler, dashboard, nannies, workers, the UI) is on loopback.
        listening = {(c.laddr.ip, c.laddr.port) for p in tree for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        assert ("127.0.0.1", ui.port) in listening and ("127.0.0.1", int(address.rsplit(":", 1)[1])) in listening

        # Two runs reconstruct at once on the shared workers. Terminate (the UI's button) stops the first one's
        # reconstruction within an epoch or so: the step tells its task to stop, the task's log is published whole,
        # nothing else is written; the other run goes on, on the same warm workers.
        folder = Dataset.from_partition_key("1000|baseline_train").artifact_dir(root / "artifacts")
        other_folder = Dataset.from_partition_key("1000|baseline_test").artifact_dir(root / "artifacts")
        run_id = launch_run(ui, "reconstruct_study", _tags("1000|baseline_train"), LONG)
        _wait_for_epoch(folder, 3)
        other_run_id = launch_run(ui, "reconstruct_study", _tags("1000|baseline_test"), OTHER)
        _wait_for_epoch(other_folder, 2)
        terminated = ui.graphql(TERMINATE_RUN, {"runId": run_id})["terminateRun"]
        assert terminated["__typename"] == "TerminateRunSuccess", terminated
        asked = time.monotonic()
        while _partials(folder):
            assert time.monotonic() - asked < 30, "the terminated run's reconstruction still runs"
            time.sleep(0.1)
        stopped_after = time.monotonic() - asked
        status, _ = wait_for_run(ui, run_id, timeout_s=120)
        assert status == "CANCELED"
        log = (folder / LOG_NAME).read_text()
        assert "its run is gone or was terminated" in log
        epochs_run = max(int(line.split("epoch ")[1].split("/")[0]) for line in log.splitlines() if " epoch " in line and "/3000" in line)
        assert sorted(path.name for path in folder.iterdir()) == [LOG_NAME]
        print(f"terminated: the reconstruction stopped {stopped_after:.1f} s after the request, at epoch {epochs_run}")

        assert wait_for_run(ui, other_run_id, timeout_s=240)[0] == "SUCCESS"
        record = json.loads((other_folder / RECONSTRUCTION_RECORD).read_text())
        assert record["worker"]["pid"] in workers and record["options"]["epochs"] == 40

        # A plain kill of fly64 ui (Ctrl-C does the same) stops dagster dev and the cluster: no process is left.
        os.kill(ui.process.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=90)
        assert alive == [], [process.cmdline() for process in alive]
        assert not credentials.exists()
    finally:
        ui.stop()
