"""The study's answer: the study report over every scored partition (the scoring itself is done per
partition, beside each reconstruction: ``defs/reconstruction/assets.py``)."""

import numpy as np
from dagster import MetadataValue, Output, asset

from fly64_assets.core.artifacts import write_bytes, write_text
from fly64_assets.core.bookkeeping import (
    QUALITY_RECORD,
    RECONSTRUCTED,
    RECONSTRUCTION_RECORD,
    SKIPPED,
    missing_reason,
    read_record,
)
from fly64_assets.core.design import ALL_DATASETS, DOSES, VIEWS, Dataset
from fly64_assets.defs.automation import react_to_inputs
from fly64_assets.defs.reconstruction.assets import PHASE_C_SCAN_AREA, QUALITY
from fly64_assets.defs.resources import StudyPaths

REPORT_DIR = "report"
REPORT_GROUP = "report"
REPORT_SPLIT = "train"
"""The split whose phase images the report's grid shows (every split is in the table; the other figures and
the exponents use both splits as replicates)."""


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


def _convergence_curves(study_paths: StudyPaths) -> dict[tuple[int, str, str], dict]:
    """(dose, view, split) -> the reconstruction record's ``convergence`` curve (quality against the truth every
    few epochs; empty when it was switched off) with the NPZ's ``loss_per_epoch``, for every reconstructed
    dataset whose input is still there."""
    curves = {}
    for dataset in ALL_DATASETS:
        if not study_paths.input_path(dataset).exists():
            continue
        record = read_record(study_paths.artifact_dir(dataset), RECONSTRUCTION_RECORD)
        if record is None or record.get("status") != RECONSTRUCTED:
            continue
        curve = dict(record.get("convergence") or {})
        try:
            with np.load(record["reconstruction_path"], allow_pickle=False) as saved:
                curve["loss_per_epoch"] = saved["loss_per_epoch"].tolist()
        except (OSError, KeyError, ValueError):
            pass  # the loss panel stays empty for this dataset
        curves[(dataset.dose, dataset.view, dataset.split)] = curve
    return curves


@asset(
    deps=[QUALITY],
    group_name=REPORT_GROUP,
    automation_condition=react_to_inputs(),
    description="The study report: quality per dose x view x split (CSV, Markdown) and per dose x view as mean ± "
    "half-difference of the train and test splits, phase images, metrics against dose with error bars, the FRC "
    "resolution's dose exponent ± its replicate uncertainty beside the D^-1/4 expectation, quality against "
    "the truth vs epoch beside the loss (convergence), and the regularization each reconstruction ran with, with "
    "the held-out scores behind every weight chosen without the truth.",
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
    summary = report.replicate_summary(rows)
    exponents = report.dose_exponent_replicates(rows)
    headline = report.headline(rows)
    truth, panels = _phase_panels(records, REPORT_SPLIT)
    curves = _convergence_curves(study_paths)
    convergence_notes = report.convergence_notes(curves)
    images = {
        "metrics_vs_dose.png": report.metrics_vs_dose_png(rows),
        "resolution_vs_dose.png": report.resolution_fit_png(rows, exponents),
    }
    if curves:
        images["convergence.png"] = report.convergence_png(curves)
    if truth is not None:
        images["phase_grid.png"] = report.phase_grid_png(truth, panels, REPORT_SPLIT)
    table = report.rows_to_markdown(rows)
    summary_table = report.summary_to_markdown(summary)
    regularization = report.regularization_markdown(list(records.values()))
    out_dir = study_paths.artifact_file(REPORT_DIR)
    for name, png in images.items():
        write_bytes(out_dir / name, png)
    write_text(out_dir / "quality.csv", report.rows_to_csv(rows))
    write_text(out_dir / "quality.md", table)
    write_text(out_dir / "quality_summary.csv", report.summary_to_csv(summary))
    write_text(out_dir / "quality_summary.md", summary_table)
    write_text(out_dir / "regularization.md", regularization)
    notes = [f"{sum(r['status'] == RECONSTRUCTED for r in rows)} of {len(ALL_DATASETS)} jobs reconstructed and scored"]
    notes += [
        f"{dataset.partition_key} scored on its {record['scoring_area']}"
        for dataset, record in records.items()
        if record.get("scoring_area", PHASE_C_SCAN_AREA) != PHASE_C_SCAN_AREA
    ]
    html_path = out_dir / "study_report.html"
    sections = {"summary_table": summary_table, "convergence": convergence_notes, "regularization": regularization}
    write_text(html_path, report.html_page("fly64 dose/overlap study", headline, table, images, notes, exponents=exponents, **sections))
    return Output(
        {"headline": headline, "rows": rows, "summary": summary, "exponents": exponents,
         "convergence_notes": convergence_notes, "regularization": regularization, "html_path": str(html_path)},
        metadata={
            "headline": headline,
            "html_path": MetadataValue.path(str(html_path)),
            "report": MetadataValue.md(report.report_markdown(headline, table, images, exponents, notes, **sections)),
        },
    )
