"""The whole study many ways on the same synthetic data, in one call: the old way against the paths users drive.

    python bench/compare_study.py [--scale demo|full] [--max-patterns 0] [--epochs 5] [--batch-size 96]
        [--paths old,old-all,ui,ui-warm,ui-auto,fly64,materialize] [--gpu-full]

(a)  old:         the old way: one plain pty-chi process per dataset (bench/old_way_job.py), one after another;
(a') old-all:     the old way, every dataset's process started at once (the honest competitor on a big machine);
(b)  ui:          the UI backfill of the 18 reconstruction partitions on ``dagster dev`` started by hand (the
                  shipped dagster.yaml, each run's partitions on the machine's default compute), launched with the
                  GraphQL request the UI sends, timed from the launch until the backfill is complete (the server is
                  started before: a user's is already running);
(b') ui-warm:     the same on ``fly64 ui`` (``make ui``): one warm dask cluster that every run of the backfill shares;
     ui-auto:     ui-warm with the study's default ``regularization: auto`` (the only path not at equal work);
(c)  fly64:       ``fly64 run`` (the partitions in one range run, then the summaries);
(d)  materialize: ``dagster asset materialize`` of the 18 partitions in one range run, then of the summaries.

Equal work: every path but ui-auto reconstructs with ``regularization: off`` (the old way's plain LSQML) at the
same epochs and batch size. Each Dagster path gets a fresh instance and artifact root. Printed per path: wall
time, the ratio of each old way's wall to it, runs (or processes) started, the most reconstructions that ran at
once (from each one's UTC start and end), GPU utilization (nvidia-smi, each second, while the path ran) and the
mean phase error against the truth over the reconstructed datasets (the study report's scoring box).

``--gpu-full``: the GPU measurement of docs/PERFORMANCE.md in one device call: ``--scale full`` uncapped, 100
epochs, paths old-all, ui-warm and materialize; the old way one by one is timed on one baseline and one dense
dataset and multiplied by the count of each (said so in the output).
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

from fly64_assets.core.bookkeeping import RECONSTRUCTION_RECORD, read_record  # noqa: E402
from fly64_assets.core.design import ALL_DATASETS, Dataset  # noqa: E402
from fly64_assets.core.partition_task import peak_concurrency  # noqa: E402
from fly64_assets.core.quality import compare_to_truth  # noqa: E402
from fly64_assets.core.synthetic import simulate_study  # noqa: E402
from fly64_assets_tests.dagster_dev import DagsterDev, StudyUI, run_ui_backfill  # noqa: E402

PER_PATTERN_KEYS = ("diffraction", "xcoords", "ycoords", "scan_index", "Y", "filenames", "nn_indices")
WHOLE_STUDY_RANGE = "1000|baseline_train...100000|sparse_test"
PATHS = ("old", "old-all", "ui", "ui-warm", "ui-auto", "fly64", "materialize")
RECONSTRUCTION_ASSETS = ["ptychi_reconstruction", "reconstruction_quality"]
BIN = Path(sys.executable).parent


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
    """Mean GPU utilisation from nvidia-smi, sampled each second while a path runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.wait(1.0):
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
            return "n/a"
        return f"{np.mean(self.samples):.0f}% mean" if self.samples else "no samples"


class Study:
    """The inputs and where each path writes."""

    def __init__(self, out: Path, epochs: int, batch: int) -> None:
        self.out, self.epochs, self.batch = out, epochs, batch
        self.inputs = out / "inputs"
        self.datasets = [d for d in ALL_DATASETS if self.input_path(d).is_file()]

    def input_path(self, dataset: Dataset) -> Path:
        return dataset.input_path(self.inputs / "phase_c", self.inputs / "phase_d")

    def environment(self, name: str, regularization: str = "off") -> dict[str, str]:
        """A fresh instance (the shipped dagster.yaml) and artifact root for one Dagster path."""
        home = self.out / name / "dagster_home"
        home.mkdir(parents=True)
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        env = {key: value for key, value in os.environ.items() if not key.startswith("FLY64_")}
        return {
            **env,
            "DAGSTER_HOME": str(home),
            "FLY64_PHASE_C_ROOT": str(self.inputs / "phase_c"),
            "FLY64_PHASE_D_ROOT": str(self.inputs / "phase_d"),
            "FLY64_ARTIFACT_ROOT": str(self.out / name / "artifacts"),
            "FLY64_DATA_DIR": str(self.out / name / "data"),
            "FLY64_EPOCHS": str(self.epochs),
            "FLY64_REGULARIZATION": regularization,  # off: like the old way, the spec's plain LSQML
            "VIRTUAL_ENV": str(BIN.parent),
            "PYTHONUNBUFFERED": "1",
        }


