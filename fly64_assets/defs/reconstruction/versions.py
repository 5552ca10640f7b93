"""Code and data versions on the per-partition materializations, so the UI shows what an upgrade invalidates.

Dagster records a code version, a data version and the inputs' data versions on the materializations it makes
from an ``Output``; its staleness check compares them with the asset's current code version and its inputs' newest
data versions. The reconstruction step yields its per-partition ``AssetMaterialization``s itself (a range run has
no per-partition output), so it writes the same tags itself, under the names Dagster reads.

The assets' code versions are ``core.provenance.science_version``: the pty-chi and torch releases and a fingerprint
of the code that computes the result. A new pty-chi, or a change in ``core/lsqml.py``, ``core/regularization.py``
or ``core/options.py``, marks every reconstruction stale ("has a new code version"), and a change in
``core/quality.py`` every score. Reconstructions are not launched again by themselves on such a change (the eager
condition reacts to new inputs only: docs/REAL_STUDY.md says why).
"""

from __future__ import annotations

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from fly64_assets.core.design import Dataset
from fly64_assets.core.provenance import QUALITY_MODULES, RECONSTRUCTION_MODULES, science_version

RECONSTRUCTION_CODE_VERSION = science_version(RECONSTRUCTION_MODULES)
QUALITY_CODE_VERSION = science_version(QUALITY_MODULES)

CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"
INPUT_DATA_VERSION_TAG = "dagster/input_data_version/"
INPUT_EVENT_POINTER_TAG = "dagster/input_event_pointer/"
NO_EVENT = "NULL"
"""The input pointer of an input never recorded (Dagster's own value for it)."""

PHASE_C = AssetKey("phase_c_patched")
PHASE_D = AssetKey("phase_d_overlap")


def input_partition(dataset: Dataset) -> tuple[AssetKey, str]:
    """The source asset and partition whose file a partition reads (the inverse of the inputs' partition mapping)."""
    if dataset.is_phase_d:
        return PHASE_D, f"{dataset.dose}|{dataset.view_split}"
    return PHASE_C, f"{dataset.dose}|{dataset.split}"


def _latest_record(instance: DagsterInstance, key: AssetKey, partition: str, observed: bool):
    records_filter = AssetRecordsFilter(asset_key=key, asset_partitions=[partition])
    fetch = instance.fetch_observations if observed else instance.fetch_materializations
    records = fetch(records_filter, limit=1).records
    return records[0] if records else None


def version_tags(
    instance: DagsterInstance,
    code_version: str,
    data_version: str,
    input_key: AssetKey,
    partition: str,
    input_data_version: str | None = None,
) -> dict[str, str]:
    """The tags Dagster's staleness check reads, for one partition computed by ``code_version`` into ``data_version``
    from ``input_key``'s ``partition`` (a source's newest observation, or an asset's newest materialization).
    ``input_data_version``: what the computation read (default: what that newest record says)."""
    record = _latest_record(instance, input_key, partition, observed=input_key in (PHASE_C, PHASE_D))
    recorded = record.event_log_entry.tags.get(DATA_VERSION_TAG) if record else None
    user_key = input_key.to_user_string()
    return {
        CODE_VERSION_TAG: code_version,
        DATA_VERSION_TAG: data_version,
        INPUT_DATA_VERSION_TAG + user_key: input_data_version or recorded or "INITIAL",
        INPUT_EVENT_POINTER_TAG + user_key: str(record.storage_id) if record else NO_EVENT,
    }
