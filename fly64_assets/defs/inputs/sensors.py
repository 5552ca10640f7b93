"""Watch the input files; observe a source when one of its files appeared, changed or vanished.

The sensor compares cheap fingerprints (size, modification time, inode: an atomic replace gets a new inode)
with the previous tick's, kept in its cursor; the observation run it launches then hashes the files. So a
tick reads no file content, and a study whose inputs do not change records no runs at all. The first tick
(empty cursor) observes both sources, which shows their data versions in the UI.
"""

import json
import os

from dagster import RunRequest, SensorEvaluationContext, sensor

from fly64_assets.core.design import dataset_for_source_key
from fly64_assets.defs.automation import SENSOR_INTERVAL_S, default_sensor_status
from fly64_assets.defs.jobs import OBSERVATION_JOBS, observation_tags, observe_phase_c_inputs, observe_phase_d_inputs
from fly64_assets.defs.resources import StudyPaths


def file_fingerprints(study_paths: StudyPaths, partitions) -> dict[str, list[int] | None]:
    """Per source partition: (size, mtime in ns, inode) of its file, or None when it is absent."""
    fingerprints = {}
    for key in partitions.get_partition_keys():
        try:
            status = os.stat(study_paths.input_path(dataset_for_source_key(key)))
        except FileNotFoundError:
            fingerprints[key] = None
        else:
            fingerprints[key] = [status.st_size, status.st_mtime_ns, status.st_ino]
    return fingerprints


@sensor(
    jobs=[observe_phase_c_inputs, observe_phase_d_inputs],
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=default_sensor_status(),
    description="Observes the Phase C/D inputs when a file appears, changes or vanishes (see "
    "fly64_assets/defs/automation.py; FLY64_AUTOMATION=off ships it stopped).",
)
def input_files_sensor(context: SensorEvaluationContext, study_paths: StudyPaths):
    previous = json.loads(context.cursor) if context.cursor else {}
    current = {job_name: file_fingerprints(study_paths, partitions) for job_name, partitions in OBSERVATION_JOBS.items()}
    for job_name in OBSERVATION_JOBS:
        if current[job_name] != previous.get(job_name):
            yield RunRequest(job_name=job_name, tags=observation_tags(job_name))
    context.update_cursor(json.dumps(current, sort_keys=True))
