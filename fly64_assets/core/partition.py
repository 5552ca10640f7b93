"""One partition's whole job, knowing nothing of Dagster: load and check its input, reconstruct, save the
reconstruction and its ptychodus products, score it against the truth. What a worker runs; the Dagster step
(``defs/reconstruction/assets.py``) calls these functions per partition key and turns what they return (or
raise) into that key's events.

- ``reconstruct_partition``: a ``Skipped`` (input absent: an expected skip, e.g. a sparse view Phase D did not
  write) or a ``Reconstructed`` (the record written beside the files, the preview and curve figures).
- ``score_partition``: a ``Skipped`` or a ``Scored`` (the quality record written beside the reconstruction).
- An input that breaks DATA-001 raises ``InputRejected`` (its violations, for the check); anything else that
  makes the partition impossible raises ``PartitionFailed`` with a one-line reason.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import numpy as np

from fly64_assets.core.artifacts import (
    captured_log,
    file_sha256,
    inside_root,
    remove_stale_partials,
    write_bytes,
    write_json,
    write_npz,
)
from fly64_assets.core.bookkeeping import (
    LOG_NAME,
    QUALITY_RECORD,
    RECONSTRUCTED,
    RECONSTRUCTION_RECORD,
    SELECTION_FACTS,
    missing_reason,
    read_record,
)
from fly64_assets.core.contract import ContractError, Violation, load_valid
from fly64_assets.core.coverage import lit_fraction
from fly64_assets.core.design import Dataset
from fly64_assets.core.geometry import Geometry, GeometryError, resolve_geometry
from fly64_assets.core.lsqml import DeviceUnavailableError, GpuOutOfMemoryError, ReconstructionResult
from fly64_assets.core.options import Regularization, ReconstructionOptions
from fly64_assets.core.provenance import provenance
from fly64_assets.core.ptychodus_product import write_products
from fly64_assets.core.regularization import CandidateMap, choose_and_reconstruct, in_turn

RECONSTRUCTION_FILE = "ptychi_reconstruction.npz"
PREVIEW_FILE = "preview.png"
QUALITY_FILE = "quality.npz"
PHASE_C_SCAN_AREA = "phase_c_scan"
"""The scoring area of a partition scored on its split's Phase C scan box (the usual case)."""

LoadValid = Callable[[Path], tuple[dict, dict]]
EpochReport = Callable[[int, float], None]


class StepLog(Protocol):
    """Where a partition's notable events go besides its own log file (the Dagster step gives its run log)."""

    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...


class PartitionFailed(Exception):
    """One partition could not be done (its reason in one line); the others go on."""


class InputRejected(PartitionFailed):
    """The partition's input breaks DATA-001: ``violations`` name the file, the key and the rule."""

    def __init__(self, input_path: Path, error: ContractError) -> None:
        super().__init__(f"{input_path} breaks DATA-001:\n{error}")
        self.input_path = input_path
        self.contract_error = error
        self.violations: list[Violation] = error.violations


@dataclass(frozen=True)
class StudyFolders:
    """The input roots (written by other tools) and the artifact root (written by this study)."""

    phase_c_root: Path
    phase_d_root: Path
    artifact_root: Path

    def input_path(self, dataset: Dataset) -> Path:
        return dataset.input_path(self.phase_c_root, self.phase_d_root)

    def artifact_dir(self, dataset: Dataset) -> Path:
        return inside_root(self.artifact_root, dataset.artifact_dir(self.artifact_root))


@dataclass(frozen=True)
class Skipped:
    reason: str


@dataclass(frozen=True)
class Reconstructed:
    record: dict
    """The reconstruction record, as written to ``reconstruction.json``."""
    preview_png: bytes
    curves_png: bytes
    """The loss per epoch beside the phase error against the truth at the convergence snapshots."""


@dataclass(frozen=True)
class Scored:
    record: dict
    """The quality record, as written to ``quality.json``."""
    metrics: dict[str, float]
    """The quality metrics alone (MAE, PSNR, SSIM, FRC), by name."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


BATCH_JOB_VARIABLES = {"slurm": ("SLURM_JOB_ID", "SLURMD_NODENAME"), "pbs": ("PBS_JOBID", None)}
"""Per batch system, the variables its jobs set: the job's id and, where it has one, the node's name."""


def worker_identity() -> dict:
    """Where this process runs: ``host``, ``pid`` and, inside a batch job (a dask-jobqueue worker), ``batch_job``:
    the system, the job's id and its node (the hostname where the system does not name it)."""
    identity: dict = {"host": socket.gethostname(), "pid": os.getpid(), "batch_job": None}
    for system, (job_variable, node_variable) in BATCH_JOB_VARIABLES.items():
        if os.environ.get(job_variable):
            node = os.environ.get(node_variable or "") or socket.gethostname()
            identity["batch_job"] = {"system": system, "id": os.environ[job_variable], "node": node}
            break
    return identity


