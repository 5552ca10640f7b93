"""The whole study, the old way against fly64 through Dagster, on the same synthetic study, in one call.

    python bench/compare_study.py [--scale full] [--max-patterns 1000] [--epochs 100] [--workers auto]

(a) the old way: one plain pty-chi process per job (bench/old_way_job.py), jobs one after another;
(b) ``fly64 run`` as a user launches it: every partition a Dagster run, in ``--workers`` processes that
    each lease a GPU slot (GPUs x FLY64_JOBS_PER_GPU on a GPU machine).
Prints the wall time of each, their ratio, the per-partition Dagster overhead, GPU utilisation (when
nvidia-smi is there) and both studies' error against the truth. Everything is written under --out.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fly64_assets.quality import compare_to_truth  # noqa: E402
from fly64_assets.study import ALL_JOBS, Job  # noqa: E402
from fly64_assets.synthetic import simulate_study  # noqa: E402

PER_PATTERN_KEYS = ("diffraction", "xcoords", "ycoords", "scan_index", "Y", "filenames", "nn_indices")


def capped_copy(source: Path, target: Path, max_patterns: int | None) -> None:
    """Copy the tree, keeping at most the first ``max_patterns`` positions of each file (a band of the
    raster, so the scan stays contiguous)."""
    shutil.rmtree(target, ignore_errors=True)
    for path in sorted(source.rglob("*.npz")):
        arrays = dict(np.load(path, allow_pickle=False))
        if max_patterns is not None:
            arrays = {k: (v[:max_patterns] if k in PER_PATTERN_KEYS else v) for k, v in arrays.items()}
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **arrays)


class GpuSampler:
    """Mean GPU utilisation from nvidia-smi, sampled twice a second while a phase runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout.split()
            if out:
                self.samples.append(float(np.mean([float(v) for v in out])))

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def summary(self) -> str:
        if not self.available:
            return "n/a (no nvidia-smi)"
        return f"{np.mean(self.samples):.0f} % mean, {np.max(self.samples):.0f} % peak" if self.samples else "no samples"


def run_old_way(inputs: Path, out: Path, jobs: list[Job], epochs: int, batch: int) -> float:
    started = time.perf_counter()
    for job in jobs:
        result = out / f"{job.dose}_{job.view_split}.npz"
        subprocess.run([sys.executable, str(REPO / "bench" / "old_way_job.py"), str(job.input_path(inputs / "phase_c", inputs / "phase_d")),
                        str(result), "--epochs", str(epochs), "--batch-size", str(batch)], check=True, capture_output=True)
    return time.perf_counter() - started


def run_fly64(inputs: Path, artifacts: Path, home: Path, epochs: int, batch: int, workers: str) -> float:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    command = [sys.executable, "-m", "fly64_assets.cli", "run", "--phase-c-root", str(inputs / "phase_c"),
               "--phase-d-root", str(inputs / "phase_d"), "--artifact-root", str(artifacts), "--allow-missing-phase-d",
               "--epochs", str(epochs), "--batch-size", str(batch), "--workers", workers]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True)
    return time.perf_counter() - started


