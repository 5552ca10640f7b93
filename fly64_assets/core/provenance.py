"""What made a result: the software (Python, numpy, torch with its CUDA build, pty-chi, Dagster, this project and
its git commit), the machine (CPU model, GPUs and their driver), and the science code's version. No Dagster import.

``software()`` and ``machine()`` are gathered once per process and never import torch: the versions come from the
installed packages' metadata and the GPUs from the NVIDIA driver's files, so the summaries and the report, which
run in processes without torch, say the same as the workers. ``provenance(device)`` joins them for one result,
naming the device it ran on.

``science_version(...)`` fingerprints what decides a reconstruction's numbers: the pty-chi and torch releases and
the syntax tree of our modules that call them (``RECONSTRUCTION_MODULES``). A tree, not the text, so that comments,
docstrings and formatting leave it unchanged while any change of code changes it; the Dagster layer uses it as the
assets' code version, so an upgrade shows every reconstruction it invalidates as stale.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

PROJECT = "fly64_assets"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

RECONSTRUCTION_MODULES = ("lsqml.py", "regularization.py", "options.py")
"""The core modules whose code decides a reconstruction's arrays (the pty-chi call, the TV choice, the options)."""
QUALITY_MODULES = ("quality.py",)
"""The core module whose code decides a score against the truth."""

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
NVIDIA_VERSION = Path("/proc/driver/nvidia/version")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _torch_cuda_build() -> str | None:
    """torch's CUDA build ("12.8"; None for a CPU-only build), read from its ``version.py`` without importing torch
    (an import costs seconds in processes that reconstruct nothing)."""
    try:
        version_file = Path(str(metadata.distribution("torch").locate_file("torch/version.py")))
        match = re.search(r"^cuda\s*(?::[^=]*)?=\s*(?:'([^']*)'|\"([^\"]*)\"|None)", version_file.read_text(), re.MULTILINE)
    except (metadata.PackageNotFoundError, OSError):
        return None
    return (match.group(1) or match.group(2)) if match else None


def _git(*arguments: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_DIR), *arguments], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _project() -> dict:
    """This project's version, and its git commit with a dirty flag when it runs from a checkout (None else)."""
    commit = _git("rev-parse", "HEAD") if (PACKAGE_DIR.parent / ".git").exists() else None
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no", "--", "."))
    return {"version": _version(PROJECT), "git_commit": commit, "git_dirty": dirty}


@functools.cache
def software() -> dict:
    """The versions that made this process's results (gathered once per process)."""
    return {
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "torch_cuda": _torch_cuda_build(),
        "ptychi": _version("ptychi"),
        "dagster": _version("dagster"),
        PROJECT: _project(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """The NVIDIA GPUs' model names, in the driver's order (empty without the driver)."""
    models = []
    for information in sorted(NVIDIA_GPUS.glob("*/information")) if NVIDIA_GPUS.is_dir() else []:
        for line in information.read_text().splitlines():
            if line.startswith("Model:"):
                models.append(line.split(":", 1)[1].strip())
    return models


def _nvidia_driver() -> str | None:
    try:
        match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", NVIDIA_VERSION.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


@functools.cache
def machine() -> dict:
    """This machine's CPU model, its GPUs (as the driver lists them) and the NVIDIA driver (gathered once per process)."""
    return {"host": platform.node(), "cpu": _cpu_model(), "gpus": _gpus(), "nvidia_driver": _nvidia_driver()}


def device_model(device: str) -> str:
    """The model of the torch device a result was computed on: ``cuda:1`` → that GPU's name, ``cpu`` → the CPU's.
    A worker pinned to one GPU (``CUDA_VISIBLE_DEVICES``) sees it as ``cuda:0``: its model is then the one it sees."""
    found = machine()
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        visible = _visible_gpus(found["gpus"])
        name = visible[index] if index < len(visible) else "an NVIDIA GPU"
        return f"{name} (driver {found['nvidia_driver'] or 'unknown'})"
    return found["cpu"]


def _visible_gpus(gpus: list[str]) -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not all(part.strip().isdigit() for part in visible.split(",") if part.strip()):
        return gpus
    return [gpus[int(part)] for part in visible.split(",") if part.strip() and int(part) < len(gpus)]


def provenance(device: str | None = None, run_id: str | None = None) -> dict:
    """One result's provenance: the software, the machine, the device it ran on (with its model) and the Dagster
    run that asked for it."""
    return {
        "software": software(),
        "machine": machine(),
        "device": device,
        "device_model": device_model(device) if device else None,
        "dagster_run_id": run_id,
    }


def describe(made_by: dict) -> str:
    """The software of a ``provenance`` record in one line, e.g. ``pty-chi 2.2.0, torch 2.14.1 (CUDA 13.0), numpy
    2.4.6, Dagster 1.13.27, Python 3.11.7, fly64_assets 0.1.0 877d93828b (dirty)``."""
    software = made_by["software"]
    project = software[PROJECT]
    commit = "no checkout" if not project["git_commit"] else project["git_commit"][:10] + (" (dirty)" if project["git_dirty"] else "")
    cuda = f"CUDA {software['torch_cuda']}" if software["torch_cuda"] else "CPU build"
    return (f"pty-chi {software['ptychi']}, torch {software['torch']} ({cuda}), numpy {software['numpy']}, "
            f"Dagster {software['dagster']}, Python {software['python']}, {PROJECT} {project['version']} {commit}")


def syntax_fingerprint(path: Path) -> str:
    """The module's syntax tree without its docstrings, hashed: comments and formatting do not change it."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            node.body = node.body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


@functools.cache
def science_version(modules: tuple[str, ...]) -> str:
    """A short code version for results computed by ``modules`` (file names under ``core/``): the pty-chi and
    torch releases and a fingerprint of the modules' code, e.g. ``ptychi 2.2.0, torch 2.14.1, code 3f9a1c2e``."""
    digest = hashlib.sha256()
    for name in modules:
        digest.update(syntax_fingerprint(PACKAGE_DIR / "core" / name).encode())
    return f"ptychi {_version('ptychi')}, torch {_version('torch')}, code {digest.hexdigest()[:8]}"