def phase_error(study: Study, dataset: Dataset, recon: np.ndarray, origin_yx) -> float:
    """Phase MAE against the truth over the split's Phase C scan box (as the study report scores it)."""
    baseline = np.load(study.input_path(Dataset(dataset.dose, "baseline", dataset.split)), allow_pickle=False)
    box = (baseline["ycoords"].min(), baseline["ycoords"].max(), baseline["xcoords"].min(), baseline["xcoords"].max())
    return compare_to_truth(recon, baseline["objectGuess"], tuple(origin_yx), box).phase_mae


def _old_way_command(study: Study, dataset: Dataset, out: Path) -> list[str]:
    return [sys.executable, str(REPO / "bench" / "old_way_job.py"), str(study.input_path(dataset)),
            str(out / f"{dataset.dose}_{dataset.view_split}.npz"), "--epochs", str(study.epochs),
            "--batch-size", str(study.batch)]


def _old_way_results(study: Study, out: Path, datasets: list[Dataset], wall: float, started: str) -> dict:
    errors, recon_seconds, placements = [], 0.0, []
    for dataset in datasets:
        saved = np.load(out / f"{dataset.dose}_{dataset.view_split}.npz", allow_pickle=False)
        errors.append(phase_error(study, dataset, saved["reconstructed_object"], saved["object_origin_yx"]))
        recon_seconds += float(saved["wall_time_s"])
        placements.append({"started_utc": str(saved["started_utc"]), "ended_utc": str(saved["ended_utc"])})
    return {"wall": wall, "started": started, "recon": recon_seconds, "errors": errors, "peak": peak_concurrency(placements)}


def run_old_way(study: Study, sample: bool = False) -> dict:
    """One process after another; ``sample``: only the first baseline and dense dataset, the wall multiplied by
    the count of each view (the uncapped GPU mode, where the whole old way would not fit one device call)."""
    out = study.out / "old"
    out.mkdir()
    datasets = study.datasets
    if sample:
        datasets = [next(d for d in study.datasets if d.view == view) for view in ("baseline", "dense")]
    seconds, all_started = {}, time.perf_counter()
    for dataset in datasets:
        started = time.perf_counter()
        subprocess.run(_old_way_command(study, dataset, out), check=True, capture_output=True)
        seconds[dataset.view] = time.perf_counter() - started  # by view: what the sampled mode multiplies
    wall = time.perf_counter() - all_started
    if sample:
        baselines = sum(d.view == "baseline" for d in study.datasets)
        counts = {"baseline": baselines, "dense": len(study.datasets) - baselines}  # a sparse view as a dense one
        wall = sum(seconds[view] * counts[view] for view in seconds)
        result = _old_way_results(study, out, datasets, wall, f"{len(study.datasets)} processes")
        views = ", ".join(f"{view} {seconds[view]:.1f} s x {counts[view]}" for view in seconds)
        return {**result, "note": f"wall estimated from one dataset per view ({views}); sparse views counted as dense"}
    return _old_way_results(study, out, datasets, wall, f"{len(datasets)} processes")


