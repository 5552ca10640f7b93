"""The heart of the study: one pty-chi LSQML reconstruction per (dose, view, split) partition.

A partition whose input file is absent (a sparse view that Phase D did not write) is an expected skip:
the step succeeds, its value says ``status: skipped`` with the reason, and the ``input_available``
check turns WARN on that partition so the gap is visible in the UI. An input that breaks DATA-001 fails
its partition (red) with every violation in the error.
"""

import dataclasses
import json
import os
import time
from collections.abc import Iterator

import numpy as np

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    Config,
    DimensionPartitionMapping,
    Failure,
    IdentityPartitionMapping,
    MetadataValue,
    MultiPartitionMapping,
    Output,
    StaticPartitionMapping,
    asset,
)
from pydantic import Field

from fly64_assets import figures
from fly64_assets.artifacts import captured_log, remove_stale_partials, write_bytes, write_npz
from fly64_assets.bookkeeping import LOG_NAME, RECONSTRUCTED, SKIPPED, SELECTION_FACTS, missing_reason
from fly64_assets.contract import ContractError, load_valid
from fly64_assets.executors import GPU_STEP_TAGS
from fly64_assets.gpu_slots import placed_device
from fly64_assets.defs.sources import file_sha256, missing_result, phase_c_patched, phase_d_overlap, violations_result
from fly64_assets.ptychi_lsqml import DeviceUnavailableError, GpuOutOfMemoryError, LSQMLSettings, ReconstructionResult, reconstruct
from fly64_assets.resources import StudyPaths
from fly64_assets.study import (
    DOSE_DIMENSION,
    PHASE_D_PARTITIONS,
    SPLIT_DIMENSION,
    SPLITS,
    STUDY_PARTITIONS,
    VIEW_SPLIT_DIMENSION,
    Job,
)

INPUT_CHECK = "input_data001"
RECONSTRUCTION_FILE = "ptychi_reconstruction.npz"
PREVIEW_FILE = "preview.png"
GPU_POOL = "gpu"


class ReconstructionConfig(Config):
    """pty-chi LSQML options for this run. The defaults are the study's; FLY64_EPOCHS and FLY64_DEVICE
    change the defaults of a whole deployment (e.g. a quick look, or a CI instance) without run config."""

    epochs: int = Field(default=int(os.environ.get("FLY64_EPOCHS", "100")), ge=1, description="LSQML epochs.")
    batch_size: int = Field(default=96, ge=1, description="Patterns per LSQML mini-batch.")
    noise_model: str = Field(default="gaussian", description="LSQML noise model: gaussian or poisson.")
    device: str = Field(
        default=os.environ.get("FLY64_DEVICE", "auto"),
        description="auto (CUDA when present), cpu, cuda or cuda:<index>; cuda fails the step when no GPU is there.",
    )
    log_every: int = Field(default=10, ge=1, description="Write the loss to the run log every this many epochs.")

    def settings(self) -> LSQMLSettings:
        return LSQMLSettings(
            epochs=self.epochs, batch_size=self.batch_size, noise_model=self.noise_model, device=self.device
        )


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
    phase_d_keys = PHASE_D_PARTITIONS.get_partitions_def_for_dimension(VIEW_SPLIT_DIMENSION).get_partition_keys()
    to_phase_d = MultiPartitionMapping(
        {
            DOSE_DIMENSION: same_dose,
            VIEW_SPLIT_DIMENSION: DimensionPartitionMapping(
                VIEW_SPLIT_DIMENSION, StaticPartitionMapping({key: key for key in phase_d_keys})
            ),
        }
    )
    return [
        AssetDep(phase_c_patched, partition_mapping=to_phase_c),
        AssetDep(phase_d_overlap, partition_mapping=to_phase_d),
    ]


def _skip(job: Job, reason: str) -> Iterator:
    yield Output(
        {**job.as_record(), "status": SKIPPED, "reason": reason},
        metadata={"status": SKIPPED, "reason": reason},
    )
    yield missing_result(reason, INPUT_CHECK)


def _save(job: Job, result: ReconstructionResult, study_paths: StudyPaths) -> dict:
    """Write the reconstruction NPZ and its preview; returns their paths."""
    out_dir = study_paths.artifact_dir(job)
    npz_path, preview_path = out_dir / RECONSTRUCTION_FILE, out_dir / PREVIEW_FILE
    write_npz(
        npz_path,
        {
            "reconstructed_object": result.object,
            "reconstructed_probe": result.probe,
            "loss_per_epoch": result.loss_per_epoch,
            "object_origin_yx": result.object_origin_yx,
            "options_json": _json_text(result.settings.as_dict()),
        },
    )
    preview = figures.reconstruction_preview(result.object, result.probe, f"{job.partition_key} (LSQML)")
    write_bytes(preview_path, preview)
    return {"reconstruction_path": str(npz_path), "preview_path": str(preview_path), "preview": preview}


