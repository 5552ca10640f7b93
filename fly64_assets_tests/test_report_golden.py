"""The report's text is data: from a fixed set of quality records (scored, skipped, failed and missing jobs; auto,
fixed and no regularization; convergence curves), the CSV and Markdown files and the UI's Markdown equal, byte for
byte, what the report wrote before its code was reorganised (``data/report_golden``), and the HTML page carries the
same text and numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fly64_assets.core import report

GOLDEN = Path(__file__).parent / "data" / "report_golden"
IMAGES = {name: f"stand-in for {name}".encode() for name in ("metrics_vs_dose.png", "resolution_vs_dose.png", "phase_grid.png")}
"""Fixed bytes in place of the figures (their pixels are checked elsewhere): the pages inline whatever they get."""
NOTES = ["11 of 18 jobs reconstructed and scored", "1000|dense_train scored on its own scan: the split's Phase C file"]


def build_report() -> dict[str, str]:
    """Every text the study report writes, by file name, from ``records.json``."""
    saved = json.loads((GOLDEN / "records.json").read_text())
    records = saved["records"]
    curves = {(c["dose"], c["view"], c["split"]): c for c in saved["curves"]}
    rows = report.quality_rows(records)
    summary = report.replicate_summary(rows)
    exponents = report.dose_exponent_replicates(rows)
    headline = report.headline(rows)
    table, summary_table = report.rows_to_markdown(rows), report.summary_to_markdown(summary)
    sections = {"summary_table": summary_table, "convergence": report.convergence_notes(curves),
                "regularization": report.regularization_markdown(records)}
    return {
        "quality.csv": report.rows_to_csv(rows),
        "quality.md": table,
        "quality_summary.csv": report.summary_to_csv(summary),
        "quality_summary.md": summary_table,
        "regularization.md": sections["regularization"],
        "report.md": report.report_markdown(headline, table, IMAGES, exponents, NOTES, **sections),
        "study_report.html": report.html_page("fly64 dose/overlap study", headline, table, IMAGES, NOTES, exponents=exponents, **sections),
    }


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    return build_report()


@pytest.mark.parametrize("name", ["quality.csv", "quality.md", "quality_summary.csv", "quality_summary.md", "regularization.md", "report.md"])
def test_the_data_files_equal_the_golden_ones_byte_for_byte(built, name):
    assert built[name] == (GOLDEN / name).read_text(encoding="utf-8")


def test_the_page_carries_the_golden_text(built):
    assert built["study_report.html"] == (GOLDEN / "study_report.html").read_text(encoding="utf-8")
