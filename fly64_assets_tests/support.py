"""Small helpers shared by the test modules (one copy each): where the project is, whether this is CI, where a
test keeps what a person may want to look at afterwards, a free port, and a run's materialization metadata."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path

from dagster import AssetKey

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS_ENV = "FLY64_TEST_ARTIFACTS"
"""A folder for screenshots and server logs that outlive the test session (CI uploads it); unset: the session's
temporary folder."""
CI_TRUE = {"1", "true", "yes", "on"}
FAST_EPOCHS = 30
"""Enough LSQML epochs for the demo scale to converge well past the initial guess, on a 2-core CPU."""


def running_in_ci() -> bool:
    """``CI`` set to true/1/yes/on (any case): what CI services set. ``CI=false`` or an empty value is not CI."""
    return os.environ.get("CI", "").strip().lower() in CI_TRUE


def kept_artifacts_dir(name: str, tmp_path_factory) -> Path:
    """``$FLY64_TEST_ARTIFACTS/<name>`` when set, else a folder under the session's temporary folder: never inside
    the repository."""
    configured = os.environ.get(ARTIFACTS_ENV)
    if not configured:
        return tmp_path_factory.mktemp(name)
    folder = Path(configured) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_study(tree: Path, destination: Path) -> Path:
    """A private copy of a simulated input tree (tests change copies, never the session's shared tree)."""
    shutil.copytree(tree, destination)
    return destination


def call_as_plain_user(function, *args):
    """``function(*args)`` as this user or, when that is root (which reads and writes any file, as CI runs), in a
    forked child that has dropped to ``nobody``: a permission problem exists only for a user without privileges.
    Call it once as root first where the function imports lazily (the interpreter's own files are root's)."""
    if os.geteuid() != 0:
        return function(*args)
    nobody = pwd.getpwnam("nobody")
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()

    def as_nobody() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
        results.put(function(*args))

    child = context.Process(target=as_nobody)
    child.start()
    child.join(60)
    assert child.exitcode == 0, f"{function.__name__} as nobody ended with {child.exitcode}"
    return results.get()


def try_to_run_a_task(address: str, security, marker: str) -> str:
    """What a stranger gets who connects to the scheduler at ``address`` with ``security`` (None: plain) and sends a
    task that creates ``marker``: "ran", or what refused it."""
    from distributed import Client

    try:
        with Client(address, security=security, timeout=5, set_as_default=False) as client:
            client.submit(Path(marker).touch, pure=False).result(timeout=30)
    except Exception as error:  # noqa: BLE001 - whatever refused it is the answer
        return f"refused: {type(error).__name__}: {error}"
    return "ran"


def world_traversable_folder(prefix: str) -> Path:
    """A new folder that ``nobody`` can enter (pytest's own folders are private to their owner); the caller
    removes it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


def materialization_metadata(result, asset_key: AssetKey) -> dict[str | None, dict]:
    """Partition key -> metadata (plain values) of a run result's materializations of ``asset_key``."""
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == asset_key:
            found[materialization.partition] = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return found


def study_resources(paths, compute=None) -> dict:
    """What a user's ``materialize``/``materialize_to_memory`` gives the study's assets: the roots, and where the
    reconstruction step's partitions run (by default in the step's own process, as on a CPU-only machine)."""
    from fly64_assets.defs.compute import StudyCompute

    return {"study_paths": paths, "study_compute": compute or StudyCompute(workers=0)}
