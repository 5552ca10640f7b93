"""The code location: the one ``Definitions`` object that ``dagster dev`` and the CLI load."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from fly64_assets.defs.reconstruction import ptychi_reconstruction
from fly64_assets.defs.report import reconstruction_quality, study_report
from fly64_assets.defs.sources import phase_c_patched, phase_c_patched_data001, phase_d_overlap, phase_d_overlap_data001
from fly64_assets.defs.summaries import reconstruction_manifest, skip_summary
from fly64_assets.executors import study_executor
from fly64_assets.io_manager import JsonIOManager
from fly64_assets.resources import StudyPaths

RECONSTRUCT_JOB = "reconstruct_study"
SUMMARIZE_JOB = "summarize_study"
SCORE_JOB = "score_study"
REPORT_JOB = "report_study"
CHECK_PHASE_C_JOB = "check_phase_c_inputs"
CHECK_PHASE_D_JOB = "check_phase_d_inputs"

reconstruct_study = define_asset_job(
    RECONSTRUCT_JOB,
    selection=AssetSelection.assets(ptychi_reconstruction, reconstruction_quality),
    description="Reconstruct one study partition and score it against the truth (backfill all 18).",
)
summarize_study = define_asset_job(
    SUMMARIZE_JOB,
    selection=AssetSelection.assets(reconstruction_manifest, skip_summary, study_report),
    description="Write the reconstruction manifest, the skip summary and the study report over all partitions.",
)
score_study = define_asset_job(
    SCORE_JOB,
    selection=AssetSelection.assets(reconstruction_quality),
    description="Score one reconstructed partition against the truth again (e.g. after a change to the metrics).",
)
report_study = define_asset_job(
    REPORT_JOB,
    selection=AssetSelection.assets(study_report),
    description="Write the study report from the scored partitions.",
)
check_phase_c_inputs = define_asset_job(
    CHECK_PHASE_C_JOB,
    selection=AssetSelection.checks(phase_c_patched_data001),
    description="DATA-001 on one Phase C file (partition given by the run's dagster/partition tags).",
)
check_phase_d_inputs = define_asset_job(
    CHECK_PHASE_D_JOB,
    selection=AssetSelection.checks(phase_d_overlap_data001),
    description="DATA-001 on one Phase D file (partition given by the run's dagster/partition tags).",
)


def build_definitions(study_paths: StudyPaths) -> Definitions:
    """The study's definitions for the given roots (tests build their own on temporary folders)."""
    return Definitions(
        assets=[
            phase_c_patched,
            phase_d_overlap,
            ptychi_reconstruction,
            reconstruction_quality,
            reconstruction_manifest,
            skip_summary,
            study_report,
        ],
        asset_checks=[phase_c_patched_data001, phase_d_overlap_data001],
        jobs=[reconstruct_study, summarize_study, score_study, report_study, check_phase_c_inputs, check_phase_d_inputs],
        resources={
            "study_paths": study_paths,
            "io_manager": JsonIOManager(base_dir=str(study_paths.artifact_file(".values"))),
        },
        # Default in_process: a run's steps execute in its own process, no re-import of torch per step.
        # FLY64_EXECUTOR=multiprocess|dask switches it (fly64_assets/executors.py, docs/CLUSTER.md).
        executor=study_executor(study_paths=study_paths),
    )


defs = build_definitions(StudyPaths.from_env())
