"""GPU placement: steps spread over the GPUs, never more than jobs_per_gpu on one, slots freed on exit."""

import threading
import time

import pytest

from fly64_assets.gpu_slots import NoFreeGpuSlot, lease_gpu, placed_device


def test_leases_spread_over_gpus_before_doubling_up_and_block_when_full(tmp_path):
    held, release = [], threading.Event()

    def step():
        with lease_gpu(n_gpus=2, per_gpu=2, lock_dir=tmp_path, timeout_s=30, poll_s=0.05) as gpu:
            held.append(gpu)
            release.wait(30)

    workers = [threading.Thread(target=step) for _ in range(4)]
    for worker in workers:
        worker.start()
        time.sleep(0.1)
    assert held == [0, 1, 0, 1]  # one per GPU first, then the second slot of each
    with pytest.raises(NoFreeGpuSlot, match="2 GPU\\(s\\) x 2 job"):
        with lease_gpu(n_gpus=2, per_gpu=2, lock_dir=tmp_path, timeout_s=0.3, poll_s=0.05):
            pass
    release.set()
    for worker in workers:
        worker.join()
    with lease_gpu(n_gpus=2, per_gpu=2, lock_dir=tmp_path, timeout_s=1) as gpu:
        assert gpu == 0  # every slot was given back


def test_a_slot_is_freed_when_its_holder_dies(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from fly64_assets.gpu_slots import lease_gpu\n"
        f"with lease_gpu(1, 1, Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(60)"
    )], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(NoFreeGpuSlot):
        with lease_gpu(1, 1, tmp_path, timeout_s=0.3, poll_s=0.05):
            pass
    holder.kill()
    holder.wait()
    with lease_gpu(1, 1, tmp_path, timeout_s=5, poll_s=0.05) as gpu:
        assert gpu == 0


def test_explicit_devices_and_cpu_machines_need_no_lease(tmp_path):
    import torch

    with placed_device("cpu", tmp_path) as device:
        assert device == "cpu"
    with placed_device("cuda:1", tmp_path) as device:
        assert device == "cuda:1"
    if not torch.cuda.is_available():
        with placed_device("auto", tmp_path) as device:
            assert device == "auto"
