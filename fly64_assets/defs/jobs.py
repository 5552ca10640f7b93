"""Every job of the code location, in one place."""

from dagster import AssetSelection, define_asset_job

from fly64_assets.defs.inputs.assets import phase_c_patched, phase_d_overlap
from fly64_assets.defs.inputs.partitions import PHASE_C_PARTITIONS, PHASE_D_PARTITIONS
from fly64_assets.defs.inputs.checks import phase_c_patched_data001, phase_d_overlap_data001
from fly64_assets.defs.reconstruction.assets import QUALITY, RECONSTRUCTION
from fly64_assets.defs.report.assets import study_report
from fly64_assets.defs.summaries.assets import reconstruction_manifest, skip_summary

RECONSTRUCT_JOB = "reconstruct_study"
SCORE_JOB = "score_study"
SUMMARIZE_JOB = "summarize_study"
REPORT_JOB = "report_study"
CHECK_PHASE_C_JOB = "check_phase_c_inputs"
CHECK_PHASE_D_JOB = "check_phase_d_inputs"
OBSERVE_PHASE_C_JOB = "observe_phase_c_inputs"
OBSERVE_PHASE_D_JOB = "observe_phase_d_inputs"

reconstruct_study = define_asset_job(
    RECONSTRUCT_JOB,
    selection=AssetSelection.assets(RECONSTRUCTION, QUALITY),
    description="Reconstruct and score study partitions: one key, or a range (all 18 in one run).",
)
score_study = define_asset_job(
    SCORE_JOB,
    selection=AssetSelection.assets(QUALITY),
    description="Score saved reconstructions against the truth again (e.g. after a change to the metrics).",
)
summarize_study = define_asset_job(
    SUMMARIZE_JOB,
    selection=AssetSelection.assets(reconstruction_manifest, skip_summary, study_report),
    description="Write the reconstruction manifest, the skip summary and the study report over all partitions.",
)
report_study = define_asset_job(
    REPORT_JOB,
    selection=AssetSelection.assets(study_report),
    description="Write the study report from the scored partitions.",
)


def _check_inputs_job(name: str, check, phase: str):
    return define_asset_job(
        name,
        selection=AssetSelection.checks(check),
        description=f"DATA-001 on {phase} files (the partition from the run's dagster/partition tags).",
    )


def _observe_inputs_job(name: str, source, phase: str):
    """One observation records every present file of the source (all its partitions); the run still needs one
    partition's tags, like a check-only run (:func:`observation_tags`)."""
    return define_asset_job(
        name,
        selection=AssetSelection.assets(source.key),
        description=f"Observe the {phase} files: each present file's content hash becomes its data version.",
    )


check_phase_c_inputs = _check_inputs_job(CHECK_PHASE_C_JOB, phase_c_patched_data001, "Phase C")
check_phase_d_inputs = _check_inputs_job(CHECK_PHASE_D_JOB, phase_d_overlap_data001, "Phase D")
observe_phase_c_inputs = _observe_inputs_job(OBSERVE_PHASE_C_JOB, phase_c_patched, "Phase C")
observe_phase_d_inputs = _observe_inputs_job(OBSERVE_PHASE_D_JOB, phase_d_overlap, "Phase D")
OBSERVATION_JOBS = {OBSERVE_PHASE_C_JOB: PHASE_C_PARTITIONS, OBSERVE_PHASE_D_JOB: PHASE_D_PARTITIONS}


def observation_tags(job_name: str) -> dict[str, str]:
    """The tags of an observation run: one run observes every file of its source, but Dagster needs one
    partition for a run of a partitioned source (as for a check-only run), so it gets the first one's."""
    partitions = OBSERVATION_JOBS[job_name]
    return dict(partitions.get_tags_for_partition_key(partitions.get_partition_keys()[0]))


STUDY_JOBS = [
    reconstruct_study, score_study, summarize_study, report_study, check_phase_c_inputs, check_phase_d_inputs,
    observe_phase_c_inputs, observe_phase_d_inputs,
]
