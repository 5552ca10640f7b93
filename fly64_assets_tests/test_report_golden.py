"""The report's text is data: from a fixed set of quality records (scored, skipped, failed and missing jobs; auto,
fixed and no regularization; convergence curves), the CSV and Markdown files and the UI's Markdown equal, byte for
byte, what the report wrote before its code became a package (``data/report_golden``, written by that code), and
the HTML page, now rendered from that Markdown, carries the same tables, sentences and numbers. Changed since, in
the golden files too: the curves carry their TV phase (``tv_from_epoch``, as the records' regularization says),
and the convergence notes and their intro judge each curve before it and give its effect beside the verdict."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fly64_assets.core.report import fits, page, tables
from fly64_assets.core.report.headline import headline
from fly64_assets.core.report.regularization import regularization_markdown

GOLDEN = Path(__file__).parent / "data" / "report_golden"
IMAGES = {name: f"stand-in for {name}".encode() for name in ("metrics_vs_dose.png", "resolution_vs_dose.png", "phase_grid.png")}
"""Fixed bytes in place of the figures (their pixels are checked elsewhere): the pages inline whatever they get."""
NOTES = ["11 of 18 jobs reconstructed and scored", "1000|dense_train scored on its own scan: the split's Phase C file"]


def build_report() -> dict[str, str]:
    """Every text the study report writes, by file name, from ``records.json``."""
    saved = json.loads((GOLDEN / "records.json").read_text())
    records = saved["records"]
    curves = {(c["dose"], c["view"], c["split"]): c for c in saved["curves"]}
    rows = tables.quality_rows(records)
    summary = tables.replicate_summary(rows)
    table, summary_table = tables.rows_to_markdown(rows), tables.summary_to_markdown(summary)
    regularization = regularization_markdown(records)
    text = page.report_markdown(headline(rows), table, IMAGES, fits.dose_exponent_replicates(rows), NOTES,
                                summary_table=summary_table, convergence=fits.convergence_notes(curves),
                                regularization=regularization)
    return {
        "quality.csv": tables.rows_to_csv(rows),
        "quality.md": table,
        "quality_summary.csv": tables.summary_to_csv(summary),
        "quality_summary.md": summary_table,
        "regularization.md": regularization,
        "report.md": text,
        "study_report.html": page.html_page("fly64 dose/overlap study", text),
    }


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    return build_report()


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["quality.csv", "quality.md", "quality_summary.csv", "quality_summary.md", "regularization.md"])
def test_the_data_files_equal_the_golden_ones_byte_for_byte(built, name):
    assert built[name] == golden(name)


def test_the_ui_markdown_is_the_golden_one_with_the_per_job_intro_added(built):
    """The one change: the per-job table's intro, once only on the page, is now in the Markdown the page is
    rendered from, so the UI explains the table's columns too."""
    heading = f"### {page.PER_JOB_TITLE}\n\n"
    assert built["report.md"] == golden("report.md").replace(heading, heading + page.PER_JOB_INTRO + "\n\n")


class _PageText(HTMLParser):
    """A page's visible text as its tables (rows of non-empty cells) and its paragraphs and list items; the
    contents list and the stylesheet are left out."""

    BLOCKS = {"p", "li", "td", "th", "h1", "h2", "figcaption"}

    def __init__(self, html: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.blocks: list[str] = []
        self._open: list[str] = []
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "nav"):
            self._skip += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        if tag in self.BLOCKS:
            self._open.append("")

    def handle_endtag(self, tag):
        if tag in ("style", "nav"):
            self._skip -= 1
        if tag in self.BLOCKS and self._open:
            text = " ".join(self._open.pop().split())
            if self._skip or not text:
                return
            if tag in ("td", "th"):
                self.tables[-1][-1].append(text)
            else:
                self.blocks.append(text)

    def handle_data(self, data):
        if self._open:
            self._open[-1] += data


def numbers(text: str) -> list[str]:
    return sorted(re.findall(r"[-+−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text))


def test_the_page_carries_the_golden_tables_sentences_and_numbers(built):
    new, old = _PageText(built["study_report.html"]), _PageText(golden("study_report.html"))
    assert new.tables == old.tables
    assert len(new.tables) == 4 and all(new.tables)
    old_intro = next(block for block in old.blocks if block.startswith("Metrics against the ground truth"))
    assert set(old.blocks) - {old_intro, "Figures", *IMAGES} <= set(new.blocks)
    assert numbers(" ".join(new.blocks)) == numbers(" ".join(old.blocks))
