"""The report as one document: the Markdown the Dagster UI shows (the headline, notes, every section's intro and
table, every figure inline, the per-job table) and that same Markdown as a self-contained HTML page. The page is
rendered by markdown-it-py (CommonMark with tables; raw HTML in the text is escaped, not passed through) and laid
out by the Jinja2 template ``templates/page.html.j2`` with ``templates/page.css`` (autoescaped; figures stay
``data:`` URIs, so the file opens offline). What the page adds is presentation only: a list of contents, and in
the tables of jobs a row that was not scored is shaded and says its reason once across the columns it has no
values for."""

from __future__ import annotations

import re
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from fly64_assets.core.figures import markdown_image
from fly64_assets.core.report.fits import exponents_markdown
from fly64_assets.core.report.footer import PROVENANCE_TITLE
from fly64_assets.core.report.regularization import REGULARIZATION_INTRO, REGULARIZATION_TITLE

SUMMARY_TITLE = "Quality per dose and view (two replicates)"
EXPONENT_TITLE = "FRC resolution against dose: fitted exponents"
CONVERGENCE_TITLE = "Convergence against the truth"
PER_JOB_TITLE = "Quality per job"

SUMMARY_INTRO = (
    "Each (dose, view) has two independent replicates, the train and test halves of its dataset: each metric "
    "is their mean ± half-difference |train − test| / 2 (the standard error of a mean of two; the error bars "
    "in the figures span the two values). Where one split was not scored, its single value is shown with the "
    "split's name and no spread."
)
EXPONENT_INTRO = (
    "FRC resolution ≈ prefactor · dose^exponent, fitted (least squares in log-log) to each split separately; "
    "the exponent is the mean ± half-difference of the two fits. Dose fractionation predicts −1/4 "
    "(Howells et al. 2009). A resolution at the 2 px Nyquist floor is a bound, not a measurement, and "
    "flattens the slope."
)
CONVERGENCE_INTRO = (
    "Each reconstruction was scored against the truth every few epochs with the same registration as the "
    "final score (figure convergence.png: quality vs epoch per dose and view, the loss beside it). From "
    "those curves (mean of the two splits), judged on the epochs that ran without regularization: a TV phase "
    "(grey in the figure) changes the error by smoothing the object, not by converging, so its effect is given "
    "beside the verdict:"
)
PER_JOB_INTRO = (
    "Metrics against the ground truth after registration and the removal of what ptychography cannot "
    "determine: the global amplitude scale, the global phase offset and the linear phase ramp of the "
    "reconstruction's difference to the truth (a ramp of the truth itself is kept; the ramp removed is in each "
    "job's quality record as phase_ramp_y and phase_ramp_x, rad per pixel); ↑ higher is better, "
    "↓ lower is better. Every view of a split is scored on the area of the split's full (Phase C) scan; "
    "*area lit* is the share of it that the job's probes light (at ≥ 10 % of the probe's peak). "
    "A job that was not scored shows its status in bold and its reason."
)

JOB_TABLES = (SUMMARY_TITLE, PER_JOB_TITLE)
"""The sections whose table has one job, or one (dose, view), per row, with a status in bold where it was not
scored (elsewhere, in the regularization table, bold marks a value)."""


def report_markdown(
    headline: str,
    markdown_table: str,
    images: dict[str, bytes],
    exponents: dict[str, dict],
    notes: list[str] = (),
    summary_table: str | None = None,
    convergence: list[str] | None = None,
    regularization: str | None = None,
    provenance: str | None = None,
) -> str:
    """Markdown for the Dagster UI (and the page): the headline, notes, the per-(dose, view) summary of the
    replicates (when given), the FRC resolution dose exponents (resolution ≈ prefactor · dose^exponent), what the
    convergence curves show (when given), the regularization choices (when given), every image inline, and the
    per-job quality table, then what made the numbers (when given)."""
    parts = [f"**{headline}**", "", *[f"- {note}" for note in notes], ""]
    if summary_table:
        parts += [f"### {SUMMARY_TITLE}", "", SUMMARY_INTRO, "", summary_table]
    parts += [f"### {EXPONENT_TITLE}", "", EXPONENT_INTRO, "", exponents_markdown(exponents)]
    if convergence:
        parts += [f"### {CONVERGENCE_TITLE}", "", CONVERGENCE_INTRO, "", *[f"- {note}" for note in convergence], ""]
    if regularization:
        parts += [f"### {REGULARIZATION_TITLE}", "", REGULARIZATION_INTRO, "", regularization, ""]
    for name, png in images.items():
        parts += [f"### {name}", "", markdown_image(png, name), ""]
    parts += [f"### {PER_JOB_TITLE}", "", PER_JOB_INTRO, "", markdown_table]
    if provenance:
        parts += ["", f"### {PROVENANCE_TITLE}", "", provenance]
    return "\n".join(parts)


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_TEMPLATES = Environment(loader=PackageLoader("fly64_assets.core.report"), autoescape=True)


