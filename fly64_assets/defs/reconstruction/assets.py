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

What one partition does (load and check its input, reconstruct, save, write products, score) is
``core/partition.py``, which knows nothing of Dagster; this step only calls it per key and records the events.

Why both assets are one step: a downstream step of an output that is not yielded is skipped, and a range
run cannot yield a per-partition value. With both in one ``multi_asset`` (``can_subset=True``), a run can
still select either alone: ``reconstruction_quality`` alone re-scores saved reconstructions.

A partition whose input file is absent (a sparse view that Phase D did not write) is an expected skip: it
is materialized with ``status: skipped`` and the reason, and its ``input_data001`` check is WARN with the
same reason, so a backfill ends successful and the gap is visible on that partition. An input that breaks
DATA-001 fails its partition, with an ERROR check listing every violation.
"""

import os
from collections.abc import Iterator

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

from fly64_assets.core.bookkeeping import RECONSTRUCTED, SELECTION_FACTS, SKIPPED
from fly64_assets.core.design import PHASE_D_VIEW_SPLITS, SPLITS, Dataset
from fly64_assets.core.gpu_placement import placed_device
from fly64_assets.core.options import Regularization
from fly64_assets.core.partition import (
    InputRejected,
    LoadValid,
    PartitionFailed,
    Reconstructed,
    Skipped,
    partition_loader,
    reconstruct_partition,
    score_partition,
)
from fly64_assets.defs.automation import react_to_inputs
from fly64_assets.defs.inputs.assets import phase_c_patched, phase_d_overlap
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


def _significant(value: float) -> float:
    """``value`` to 4 significant digits, as a number the UI shows briefly (the records keep every digit)."""
    return float(f"{value:.4g}")


def _reconstructed_metadata(key: str, done: Reconstructed) -> dict:
    """A reconstructed partition's metadata: numbers as the report shows them (the record keeps every value)."""
    from fly64_assets.core.figures import markdown_image

    record, choice = done.record, done.record["regularization"]
    return {
        "status": RECONSTRUCTED,
        "final_loss": _significant(record["final_loss"]),
        "wall time (s)": round(record["wall_time_s"], 1),
        "device": record["device"],
        "n_patterns": record["n_patterns"],
        "epochs": record["options"]["epochs"],
        "regularization": record["options"]["regularization"],
        "tv_weight": Regularization(record["options"]["regularization"]).tv_weight,
        **(
            {
                "regularization_choice": MetadataValue.json(choice),
                "regularization_cost_factor": round(choice["cost_factor"], 2),
                "regularization choice wall time (s)": round(choice["choice_wall_time_s"], 1),
            }
            if choice
            else {}
        ),
        "batch_size": record["batch_size_used"],
        "loss and convergence": MetadataValue.md(markdown_image(done.curves_png, f"{key} loss and convergence")),
        "preview": MetadataValue.md(markdown_image(done.preview_png, key)),
        "reconstruction_path": MetadataValue.path(record["reconstruction_path"]),
        "ptychodus_npz_path": MetadataValue.path(record["ptychodus_npz_path"]),
        "ptychodus_h5_path": MetadataValue.path(record["ptychodus_h5_path"]),
        "geometry": MetadataValue.json(record["geometry"]),
        "log_path": MetadataValue.path(record["log_path"]),
        **{name: record[name] for name in SELECTION_FACTS if record.get(name) is not None},
    }


def _reconstruct(
    context: AssetExecutionContext, dataset: Dataset, config: ReconstructionConfig, device: str, study_paths: StudyPaths,
    cpu_threads: int, load: LoadValid, progress: StudyProgress,
) -> Iterator:
    """One partition's reconstruction (``core.partition``), recorded as its materialization and check result."""
    key = dataset.partition_key
    options = config.options().model_copy(update={"device": device})

    def on_epoch(epoch: int, loss: float) -> None:
        progress.epoch(key, epoch, loss)
        if epoch % config.log_every == 0 or epoch == options.epochs:
            context.log.info(f"{key} epoch {epoch}/{options.epochs} loss {loss:.6g}")

    progress.partition_started(key, options.epochs)
    try:
        done = reconstruct_partition(
            dataset, study_paths.folders(), options, convergence_every=config.convergence_every,
            cpu_threads=cpu_threads, on_epoch=on_epoch, step_log=context.log, load=load,
        )
    except InputRejected as error:
        yield _check(key, False, AssetCheckSeverity.ERROR, str(error.contract_error),
                     violations_check_metadata(error.input_path, error.violations))
        raise
    if isinstance(done, Skipped):
        context.log.warning(f"{key} skipped: {done.reason}")
        yield AssetMaterialization(RECONSTRUCTION, partition=key, metadata={"status": SKIPPED, "reason": done.reason})
        yield _check(key, False, AssetCheckSeverity.WARN, done.reason, missing_check_metadata())
        return
    yield AssetMaterialization(RECONSTRUCTION, partition=key, metadata=_reconstructed_metadata(key, done))
    input_path = done.record["input_path"]
    yield _check(key, True, AssetCheckSeverity.ERROR, f"DATA-001 satisfied: {input_path}", violations_check_metadata(input_path, []))


def _score(dataset: Dataset, study_paths: StudyPaths, load: LoadValid) -> Iterator:
    """One partition's score against the truth (``core.partition``), recorded as its materialization."""
    done = score_partition(dataset, study_paths.folders(), load)
    key = dataset.partition_key
    if isinstance(done, Skipped):
        yield AssetMaterialization(QUALITY, partition=key, metadata={"status": SKIPPED, "reason": done.reason})
        return
    metrics = {name: _significant(value) for name, value in done.metrics.items()}
    yield AssetMaterialization(QUALITY, partition=key, metadata={
        **metrics, "scoring_area": done.record["scoring_area"], "scan_area_lit": round(done.record["scan_area_lit"], 3),
    })


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
            load = partition_loader()
            try:
                if RECONSTRUCTION in selected:
                    yield from _reconstruct(context, dataset, config, device, study_paths, cpu_threads, load, progress)
                if QUALITY in selected:
                    yield from _score(dataset, study_paths, load)
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
