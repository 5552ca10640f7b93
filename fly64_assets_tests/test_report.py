"""The study report (the fly64_assets.core.report package): rows over the full grid, tables, the dose exponent, figures, pages."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest

from fly64_assets.core.design import ALL_DATASETS, DOSES, VIEWS
from fly64_assets.core.report import figures, fits, page, tables
from fly64_assets.core.report.headline import headline
from fly64_assets.core.report.records import HIGHER_IS_BETTER, METRIC_LABELS, METRIC_UNITS, METRICS
from fly64_assets_tests.figure_checks import assert_figure_drawn


def metrics_for(dose: int, view: str, split: str, exponent: float = -0.3) -> dict:
    """Plausible metrics that improve with dose; FRC resolution exactly 50 * D ** exponent."""
    level = DOSES.index(dose)
    offset = {"baseline": 0.0, "dense": -0.03, "sparse": -0.1}[view] + (0.0 if split == "train" else -0.01)
    resolution = 50.0 * dose**exponent
    return {
        "amplitude_mae": 0.2 - 0.05 * level,
        "phase_mae": 0.3 - 0.08 * level,
        "amplitude_psnr": 18.0 + 4 * level,
        "phase_psnr": 15.0 + 5 * level,
        "amplitude_ssim": 0.3 + 0.2 * level + offset,
        "phase_ssim": 0.21 + 0.25 * level + offset,
        "frc_resolution_px": resolution,
        "frc_resolution_fraction": 2.0 / resolution,
    }


def make_records(exponent: float = -0.3) -> list[dict]:
    """Every job except sparse at the highest dose (absent: missing); sparse elsewhere skipped, one failure."""
    records = []
    for job in ALL_DATASETS:
        record = {"dose": job.dose, "view": job.view, "split": job.split}
        if job.view == "sparse" and job.dose == 100000:
            continue  # no record at all -> "missing"
        if job.view == "sparse":
            record.update(status="skipped", reason="sparse view not written by Phase D (acceptance 4% < 10%)")
        elif job == ALL_DATASETS[3]:  # 1000 | dense | test
            record.update(status="failed", reason="LSQML diverged | NaN loss")
        else:
            record.update(
                status="succeeded",
                reason=None,
                n_patterns=100 if job.view == "baseline" else 40,
                shift_yx=[0.1, -0.2],
                aligned_path="ignored.npz",
                **metrics_for(job.dose, job.view, job.split, exponent),
            )
        records.append(record)
    return records


@pytest.fixture
def rows() -> list[dict]:
    return tables.quality_rows(make_records())


def test_quality_rows_cover_the_grid_in_order_and_mark_absent_jobs_missing(rows):
    assert len(rows) == 18
    assert [(r["dose"], r["view"], r["split"]) for r in rows] == [(j.dose, j.view, j.split) for j in ALL_DATASETS]
    assert all(list(r) == list(tables.ROW_KEYS) for r in rows)
    by_job = {(r["dose"], r["view"], r["split"]): r for r in rows}
    for split in ("train", "test"):
        missing = by_job[(100000, "sparse", split)]
        assert missing["status"] == "missing" and missing["reason"]
        assert all(missing[m] is None for m in METRICS)
        skipped = by_job[(1000, "sparse", split)]
        assert skipped["status"] == "skipped" and "Phase D" in skipped["reason"]
        assert skipped["phase_ssim"] is None
    assert by_job[(1000, "dense", "test")]["status"] == "failed"
    good = by_job[(10000, "baseline", "train")]
    assert good["status"] == "succeeded" and good["n_patterns"] == 100
    assert good["frc_resolution_px"] == pytest.approx(50.0 * 10000**-0.3)
    assert "shift_yx" not in good


def test_quality_rows_of_nothing_are_all_missing():
    rows = tables.quality_rows([])
    assert len(rows) == 18 and {r["status"] for r in rows} == {"missing"}


def test_quality_rows_reject_duplicates():
    records = make_records()
    with pytest.raises(ValueError, match="two quality records"):
        tables.quality_rows(records + [records[0]])


def test_metric_tables_are_consistent():
    assert set(METRICS) == set(METRIC_LABELS) == set(METRIC_UNITS)
    assert HIGHER_IS_BETTER <= set(METRICS)
    assert "phase_mae" not in HIGHER_IS_BETTER and "phase_ssim" in HIGHER_IS_BETTER


def test_csv_parses_back(rows):
    parsed = list(csv.DictReader(io.StringIO(tables.rows_to_csv(rows))))
    assert len(parsed) == 18
    assert list(parsed[0]) == list(tables.ROW_KEYS)
    for row, back in zip(rows, parsed):
        assert int(back["dose"]) == row["dose"] and back["view"] == row["view"] and back["split"] == row["split"]
        assert back["status"] == row["status"]
        for metric in METRICS:
            if row[metric] is None:
                assert back[metric] == ""
            else:
                assert float(back[metric]) == row[metric]  # full precision round trip
    failed = next(b for b in parsed if b["status"] == "failed")
    assert failed["reason"] == "LSQML diverged | NaN loss"


def test_markdown_table_has_a_row_per_job(rows):
    table = tables.rows_to_markdown(rows)
    lines = table.strip().splitlines()
    data = lines[2:]
    assert len(data) == 18
    n_columns = lines[0].count(" | ") + 1
    for line in lines:
        assert len(re.split(r"(?<!\\)\|", line.strip()[1:-1])) == n_columns
    assert "phase SSIM" in lines[0] and "reason" in lines[0]
    assert sum("**missing**" in line for line in data) == 2
    assert sum("**skipped**" in line for line in data) == 4
    assert "LSQML diverged \\| NaN loss" in table
    baseline_1e4 = next(line for line in data if line.startswith("| 1e4 | baseline | train "))
    assert "| 0.460 |" in baseline_1e4  # phase SSIM 0.21 + 0.25, 3 significant digits


@pytest.mark.parametrize("exponent", [-0.3, -0.25])
def test_dose_exponents_recover_a_power_law(exponent):
    rows = tables.quality_rows(make_records(exponent))
    fitted = fits.dose_exponents(rows, "train")
    assert set(fitted) == set(VIEWS)
    assert fitted["baseline"]["exponent"] == pytest.approx(exponent, abs=1e-9)
    assert fitted["baseline"]["prefactor"] == pytest.approx(50.0, rel=1e-9)
    assert fitted["baseline"]["n_points"] == 3
    # dense/test failed at 1e3: two points still fit exactly
    test_fits = fits.dose_exponents(rows, "test")
    assert test_fits["dense"]["n_points"] == 2
    assert test_fits["dense"]["exponent"] == pytest.approx(exponent, abs=1e-9)
    # sparse: nothing scored
    assert fitted["sparse"] == {"exponent": None, "prefactor": None, "n_points": 0}


def test_dose_exponents_need_two_points():
    records = [r for r in make_records() if not (r["view"] == "baseline" and r["dose"] != 1000)]
    fitted = fits.dose_exponents(tables.quality_rows(records), "train")
    assert fitted["baseline"] == {"exponent": None, "prefactor": None, "n_points": 1}


def test_headline_mentions_doses_and_exponent(rows):
    line = headline(rows)
    assert "\n" not in line
    for dose in ("1e3", "1e4", "1e5"):
        assert dose in line
    # phase MAE 0.3 - 0.08 * level in both splits: no spread
    assert "from 0.300 ± 0.000 rad at 1e3 to 0.140 ± 0.000 rad at 1e5" in line
    assert "D^(-0.30 ± 0.00), expected -1/4" in line


def test_headline_shows_unscored_doses():
    records = [r for r in make_records() if not (r["view"] == "baseline" and r["dose"] == 100000)]
    line = headline(tables.quality_rows(records))
    assert "to 0.220 ± 0.000 rad at 1e4 photons/pattern (1e5 not scored)" in line


def phase_panels(split: str = "train"):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    truth = 0.8 * np.sin(xx / 6.0) * np.cos(yy / 9.0)
    panels = {}
    for dose in DOSES:
        for view in VIEWS:
            if view == "sparse" and dose == 100000:
                continue  # absent: "missing"
            if view == "sparse":
                panels[(dose, view)] = None
            else:
                panels[(dose, view)] = truth + rng.normal(scale=30.0 / np.sqrt(dose), size=truth.shape)
    return truth, panels


def test_pngs_are_valid_with_unavailable_panels(rows):
    truth, panels = phase_panels()
    images = {
        "phase_grid.png": figures.phase_grid_png(truth, panels, "train"),
        "phase_grid_noted.png": figures.phase_grid_png(truth, panels, "train", notes={(1000, "sparse"): "skipped:\nnot written"}),
        "metrics_vs_dose.png": figures.metrics_vs_dose_png(rows, "train"),
        "resolution_vs_dose.png": figures.resolution_fit_png(rows, fits.dose_exponents(rows), "train"),
    }
    for name, png in images.items():
        assert_figure_drawn(png, name)


def test_figures_survive_a_study_with_nothing_scored():
    rows = tables.quality_rows([])
    exponents = fits.dose_exponents(rows)
    assert_figure_drawn(figures.metrics_vs_dose_png(rows), "metrics_vs_dose.png")
    assert_figure_drawn(figures.resolution_fit_png(rows, exponents), "resolution_vs_dose.png")
    truth, _ = phase_panels()
    assert_figure_drawn(figures.phase_grid_png(truth, {}, "test"), "phase_grid.png")


def test_html_page_is_self_contained(rows):
    images = {"a.png": figures.metrics_vs_dose_png(rows), "b.png": figures.resolution_fit_png(rows, fits.dose_exponents(rows))}
    notes = ["12 of 18 jobs scored", "<script>alert('raw HTML in the text stays text')</script>"]
    text = page.report_markdown(headline(rows), tables.rows_to_markdown(rows), images, fits.dose_exponents(rows), notes)
    html = page.html_page("fly64 <study>", text)
    assert html.count("data:image/png;base64,") == len(images)
    assert "http" not in html
    assert not re.search(r"<(link|script)\b", html)
    assert "<title>fly64 &lt;study&gt;</title>" in html and "&lt;script&gt;" in html
    assert "12 of 18 jobs scored" in html
    per_job = html[html.index('<section id="quality-per-job">'):]
    assert per_job.count("<tr") == 1 + 18
    assert ">0.460<" in per_job
    # an unscored job is shaded and says its reason once, across the 11 columns it has no value for
    assert per_job.count('<tr class="unscored">') == 2 + 4 + 1  # missing, skipped, failed
    assert "<td><strong>failed</strong></td>\n<td colspan=\"12\">LSQML diverged | NaN loss</td>" in per_job


def test_report_markdown_has_images_and_exponents(rows):
    exponents = fits.dose_exponents(rows)
    images = {"resolution_vs_dose.png": figures.resolution_fit_png(rows, exponents)}
    text = page.report_markdown(headline(rows), tables.rows_to_markdown(rows), images, exponents)
    assert "](data:image/png;base64," in text
    assert "| baseline | -0.300 |" in text and "-0.250" in text
    replicates = page.report_markdown(headline(rows), tables.rows_to_markdown(rows), images,
                                        fits.dose_exponent_replicates(rows))
    assert "| baseline | -0.300 | 0.000 | -0.300 | -0.300 |" in replicates
    assert "| 1e5 | sparse | test | **missing** |" in text
