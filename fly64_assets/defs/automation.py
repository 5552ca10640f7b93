"""The study reacts to its inputs, the Dagster way: a sensor observes the input files when they change, and
declarative automation re-runs what a new data version affects. Both run in the daemon (``make ui``,
``dagster dev``, ``dagster-daemon run``).

- ``input_files_sensor`` (``defs/inputs/sensors.py``) looks at the input files every 30 s and, when a file of
  a source appeared, changed or vanished, launches that source's observation run, which records each file's
  content hash as its partition's data version.
- Everything downstream is ``AutomationCondition.eager()``: a partition runs again when an input it reads got
  a new data version, i.e. exactly the partitions of a file whose content changed; an observation that finds
  the same hash triggers nothing; a file that appears (a sparse view Phase D writes later) is a new version of
  its partition, so that partition is reconstructed. The manifest, skip summary and report follow. The
  ``study_automation`` sensor evaluates these conditions; its requests are backfills, so they keep the
  reconstruction's backfill policy (a dose's changed partitions in one run).

Why not ``AutomationCondition.cron_tick_passed`` on the sources: measured here, the daemon turns each tick into
one observation run per source partition (18 runs every tick, 117 runs in 7 minutes at a 1-minute cron), while
one run observes every file of a source; and a blind schedule records runs even when nothing changed.

Both sensors run by default; ``FLY64_AUTOMATION=off`` in the code location's environment ships them stopped,
and the UI's *Automation* page starts or stops either at any time.
"""

import os

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

AUTOMATION_ENV = "FLY64_AUTOMATION"
SENSOR_INTERVAL_S = 30
"""How often the daemon evaluates each sensor: a changed input is observed within this, and its
reconstruction requested within this again."""


def react_to_inputs() -> AutomationCondition:
    """The condition of everything downstream of the inputs."""
    return AutomationCondition.eager()


def automation_enabled() -> bool:
    """False when ``FLY64_AUTOMATION`` is ``off`` (also ``0``, ``false``, ``no``); on otherwise."""
    return os.environ.get(AUTOMATION_ENV, "on").strip().lower() not in {"off", "0", "false", "no"}


def default_sensor_status() -> DefaultSensorStatus:
    return DefaultSensorStatus.RUNNING if automation_enabled() else DefaultSensorStatus.STOPPED


def study_automation_sensor() -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        "study_automation",
        target=AssetSelection.all(),
        default_status=default_sensor_status(),
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        description="Re-runs exactly what a changed or new input file affects, once input_files_sensor has "
        "observed it (fly64_assets/defs/automation.py; FLY64_AUTOMATION=off ships it stopped).",
    )