def _json_text(document: dict) -> np.ndarray:
    """JSON as a 0-d unicode array: readable with allow_pickle=False."""
    return np.array(json.dumps(document))


@asset(
    partitions_def=STUDY_PARTITIONS,
    deps=_input_deps(),
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
    group_name="reconstruction",
    code_version="1",
    check_specs=[
        AssetCheckSpec(
            INPUT_CHECK,
            asset="ptychi_reconstruction",
            partitions_def=STUDY_PARTITIONS,
            description="The partition's input exists and satisfies DATA-001. WARN marks an expected skip "
            "(e.g. a sparse view Phase D did not write), with its reason; ERROR lists the violations.",
        )
    ],
    description="pty-chi LSQML reconstruction of one (dose, view, split) dataset.",
)
def ptychi_reconstruction(
    context: AssetExecutionContext, config: ReconstructionConfig, study_paths: StudyPaths
) -> Iterator:
    job = Job.from_partition_key(context.partition_key)
    configuration_errors = study_paths.configuration_errors()
    if configuration_errors:
        raise Failure(description="the study's roots are misconfigured:\n" + "\n".join(configuration_errors))
    input_path = study_paths.input_path(job)
    if not input_path.exists():
        reason = missing_reason(job, input_path)
        context.log.warning(f"{job.partition_key} skipped: {reason}")
        yield from _skip(job, reason)
        return
    try:
        arrays, metadata = load_valid(input_path)
    except ContractError as error:
        yield violations_result(input_path, error.violations, INPUT_CHECK)
        raise Failure(
            description=f"{job.partition_key} not reconstructed: {input_path} breaks DATA-001:\n{error}",
            metadata={"violations": MetadataValue.json([str(v) for v in error.violations])},
        ) from error

    out_dir = study_paths.artifact_dir(job)
    for stale in remove_stale_partials(out_dir):
        context.log.warning(f"removed {stale.name}, left by an interrupted earlier run")
    settings = config.settings()
    started = time.perf_counter()

    def report_epoch(epoch: int, loss: float) -> None:
        job_log.info("epoch %d/%d loss %.6g", epoch, settings.epochs, loss)
        if epoch % config.log_every == 0 or epoch == settings.epochs:
            context.log.info(f"{job.partition_key} epoch {epoch}/{settings.epochs} loss {loss:.6g}")

    with placed_device(config.device) as device, captured_log(out_dir / LOG_NAME, ("ptychi", "fly64_assets")) as job_log:
        settings = dataclasses.replace(settings, device=device)
        job_log.info("input %s (%d patterns), settings %s", input_path, len(arrays["diffraction"]), settings)
        try:
            result = reconstruct(
                arrays["diffraction"], arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"], settings, report_epoch
            )
        except (DeviceUnavailableError, GpuOutOfMemoryError) as error:
            raise Failure(description=f"{job.partition_key} not reconstructed: {error}") from error
        if len(result.batch_sizes_tried) > 1:
            context.log.warning(f"{job.partition_key}: out of GPU memory, batch sizes tried {list(result.batch_sizes_tried)}")
        saved = _save(job, result, study_paths)
        job_log.info("done in %.2f s on %s, final loss %.6g", result.wall_time_s, result.device, result.loss_per_epoch[-1])

    facts = {key: metadata.get(key) for key in SELECTION_FACTS}
    record = {
        **job.as_record(),
        "status": RECONSTRUCTED,
        "input_path": str(input_path),
        "input_sha256": file_sha256(input_path),
        "reconstruction_path": saved["reconstruction_path"],
        "preview_path": saved["preview_path"],
        "log_path": str(out_dir / LOG_NAME),
        "wall_time_s": result.wall_time_s,
        "step_time_s": time.perf_counter() - started,
        "device": result.device,
        "n_patterns": result.n_patterns,
        "final_loss": float(result.loss_per_epoch[-1]),
        "object_origin_yx": list(result.object_origin_yx),
        "settings": result.settings.as_dict(),
        "batch_size_used": result.batch_sizes_tried[-1],
        **facts,
    }
    yield Output(
        record,
        metadata={
            "status": RECONSTRUCTED,
            "final_loss": record["final_loss"],
            "wall_time_s": result.wall_time_s,
            "device": result.device,
            "n_patterns": result.n_patterns,
            "epochs": settings.epochs,
            "batch_size": result.batch_sizes_tried[-1],
            "loss_per_epoch": MetadataValue.json([round(v, 8) for v in result.loss_per_epoch.tolist()]),
            "preview": MetadataValue.md(figures.markdown_image(saved["preview"], job.partition_key)),
            "reconstruction_path": MetadataValue.path(saved["reconstruction_path"]),
            "log_path": MetadataValue.path(record["log_path"]),
            **{key: value for key, value in facts.items() if value is not None},
        },
    )
    yield violations_result(input_path, [], INPUT_CHECK)
