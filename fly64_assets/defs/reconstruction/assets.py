"""The heart of the study: each (dose, view, split) partition reconstructed with pty-chi LSQML and scored
against the ground truth, in one step per run.

One step handles every partition of its run: a single key (the UI's *Materialize* on one partition), or a
range (a backfill with ``BackfillPolicy.single_run()``: the whole study is 3 runs, one per dose;
``dagster asset materialize --partition-range`` and ``fly64 run`` make it 1). The step does no science itself:
it hands its partitions to the ``study_compute`` resource (``defs/compute.py``: warm dask workers, or this
process) as ``PartitionRequest``s and records each ``PartitionOutcome`` as that partition finishes: its own
materialization and metadata, its own ``input_data001`` check result and, when only it fails, its own failed
state (per-key events with ``partition=``). The step fails at the end naming the failed partitions.

What one partition does (load and check its input, reconstruct, save, write products, score) is
``core/partition.py``, run as one task by ``core/partition_task.py``; neither knows Dagster.

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
    BackfillPolicy,
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
from fly64_assets.core.options import Regularization
from fly64_assets.core.partition import Reconstructed
from fly64_assets.core.provenance import describe
from fly64_assets.core.partition_task import PartitionOutcome, PartitionRequest, peak_concurrency
from fly64_assets.defs.automation import react_to_inputs
from fly64_assets.defs.compute import StudyCompute
from fly64_assets.defs.inputs.assets import ABSENT, phase_c_patched, phase_d_overlap
from fly64_assets.defs.inputs.checks import missing_check_metadata, violations_check_metadata
from fly64_assets.defs.inputs.partitions import DOSE_DIMENSION, SPLIT_DIMENSION, VIEW_SPLIT_DIMENSION
from fly64_assets.defs.reconstruction.config import ReconstructionConfig
from fly64_assets.defs.reconstruction.partitions import STUDY_PARTITIONS
from fly64_assets.defs.reconstruction.versions import (
    QUALITY_CODE_VERSION,
    RECONSTRUCTION_CODE_VERSION,
    input_partition,
    version_tags,
)
from fly64_assets.defs.resources import StudyPaths
from fly64_assets.lib.progress import current_progress

RECONSTRUCTION = AssetKey("ptychi_reconstruction")
QUALITY = AssetKey("reconstruction_quality")
INPUT_CHECK = "input_data001"
GPU_POOL = "gpu"
"""The instance's limit on reconstruction steps at once when each run brings its own compute (dagster.yaml).
Runs that share one scheduler take no slot: its workers are the limit (``reconstruction_pool``)."""


def reconstruction_pool() -> str | None:
    return None if StudyCompute.from_env().shared else GPU_POOL


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


def _worker_text(worker: dict) -> str:
    """``host pid N``, and inside a batch job which job on which node (``core.partition.worker_identity``)."""
    job = worker.get("batch_job")
    return f"{worker['host']} pid {worker['pid']}" + (f", {job['system']} job {job['id']} on {job['node']}" if job else "")


def _reconstructed_metadata(key: str, done: Reconstructed) -> dict:
    """A reconstructed partition's metadata: numbers as the report shows them (the record keeps every value)."""
    from fly64_assets.core.figures import markdown_image

    record, choice = done.record, done.record["regularization"]
    return {
        "status": RECONSTRUCTED,
        "final_loss": _significant(record["final_loss"]),
        "wall time (s)": round(record["wall_time_s"], 1),
        "device": record["device"],
        "worker": _worker_text(record["worker"]),
        "started (UTC)": record["started_utc"],
        "ended (UTC)": record["ended_utc"],
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
        **provenance_metadata(record["provenance"]),
    }


def provenance_metadata(provenance: dict) -> dict:
    """What made a result, for the UI: one line of versions and the device, and the whole record."""
    return {
        "made by": describe(provenance),
        "device model": provenance["device_model"] or "",
        "provenance": MetadataValue.json(provenance),
    }


def _reconstruction_events(key: str, outcome: PartitionOutcome, log, instance) -> Iterator:
    """A partition's reconstruction outcome as its materialization (with its versions: ``versions.py``) and its
    ``input_data001`` check result."""
    source, source_partition = input_partition(Dataset.from_partition_key(key))

    def tags(data_version: str, input_data_version: str) -> dict[str, str]:
        return version_tags(instance, RECONSTRUCTION_CODE_VERSION, data_version, source, source_partition, input_data_version)

    if outcome.rejection is not None:
        rejection = outcome.rejection
        yield _check(key, False, AssetCheckSeverity.ERROR, rejection.message,
                     violations_check_metadata(rejection.input_path, rejection.violations))
    elif outcome.skipped is not None:
        log.warning(f"{key} skipped: {outcome.skipped.reason}")
        yield AssetMaterialization(RECONSTRUCTION, partition=key, metadata={"status": SKIPPED, "reason": outcome.skipped.reason},
                                   tags=tags(SKIPPED, ABSENT.value))
        yield _check(key, False, AssetCheckSeverity.WARN, outcome.skipped.reason, missing_check_metadata())
    elif outcome.reconstructed is not None:
        done = outcome.reconstructed
        yield AssetMaterialization(RECONSTRUCTION, partition=key, metadata=_reconstructed_metadata(key, done),
                                   tags=tags(done.record["reconstruction_sha256"], done.record["input_sha256"]))
        input_path = done.record["input_path"]
        yield _check(key, True, AssetCheckSeverity.ERROR, f"DATA-001 satisfied: {input_path}", violations_check_metadata(input_path, []))


