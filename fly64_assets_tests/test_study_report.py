"""The study's answer, end to end through Dagster: quality against the truth improves with dose."""

import csv
import io
import os
from pathlib import Path

from fly64_assets.core.bookkeeping import plan_study
from fly64_assets import launch
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.design import select_datasets

REPORT_EPOCHS = 50


def test_baseline_quality_improves_with_dose_and_the_report_shows_it(study_paths, instance):
    saved_umask = os.umask(0o022)  # what a beamline account usually has: outputs must then be 0644
    plan = plan_study(select_datasets(views=["baseline"], splits=["train"]), study_paths.input_path,
                      {"dose": [], "view": ["baseline"], "split": ["train"]})
    try:
        study_report = launch.run_study(study_paths, plan, ReconstructionOptions(epochs=REPORT_EPOCHS), instance,
                                        progress=lambda line: None)["study_report"]
    finally:
        os.umask(saved_umask)

    rows = {(r["dose"], r["view"], r["split"]): r for r in study_report["rows"]}
    baseline = [rows[(dose, "baseline", "train")] for dose in (1000, 10000, 100000)]
    assert all(row["status"] == "succeeded" for row in baseline)
    ssim = [row["phase_ssim"] for row in baseline]
    mae = [row["phase_mae"] for row in baseline]
    assert ssim[0] < ssim[1] < ssim[2], ssim
    assert mae[0] > mae[1] > mae[2], mae
    assert baseline[0]["frc_resolution_px"] > baseline[2]["frc_resolution_px"]
    assert rows[(1000, "sparse", "train")]["status"] != "succeeded"  # skips stay skips in the report
    assert "baseline phase SSIM" in study_report["headline"]

    report_dir = Path(study_paths.artifact_root) / "report"
    html = (report_dir / "study_report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # self-contained: every image inline
    assert 'src="http' not in html and "<link" not in html
    table = list(csv.DictReader(io.StringIO((report_dir / "quality.csv").read_text())))
    assert len(table) == 18
    assert {p.name for p in report_dir.iterdir()} >= {"phase_grid.png", "metrics_vs_dose.png", "resolution_vs_dose.png", "quality.md"}

    # Every output, of every kind, readable by colleagues as the umask allows: 0644, none left private.
    outputs = [path for path in Path(study_paths.artifact_root).rglob("*") if path.is_file()]
    kinds = {path.suffix for path in outputs}
    assert {".npz", ".png", ".log", ".json", ".csv", ".md", ".html"} <= kinds, kinds
    assert {str(path): oct(path.stat().st_mode & 0o777) for path in outputs if path.stat().st_mode & 0o777 != 0o644} == {}
