"""The study's answer: each reconstruction scored against the ground truth, and the study report."""

from pathlib import Path

import numpy as np
from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from fly64_assets import report
from fly64_assets.artifacts import write_bytes, write_npz, write_text
from fly64_assets.bookkeeping import RECONSTRUCTED, SKIPPED
from fly64_assets.contract import load_valid
from fly64_assets.quality import align_to_truth, score
from fly64_assets.resources import StudyPaths
from fly64_assets.study import ALL_JOBS, DOSES, STUDY_PARTITIONS, VIEWS, Job

QUALITY_FILE = "quality.npz"
REPORT_DIR = "report"
REPORT_GROUP = "report"
REPORT_SPLIT = "train"
"""The split whose phase images the report's grid shows (every split is in the table)."""


def scoring_box(study_paths: StudyPaths, job: Job, own_positions: dict) -> tuple[float, float, float, float]:
    """The probe-centre bounding box of the split's Phase C scan, so every view of a split is scored on
    the same region (a thinned view is judged on the area the full scan covers); the job's own
    positions if the Phase C file is absent."""
    baseline = study_paths.input_path(Job(job.dose, "baseline", job.split))
    positions = load_valid(baseline)[0] if baseline.is_file() else own_positions
    ys, xs = positions["ycoords"], positions["xcoords"]
    return float(ys.min()), float(ys.max()), float(xs.min()), float(xs.max())


@asset(
    partitions_def=STUDY_PARTITIONS,
    group_name=REPORT_GROUP,
    description="The reconstruction against the ground truth (objectGuess): registered, phase-aligned, "
    "then amplitude/phase MAE, PSNR, SSIM and the FRC resolution (1/7 threshold).",
)
def reconstruction_quality(
    context: AssetExecutionContext, study_paths: StudyPaths, ptychi_reconstruction: dict
) -> Output[dict]:
    job = Job.from_partition_key(context.partition_key)
    if ptychi_reconstruction["status"] != RECONSTRUCTED:
        reason = ptychi_reconstruction.get("reason")
        return Output({**job.as_record(), "status": SKIPPED, "reason": reason}, metadata={"status": SKIPPED, "reason": reason})

    arrays, _ = load_valid(Path(ptychi_reconstruction["input_path"]))
    with np.load(ptychi_reconstruction["reconstruction_path"], allow_pickle=False) as saved:
        recon = saved["reconstructed_object"]
    box = scoring_box(study_paths, job, arrays)
    aligned = align_to_truth(recon, arrays["objectGuess"], tuple(ptychi_reconstruction["object_origin_yx"]), box)
    metrics = score(aligned.recon, aligned.truth, aligned.shift_yx)
    aligned_path = study_paths.artifact_dir(job) / QUALITY_FILE
    write_npz(aligned_path, {"aligned_phase": np.angle(aligned.recon), "truth_phase": np.angle(aligned.truth), "scan_box": np.array(box)})
    record = {
        **job.as_record(),
        "status": RECONSTRUCTED,
        "n_patterns": ptychi_reconstruction["n_patterns"],
        "aligned_path": str(aligned_path),
        **metrics.as_dict(),
    }
    return Output(record, metadata={key: value for key, value in metrics.as_dict().items() if key != "shift_yx"})


def _phase_panels(records: dict[Job, dict], split: str) -> tuple[np.ndarray | None, dict]:
    """The truth phase and each (dose, view)'s aligned phase for one split (None where not reconstructed)."""
    truth, panels = None, {}
    for dose in DOSES:
        for view in VIEWS:
            record = records.get(Job(dose, view, split), {})
            panels[(dose, view)] = None
            if record.get("status") == RECONSTRUCTED:
                with np.load(record["aligned_path"], allow_pickle=False) as saved:
                    panels[(dose, view)] = saved["aligned_phase"]
                    truth = saved["truth_phase"]
    return truth, panels


@asset(
    ins={"reconstruction_quality": AssetIn(metadata={"allow_missing_partitions": True})},
    group_name=REPORT_GROUP,
    description="The study report: quality per dose x view x split (CSV, Markdown), phase images, metrics "
    "against dose, and the FRC resolution's dose exponent beside the D^-1/4 expectation.",
)
def study_report(study_paths: StudyPaths, reconstruction_quality: dict) -> Output[dict]:
    records = {Job.from_partition_key(key): record for key, record in reconstruction_quality.items()}
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
    notes = [f"{sum(r['status'] == RECONSTRUCTED for r in rows)} of {len(ALL_JOBS)} jobs reconstructed and scored"]
    html_path = out_dir / "study_report.html"
    write_text(html_path, report.html_page("fly64 dose/overlap study", headline, table, images, notes))
    return Output(
        {"headline": headline, "rows": rows, "exponents": exponents, "html_path": str(html_path)},
        metadata={
            "headline": headline,
            "html_path": MetadataValue.path(str(html_path)),
            "report": MetadataValue.md(report.report_markdown(headline, table, images, exponents)),
        },
    )
