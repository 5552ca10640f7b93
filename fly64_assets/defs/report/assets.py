"""The study's answer: the study report over every scored partition (the scoring itself is done per
partition, beside each reconstruction: ``defs/reconstruction/assets.py``)."""

import numpy as np
from dagster import MetadataValue, Output, asset

from fly64_assets.core.artifacts import write_bytes, write_text
from fly64_assets.core.bookkeeping import QUALITY_RECORD, RECONSTRUCTED, SKIPPED, missing_reason, read_record
from fly64_assets.core.design import ALL_DATASETS, DOSES, VIEWS, Dataset
from fly64_assets.defs.reconstruction.assets import PHASE_C_SCAN_AREA, QUALITY
from fly64_assets.defs.resources import StudyPaths

REPORT_DIR = "report"
REPORT_GROUP = "report"
REPORT_SPLIT = "train"
"""The split whose phase images the report's grid shows (every split is in the table)."""


def _phase_panels(records: dict[Dataset, dict], split: str) -> tuple[np.ndarray | None, dict]:
    """The truth phase and each (dose, view)'s aligned phase for one split (None where not reconstructed)."""
    truth, panels = None, {}
    for dose in DOSES:
        for view in VIEWS:
            record = records.get(Dataset(dose, view, split), {})
            panels[(dose, view)] = None
            if record.get("status") == RECONSTRUCTED:
                with np.load(record["aligned_path"], allow_pickle=False) as saved:
                    panels[(dose, view)] = saved["aligned_phase"]
                    truth = saved["truth_phase"]
    return truth, panels


@asset(
    deps=[QUALITY],
    group_name=REPORT_GROUP,
    description="The study report: quality per dose x view x split (CSV, Markdown), phase images, metrics "
    "against dose, and the FRC resolution's dose exponent beside the D^-1/4 expectation.",
)
def study_report(study_paths: StudyPaths) -> Output[dict]:
    from fly64_assets.core import report  # matplotlib: only where a step draws

    records = {}
    for dataset in ALL_DATASETS:
        input_path = study_paths.input_path(dataset)
        if not input_path.exists():
            records[dataset] = {**dataset.as_record(), "status": SKIPPED, "reason": missing_reason(dataset, input_path)}
        elif (record := read_record(study_paths.artifact_dir(dataset), QUALITY_RECORD)) is not None:
            records[dataset] = record
    rows = report.quality_rows(list(records.values()))
    exponents = report.dose_exponents(rows, REPORT_SPLIT)
    headline = report.headline(rows)
    truth, panels = _phase_panels(records, REPORT_SPLIT)
    images = {
        "metrics_vs_dose.png": report.metrics_vs_dose_png(rows, REPORT_SPLIT),
        "resolution_vs_dose.png": report.resolution_fit_png(rows, exponents, REPORT_SPLIT),
    }
    if truth is not None:
        images["phase_grid.png"] = report.phase_grid_png(truth, panels, REPORT_SPLIT)
    table = report.rows_to_markdown(rows)
    out_dir = study_paths.artifact_file(REPORT_DIR)
    for name, png in images.items():
        write_bytes(out_dir / name, png)
    write_text(out_dir / "quality.csv", report.rows_to_csv(rows))
    write_text(out_dir / "quality.md", table)
    notes = [f"{sum(r['status'] == RECONSTRUCTED for r in rows)} of {len(ALL_DATASETS)} jobs reconstructed and scored"]
    notes += [
        f"{dataset.partition_key} scored on its {record['scoring_area']}"
        for dataset, record in records.items()
        if record.get("scoring_area", PHASE_C_SCAN_AREA) != PHASE_C_SCAN_AREA
    ]
    html_path = out_dir / "study_report.html"
    write_text(html_path, report.html_page("fly64 dose/overlap study", headline, table, images, notes))
    return Output(
        {"headline": headline, "rows": rows, "exponents": exponents, "html_path": str(html_path)},
        metadata={
            "headline": headline,
            "html_path": MetadataValue.path(str(html_path)),
            "report": MetadataValue.md(report.report_markdown(headline, table, images, exponents, notes)),
        },
    )
