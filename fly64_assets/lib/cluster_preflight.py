"""Refusing, before any partition is sent, a cluster whose workers may not see the study's folders.

Workers on other machines read the inputs and write the artifacts themselves (the run's events stay with the
run's process), so the roots must be on a filesystem they all see; otherwise outputs scatter and inputs look
missing. Each problem is one line of :class:`DaskSetupError`. See docs/CLUSTER.md.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

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


class DaskSetupError(ValueError):
    """A dask run configured so that it cannot work (across machines, or safely); one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("this dask setup cannot run the study:\n" + "\n".join(f"- {p}" for p in self.problems))


def scheduler_is_on_this_machine(address: str) -> bool:
    """True for a scheduler on a loopback address: it can only have workers on this machine. Any other
    address, and every batch-system cluster (slurm, pbs, ...), may put partitions on other machines."""
    return _is_loopback(address)


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


def remote_roots_problems(
    where: str, roots: dict[str, Path], environ: Mapping[str, str] | None = None, mounts_text: str | None = None
) -> list[str]:
    """Why workers on other machines (``where`` describes the cluster) cannot use the study's ``roots`` (by label:
    "artifact root", "Phase C root", ...); empty when each is on a shared filesystem (a known network or parallel
    mount type) or declared shared."""
    env = os.environ if environ is None else environ

    def declared(name: str) -> bool:
        return env.get(name, "").strip().lower() in TRUE_WORDS

    def describe(root: Path) -> str:
        found = filesystem_of(root, mounts_text)
        return f"on a {found[0]} filesystem mounted at {found[1]}" if found else "on a filesystem of unknown type"

    problems = []
    for label, root in roots.items():
        artifacts = label == "artifact root"
        variable = SHARED_ARTIFACT_ROOT_ENV if artifacts else SHARED_INPUT_ROOTS_ENV
        if declared(variable) or is_shared_filesystem(root, mounts_text):
            continue
        consequence = (
            "whose outputs would then be scattered" if artifacts
            else "which would record the inputs they cannot see as missing (skips)"
        )
        problems.append(
            f"the {label} {root} is {describe(root)}, not a shared one, but {where} may run partitions on other "
            f"machines, {consequence}. Put it on the cluster's shared filesystem (nfs, lustre, gpfs, beegfs, "
            f"cephfs, ...), or set {variable}=1 if every worker sees it at this same path."
        )
    return problems