def run_old_way_all_at_once(study: Study) -> dict:
    """Every dataset's process started together, as a user with a big machine would."""
    out = study.out / "old-all"
    out.mkdir()
    started = time.perf_counter()
    processes = [subprocess.Popen(_old_way_command(study, d, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for d in study.datasets]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode:
            raise RuntimeError(f"an old-way process failed: {stderr.decode()[-2000:]}")
    wall = time.perf_counter() - started
    return _old_way_results(study, out, study.datasets, wall, f"{len(study.datasets)} processes")


def dagster_results(study: Study, env: dict, wall: float, started: str, with_summaries: bool = True) -> dict:
    """Errors against the truth and reconstruction time from the records a Dagster path left."""
    artifacts = Path(env["FLY64_ARTIFACT_ROOT"])
    errors, recon_seconds, placements = [], 0.0, []
    for dataset in study.datasets:
        record = read_record(dataset.artifact_dir(artifacts), RECONSTRUCTION_RECORD)
        if record is None:
            raise RuntimeError(f"{dataset.partition_key} was not reconstructed under {artifacts}")
        saved = np.load(record["reconstruction_path"], allow_pickle=False)
        errors.append(phase_error(study, dataset, saved["reconstructed_object"], record["object_origin_yx"]))
        recon_seconds += record["wall_time_s"]
        placements.append(record)
    result = {"wall": wall, "started": started, "recon": recon_seconds, "errors": errors, "peak": peak_concurrency(placements)}
    if with_summaries:
        manifest = json.loads((artifacts / "reconstruction_manifest.json").read_text())
        if any(entry["status"] != "succeeded" for entry in manifest["execution_results"]):
            raise RuntimeError(f"not every reconstruction succeeded: {manifest['execution_results']}")
    return result


def count_runs(env: dict) -> int:
    from dagster import DagsterInstance

    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return len(instance.get_runs())


def run_ui_path(study: Study, name: str, server_class=DagsterDev, regularization: str = "off") -> dict:
    """A fresh server (not timed: a user's is already running), then the UI's backfill of the 18 partitions."""
    env = study.environment(name, regularization)
    server = server_class(REPO, env, log_path=study.out / name / "dagster_dev.log")
    try:
        server.start()
        server.graphql("mutation { setNuxSeen }")
        keys = [dataset.partition_key for dataset in ALL_DATASETS]
        _, backfill, wall = run_ui_backfill(server, keys, timeout_s=3600, poll_s=0.5, assets=RECONSTRUCTION_ASSETS)
    finally:
        server.stop()
    if backfill["status"] != "COMPLETED_SUCCESS":
        raise RuntimeError(f"the backfill ended {backfill['status']}; see {server.log_path}")
    result = dagster_results(study, env, wall, f"{len(backfill['runs'])} runs", with_summaries=False)
    return {**result, "note": backfill_timeline(env)}


def backfill_timeline(env: dict) -> str:
    """Where a backfill's time went: the daemon's first tick (its loop runs every 30 s), the runs, the rest."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        launched = instance.get_backfills()[0].backfill_timestamp
        records = instance.get_run_records()
        first_run = min(record.create_timestamp.timestamp() for record in records) - launched
        last_end = max(record.end_time for record in records) - launched
    return (f"first runs created {first_run:.1f} s after the launch (the daemon's next tick), "
            f"last run finished at {last_end:.1f} s; the rest is the tick that marks the backfill complete")


def run_fly64_path(study: Study) -> dict:
    env = study.environment("fly64")
    command = [str(BIN / "fly64"), "run", "--allow-missing-phase-d", "--epochs", str(study.epochs), "--regularization", "off",
               "--batch-size", str(study.batch)]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True)
    wall = time.perf_counter() - started
    return dagster_results(study, env, wall, f"{count_runs(env)} runs")


def run_materialize_path(study: Study) -> dict:
    env = study.environment("materialize")
    base = [str(BIN / "dagster"), "asset", "materialize", "-m", "fly64_assets.definitions"]
    started = time.perf_counter()
    subprocess.run([*base, "--select", "ptychi_reconstruction,reconstruction_quality", "--partition-range", WHOLE_STUDY_RANGE],
                   check=True, env=env, cwd=REPO, capture_output=True)
    subprocess.run([*base, "--select", "reconstruction_manifest,skip_summary,study_report"],
                   check=True, env=env, cwd=REPO, capture_output=True)
    wall = time.perf_counter() - started
    return dagster_results(study, env, wall, f"{count_runs(env)} runs")


RUNNERS = {
    "old": run_old_way,
    "old-all": run_old_way_all_at_once,
    "ui": lambda study: run_ui_path(study, "ui"),
    "ui-warm": lambda study: run_ui_path(study, "ui-warm", StudyUI),
    "ui-auto": lambda study: run_ui_path(study, "ui-auto", StudyUI, regularization="auto"),
    "fly64": run_fly64_path,
    "materialize": run_materialize_path,
}
LABELS = {
    "old": "(a) old way, one process after another",
    "old-all": "(a') old way, all processes at once",
    "ui": "(b) UI backfill, dagster dev by hand",
    "ui-warm": "(b') UI backfill, fly64 ui (warm cluster)",
    "ui-auto": "     the same, regularization auto",
    "fly64": "(c) fly64 run",
    "materialize": "(d) dagster asset materialize (2 cmds)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["demo", "standard", "full"], default=None, help="demo (full with --gpu-full)")
    parser.add_argument("--max-patterns", type=int, default=0, help="cap per dataset (0: no cap)")
    parser.add_argument("--epochs", type=int, default=None, help="5 (100 with --gpu-full)")
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--paths", default=",".join(p for p in PATHS if p != "ui-auto"),
                        help=f"comma-separated, from {','.join(PATHS)} (old is always run)")
    parser.add_argument("--gpu-full", action="store_true",
                        help="the uncapped GPU measurement: full scale, 100 epochs (unless --scale/--epochs say "
                        "otherwise, e.g. to try it on a CPU at demo scale), old-all, ui-warm, materialize; the old way "
                        "one by one sampled on one dataset per view")
    parser.add_argument("--out", type=Path, default=REPO / "bench-output")
    args = parser.parse_args()
    if args.gpu_full:
        args.paths = "old-all,ui-warm,materialize"
    args.scale = args.scale or ("full" if args.gpu_full else "demo")
    args.epochs = args.epochs or (100 if args.gpu_full else 5)
    chosen = ["old", *[p for p in args.paths.split(",") if p in PATHS and p != "old"]]

    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    simulate_study(out / "simulated", scale=args.scale)
    capped_copy(out / "simulated", out / "inputs", args.max_patterns or None)
    study = Study(out, args.epochs, args.batch_size)
    sizes = [len(np.load(study.input_path(d), allow_pickle=False)["xcoords"]) for d in study.datasets]

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"machine: {platform.node()} · {device} · torch {torch.__version__}")
    print(f"study: scale {args.scale}, {len(study.datasets)} of 18 datasets present (the rest are skips), "
          f"{min(sizes)}-{max(sizes)} patterns each ({sum(sizes)} in all), {args.epochs} epochs, batch {args.batch_size}")
    print(f"{'path':42} {'wall s':>8} {'old/this':>9} {'old-all/this':>13} {'started':>13} {'peak':>5} {'phase MAE':>10} {'GPU':>9}")
    results = {}
    for name in chosen:
        with GpuSampler() as gpu:
            results[name] = RUNNERS[name](study, sample=True) if (name == "old" and args.gpu_full) else RUNNERS[name](study)
        result = results[name]
        ratio = results["old"]["wall"] / result["wall"]
        ratio_all = f"{results['old-all']['wall'] / result['wall']:12.2f}x" if "old-all" in results else f"{'-':>13}"
        print(f"{LABELS[name]:42} {result['wall']:8.1f} {ratio:8.2f}x {ratio_all} {result['started']:>13} "
              f"{result['peak']:5d} {np.mean(result['errors']):10.4f} {gpu.summary():>9}", flush=True)
    for name in chosen:
        if results[name].get("note"):
            print(f"{name}: {results[name]['note']}")
    old_errors = np.array(results["old"]["errors"]) if not args.gpu_full else np.array(results["old-all"]["errors"])
    for name in chosen[1:]:
        if name == "ui-auto" or len(results[name]["errors"]) != len(old_errors):
            continue
        change = (np.array(results[name]["errors"]) - old_errors) / old_errors
        worst = float(np.max(np.abs(change)))
        print(f"quality {name}: mean phase MAE {np.mean(results[name]['errors']) / np.mean(old_errors) - 1:+.1%} against "
              f"the old way, worst partition {worst:.1%} ({'every partition within' if worst <= 0.05 else 'NOT all within'} 5 %)")


if __name__ == "__main__":
    main()
