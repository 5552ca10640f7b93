"""The heart of the study: each (dose, view, split) partition reconstructed with pty-chi LSQML and scored
against the ground truth, in one step per run.

One step handles every partition of its run: a single key (the UI's *Materialize* on one partition), or a
range (a backfill with ``BackfillPolicy.single_run()``, the default in process: the whole study is 3 runs,
one per dose; ``dagster asset materialize --partition-range`` and ``fly64 run`` make it 1; on dask the default
is a run per partition: see ``lib/executor.py``). torch and pty-chi are then imported
once per run, not once per partition. Each partition still gets its own materialization and metadata, its
own ``input_data001`` check result and, when only it fails, its own failed state: the step records
per-key events (``AssetMaterialization`` / ``AssetCheckEvaluation`` with ``partition=``), goes on with the
other keys after a failure and fails at the end naming the failed ones.

Why both assets are one step: a downstream step of an output that is not yielded is skipped, and a range
run cannot yield a per-partition value. With both in one ``multi_asset`` (``can_subset=True``), a run can
still select either alone: ``reconstruction_quality`` alone re-scores saved reconstructions.

A partition whose input file is absent (a sparse view that Phase D did not write) is an expected skip: it
is materialized with ``status: skipped`` and the reason, and its ``input_data001`` check is WARN with the
same reason, so a backfill ends successful and the gap is visible on that partition. An input that breaks
DATA-001 fails its partition, with an ERROR check listing every violation.
"""

import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    DimensionPartitionMapping,
    Failure,
    IdentityPartitionMapping,
    MetadataValue,
    MultiPartitionMapping,
    StaticPartitionMapping,
    multi_asset,
)

from fly64_assets.core.artifacts import captured_log, remove_stale_partials, write_bytes, write_json, write_npz
from fly64_assets.core.bookkeeping import (
    LOG_NAME,
    QUALITY_RECORD,
    RECONSTRUCTED,
    RECONSTRUCTION_RECORD,
    SELECTION_FACTS,
    SKIPPED,
    missing_reason,
    read_record,
)
from fly64_assets.core.contract import ContractError, load_valid
from fly64_assets.core.coverage import lit_fraction
from fly64_assets.core.design import PHASE_D_VIEW_SPLITS, SPLITS, Dataset
from fly64_assets.core.geometry import Geometry, GeometryError, resolve_geometry
from fly64_assets.core.gpu_placement import placed_device
from fly64_assets.core.lsqml import DeviceUnavailableError, GpuOutOfMemoryError, ReconstructionResult
from fly64_assets.core.options import Regularization
from fly64_assets.core.regularization import choose_and_reconstruct
from fly64_assets.core.ptychodus_product import write_products
from fly64_assets.defs.automation import react_to_inputs
from fly64_assets.defs.inputs.assets import file_sha256, phase_c_patched, phase_d_overlap
from fly64_assets.defs.inputs.checks import missing_check_metadata, violations_check_metadata
from fly64_assets.defs.inputs.partitions import DOSE_DIMENSION, SPLIT_DIMENSION, VIEW_SPLIT_DIMENSION
from fly64_assets.defs.reconstruction.config import ReconstructionConfig
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets.defs.resources import StudyPaths
from fly64_assets.lib.executor import GPU_STEP_TAGS, reconstruction_backfill_policy
from fly64_assets.lib.progress import StudyProgress, current_progress

RECONSTRUCTION = AssetKey("ptychi_reconstruction")
QUALITY = AssetKey("reconstruction_quality")
INPUT_CHECK = "input_data001"
GPU_POOL = "gpu"
RECONSTRUCTION_FILE = "ptychi_reconstruction.npz"
PREVIEW_FILE = "preview.png"
QUALITY_FILE = "quality.npz"