def _score_events(key: str, outcome: PartitionOutcome, instance) -> Iterator:
    """A partition's score against the truth as its materialization (read from the newest reconstruction of it)."""
    if outcome.skipped is not None and outcome.reconstructed is None:
        yield AssetMaterialization(QUALITY, partition=key, metadata={"status": SKIPPED, "reason": outcome.skipped.reason},
                                   tags=version_tags(instance, QUALITY_CODE_VERSION, SKIPPED, RECONSTRUCTION, key))
    elif outcome.scored is not None:
        done = outcome.scored
        metrics = {name: _significant(value) for name, value in done.metrics.items()}
        yield AssetMaterialization(QUALITY, partition=key, metadata={
            **metrics, "scoring_area": done.record["scoring_area"], "scan_area_lit": round(done.record["scan_area_lit"], 3),
            **provenance_metadata(done.record["provenance"]),
        }, tags=version_tags(instance, QUALITY_CODE_VERSION, done.record["aligned_sha256"], RECONSTRUCTION, key))


def _logged(outcome: PartitionOutcome, log) -> None:
    """The outcome's notes and failure into the run's log (the traceback there, not on a terminal)."""
    for level, message in outcome.notes:
        getattr(log, level)(f"{outcome.key}: {message}")
    if outcome.failed:
        log.error(f"{outcome.key} failed: {outcome.failure}" + (f"\n{outcome.traceback}" if outcome.traceback else ""))


def _outcome(outcome: PartitionOutcome, selected) -> str:
    """One partition's outcome in a few words, for the progress display."""
    if outcome.failed:
        return "FAILED: " + " ".join(outcome.failure.split())[:300]  # on one line, the first violation included
    if outcome.skipped is not None:
        return "skipped (input missing)"
    return "reconstructed" if RECONSTRUCTION in selected else "scored"


@multi_asset(
    name="ptychi_reconstruction",
    specs=[
        AssetSpec(
            RECONSTRUCTION, deps=_input_deps(), group_name="reconstruction", skippable=True,
            code_version=RECONSTRUCTION_CODE_VERSION,
            automation_condition=react_to_inputs(),
            description="pty-chi LSQML reconstruction of one (dose, view, split) dataset.",
        ),
        AssetSpec(
            QUALITY, deps=[RECONSTRUCTION], group_name="report", skippable=True, code_version=QUALITY_CODE_VERSION,
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
    backfill_policy=BackfillPolicy.single_run(),
    can_subset=True,
    pool=reconstruction_pool(),
)
def ptychi_reconstruction(
    context: AssetExecutionContext, config: ReconstructionConfig, study_paths: StudyPaths, study_compute: StudyCompute
) -> Iterator:
    """Reconstruct and/or score every partition of the run (see the module's docstring); each partition's epochs
    and outcome go to ``current_progress()`` too (the ``fly64`` command's display; silent elsewhere)."""
    progress = current_progress()
    configuration_errors = study_paths.configuration_errors()
    if configuration_errors:
        raise Failure(description="the study's roots are misconfigured:\n" + "\n".join(configuration_errors))
    selected = context.selected_asset_keys
    options = config.options()
    started: set[str] = set()

    def on_epoch(key: str, epoch: int, loss: float) -> None:
        if key not in started:
            started.add(key)
            progress.partition_started(key, options.epochs)
        progress.epoch(key, epoch, loss)
        if epoch % config.log_every == 0 or epoch == options.epochs:
            context.log.info(f"{key} epoch {epoch}/{options.epochs} loss {loss:.6g}")

    failures, placements = {}, []
    cpu_threads = cpu_threads_per_reconstruction(context, config.share_cores)
    with study_compute.dispatch(context.run.run_id, study_paths.folders(), cpu_threads) as dispatch:
        context.log.info(f"{len(context.partition_keys)} partition(s) on {study_compute.describe()}")
        requests = [
            PartitionRequest(
                Dataset.from_partition_key(key), study_paths.folders(), options, reconstruct=RECONSTRUCTION in selected,
                score=QUALITY in selected, convergence_every=config.convergence_every,
                cpu_threads=dispatch.cpu_threads if config.cpu_threads is None else config.cpu_threads,
                run_id=context.run.run_id,
            )
            for key in context.partition_keys
        ]
        for outcome in dispatch.run(requests, on_epoch):
            key = outcome.key
            _logged(outcome, context.log)
            if RECONSTRUCTION in selected:
                yield from _reconstruction_events(key, outcome, context.log, context.instance)
            if QUALITY in selected:
                yield from _score_events(key, outcome, context.instance)
            if outcome.failed:
                failures[key] = outcome.failure
            placements.append(outcome.placement)
            progress.partition_finished(key, _outcome(outcome, selected))
    context.log.info(f"at most {peak_concurrency(placements)} partition(s) ran at once")
    if failures:
        listing = "\n\n".join(f"{key}: {message}" for key, message in failures.items())
        raise Failure(
            description=f"{len(failures)} of {len(context.partition_keys)} partition(s) failed:\n\n{listing}",
            metadata={"failed_partitions": MetadataValue.json(sorted(failures))},
        )
