"""GPU placement: concurrent steps spread over a node's GPUs before doubling up; a dead holder's place is freed.

(How many steps run at once is Dagster's: the ``gpu`` pool, or dask's GPU resource. Placement never waits.)
"""

import subprocess
import sys
import threading
import time

from fly64_assets.core.gpu_placement import least_busy_gpu, placed_device


def test_steps_spread_over_gpus_before_doubling_up_and_never_wait(tmp_path):
    held, release = [], threading.Event()

    def step():
        with least_busy_gpu(n_gpus=2, lock_dir=tmp_path) as gpu:
            held.append(gpu)
            release.wait(30)

    workers = [threading.Thread(target=step) for _ in range(5)]
    for started, worker in enumerate(workers, 1):
        worker.start()
        deadline = time.monotonic() + 30
        while len(held) < started:  # the next step starts once this one holds its place
            assert time.monotonic() < deadline, "a step waited for a place"
            time.sleep(0.01)
    assert held == [0, 1, 0, 1, 0]  # one per GPU first, then a second each, then a third: nobody waits
    release.set()
    for worker in workers:
        worker.join()
    with least_busy_gpu(n_gpus=2, lock_dir=tmp_path) as gpu:
        assert gpu == 0  # every place was given back


def test_a_place_is_freed_when_its_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from fly64_assets.core.gpu_placement import least_busy_gpu\n"
        f"with least_busy_gpu(2, Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(60)"
    )], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with least_busy_gpu(2, tmp_path) as gpu:
        assert gpu == 1  # GPU 0 is taken by the holder
    holder.kill()
    holder.wait()
    with least_busy_gpu(2, tmp_path) as gpu:
        assert gpu == 0


def test_explicit_devices_and_cpu_machines_need_no_placement(tmp_path):
    import torch

    with placed_device("cpu", tmp_path) as device:
        assert device == "cpu"
    with placed_device("cuda:1", tmp_path) as device:
        assert device == "cuda:1"
    if not torch.cuda.is_available():
        with placed_device("auto", tmp_path) as device:
            assert device == "auto"