def partition_loader() -> LoadValid:
    """``load_valid`` remembered for one partition: its input file (and its split's Phase C file, for the
    scoring box) is decompressed and validated once for both the reconstruction and the score. A new one per
    partition, so at most two files are held."""
    return functools.lru_cache(maxsize=2)(load_valid)


def scoring_box(
    folders: StudyFolders, dataset: Dataset, own_positions: dict, load: LoadValid = load_valid
) -> tuple[tuple[float, ...], str]:
    """(box, area): the probe-centre bounding box of the split's Phase C scan, so every view of a split is
    scored on the same region (a thinned view is judged on the area the full scan covers), and
    ``PHASE_C_SCAN_AREA``. When the Phase C file is absent or breaks DATA-001 (a sibling's problem, which must
    fail only the partitions that read it), the dataset's own scan box, and the reason as the area."""
    baseline = folders.input_path(Dataset(dataset.dose, "baseline", dataset.split))
    area = PHASE_C_SCAN_AREA
    try:
        positions = load(baseline)[0]
    except ContractError as error:
        positions = own_positions
        problem = "is absent" if not baseline.exists() else f"breaks DATA-001 ({error.violations[0]})"
        area = f"own scan: the split's Phase C file {baseline} {problem}"
    ys, xs = positions["ycoords"], positions["xcoords"]
    return (float(ys.min()), float(ys.max()), float(xs.min()), float(xs.max())), area


def _truth_alignment(folders: StudyFolders, dataset: Dataset, arrays: dict, load: LoadValid) -> tuple[Callable, tuple, str]:
    """(align, box, area): ``align(recon, origin_yx)`` registers a reconstruction onto the truth (``objectGuess``)
    over ``scoring_box``'s box, the one alignment that the final score and the convergence snapshots share."""
    from fly64_assets.core.quality import align_to_truth  # scipy, scikit-image: only where a partition is scored

    box, area = scoring_box(folders, dataset, arrays, load)
    truth = arrays["objectGuess"]
    return (lambda recon, origin_yx: align_to_truth(recon, truth, tuple(origin_yx), box)), box, area


class _ConvergenceRecorder:
    """``reconstruct``'s ``on_snapshot``: each snapshot aligned and scored exactly as the final score is
    (``_truth_alignment`` + ``quality.score``), appended to ``curve`` (the record's ``convergence``: ``every``,
    ``epochs`` and one list per metric, the scoring area and the seconds spent scoring). At the demo scale a
    snapshot costs ~13 ms on an idle 2-core CPU (registration ~9 ms, every metric ~4 ms; the FRC and MAE alone
    would save only ~3 ms, so every metric is kept) against ~0.24 s per epoch: 10 snapshots add ~0.5 % to a
    100-epoch run (1-4 % measured with the cores shared by four runs). A snapshot that cannot be scored stops
    the curve (``error`` says why), never the reconstruction."""

    def __init__(self, every: int, align: Callable, area: str, log) -> None:
        from fly64_assets.core.quality import QualityMetrics

        self.every, self._align, self._log = every, align, log
        self._metrics = [name for name in QualityMetrics.__dataclass_fields__ if name != "shift_yx"]
        self.curve = {"every": every, "epochs": [], **{name: [] for name in self._metrics},
                      "scoring_area": area, "scoring_time_s": 0.0, "error": None}

    def __call__(self, epoch: int, obj: np.ndarray, origin_yx: tuple[float, float]) -> None:
        from fly64_assets.core.quality import score

        if self.curve["error"] is not None:
            return
        started = time.perf_counter()
        try:
            aligned = self._align(obj, origin_yx)
            metrics = score(aligned.recon, aligned.truth, aligned.shift_yx, aligned.phase_ramp_yx).as_dict()
        except Exception as error:  # noqa: BLE001 - a curve is a diagnostic: it must not fail the reconstruction
            self.curve["error"] = f"epoch {epoch}: {type(error).__name__}: {error}"
            self._log.warning("convergence curve stopped at epoch %d: %s", epoch, error)
            return
        finally:
            self.curve["scoring_time_s"] += time.perf_counter() - started
        self.curve["epochs"].append(epoch)
        for name in self._metrics:
            self.curve[name].append(metrics[name])
        self._log.info("epoch %d against the truth: phase MAE %.4g rad, FRC resolution %.3g px", epoch,
                       metrics["phase_mae"], metrics["frc_resolution_px"])


