"""The code location: the one ``Definitions`` object that ``dagster dev``, the daemon and the CLI load.

Nothing here but assembly: assets, checks and jobs from ``defs/``, the resources configured from the
deployment's environment (``FLY64_*`` variables: see the README). Runs execute in process; the reconstruction
step sends its partitions where ``study_compute`` says (``defs/compute.py``).
"""

from __future__ import annotations

import gc

from dagster import Definitions, in_process_executor

from fly64_assets.defs.automation import study_automation_sensor
from fly64_assets.defs.compute import StudyCompute
from fly64_assets.defs.inputs.assets import phase_c_patched, phase_d_overlap
from fly64_assets.defs.inputs.sensors import input_files_sensor
from fly64_assets.defs.inputs.checks import phase_c_patched_data001, phase_d_overlap_data001
from fly64_assets.defs.jobs import STUDY_JOBS
from fly64_assets.defs.reconstruction.assets import ptychi_reconstruction
from fly64_assets.defs.report.assets import study_report
from fly64_assets.defs.resources import StudyPaths
from fly64_assets.defs.summaries.assets import reconstruction_manifest, skip_summary
from fly64_assets.lib.json_io_manager import JsonIOManager


def build_definitions(study_paths: StudyPaths, study_compute: StudyCompute | None = None) -> Definitions:
    """The study's definitions for the given roots (tests and the CLI build them on explicit folders); the
    compute from the environment unless given."""
    return Definitions(
        assets=[phase_c_patched, phase_d_overlap, ptychi_reconstruction, reconstruction_manifest, skip_summary, study_report],
        asset_checks=[phase_c_patched_data001, phase_d_overlap_data001],
        jobs=STUDY_JOBS,
        sensors=[input_files_sensor, study_automation_sensor()],
        resources={
            "study_paths": study_paths,
            "study_compute": study_compute or StudyCompute.from_env(),
            "io_manager": JsonIOManager(base_dir=str(study_paths.artifact_file(".values"))),
        },
        executor=in_process_executor,
    )


defs = build_definitions(StudyPaths.from_env())
gc.freeze()  # Dagster and this code location are loaded for good: out of the collector's way (core.imports)