def dagster_overheads(home: Path, records: dict[Job, dict]) -> tuple[float, float]:
    """Mean over partitions of (Dagster run wall - reconstruction) and (asset step - reconstruction)."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    run_minus, step_minus = [], []
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        for run in instance.get_runs():
            key = run.tags.get("dagster/partition")
            if run.job_name != "reconstruct_study" or key is None or Job.from_partition_key(key) not in records:
                continue
            stats = instance.get_run_stats(run.run_id)
            record = records[Job.from_partition_key(key)]
            run_minus.append(stats.end_time - stats.start_time - record["wall_time_s"])
            step_minus.append(record["step_time_s"] - record["wall_time_s"])
    return float(np.mean(run_minus)), float(np.mean(step_minus))


def phase_error(recon_path: Path, origin_yx, job: Job, inputs: Path) -> float:
    """Phase MAE against the truth over the split's Phase C scan box (as the study report scores it)."""
    baseline = np.load(Job(job.dose, "baseline", job.split).input_path(inputs / "phase_c", inputs / "phase_d"), allow_pickle=False)
    box = (baseline["ycoords"].min(), baseline["ycoords"].max(), baseline["xcoords"].min(), baseline["xcoords"].max())
    recon = np.load(recon_path, allow_pickle=False)["reconstructed_object"]
    return compare_to_truth(recon, baseline["objectGuess"], tuple(origin_yx), box).phase_mae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["demo", "full"], default="full")
    parser.add_argument("--max-patterns", type=int, default=1000, help="cap per job (0: no cap)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--workers", default="auto", help="fly64 run --workers")
    parser.add_argument("--out", type=Path, default=REPO / "bench-output")
    args = parser.parse_args()

    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    simulate_study(out / "simulated", scale=args.scale)
    inputs = out / "inputs"
    capped_copy(out / "simulated", inputs, args.max_patterns or None)
    jobs = [job for job in ALL_JOBS if job.input_path(inputs / "phase_c", inputs / "phase_d").is_file()]
    sizes = {job: len(np.load(job.input_path(inputs / "phase_c", inputs / "phase_d"), allow_pickle=False)["xcoords"]) for job in jobs}

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"machine: {platform.node()} · {device} · torch {torch.__version__}")
    print(f"sizes: scale {args.scale}, {len(jobs)} jobs present of 18, patterns per job "
          f"{min(sizes.values())}-{max(sizes.values())} (total {sum(sizes.values())}), epochs {args.epochs}, batch {args.batch_size}")

    (out / "old").mkdir()
    with GpuSampler() as old_gpu:
        old_s = run_old_way(inputs, out / "old", jobs, args.epochs, args.batch_size)
    print(f"(a) old way, one pty-chi process per job in sequence: {old_s:.1f} s; GPU utilisation {old_gpu.summary()}")

    with GpuSampler() as new_gpu:
        new_s = run_fly64(inputs, out / "artifacts", out / "dagster_home", args.epochs, args.batch_size, args.workers)
    print(f"(b) fly64 run --workers {args.workers} through Dagster: {new_s:.1f} s; GPU utilisation {new_gpu.summary()}")
    print(f"ratio (a)/(b): {old_s / new_s:.2f}x")

    manifest = json.loads((out / "artifacts" / "reconstruction_manifest.json").read_text())
    values = out / "artifacts" / ".values" / "ptychi_reconstruction"
    records = {job: json.loads((values / str(job.dose) / f"{job.view_split}.json").read_text()) for job in jobs}
    run_overhead, step_overhead = dagster_overheads(out / "dagster_home", records)
    print(f"per-partition Dagster overhead: run wall - reconstruction {run_overhead:.2f} s mean; "
          f"asset step - reconstruction {step_overhead:.2f} s mean "
          f"({sum(r['status'] == 'succeeded' for r in manifest['execution_results'])} partitions)")

    old_err = [phase_error(out / "old" / f"{j.dose}_{j.view_split}.npz",
                           np.load(out / "old" / f"{j.dose}_{j.view_split}.npz")["object_origin_yx"], j, inputs) for j in jobs]
    new_err = [phase_error(Path(records[j]["reconstruction_path"]), records[j]["object_origin_yx"], j, inputs) for j in jobs]
    change = (np.mean(new_err) - np.mean(old_err)) / np.mean(old_err)
    print(f"quality, mean phase MAE vs truth over {len(jobs)} jobs: old {np.mean(old_err):.4f} rad, "
          f"fly64 {np.mean(new_err):.4f} rad ({change:+.1%}; {'within' if abs(change) <= 0.05 else 'OUTSIDE'} 5 %)")


if __name__ == "__main__":
    main()
