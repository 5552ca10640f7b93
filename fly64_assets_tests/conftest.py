"""Shared fixtures and the suite's rules.

- One simulated tree per scale per session (``synthetic_study``: demo; ``standard_study``: the default study's);
  a test that changes inputs works on a copy.
- One ``dagster dev`` stack per session (``study_server``), on a PostgreSQL instance where Debian's
  ``postgresql`` is installed (CI installs it), and one UI backfill of the whole study on it
  (``study_backfill``), shared by the UI and the shared-instance tests. Tests that kill a server or a daemon, or
  that need the automation on, start their own.
- Under CI (``CI`` true/1/yes) a skipped test is a failure, except the tests marked ``may_skip_in_ci`` (listed
  in the README with their reason).
- torch's process-wide settings (threads, default dtype and device) are put back after every test.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
import yaml
from dagster import DagsterInstance, instance_for_test

from fly64_assets.core.synthetic import simulate_study
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets.defs.resources import StudyPaths
from fly64_assets_tests.dagster_dev import DagsterDev, StudyBackfill, StudyServer, run_ui_backfill, study_environment
from fly64_assets_tests.postgres_server import postgres_binaries, throwaway_postgres
from fly64_assets_tests.slurm_cluster import Slurm, slurm_installed, throwaway_slurm
from fly64_assets_tests.support import REPO_ROOT, copy_study, kept_artifacts_dir, running_in_ci

SERVER_EPOCHS = 5
"""The shared server's default epochs (``FLY64_EPOCHS``): the UI backfill's reconstructions."""
BACKFILL_TIMEOUT_S = 900.0

ALLOWED_SKIP_MARKER = "may_skip_in_ci"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{ALLOWED_SKIP_MARKER}(reason): a skip that CI accepts (listed in the README with its reason)"
    )


SHARED_SERVER_MODULES = {"test_ui", "test_postgres_instance"}
"""The modules that read the session's ``dagster dev`` stack and backfill (they run in one pytest-xdist worker)."""


def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadgroup`` (``make test``) each module runs whole in one worker, so a module's
    fixtures are made once, and the shared-server modules run in the same worker, so the stack is made once."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            module = item.module.__name__.rsplit(".", 1)[-1]
            item.add_marker(pytest.mark.xdist_group("study_server" if module in SHARED_SERVER_MODULES else module))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI a skip is a failure, unless the test is marked ``may_skip_in_ci``: nothing vanishes unseen."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and running_in_ci() and not item.get_closest_marker(ALLOWED_SKIP_MARKER):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which allows only the skips the README lists: {reason}"


TORCH_DEFAULTS = (torch.get_num_threads(), torch.get_default_dtype(), torch.get_default_device())


@pytest.fixture(autouse=True)
def _torch_settings_restored():
    """pty-chi and some tests set torch's process-wide threads, dtype and device: no test sees another's."""
    yield
    threads, dtype, device = TORCH_DEFAULTS
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.set_default_device(device)


@pytest.fixture(scope="session")
def synthetic_study(tmp_path_factory) -> Path:
    """The demo synthetic tree, simulated once per session; tests copy it before changing it."""
    root = tmp_path_factory.mktemp("synthetic")
    simulate_study(root, scale="demo")
    return root


@pytest.fixture(scope="session")
def standard_study(tmp_path_factory) -> Path:
    """The default study's tree (``make study``: the standard scale), simulated once per session, read-only."""
    root = tmp_path_factory.mktemp("standard")
    simulate_study(root, scale="standard")
    return root


@pytest.fixture
def study_tree(synthetic_study, tmp_path) -> Path:
    """A private copy of the synthetic tree that a test may break."""
    return copy_study(synthetic_study, tmp_path / "inputs")


@pytest.fixture
def study_paths(study_tree, tmp_path) -> StudyPaths:
    return StudyPaths(
        phase_c_root=str(study_tree / "phase_c"),
        phase_d_root=str(study_tree / "phase_d"),
        artifact_root=str(tmp_path / "artifacts"),
    )


@pytest.fixture
def instance() -> DagsterInstance:
    with instance_for_test() as test_instance:
        yield test_instance


def postgres_instance_config(url: str) -> dict:
    """The shipped dagster.yaml with every storage in PostgreSQL (what docs/CLUSTER.md shows)."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config["storage"] = {"postgres": {"postgres_url": url}}
    return config


@pytest.fixture(scope="session")
def study_server(synthetic_study, tmp_path_factory) -> StudyServer:
    """``dagster dev`` as a user starts it (the shipped dagster.yaml, automation off so that the only runs are
    the tests'), on a PostgreSQL instance where the server is installed."""
    root = tmp_path_factory.mktemp("study_server")
    copy_study(synthetic_study, root / "inputs")
    home = root / "dagster_home"
    home.mkdir()
    kept = kept_artifacts_dir("ui", tmp_path_factory)
    binaries = postgres_binaries()
    with ExitStack() as stack:
        if binaries is None:
            config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
        else:
            config = postgres_instance_config(stack.enter_context(throwaway_postgres(binaries)))
        (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        server = DagsterDev(REPO_ROOT, study_environment(root, str(SERVER_EPOCHS)), log_path=kept / "dagster_dev.log")
        stack.callback(server.stop)
        server.start()
        server.graphql("mutation { setNuxSeen }")  # what clicking "Skip" on the first visit's dialog records
        yield StudyServer(server, root, home, binaries is not None, kept)


@pytest.fixture(scope="session")
def study_backfill(study_server) -> StudyBackfill:
    """The UI's "Materialize all" backfill of every partition, once per session, through the daemon."""
    backfill_id, backfill, seconds = run_ui_backfill(
        study_server.server, STUDY_PARTITIONS.get_partition_keys(), BACKFILL_TIMEOUT_S
    )
    print(f"backfill {backfill_id}: {backfill['status']} in {seconds:.0f} s (PostgreSQL: {study_server.on_postgres})")
    return StudyBackfill(backfill_id, backfill, seconds)


@pytest.fixture(scope="session")
def slurm() -> Slurm:
    """A one-node Slurm on this machine (Debian's slurmctld, slurmd and slurm-client; CI installs them), once per
    session; the tests hand its ``env`` (``SLURM_CONF``) to the commands they start."""
    if not slurm_installed():
        pytest.skip("Slurm is not installed: apt-get install slurmctld slurmd slurm-client")
    if os.geteuid() != 0:
        pytest.skip("slurmd starts jobs only as root")
    with throwaway_slurm() as running:
        yield running