def _convergence_recorder(
    every: int, folders: StudyFolders, dataset: Dataset, arrays: dict, load: LoadValid, log
) -> _ConvergenceRecorder | None:
    """The snapshot scorer, or None when ``every`` is 0 or the input has no truth to score against."""
    if every <= 0 or "objectGuess" not in arrays:
        log.info("no convergence curve: %s", "convergence_every is 0" if every <= 0 else "no objectGuess")
        return None
    try:
        align, _, area = _truth_alignment(folders, dataset, arrays, load)
    except Exception as error:  # noqa: BLE001 - the curve is a diagnostic; the final score reports the problem
        log.warning("no convergence curve: %s: %s", type(error).__name__, error)
        return None
    return _ConvergenceRecorder(every, align, area, log)


def _load_input(input_path: Path, load: LoadValid) -> tuple[dict, dict]:
    try:
        return load(input_path)
    except ContractError as error:
        raise InputRejected(input_path, error) from error


def _save(
    dataset: Dataset, result: ReconstructionResult, out_dir: Path, arrays: dict, geometry: Geometry
) -> tuple[Path, Path, bytes, dict[str, Path]]:
    """Write the reconstruction NPZ, its preview PNG and its ptychodus products (NPZ and HDF5), which place the
    input's positions (``arrays``) on the object at the ``geometry``'s scale."""
    from fly64_assets.core import figures  # matplotlib: only where a partition draws

    npz_path, preview_path = out_dir / RECONSTRUCTION_FILE, out_dir / PREVIEW_FILE
    write_npz(
        npz_path,
        {
            "reconstructed_object": result.object,
            "reconstructed_probe": result.probe,
            "loss_per_epoch": result.loss_per_epoch,
            "object_origin_yx": result.object_origin_yx,
            # JSON as a 0-d unicode array: readable with allow_pickle=False
            "options_json": np.array(json.dumps(result.options.as_dict())),
        },
    )
    preview = figures.reconstruction_preview(result.object, result.probe, f"{dataset.partition_key} (LSQML)")
    write_bytes(preview_path, preview)
    products = write_products(
        out_dir, dataset.partition_key, result, arrays["ycoords"], arrays["xcoords"], dataset.dose, geometry,
        f"fly64 dose/overlap study: {dataset.view} view, {dataset.split} split, {dataset.dose} photons per pattern",
    )
    return npz_path, preview_path, preview, products


def reconstruct_partition(
    dataset: Dataset,
    folders: StudyFolders,
    options: ReconstructionOptions,
    *,
    convergence_every: int,
    cpu_threads: int | None,
    on_epoch: EpochReport,
    step_log: StepLog,
    load: LoadValid | None = None,
    on_choice_epoch: EpochReport | None = None,
    map_candidates: CandidateMap = in_turn,
    run_id: str | None = None,
) -> Skipped | Reconstructed:
    """Reconstruct one dataset with ``options`` (the TV weight chosen here when they say ``auto``), write the
    NPZ, preview, ptychodus products, the whole log and the record into its artifact folder; ``on_epoch`` gets
    the final reconstruction's every epoch and loss, ``on_choice_epoch`` the choice's epochs (``auto``), whose
    candidates run where ``map_candidates`` puts them. The record says what made it (``provenance``, with the
    Dagster ``run_id``) and holds what repeats it (the roots, the requested options, the CPU threads)."""
    from fly64_assets.core import figures  # matplotlib: only where a partition draws

    load = load or partition_loader()
    input_path = folders.input_path(dataset)
    if not input_path.exists():
        return Skipped(missing_reason(dataset, input_path))
    arrays, metadata = _load_input(input_path, load)
    try:  # before reconstructing: an unusable geometry setting fails the partition without spending compute
        geometry = resolve_geometry(metadata, arrays["diffraction"].shape[-1])
    except GeometryError as error:
        raise PartitionFailed(f"the geometry for the ptychodus products of {input_path}: {error}") from error

    out_dir = folders.artifact_dir(dataset)
    for stale in remove_stale_partials(out_dir):
        step_log.warning(f"removed {stale.name}, left by an interrupted earlier run")
    started, started_utc = time.perf_counter(), utc_now()
    with captured_log(out_dir / LOG_NAME, ("ptychi", "fly64_assets")) as job_log:
        job_log.info("input %s (%d patterns), options %s", input_path, len(arrays["diffraction"]), options.as_dict())
        convergence = _convergence_recorder(convergence_every, folders, dataset, arrays, load, job_log)

        def report_epoch(epoch: int, loss: float) -> None:
            job_log.info("epoch %d/%d loss %.6g", epoch, options.epochs, loss)
            on_epoch(epoch, loss)

        try:
            result, choice = choose_and_reconstruct(
                arrays["diffraction"], arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"], options, report_epoch,
                cpu_threads, snapshot_every=convergence.every if convergence else 0, on_snapshot=convergence,
                on_choice_epoch=on_choice_epoch, map_candidates=map_candidates,
            )
        except (DeviceUnavailableError, GpuOutOfMemoryError) as error:
            raise PartitionFailed(str(error)) from error
        if choice is not None:
            job_log.info("regularization: %s", choice.summary())
            step_log.info(f"{dataset.partition_key} regularization: {choice.summary()}")
        if len(result.batch_sizes_tried) > 1:
            step_log.warning(f"{dataset.partition_key}: out of GPU memory, batch sizes tried {list(result.batch_sizes_tried)}")
        npz_path, preview_path, preview, products = _save(dataset, result, out_dir, arrays, geometry)
        job_log.info("done in %.2f s on %s, final loss %.6g", result.wall_time_s, result.device, result.loss_per_epoch[-1])

    record = {
        **dataset.as_record(),
        "status": RECONSTRUCTED,
        "input_path": str(input_path),
        "input_sha256": file_sha256(input_path),
        "reconstruction_path": str(npz_path),
        "reconstruction_sha256": file_sha256(npz_path),
        "preview_path": str(preview_path),
        "ptychodus_npz_path": str(products["npz"]),
        "ptychodus_h5_path": str(products["h5"]),
        "geometry": geometry.as_record(),
        "log_path": str(out_dir / LOG_NAME),
        "wall_time_s": result.wall_time_s,
        "step_time_s": time.perf_counter() - started,
        "device": result.device,
        "worker": worker_identity(),
        "started_utc": started_utc,
        "ended_utc": utc_now(),
        "n_patterns": result.n_patterns,
        "final_loss": float(result.loss_per_epoch[-1]),
        "object_origin_yx": list(result.object_origin_yx),
        "options": result.options.as_dict(),
        "requested_options": options.as_dict(),
        "requested_regularization": options.regularization.value,
        "cpu_threads": cpu_threads,
        "roots": {"phase_c": str(folders.phase_c_root), "phase_d": str(folders.phase_d_root)},
        "regularization": choice.as_dict() if choice else None,
        "batch_size_used": result.batch_sizes_tried[-1],
        "convergence": convergence.curve if convergence else None,
        **{name: metadata.get(name) for name in SELECTION_FACTS},
        "provenance": provenance(result.device, run_id),
    }
    write_json(out_dir / RECONSTRUCTION_RECORD, record)
    return Reconstructed(record, preview, figures.curves_preview(result.loss_per_epoch, record["convergence"]))


