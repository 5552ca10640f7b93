"""The study's 18 partitions (dose x view_split) and the partition ranges that cover a selection of them.

A run over a *range* of keys reconstructs them all in one process (``BackfillPolicy.single_run``), so the
imports of torch and pty-chi are paid once per run, not once per partition. On a two-dimensional
partitions definition a range is a rectangle: every dose from start to end, times every view split from
start to end (dimensions are ordered by name: ``dose``, then ``view_split``).
"""

from collections.abc import Iterable

from dagster import MultiPartitionsDefinition, StaticPartitionsDefinition

from fly64_assets.core.design import DOSES, VIEW_SPLITS, Dataset
from fly64_assets.defs.inputs.partitions import DOSE_DIMENSION, DOSE_PARTITIONS, VIEW_SPLIT_DIMENSION

STUDY_PARTITIONS = MultiPartitionsDefinition(
    {DOSE_DIMENSION: DOSE_PARTITIONS, VIEW_SPLIT_DIMENSION: StaticPartitionsDefinition(list(VIEW_SPLITS))}
)
"""Keys like ``"1000|dense_train"``; shown as a dose x view_split grid in the UI."""

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
"""The run tags with which Dagster (backfills, ``dagster asset materialize --partition-range``) runs a range."""


def covering_ranges(datasets: Iterable[Dataset]) -> list[tuple[str, str]]:
    """As few (start, end) key ranges as this simple rule gives that cover exactly ``datasets``.

    For each dose, the selected view splits form runs of consecutive keys; doses next to each other with the
    same runs share one range. The whole study is one range; ``--dose 1000 --view dense`` is one range.
    """
    chosen = {(dataset.dose, dataset.view_split) for dataset in datasets}
    segments_by_dose: list[tuple[int, tuple[tuple[int, int], ...]]] = []
    for dose in DOSES:
        indexes = [i for i, view_split in enumerate(VIEW_SPLITS) if (dose, view_split) in chosen]
        segments, start = [], None
        for position, index in enumerate(indexes):
            start = index if start is None else start
            if position + 1 == len(indexes) or indexes[position + 1] != index + 1:
                segments.append((start, index))
                start = None
        if segments:
            segments_by_dose.append((dose, tuple(segments)))
    ranges = []
    block_start = 0
    for position, (dose, segments) in enumerate(segments_by_dose):
        following = segments_by_dose[position + 1] if position + 1 < len(segments_by_dose) else None
        adjacent = following is not None and DOSES.index(following[0]) == DOSES.index(dose) + 1
        if adjacent and following[1] == segments:
            continue
        first_dose = segments_by_dose[block_start][0]
        for low, high in segments:
            ranges.append((f"{first_dose}|{VIEW_SPLITS[low]}", f"{dose}|{VIEW_SPLITS[high]}"))
        block_start = position + 1
    return ranges


def range_tags(start: str, end: str) -> dict[str, str]:
    return {RANGE_START_TAG: start, RANGE_END_TAG: end}