def cpu_threads_per_reconstruction(context: AssetExecutionContext, share_cores: bool = True) -> int:
    """Torch threads for a CPU reconstruction: the machine's cores shared among the reconstructions the ``gpu``
    pool lets run at once (or all of them when the run is alone: ``share_cores=False``). Measured on 2 cores:
    three runs reconstructing at once with torch's default (every core each) took 7x longer than with one thread
    each (docs/PERFORMANCE.md)."""
    cores = os.cpu_count() or 1
    if not share_cores:
        return cores
    pools = context.instance.get_settings("concurrency").get("pools") or {}
    return max(1, cores // max(1, int(pools.get("default_limit") or 1)))


class PartitionFailed(Exception):
    """One partition could not be done; the step goes on with the others and fails at the end."""


def _input_deps() -> list[AssetDep]:
    """Exact lineage: a baseline partition reads one Phase C file, a dense/sparse one one Phase D file.

    Keys are upstream dimension names; each StaticPartitionMapping maps upstream keys to downstream keys.
    """
    same_dose = DimensionPartitionMapping(DOSE_DIMENSION, IdentityPartitionMapping())
    to_phase_c = MultiPartitionMapping(
        {
            DOSE_DIMENSION: same_dose,
            SPLIT_DIMENSION: DimensionPartitionMapping(
                VIEW_SPLIT_DIMENSION, StaticPartitionMapping({split: f"baseline_{split}" for split in SPLITS})
            ),
        }
    )
    to_phase_d = MultiPartitionMapping(
        {
            DOSE_DIMENSION: same_dose,
            VIEW_SPLIT_DIMENSION: DimensionPartitionMapping(
                VIEW_SPLIT_DIMENSION, StaticPartitionMapping({key: key for key in PHASE_D_VIEW_SPLITS})
            ),
        }
    )
    return [
        AssetDep(phase_c_patched, partition_mapping=to_phase_c),
        AssetDep(phase_d_overlap, partition_mapping=to_phase_d),
    ]


def _check(key: str, passed: bool, severity: AssetCheckSeverity, description: str, metadata: dict) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=RECONSTRUCTION, check_name=INPUT_CHECK, passed=passed, severity=severity,
        description=description, metadata=metadata, partition=key,
    )


def _save(
    dataset: Dataset, result: ReconstructionResult, out_dir: Path, arrays: dict, geometry: Geometry
) -> tuple[Path, Path, bytes, dict[str, Path]]:
    """Write the reconstruction NPZ, its preview PNG and its ptychodus products (NPZ and HDF5), which place the
    input's positions (``arrays``) on the object at the ``geometry``'s scale."""
    from fly64_assets.core import figures  # matplotlib: only where a step draws

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


LoadValid = Callable[[Path], tuple[dict, dict]]


def _partition_loader() -> LoadValid:
    """``load_valid`` remembered for one partition: its input file (and its split's Phase C file, for the
    scoring box) is decompressed and validated once for both the reconstruction and the score. A new one per
    partition, so at most two files are held."""
    return functools.lru_cache(maxsize=2)(load_valid)


