"""Which GPU a reconstruction runs on: a node-wide lease of one of ``gpus x jobs_per_gpu`` slots.

Dagster's ``gpu`` pool bounds how many reconstructions run at once; this module decides *where*: each
step, in whatever process it runs, takes a free slot by locking a file, so with 4 GPUs and 2 jobs per
GPU the first four steps land on GPUs 0-3 and the next four fill them up to two each. The lock is an
``fcntl.flock`` on a per-slot file: the kernel drops it when the holder exits, so a killed step never
keeps its slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

JOBS_PER_GPU_ENV = "FLY64_JOBS_PER_GPU"
DEFAULT_JOBS_PER_GPU = 4
"""Measured on one H100 (docs/PERFORMANCE.md): 4 jobs of ~1,000 patterns at once give ~2.5x the
throughput of one; 8 give ~3.1x but need twice the memory, so 4 is the default."""

LOCK_DIR_ENV = "FLY64_GPU_LOCK_DIR"


def jobs_per_gpu() -> int:
    value = int(os.environ.get(JOBS_PER_GPU_ENV, DEFAULT_JOBS_PER_GPU))
    if value < 1:
        raise ValueError(f"{JOBS_PER_GPU_ENV} must be >= 1, got {value}")
    return value


def default_lock_dir() -> Path:
    """Node-local: GPUs belong to a node, so their slots are locked in the node's temporary folder."""
    return Path(os.environ.get(LOCK_DIR_ENV, Path(tempfile.gettempdir()) / "fly64-gpu-slots"))


class NoFreeGpuSlot(TimeoutError):
    """Every slot stayed busy for the whole wait."""


@contextlib.contextmanager
def lease_gpu(n_gpus: int, per_gpu: int, lock_dir: Path | None = None, timeout_s: float = 3600.0,
              poll_s: float = 0.5) -> Iterator[int]:
    """Hold one free slot for the block and yield its GPU index.

    Slots are tried round by round (slot 0 of every GPU, then slot 1, ...), so steps spread over the
    GPUs before doubling up on one.
    """
    if n_gpus < 1:
        raise ValueError("lease_gpu needs at least one GPU")
    folder = lock_dir or default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        for slot in range(per_gpu):
            for gpu in range(n_gpus):
                handle = open(folder / f"gpu{gpu}-slot{slot}.lock", "w")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                try:
                    yield gpu
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                    handle.close()
                return
        if time.monotonic() > deadline:
            raise NoFreeGpuSlot(f"no free GPU slot among {n_gpus} GPU(s) x {per_gpu} job(s) after {timeout_s:.0f} s")
        time.sleep(poll_s)


@contextlib.contextmanager
def placed_device(requested: str, lock_dir: Path | None = None) -> Iterator[str]:
    """``auto`` on a GPU machine becomes ``cuda:<i>`` for a leased slot; anything else is kept as asked."""
    import torch

    if requested != "auto" or not torch.cuda.is_available():
        yield requested
        return
    with lease_gpu(torch.cuda.device_count(), jobs_per_gpu(), lock_dir) as gpu:
        yield f"cuda:{gpu}"