def score_partition(
    dataset: Dataset, folders: StudyFolders, load: LoadValid | None = None, run_id: str | None = None
) -> Skipped | Scored:
    """Score one partition's saved reconstruction against the truth and write its quality record (which also says
    how the reconstruction was regularized, so the report can show it beside the scores)."""
    from fly64_assets.core.quality import score  # scipy, scikit-image: only where a partition is scored

    load = load or partition_loader()
    out_dir = folders.artifact_dir(dataset)
    input_path = folders.input_path(dataset)
    if not input_path.exists():
        return Skipped(missing_reason(dataset, input_path))
    reconstruction = read_record(out_dir, RECONSTRUCTION_RECORD)
    if reconstruction is None:
        raise PartitionFailed(
            f"no reconstruction to score in {out_dir}: materialize ptychi_reconstruction {dataset.partition_key} first"
        )
    arrays, _ = _load_input(input_path, load)
    with np.load(reconstruction["reconstruction_path"], allow_pickle=False) as saved:
        recon = saved["reconstructed_object"]
    align, box, area = _truth_alignment(folders, dataset, arrays, load)
    aligned = align(recon, reconstruction["object_origin_yx"])
    metrics = score(aligned.recon, aligned.truth, aligned.shift_yx, aligned.phase_ramp_yx)
    aligned_path = out_dir / QUALITY_FILE
    write_npz(aligned_path, {"aligned_phase": np.angle(aligned.recon), "truth_phase": np.angle(aligned.truth), "scan_box": np.array(box)})
    used = (reconstruction.get("options") or {}).get("regularization")  # absent from records older than the option
    record = {
        **dataset.as_record(),
        "status": RECONSTRUCTED,
        "n_patterns": reconstruction["n_patterns"],
        "aligned_path": str(aligned_path),
        "aligned_sha256": file_sha256(aligned_path),
        "scoring_area": area,
        "scan_area_lit": lit_fraction(arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"], box),
        **metrics.as_dict(),
        "requested_regularization": reconstruction.get("requested_regularization"),
        "tv_weight": Regularization(used).tv_weight if used else None,
        "regularization_choice": reconstruction.get("regularization"),
        "provenance": provenance("cpu", run_id),
    }
    write_json(out_dir / QUALITY_RECORD, record)
    return Scored(record, {name: value for name, value in metrics.as_dict().items() if name != "shift_yx"})