def _reconstruct_partition(
    context: AssetExecutionContext, dataset: Dataset, config: ReconstructionConfig, device: str, study_paths: StudyPaths,
    cpu_threads: int, load: LoadValid, progress: StudyProgress,
) -> Iterator:
    """Reconstruct one partition (or record its skip); yields its materialization and check result."""
    key = dataset.partition_key
    input_path = study_paths.input_path(dataset)
    if not input_path.exists():
        reason = missing_reason(dataset, input_path)
        context.log.warning(f"{key} skipped: {reason}")
        yield AssetMaterialization(RECONSTRUCTION, partition=key, metadata={"status": SKIPPED, "reason": reason})
        yield _check(key, False, AssetCheckSeverity.WARN, reason, missing_check_metadata())
        return
    try:
        arrays, metadata = load(input_path)
    except ContractError as error:
        yield _check(key, False, AssetCheckSeverity.ERROR, str(error), violations_check_metadata(input_path, error.violations))
        raise PartitionFailed(f"{input_path} breaks DATA-001:\n{error}") from error
    try:  # before reconstructing: an unusable geometry setting fails the partition without spending compute
        geometry = resolve_geometry(metadata, arrays["diffraction"].shape[-1])
    except GeometryError as error:
        raise PartitionFailed(f"the geometry for the ptychodus products of {input_path}: {error}") from error

    out_dir = study_paths.artifact_dir(dataset)
    for stale in remove_stale_partials(out_dir):
        context.log.warning(f"removed {stale.name}, left by an interrupted earlier run")
    options = config.options().model_copy(update={"device": device})
    started = time.perf_counter()
    with captured_log(out_dir / LOG_NAME, ("ptychi", "fly64_assets")) as job_log:

        def report_epoch(epoch: int, loss: float) -> None:
            job_log.info("epoch %d/%d loss %.6g", epoch, options.epochs, loss)
            progress.epoch(key, epoch, loss)
            if epoch % config.log_every == 0 or epoch == options.epochs:
                context.log.info(f"{key} epoch {epoch}/{options.epochs} loss {loss:.6g}")

        job_log.info("input %s (%d patterns), options %s", input_path, len(arrays["diffraction"]), options.as_dict())
        progress.partition_started(key, options.epochs)
        convergence = _convergence_recorder(config, study_paths, dataset, arrays, load, job_log)
        try:
            result, choice = choose_and_reconstruct(
                arrays["diffraction"], arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"], options, report_epoch,
                cpu_threads, snapshot_every=convergence.every if convergence else 0, on_snapshot=convergence,
            )
        except (DeviceUnavailableError, GpuOutOfMemoryError) as error:
            raise PartitionFailed(str(error)) from error
        if choice is not None:
            job_log.info("regularization: %s", choice.summary())
            context.log.info(f"{key} regularization: {choice.summary()}")
        if len(result.batch_sizes_tried) > 1:
            context.log.warning(f"{key}: out of GPU memory, batch sizes tried {list(result.batch_sizes_tried)}")
        npz_path, preview_path, preview, products = _save(dataset, result, out_dir, arrays, geometry)
        job_log.info("done in %.2f s on %s, final loss %.6g", result.wall_time_s, result.device, result.loss_per_epoch[-1])

    facts = {name: metadata.get(name) for name in SELECTION_FACTS}
    record = {
        **dataset.as_record(),
        "status": RECONSTRUCTED,
        "input_path": str(input_path),
        "input_sha256": file_sha256(input_path),
        "reconstruction_path": str(npz_path),
        "preview_path": str(preview_path),
        "ptychodus_npz_path": str(products["npz"]),
        "ptychodus_h5_path": str(products["h5"]),
        "geometry": geometry.as_record(),
        "log_path": str(out_dir / LOG_NAME),
        "wall_time_s": result.wall_time_s,
        "step_time_s": time.perf_counter() - started,
        "device": result.device,
        "n_patterns": result.n_patterns,
        "final_loss": float(result.loss_per_epoch[-1]),
        "object_origin_yx": list(result.object_origin_yx),
        "options": result.options.as_dict(),
        "requested_regularization": options.regularization.value,
        "regularization": choice.as_dict() if choice else None,
        "batch_size_used": result.batch_sizes_tried[-1],
        "convergence": convergence.curve if convergence else None,
        **facts,
    }
    write_json(out_dir / RECONSTRUCTION_RECORD, record)
    from fly64_assets.core.figures import curves_preview, markdown_image

    curves = curves_preview(result.loss_per_epoch, record["convergence"])
    yield AssetMaterialization(  # numbers as the report shows them; the full values are in the record
        RECONSTRUCTION,
        partition=key,
        metadata={
            "status": RECONSTRUCTED,
            "final_loss": _significant(record["final_loss"]),
            "wall time (s)": round(result.wall_time_s, 1),
            "device": result.device,
            "n_patterns": result.n_patterns,
            "epochs": options.epochs,
            "regularization": result.options.regularization.value,
            "tv_weight": result.options.regularization.tv_weight,
            **(
                {
                    "regularization_choice": MetadataValue.json(choice.as_dict()),
                    "regularization_cost_factor": round(choice.cost_factor, 2),
                    "regularization choice wall time (s)": round(choice.choice_wall_time_s, 1),
                }
                if choice
                else {}
            ),
            "batch_size": result.batch_sizes_tried[-1],
            "loss and convergence": MetadataValue.md(markdown_image(curves, f"{key} loss and convergence")),
            "preview": MetadataValue.md(markdown_image(preview, key)),
            "reconstruction_path": MetadataValue.path(str(npz_path)),
            "ptychodus_npz_path": MetadataValue.path(record["ptychodus_npz_path"]),
            "ptychodus_h5_path": MetadataValue.path(record["ptychodus_h5_path"]),
            "geometry": MetadataValue.json(record["geometry"]),
            "log_path": MetadataValue.path(record["log_path"]),
            **{name: value for name, value in facts.items() if value is not None},
        },
    )
    yield _check(key, True, AssetCheckSeverity.ERROR, f"DATA-001 satisfied: {input_path}", violations_check_metadata(input_path, []))


PHASE_C_SCAN_AREA = "phase_c_scan"


