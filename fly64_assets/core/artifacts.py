"""Writing outputs so they appear whole or not at all, and only inside the artifact root."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

PARTIAL_SUFFIX = ".partial"
"""Temporary files end so; a reader never mistakes one for an output."""


def inside_root(root: Path, path: Path) -> Path:
    """``path`` resolved, refusing anything that escapes ``root`` (e.g. through ``..``)."""
    resolved_root = Path(root).resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(resolved_root):
        raise ValueError(f"refusing to write {path}: it is outside the artifact root {resolved_root}")
    return resolved


def _partial_file(path: Path) -> tuple[int, str]:
    """Create ``.<name>~<host>~<pid>~<random>.partial`` beside ``path``: the owner is in the name, so a
    later run can tell a killed writer's leftover from a file another live writer is still filling."""
    owner = f"~{socket.gethostname()}~{os.getpid()}~"
    return tempfile.mkstemp(prefix=f".{path.name}{owner}", suffix=PARTIAL_SUFFIX, dir=path.parent)


def _writer_is_gone(partial: Path) -> bool:
    """True when the partial file's writer was a process of this host that no longer exists."""
    fields = partial.name[: -len(PARTIAL_SUFFIX)].split("~")
    if len(fields) != 4:
        return False
    _, host, pid, _ = fields
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


MIN_FREE_BYTES = 256 * 2**20
"""The least free space an artifact root's filesystem must have before a study writes there: a reconstruction's
files are a few MB at the demo scale, tens of MB at full scale."""


def unwritable_reason(root: Path, min_free_bytes: int = MIN_FREE_BYTES) -> str | None:
    """Why outputs cannot be written under ``root``, in one line, or None: a file stands where it or a folder
    above it should be, its filesystem is mounted read-only, this user may not write there, or the filesystem
    has less than ``min_free_bytes`` free. A root that does not exist yet is judged by the folder it would be
    made in. Nothing is written."""
    root = Path(root)
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"artifact root {root} cannot be a folder: {existing} is a file"
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return f"artifact root {root} is not writable: {existing} is on a read-only filesystem"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"artifact root {root} is not writable: permission denied in {existing}"
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        return (f"artifact root {root} is on a full filesystem: {free / 2**20:.0f} MiB free, "
                f"at least {min_free_bytes / 2**20:.0f} MiB needed")
    return None


def file_sha256(path: Path) -> str:
    """The file's content hash, read in 1 MiB blocks (an input's identity: its data version, its record)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_file_mode() -> int:
    """The mode an ordinary new file gets under this process's umask (0644 under the usual 022).

    Temporary files are created 0600 (``mkstemp``); an output renamed into place must instead be readable as
    the user's umask allows (colleagues, a web server, the next pipeline on a shared filesystem). The umask is
    read from /proc (Linux) because setting it to read it back is not thread-safe.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _seal(handle: IO[Any]) -> None:
    """Give the finished temporary file its published mode and put its bytes on disk before the rename."""
    handle.flush()
    os.fchmod(handle.fileno(), new_file_mode())
    os.fsync(handle.fileno())


def _publish(tmp_name: str, path: Path) -> None:
    """Rename into place, then fsync the folder so the rename itself survives a crash."""
    os.replace(tmp_name, path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a hidden temporary file beside ``path``; on success it replaces ``path`` in one rename.

    On any exception the temporary file is removed, so readers only ever see the old file or the new
    whole file. The file and then its folder are fsynced around the rename, so a crash cannot leave an
    empty new file or lose the rename; the file gets the mode of an ordinary new file (:func:`new_file_mode`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _partial_file(path)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            _seal(handle)
        _publish(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write an uncompressed NPZ (plain arrays only: nothing that needs pickle to read)."""
    with atomic_file(path) as handle:
        np.savez(handle, allow_pickle=False, **arrays)


def write_json(path: Path, document: Any) -> None:
    with atomic_file(path, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=False)
        handle.write("\n")


def write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def captured_log(path: Path, logger_names: tuple[str, ...]) -> Iterator[logging.Logger]:
    """Collect the named loggers' records into ``path``, which appears (whole) when the block ends.

    The log is published whatever the outcome, since a failed job's log is where its cause is read.
    Yields a logger whose lines go only to this file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _partial_file(path)
    with os.fdopen(fd, "w") as handle:
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        job_logger = logging.getLogger(f"fly64.job.{id(handler)}")
        job_logger.propagate = False
        watched = [logging.getLogger(name) for name in logger_names] + [job_logger]
        saved = [(logger.level, logger.propagate) for logger in watched]
        for logger in watched:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False  # the job's lines belong in its file, not on the console
        try:
            yield job_logger
        except BaseException as error:
            job_logger.exception("job failed: %s", error)
            raise
        finally:
            for logger, (level, propagate) in zip(watched, saved):
                logger.removeHandler(handler)
                logger.setLevel(level)
                logger.propagate = propagate
            _seal(handle)
            _publish(tmp_name, path)


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete temporary files whose writer was killed mid-write (never those of a live writer)."""
    candidates = sorted(Path(folder).glob(f".*{PARTIAL_SUFFIX}")) if Path(folder).is_dir() else []
    stale = [path for path in candidates if _writer_is_gone(path)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
