"""A throwaway PostgreSQL server (Debian's ``postgresql`` package) in a temporary folder, listening only on a unix
socket there: the shared instance database of the session's ``dagster dev`` stack (conftest.py)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DATABASE_USER = "fly64"


def postgres_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_server_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as Debian's `postgres` account then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def throwaway_postgres(binaries: Path) -> Iterator[str]:
    """Start a server, yield its SQLAlchemy URL (the form dagster-postgres takes), stop and delete it."""
    # Not under pytest's folders (private to this user): the server's account must be able to enter it.
    folder = Path(tempfile.mkdtemp(prefix="fly64-postgres-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (folder, sockets):
            shutil.chown(path, "postgres")
    try:
        subprocess.run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", DATABASE_USER, "-A", "trust"]),
                       check=True, capture_output=True)
        options = f"-k {sockets} -c listen_addresses='' -p 5432"
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                        str(folder / "server.log"), "-w", "start"]), check=True, capture_output=True)
        try:
            # dagster-postgres installs psycopg2; SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
            yield f"postgresql+psycopg2://{DATABASE_USER}@/postgres?host={sockets}&port=5432"
        finally:
            subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