def scoring_box(
    study_paths: StudyPaths, dataset: Dataset, own_positions: dict, load: LoadValid = load_valid
) -> tuple[tuple[float, ...], str]:
    """(box, area): the probe-centre bounding box of the split's Phase C scan, so every view of a split is
    scored on the same region (a thinned view is judged on the area the full scan covers), and
    ``PHASE_C_SCAN_AREA``. When the Phase C file is absent or breaks DATA-001 (a sibling's problem, which must
    fail only the partitions that read it), the dataset's own scan box, and the reason as the area."""
    baseline = study_paths.input_path(Dataset(dataset.dose, "baseline", dataset.split))
    area = PHASE_C_SCAN_AREA
    try:
        positions = load(baseline)[0]
    except ContractError as error:
        positions = own_positions
        problem = "is absent" if not baseline.exists() else f"breaks DATA-001 ({error.violations[0]})"
        area = f"own scan: the split's Phase C file {baseline} {problem}"
    ys, xs = positions["ycoords"], positions["xcoords"]
    return (float(ys.min()), float(ys.max()), float(xs.min()), float(xs.max())), area


def _truth_alignment(study_paths: StudyPaths, dataset: Dataset, arrays: dict, load: LoadValid) -> tuple[Callable, tuple, str]:
    """(align, box, area): ``align(recon, origin_yx)`` registers a reconstruction onto the truth (``objectGuess``)
    over ``scoring_box``'s box, the one alignment that the final score and the convergence snapshots share."""
    from fly64_assets.core.quality import align_to_truth  # scipy, scikit-image: only where a step scores

    box, area = scoring_box(study_paths, dataset, arrays, load)
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
            metrics = score(aligned.recon, aligned.truth, aligned.shift_yx).as_dict()
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
    config: ReconstructionConfig, study_paths: StudyPaths, dataset: Dataset, arrays: dict, load: LoadValid, log
) -> _ConvergenceRecorder | None:
    """The snapshot scorer, or None when ``convergence_every`` is 0 or the input has no truth to score against."""
    if config.convergence_every <= 0 or "objectGuess" not in arrays:
        log.info("no convergence curve: %s", "convergence_every is 0" if config.convergence_every <= 0 else "no objectGuess")
        return None
    try:
        align, _, area = _truth_alignment(study_paths, dataset, arrays, load)
    except Exception as error:  # noqa: BLE001 - the curve is a diagnostic; the final score reports the problem
        log.warning("no convergence curve: %s: %s", type(error).__name__, error)
        return None
    return _ConvergenceRecorder(config.convergence_every, align, area, log)


