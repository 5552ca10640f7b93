"""The study's answer: the study report over every scored partition (the scoring itself is done per
partition, beside each reconstruction: ``defs/reconstruction/assets.py``)."""

import numpy as np
from dagster import AssetExecutionContext, MetadataValue, Output, asset

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
from fly64_assets.core.imports import import_for_good
from fly64_assets.core.provenance import provenance
from fly64_assets.defs.automation import react_to_inputs
from fly64_assets.core.partition import PHASE_C_SCAN_AREA
from fly64_assets.defs.reconstruction.assets import QUALITY
from fly64_assets.defs.resources import StudyPaths

REPORT_DIR = "report"
REPORT_GROUP = "report"
REPORT_TITLE = "fly64 dose/overlap study"
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
    few epochs; empty when it was switched off) with the NPZ's ``loss_per_epoch`` and the first epoch with TV
    (``tv_from_epoch``, from the record's options; None without TV), for every reconstructed dataset whose input
    is still there."""
    from fly64_assets.core.report.regularization import tv_from_epoch  # the report package loads where it is written

    curves = {}
    for dataset in ALL_DATASETS:
        if not study_paths.input_path(dataset).exists():
            continue
        record = read_record(study_paths.artifact_dir(dataset), RECONSTRUCTION_RECORD)
        if record is None or record.get("status") != RECONSTRUCTED:
            continue
        curve = {**(record.get("convergence") or {}), "tv_from_epoch": tv_from_epoch(record.get("options"))}
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
def study_report(context: AssetExecutionContext, study_paths: StudyPaths) -> Output[dict]:
    # matplotlib, markdown-it and Jinja2: imported only where a step writes the report, and frozen
    import_for_good("fly64_assets.core.report.figures", "fly64_assets.core.report.page")
    from fly64_assets.core.report import figures, fits, tables
    from fly64_assets.core.report.headline import headline as study_headline
    from fly64_assets.core.report.page import html_page, report_markdown
    from fly64_assets.core.report.footer import provenance_markdown
    from fly64_assets.core.report.regularization import regularization_markdown

    records = {}
    for dataset in ALL_DATASETS:
        input_path = study_paths.input_path(dataset)
        if not input_path.exists():
            records[dataset] = {**dataset.as_record(), "status": SKIPPED, "reason": missing_reason(dataset, input_path)}
        elif (record := read_record(study_paths.artifact_dir(dataset), QUALITY_RECORD)) is not None:
            records[dataset] = record
    rows = tables.quality_rows(list(records.values()))
    summary = tables.replicate_summary(rows)
    exponents = fits.dose_exponent_replicates(rows)
    headline = study_headline(rows)
    truth, panels = _phase_panels(records, REPORT_SPLIT)
    curves = _convergence_curves(study_paths)
    convergence_notes = fits.convergence_notes(curves)
    images = {
        "metrics_vs_dose.png": figures.metrics_vs_dose_png(rows),
        "resolution_vs_dose.png": figures.resolution_fit_png(rows, exponents),
    }
    if curves:
        images["convergence.png"] = figures.convergence_png(curves)
    if truth is not None:
        images["phase_grid.png"] = figures.phase_grid_png(truth, panels, REPORT_SPLIT)
    table = tables.rows_to_markdown(rows)
    summary_table = tables.summary_to_markdown(summary)
    regularization = regularization_markdown(list(records.values()))
    out_dir = study_paths.artifact_file(REPORT_DIR)
    for name, png in images.items():
        write_bytes(out_dir / name, png)
    write_text(out_dir / "quality.csv", tables.rows_to_csv(rows))
    write_text(out_dir / "quality.md", table)
    write_text(out_dir / "quality_summary.csv", tables.summary_to_csv(summary))
    write_text(out_dir / "quality_summary.md", summary_table)
    write_text(out_dir / "regularization.md", regularization)
    notes = [f"{sum(r['status'] == RECONSTRUCTED for r in rows)} of {len(ALL_DATASETS)} jobs reconstructed and scored"]
    notes += [
        f"{dataset.partition_key} scored on its {record['scoring_area']}"
        for dataset, record in records.items()
        if record.get("scoring_area", PHASE_C_SCAN_AREA) != PHASE_C_SCAN_AREA
    ]
    reconstructions = [record for dataset in records
                       if (record := read_record(study_paths.artifact_dir(dataset), RECONSTRUCTION_RECORD)) is not None]
    made_by = provenance_markdown(reconstructions, [r for r in records.values() if r["status"] != SKIPPED],
                                  provenance(run_id=context.run.run_id))
    text = report_markdown(headline, table, images, exponents, notes, summary_table=summary_table,
                           convergence=convergence_notes, regularization=regularization, provenance=made_by)
    html_path = out_dir / "study_report.html"
    write_text(html_path, html_page(REPORT_TITLE, text))
    return Output(
        {"headline": headline, "rows": rows, "summary": summary, "exponents": exponents,
         "convergence_notes": convergence_notes, "regularization": regularization, "html_path": str(html_path)},
        metadata={
            "headline": headline,
            "html_path": MetadataValue.path(str(html_path)),
            "report": MetadataValue.md(text),
        },
    )
