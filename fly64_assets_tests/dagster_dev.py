"""`dagster dev` as a user starts it, and the backfill request its UI sends: shared by the UI test and the bench.

Every process started here runs in its own session and is stopped by its process-group id.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance

from fly64_assets_tests.support import free_port

TERMINAL_BACKFILL_STATUSES = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
UI_BACKFILL_ASSETS = ["ptychi_reconstruction", "reconstruction_manifest", "reconstruction_quality", "skip_summary", "study_report"]
"""What the asset graph's "Materialize all (5)" selects: every materializable asset of the study."""

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      numPartitions
      error { message }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed
          }
          ... on UnpartitionedAssetStatus { assetKey { path } inProgress materialized failed }
        }
      }
      runs { runId status tags { key value } }
    }
    ... on PythonError { message }
  }
}"""

def stop_process_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the process group that ``process`` leads, then SIGKILL if it is still there."""
    if process.poll() is not None and not _group_alive(process.pid):
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GraphQLError(AssertionError):
    pass


class DagsterDev:
    """``dagster dev -w workspace.yaml`` on 127.0.0.1:<port>, in its own session; ``stop()`` ends the group."""

    def __init__(self, repo_root: Path, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.repo_root = repo_root
        self.env = env
        self.log_path = log_path
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def executable(self, name: str) -> str:
        """A console script of the environment's virtualenv (``dagster``, ``dagster-daemon``, ...)."""
        script = Path(self.env.get("VIRTUAL_ENV", "")) / "bin" / name
        found = str(script) if script.exists() else shutil.which(name, path=self.env.get("PATH"))
        if found is None:
            raise RuntimeError(f"the {name} command is not installed in this environment")
        return found

    def command(self) -> list[str]:
        return [self.executable("dagster"), "dev", "-w", "workspace.yaml", "--host", "127.0.0.1", "--port", str(self.port)]

    def spawn(self, command: list[str], log) -> subprocess.Popen:
        """A process in a session of its own (so that it can be stopped with everything it started)."""
        return subprocess.Popen(command, cwd=self.repo_root, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, timeout_s: float = 180.0) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = self.spawn(self.command(), self._log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.process.returncode}; see {self.log_path}")
            try:
                data = self.graphql(
                    "{ version workspaceOrError { ... on Workspace { locationEntries { name "
                    "locationOrLoadError { __typename } } } } }",
                    timeout_s=10,
                )
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and all(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries):
                    return
                if any(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "PythonError" for e in entries):
                    raise RuntimeError(f"the code location failed to load: {entries}; see {self.log_path}")
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, ValueError, GraphQLError):
                pass
            time.sleep(1.0)
        raise TimeoutError(f"dagster dev did not answer on {self.url} within {timeout_s:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the whole server at once (webserver, daemon, code server, run processes), as a crash would."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self._log is not None:
            self._log.close()

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
        if self._log is not None:
            self._log.close()

    def graphql(self, query: str, variables: dict | None = None, timeout_s: float = 60.0) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise GraphQLError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]




class StudyUI(DagsterDev):
    """``fly64 ui`` (what ``make ui`` runs): one warm dask cluster on this machine and ``dagster dev`` beside it."""

    def command(self) -> list[str]:
        return [self.executable("fly64"), "ui", "--port", str(self.port)]

    def first_line(self) -> str:
        """What ``fly64 ui`` says first about its cluster (a library's warning may come before it)."""
        return next(line for line in self.log_path.read_text().splitlines() if line.startswith("fly64 ui: "))

    def scheduler_address(self) -> str:
        """The cluster's scheduler, as ``fly64 ui`` prints it first."""
        return self.first_line().split("scheduler ", 1)[1].split(",", 1)[0]

    def credentials(self) -> Path:
        """The folder of the cluster's client TLS credentials, as ``fly64 ui`` prints it on its first line."""
        return Path(self.first_line().split("client TLS credentials ", 1)[1].strip())


