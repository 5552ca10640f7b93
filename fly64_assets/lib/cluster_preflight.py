"""Refusing, before any step is sent, a dask run that cannot work across machines.

A cluster that may put steps on other machines needs a Dagster instance they all reach (not sqlite) and
study roots on a filesystem they all see; otherwise outputs scatter and inputs look missing. Each problem
is one line of :class:`DaskSetupError`. See docs/CLUSTER.md.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance

SHARED_ARTIFACT_ROOT_ENV = "FLY64_SHARED_ARTIFACT_ROOT"
SHARED_INPUT_ROOTS_ENV = "FLY64_SHARED_INPUT_ROOTS"
TRUE_WORDS = ("1", "true", "yes", "on")

SHARED_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "fuse.beegfs", "ceph", "cephfs",
        "fuse.ceph-fuse", "glusterfs", "fuse.glusterfs", "panfs", "wekafs", "afs", "openafs", "pvfs2",
        "orangefs", "fuse.juicefs", "quobyte", "fuse.quobyte",
    }
)
"""Mount types that cluster nodes share. Another filesystem every worker sees at the same path can be
declared shared with ``FLY64_SHARED_ARTIFACT_ROOT=1`` / ``FLY64_SHARED_INPUT_ROOTS=1``."""


@dataclass(frozen=True)
class StudyRoots:
    """The folders a dask run's workers must all see (plain strings: this module knows no resources)."""

    phase_c_root: str
    phase_d_root: str
    artifact_root: str


class DaskSetupError(ValueError):
    """A dask run configured so that it cannot work across machines; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("this dask run cannot work across machines:\n" + "\n".join(f"- {p}" for p in self.problems))


def cluster_is_on_this_machine(cluster: Mapping) -> bool:
    """True for a ``local`` cluster and for a scheduler on a loopback address: a scheduler listening on
    loopback can only have workers on this machine. Any other address, and every batch-system cluster
    (slurm, pbs, ...), may put steps on other machines."""
    ((kind, options),) = dict(cluster).items()
    if kind == "local":
        return True
    if kind != "existing":
        return False
    return _is_loopback(str((options or {}).get("address", "")))


def _is_loopback(address: str) -> bool:
    if address.startswith("inproc://"):
        return True
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        host = rest[1:].split("]", 1)[0]
    else:
        host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_cluster(cluster: Mapping) -> str:
    ((kind, options),) = dict(cluster).items()
    if kind == "existing":
        return f"the scheduler at {(options or {}).get('address')}"
    return f"a dagster-dask '{kind}' cluster" if kind != "local" else "a local cluster"


def local_only_storages(instance: DagsterInstance) -> list[str]:
    """The instance's storages that live in this machine's files or memory (sqlite, in-memory)."""
    found = []
    for label, storage in (
        ("run storage", instance.run_storage),
        ("event log storage", instance.event_log_storage),
    ):
        if storage is None:
            continue
        kind = type(storage)
        text = f"{kind.__module__}.{kind.__name__}".lower()
        if "sqlite" in text or "inmemory" in text or "in_memory" in text:
            found.append(f"{label} {kind.__name__}")
    return found


def _mount_entries(mounts_text: str | None) -> list[tuple[str, str]]:
    """(mount point, filesystem type) from /proc/self/mounts text (read from the system when None)."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/self/mounts").read_text()
        except OSError:
            return []
    entries = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            point = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            entries.append((point, fields[2]))
    return entries


def filesystem_of(path: str | Path, mounts_text: str | None = None) -> tuple[str, str] | None:
    """(filesystem type, mount point) holding ``path`` (or its nearest existing parent); None if unknown."""
    target = Path(path).absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    target = target.resolve()
    best: tuple[str, str] | None = None
    for point, fstype in _mount_entries(mounts_text):
        mount = Path(point)
        # The longest mount point wins; among equal ones the later mount (it hides the earlier).
        if target.is_relative_to(mount) and (best is None or len(mount.parts) >= len(Path(best[1]).parts)):
            best = (fstype, point)
    return best


def is_shared_filesystem(path: str | Path, mounts_text: str | None = None) -> bool:
    found = filesystem_of(path, mounts_text)
    return found is not None and found[0].lower() in SHARED_FILESYSTEMS


def dask_setup_problems(
    instance: DagsterInstance,
    cluster: Mapping,
    roots: StudyRoots,
    environ: Mapping[str, str] | None = None,
    mounts_text: str | None = None,
) -> list[str]:
    """Why a dask run on ``cluster`` cannot work (empty: it can). Only a cluster that may use other machines
    is checked: then the Dagster instance must be shared (not sqlite) and the artifact root and the input
    roots must be on a shared filesystem (a known network/parallel mount type, or declared shared)."""
    if cluster_is_on_this_machine(cluster):
        return []
    env = os.environ if environ is None else environ
    where = describe_cluster(cluster)
    problems = []
    local = local_only_storages(instance)
    if local:
        problems.append(
            f"the Dagster instance is local-only ({', '.join(local)}) but {where} is not on this machine: "
            "workers on other nodes cannot record or read the run's events. Use a shared instance: "
            "dagster-postgres storage in $DAGSTER_HOME/dagster.yaml (docs/CLUSTER.md)."
        )

    def declared(name: str) -> bool:
        return env.get(name, "").strip().lower() in TRUE_WORDS

    def describe(root: str) -> str:
        found = filesystem_of(root, mounts_text)
        return f"on a {found[0]} filesystem mounted at {found[1]}" if found else "on a filesystem of unknown type"

    if not declared(SHARED_ARTIFACT_ROOT_ENV) and not is_shared_filesystem(roots.artifact_root, mounts_text):
        problems.append(
            f"the artifact root {roots.artifact_root} is {describe(roots.artifact_root)}, not a shared one, but "
            f"{where} may run steps on other machines, whose outputs (and the asset values under .values/) "
            "would then be scattered. Put FLY64_ARTIFACT_ROOT on the cluster's shared filesystem "
            f"(nfs, lustre, gpfs, beegfs, cephfs, ...), or set {SHARED_ARTIFACT_ROOT_ENV}=1 if every "
            "worker sees this folder at this same path."
        )
    for label, root in (("Phase C root", roots.phase_c_root), ("Phase D root", roots.phase_d_root)):
        if not declared(SHARED_INPUT_ROOTS_ENV) and not is_shared_filesystem(root, mounts_text):
            problems.append(
                f"the {label} {root} is {describe(root)}, not a shared one, but {where} may run steps on other "
                "machines, which would record the inputs they cannot see as missing (skips). Put it on the "
                f"shared filesystem, or set {SHARED_INPUT_ROOTS_ENV}=1 if every worker sees the same files at "
                "this same path (e.g. staged copies)."
            )
    return problems


def check_dask_setup(
    instance: DagsterInstance,
    cluster: Mapping,
    roots: StudyRoots,
    environ: Mapping[str, str] | None = None,
    mounts_text: str | None = None,
) -> None:
    """Raise :class:`DaskSetupError` listing every problem :func:`dask_setup_problems` finds."""
    problems = dask_setup_problems(instance, cluster, roots, environ, mounts_text)
    if problems:
        raise DaskSetupError(problems)