def _score_partition(dataset: Dataset, study_paths: StudyPaths, load: LoadValid) -> Iterator:
    """Score one partition's saved reconstruction against the truth (or carry its skip through). The quality
    record also says how the reconstruction was regularized, so the report can show it beside the scores."""
    from fly64_assets.core.quality import score  # scipy, scikit-image: only where a step scores

    key = dataset.partition_key
    out_dir = study_paths.artifact_dir(dataset)
    input_path = study_paths.input_path(dataset)
    if not input_path.exists():
        yield AssetMaterialization(
            QUALITY, partition=key, metadata={"status": SKIPPED, "reason": missing_reason(dataset, input_path)}
        )
        return
    reconstruction = read_record(out_dir, RECONSTRUCTION_RECORD)
    if reconstruction is None:
        raise PartitionFailed(f"no reconstruction to score in {out_dir}: materialize ptychi_reconstruction {key} first")
    arrays, _ = load(input_path)
    with np.load(reconstruction["reconstruction_path"], allow_pickle=False) as saved:
        recon = saved["reconstructed_object"]
    align, box, area = _truth_alignment(study_paths, dataset, arrays, load)
    aligned = align(recon, reconstruction["object_origin_yx"])
    metrics = score(aligned.recon, aligned.truth, aligned.shift_yx)
    aligned_path = out_dir / QUALITY_FILE
    write_npz(aligned_path, {"aligned_phase": np.angle(aligned.recon), "truth_phase": np.angle(aligned.truth), "scan_box": np.array(box)})
    used = (reconstruction.get("options") or {}).get("regularization")  # absent from records older than the option
    lit = lit_fraction(arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"], box)
    record = {
        **dataset.as_record(),
        "status": RECONSTRUCTED,
        "n_patterns": reconstruction["n_patterns"],
        "aligned_path": str(aligned_path),
        "scoring_area": area,
        "scan_area_lit": lit,
        **metrics.as_dict(),
        "requested_regularization": reconstruction.get("requested_regularization"),
        "tv_weight": Regularization(used).tv_weight if used else None,
        "regularization_choice": reconstruction.get("regularization"),
    }
    write_json(out_dir / QUALITY_RECORD, record)
    metadata = {name: _significant(value) for name, value in metrics.as_dict().items() if name != "shift_yx"}
    yield AssetMaterialization(QUALITY, partition=key, metadata={**metadata, "scoring_area": area, "scan_area_lit": round(lit, 3)})


def _significant(value: float) -> float:
    """``value`` to 4 significant digits, as a number the UI shows briefly (the records keep every digit)."""
    return float(f"{value:.4g}")


def _outcome(key: str, failures: dict[str, str], input_exists: bool, selected) -> str:
    """One partition's outcome in a few words, for the progress display."""
    if key in failures:
        return "FAILED: " + " ".join(failures[key].split())[:300]  # on one line, the first violation included
    if not input_exists:
        return "skipped (input missing)"
    return "reconstructed" if RECONSTRUCTION in selected else "scored"


@multi_asset(
    name="ptychi_reconstruction",
    specs=[
        AssetSpec(
            RECONSTRUCTION, deps=_input_deps(), group_name="reconstruction", skippable=True, code_version="3",
            automation_condition=react_to_inputs(),
            description="pty-chi LSQML reconstruction of one (dose, view, split) dataset.",
        ),
        AssetSpec(
            QUALITY, deps=[RECONSTRUCTION], group_name="report", skippable=True, code_version="3",
            automation_condition=react_to_inputs(),
            description="The reconstruction against the ground truth (objectGuess): registered, phase-aligned, "
            "then amplitude/phase MAE, PSNR, SSIM and the FRC resolution (1/7 threshold).",
        ),
    ],
    check_specs=[
        AssetCheckSpec(
            INPUT_CHECK,
            asset=RECONSTRUCTION,
            partitions_def=STUDY_PARTITIONS,
            description="The partition's input exists and satisfies DATA-001. WARN marks an expected skip "
            "(e.g. a sparse view Phase D did not write), with its reason; ERROR lists the violations.",
        )
    ],
    partitions_def=STUDY_PARTITIONS,
    backfill_policy=reconstruction_backfill_policy(),
    can_subset=True,
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
)
def ptychi_reconstruction(context: AssetExecutionContext, config: ReconstructionConfig, study_paths: StudyPaths) -> Iterator:
    """Reconstruct and/or score every partition of the run (see the module's docstring); each partition's epochs
    and outcome go to ``current_progress()`` too (the ``fly64`` command's display; silent elsewhere)."""
    progress = current_progress()
    configuration_errors = study_paths.configuration_errors()
    if configuration_errors:
        raise Failure(description="the study's roots are misconfigured:\n" + "\n".join(configuration_errors))
    selected = context.selected_asset_keys
    failures: dict[str, str] = {}
    cpu_threads = cpu_threads_per_reconstruction(context, config.share_cores)
    with placed_device(config.device) as device:
        for key in context.partition_keys:
            dataset = Dataset.from_partition_key(key)
            load = _partition_loader()
            try:
                if RECONSTRUCTION in selected:
                    yield from _reconstruct_partition(context, dataset, config, device, study_paths, cpu_threads, load, progress)
                if QUALITY in selected:
                    yield from _score_partition(dataset, study_paths, load)
            except PartitionFailed as error:
                failures[key] = str(error)
                context.log.error(f"{key} failed: {error}")
            except Exception as error:  # noqa: BLE001 - one partition's failure must not stop the others
                failures[key] = f"{type(error).__name__}: {error}"
                context.log.exception(f"{key} failed unexpectedly")
            progress.partition_finished(key, _outcome(key, failures, study_paths.input_path(dataset).exists(), selected))
    if failures:
        listing = "\n\n".join(f"{key}: {message}" for key, message in failures.items())
        raise Failure(
            description=f"{len(failures)} of {len(context.partition_keys)} partition(s) failed:\n\n{listing}",
            metadata={"failed_partitions": MetadataValue.json(sorted(failures))},
        )