@dataclass(frozen=True)
class Section:
    """One ``###`` section of the report's Markdown, rendered."""

    title: str
    anchor: str
    body: Markup


_DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def html_page(title: str, markdown: str) -> str:
    """One self-contained HTML document from :func:`report_markdown`'s text: the part before the first ``###``
    heading (headline and notes) as the lead, then a list of contents and every section."""
    # The figures' data URIs (most of the text) are set aside while markdown-it parses: it scans every character.
    images: list[str] = []
    markdown = _DATA_URI.sub(lambda found: images.append(found.group()) or f"fly64-figure-{len(images) - 1}", markdown)
    tokens = _MARKDOWN.parse(markdown)
    for token in tokens:
        for child in token.children or ():
            if child.type == "image" and (source := str(child.attrGet("src") or "")).startswith("fly64-figure-"):
                child.attrSet("src", images[int(source.removeprefix("fly64-figure-"))])
    starts = [i for i, token in enumerate(tokens) if token.type == "heading_open" and token.tag == "h3"]
    sections = []
    for start, end in zip(starts, [*starts[1:], len(tokens)]):
        name = tokens[start + 1].content
        body = tokens[start + 3 : end]  # after heading_open, its inline text and heading_close
        if name in JOB_TABLES:
            body = _job_table(body)
        anchor = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        sections.append(Section(name, anchor, _render(body)))
    lead = _render(tokens[: starts[0]] if starts else tokens)
    return _TEMPLATES.get_template("page.html.j2").render(title=title, lead=lead, sections=sections)


def _render(tokens: list[Token]) -> Markup:
    """markdown-it's HTML for ``tokens`` (their text already escaped by it)."""
    return Markup(_MARKDOWN.renderer.render(tokens, _MARKDOWN.options, {}))


def _job_table(tokens: list[Token]) -> list[Token]:
    """A table of jobs gets the class ``jobs`` (its numbers stay on one line), and a body row with a cell in bold
    (its status: skipped, failed, missing, none scored) the class ``unscored``; the empty cells just before such a
    row's last cell (the reason, or the note) fold into that cell as a ``colspan``: the reason reads once across
    the columns that have no value."""
    out: list[Token] = []
    row: list[Token] | None = None
    in_body = False
    for token in tokens:
        if token.type == "table_open":
            token.attrSet("class", "jobs")
        in_body = token.type == "tbody_open" or (in_body and token.type != "tbody_close")
        if in_body and token.type == "tr_open":
            row = []
        if row is None:
            out.append(token)
            continue
        row.append(token)
        if token.type == "tr_close":
            out += _fold_row(row)
            row = None
    return out


def _fold_row(row: list[Token]) -> list[Token]:
    tr_open, tr_close = row[0], row[-1]
    cells = [row[i : i + 3] for i in range(1, len(row) - 1, 3)]  # td_open, inline, td_close
    if not any(inline.content.startswith("**") for _, inline, _ in cells):
        return row
    tr_open.attrSet("class", "unscored")
    *values, last = cells
    empty = 0  # the run of empty cells right before the last
    while empty < len(values) and not values[-1 - empty][1].content:
        empty += 1
    if last[1].content and empty:
        last[0].attrSet("colspan", str(empty + 1))
        last[0].attrs.pop("style", None)  # text, read from the left
        values = values[: len(values) - empty]
    return [tr_open, *(token for cell in (*values, last) for token in cell), tr_close]
