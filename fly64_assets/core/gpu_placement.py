"""Which GPU a reconstruction runs on, when it asks for ``auto`` on a machine with several.

*How many* reconstructions run at once is Dagster's business (the ``gpu`` pool in ``dagster.yaml``, or the
dask workers' ``GPU`` resource on a cluster); this module only decides *where*, so that concurrent steps on
one node spread over its GPUs before doubling up: each step holds an ``fcntl.flock`` on one slot file per
GPU, taking the first free one in the order slot 0 of every GPU, then slot 1, ... It never waits. The
kernel drops a lock when its holder exits, so a killed step never keeps its place.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path


def default_lock_dir() -> Path:
    """Node-local: GPUs belong to a node, so their slots are locked in the node's temporary folder."""
    return Path(tempfile.gettempdir()) / "fly64-gpu-placement"


@contextlib.contextmanager
def least_busy_gpu(n_gpus: int, lock_dir: Path | None = None) -> Iterator[int]:
    """Hold a place on the GPU with the fewest holders (the lowest index among equals) and yield its index."""
    if n_gpus < 1:
        raise ValueError("least_busy_gpu needs at least one GPU")
    folder = lock_dir or default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for slot in itertools.count():
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


@contextlib.contextmanager
def placed_device(requested: str, lock_dir: Path | None = None) -> Iterator[str]:
    """``auto`` on a GPU machine becomes ``cuda:<i>`` of the least busy GPU; anything else is kept as asked."""
    import torch

    if requested != "auto" or not torch.cuda.is_available():
        yield requested
        return
    with least_busy_gpu(torch.cuda.device_count(), lock_dir) as gpu:
        yield f"cuda:{gpu}"
