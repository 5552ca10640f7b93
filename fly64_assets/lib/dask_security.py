"""TLS for the project's dask clusters: credentials made per cluster, and handed to other processes as files that
their owner alone can read. No Dagster.

A dask scheduler runs whatever code a client sends it, and a port on 127.0.0.1 is open to every user of the
machine (a shared login node). So every scheduler the project starts speaks TLS with certificates on both ends
(``temporary_security``: dask's ``Security.temporary()``, a self-signed certificate made for that cluster, held in
memory): a client without them is refused. A process that must join a running cluster (a run that ``fly64 ui``'s
``dagster dev`` starts, a user's notebook) gets them as a folder of three PEM files, ``ca.pem``, ``cert.pem``,
``key.pem`` (``FLY64_DASK_SECURITY``), each mode 0600 in a folder of mode 0700.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"
ENCRYPTED_SCHEMES = ("tls", "wss")
"""dask's address schemes that speak TLS; ``tcp`` (the default when none is given), ``ws`` and ``ucx`` do not."""


def temporary_security():
    """A ``distributed.Security`` of fresh credentials held in memory, encryption required."""
    from distributed.security import Security

    return Security.temporary()


def address_scheme(address: str) -> str:
    """``tls`` of ``tls://127.0.0.1:8786``; dask's default ``tcp`` for an address without one."""
    return address.split("://", 1)[0].lower() if "://" in address else "tcp"


def is_encrypted(address: str) -> bool:
    return address_scheme(address) in ENCRYPTED_SCHEMES


def _pem(value: str) -> str:
    """A credential's PEM text: ``Security`` holds either the text itself or a file's path."""
    return value if "\n" in value else Path(value).read_text()


def write_credentials(security, folder: Path) -> Path:
    """The client's credentials of ``security`` as ``folder``/{ca,cert,key}.pem: ``folder`` is made here, mode 0700,
    and each file is created with mode 0600 (never readable by anyone else, not even while written)."""
    folder = Path(folder)
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)  # whatever the umask
    for name, value in ((CA_FILE, security.tls_ca_file), (CERT_FILE, security.tls_client_cert),
                        (KEY_FILE, security.tls_client_key)):
        descriptor = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(_pem(value))
    return folder


@contextlib.contextmanager
def private_credentials(security) -> Iterator[Path]:
    """``security``'s client credentials in a new private temporary folder, removed at the end."""
    parent = Path(tempfile.mkdtemp(prefix="fly64-dask-"))  # mode 0700
    try:
        yield write_credentials(security, parent / "tls")
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def credential_problems(folder: str | Path) -> list[str]:
    """One line per reason ``folder`` cannot serve as a client's credentials (empty: it can)."""
    folder = Path(folder)
    missing = [name for name in (CA_FILE, CERT_FILE, KEY_FILE) if not (folder / name).is_file()]
    if missing:
        return [f"the dask TLS folder {folder} lacks {', '.join(missing)} (docs/CLUSTER.md)"]
    mode = stat.S_IMODE((folder / KEY_FILE).stat().st_mode)
    if mode & 0o077:
        return [f"the dask TLS key {folder / KEY_FILE} is readable by others (mode {mode:o}): chmod 600 it"]
    return []


def read_credentials(folder: str | Path):
    """A client's ``distributed.Security`` from a folder that ``write_credentials`` wrote (or a user laid out the
    same way); ``ValueError`` with ``credential_problems``' lines if it cannot be used."""
    from distributed.security import Security

    problems = credential_problems(folder)
    if problems:
        raise ValueError("; ".join(problems))
    folder = Path(folder)
    return Security(tls_ca_file=str(folder / CA_FILE), tls_client_cert=str(folder / CERT_FILE),
                    tls_client_key=str(folder / KEY_FILE), require_encryption=True)
