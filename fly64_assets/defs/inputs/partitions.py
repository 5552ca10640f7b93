"""Partitions of the input files: one Phase C file per dose and split, one Phase D file per dose and view split."""

from dagster import MultiPartitionsDefinition, StaticPartitionsDefinition

from fly64_assets.core.design import DOSES, PHASE_D_VIEW_SPLITS, SPLITS

DOSE_DIMENSION = "dose"
SPLIT_DIMENSION = "split"
VIEW_SPLIT_DIMENSION = "view_split"

DOSE_PARTITIONS = StaticPartitionsDefinition([str(dose) for dose in DOSES])

PHASE_C_PARTITIONS = MultiPartitionsDefinition(
    {DOSE_DIMENSION: DOSE_PARTITIONS, SPLIT_DIMENSION: StaticPartitionsDefinition(list(SPLITS))}
)
"""Phase C files (the baseline view), keys like ``"1000|train"``."""

PHASE_D_PARTITIONS = MultiPartitionsDefinition(
    {DOSE_DIMENSION: DOSE_PARTITIONS, VIEW_SPLIT_DIMENSION: StaticPartitionsDefinition(list(PHASE_D_VIEW_SPLITS))}
)
"""Phase D files (dense and sparse views), keys like ``"1000|dense_train"``."""