class SeparateServices(DagsterDev):
    """The production layout: ``dagster-webserver`` and ``dagster-daemon run`` as processes of their own. The daemon
    starts its own code server, whose run processes outlive a daemon that dies (the server waits for them)."""

    def __init__(self, repo_root: Path, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        super().__init__(repo_root, env, log_path, port)
        self.daemons: list[subprocess.Popen] = []
        self._daemon_logs: list = []

    def command(self) -> list[str]:
        return [self.executable("dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)]

    def start_daemon(self) -> None:
        log = open(self.log_path.with_name(f"daemon_{len(self._daemon_logs)}.log"), "wb")  # noqa: SIM115 - closed by stop()
        self._daemon_logs.append(log)
        self.daemons.append(self.spawn([self.executable("dagster-daemon"), "run", "-w", "workspace.yaml"], log))

    def start(self, timeout_s: float = 180.0) -> None:
        # Create the instance's storage first: a daemon and a webserver creating a fresh SQLite schema at the same
        # moment can both stamp its migration table ("more than one head"; seen once in CI).
        with DagsterInstance.from_config(self.env["DAGSTER_HOME"]):
            pass
        self.start_daemon()
        super().start(timeout_s)

    def kill_daemon(self) -> None:
        """SIGKILL the daemon process alone, as a crash or an out-of-memory kill would."""
        self.daemons[-1].kill()
        self.daemons[-1].wait()

    def stop(self) -> None:
        for daemon in self.daemons:  # a killed daemon's group still holds its code server until stopped here
            stop_process_group(daemon)
        for log in self._daemon_logs:
            log.close()
        super().stop()


@dataclass
class StudyServer:
    """The session's ``dagster dev`` (webserver, daemon, code server) serving a demo study under ``root``."""

    server: DagsterDev
    root: Path
    home: Path
    on_postgres: bool
    kept: Path
    """Where screenshots and the server's log are kept (``$FLY64_TEST_ARTIFACTS/ui`` or a temporary folder)."""


@dataclass
class StudyBackfill:
    backfill_id: str
    backfill: dict
    seconds: float


def study_environment(root: Path, epochs: str, automation: str = "off") -> dict[str, str]:
    """A server's environment for a study under ``root`` (inputs/, artifacts/, dagster_home/): its roots, a private
    Dagster instance, the default epochs, nothing inherited from FLY64_*. The study's automation is off unless
    asked for, so that a test's runs are only the ones it launches."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLY64_") and key != "DAGSTER_HOME"}
    env.update(
        FLY64_PHASE_C_ROOT=str(root / "inputs" / "phase_c"),
        FLY64_PHASE_D_ROOT=str(root / "inputs" / "phase_d"),
        FLY64_ARTIFACT_ROOT=str(root / "artifacts"),
        FLY64_DATA_DIR=str(root / "data"),
        FLY64_EPOCHS=epochs,
        FLY64_AUTOMATION=automation,
        DAGSTER_HOME=str(root / "dagster_home"),
        VIRTUAL_ENV=str(Path(sys.executable).parent.parent),
        PYTHONUNBUFFERED="1",
    )
    return env


def ui_backfill_params(partition_keys: list[str], assets: list[str] = UI_BACKFILL_ASSETS) -> dict:
    """What the UI sends (captured from dagster-webserver 1.13.27) for: asset graph, "Materialize all (5)…",
    "All" doses, "All" view_splits, "Launch backfill"."""
    return {
        "tags": [{"key": "dagster/from_ui", "value": "true"}],
        "assetSelection": [{"path": [name]} for name in assets],
        "partitionNames": list(partition_keys),
        "fromFailure": False,
    }


def launch_ui_backfill(server: DagsterDev, partition_keys: list[str], assets: list[str] = UI_BACKFILL_ASSETS) -> str:
    """Send the UI's backfill request; returns the backfill's id."""
    launched = server.graphql(LAUNCH_BACKFILL, {"params": ui_backfill_params(partition_keys, assets)})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise GraphQLError(f"the backfill was not launched: {launched}")
    return launched["backfillId"]


def wait_for_backfill(server: DagsterDev, backfill_id: str, timeout_s: float, poll_s: float = 1.0) -> dict:
    """Poll until the backfill ends; returns its final status (BACKFILL_STATUS's fields)."""
    started = time.monotonic()
    while True:
        backfill = server.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["__typename"] != "PartitionBackfill":
            raise GraphQLError(f"backfill {backfill_id}: {backfill}")
        if backfill["status"] in TERMINAL_BACKFILL_STATUSES:
            return backfill
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"backfill {backfill_id} still {backfill['status']} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def run_ui_backfill(
    server: DagsterDev, partition_keys: list[str], timeout_s: float, poll_s: float = 1.0, assets: list[str] = UI_BACKFILL_ASSETS
) -> tuple[str, dict, float]:
    """Launch the UI's backfill request and wait for it to end: (backfill id, its final status, seconds)."""
    started = time.monotonic()
    backfill_id = launch_ui_backfill(server, partition_keys, assets)
    backfill = wait_for_backfill(server, backfill_id, timeout_s, poll_s)
    return backfill_id, backfill, time.monotonic() - started


# --- single runs, as the UI's Materialize, Terminate and Re-execute buttons send them -------------------

LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

TERMINATE_RUN = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId, terminatePolicy: SAFE_TERMINATE) {
    __typename
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}"""

REEXECUTE_FROM_FAILURE = """
mutation Reexecute($parentRunId: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

RUN_STATUS = """
query Run($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}"""

CHECK_EXECUTIONS = """
query Checks($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 200) {
    runId status partition timestamp
    evaluation { severity success description partition }
    run { tags { key value } }
  }
}"""

LOCATION_NAME = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


def launch_run(server: DagsterDev, job_name: str, tags: dict[str, str], run_config: dict | None = None) -> str:
    """Launch one run of a job (through the run queue, as the UI does); returns its id."""
    (location,) = server.graphql(LOCATION_NAME)["workspaceOrError"]["locationEntries"]
    params = {
        "selector": {"repositoryLocationName": location["name"], "repositoryName": "__repository__", "jobName": job_name},
        "runConfigData": run_config or {},
        "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in tags.items()]},
    }
    launched = server.graphql(LAUNCH_RUN, {"executionParams": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise GraphQLError(f"the run was not launched: {launched}")
    return launched["run"]["runId"]


def run_status(server: DagsterDev, run_id: str) -> str:
    return server.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]


def wait_for_run(server: DagsterDev, run_id: str, timeout_s: float, statuses=TERMINAL_RUN_STATUSES) -> tuple[str, float]:
    """Poll until the run reaches one of ``statuses``: (status, seconds waited)."""
    started = time.monotonic()
    while (status := run_status(server, run_id)) not in statuses:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"run {run_id} still {status} after {timeout_s:.0f} s")
        time.sleep(0.5)
    return status, time.monotonic() - started
