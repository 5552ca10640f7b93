"""The study report: what the fly64 study says about dose and overlap (see the spec, "Quality").

Everything here works on plain "quality records", one per (dose, view, split) job, as the
``reconstruction_quality`` asset writes them::

    {"dose": 1000, "view": "baseline", "split": "train",
     "status": "succeeded" | "skipped" | "failed" | "missing" | ...,
     "reason": str | None, "n_patterns": int | None,
     "amplitude_mae": float, ..., "frc_resolution_fraction": float}   # metrics only when succeeded

and turns them into a table over the full 3 x 3 x 2 grid (absent jobs become ``"missing"``, never
dropped), a CSV and a Markdown table, the FRC resolution's dose exponent beside the dose-fractionation
expectation ``d ∝ D^(-1/4)``, figures (PNG bytes), a self-contained HTML page and Markdown for the
Dagster UI.

Pure NumPy and matplotlib (through :mod:`fly64_assets.core.figures`); no Dagster object is used here.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from fly64_assets.core.figures import markdown_image, plt, png_bytes
from fly64_assets.core.design import ALL_DATASETS, DOSES, VIEWS

SUCCEEDED = "succeeded"
"""The status of a scored job (``bookkeeping.RECONSTRUCTED``)."""
MISSING = "missing"
"""The status given to a job of the grid for which no record was passed."""
MISSING_REASON = "no quality record for this job"

METRICS: tuple[str, ...] = (
    "phase_ssim",
    "amplitude_ssim",
    "phase_psnr",
    "amplitude_psnr",
    "phase_mae",
    "amplitude_mae",
    "frc_resolution_px",
    "frc_resolution_fraction",
)
"""The metric keys of a quality record, in display order (phase first: this is a phase-contrast study)."""

METRIC_LABELS: dict[str, str] = {
    "phase_ssim": "phase SSIM",
    "amplitude_ssim": "amplitude SSIM",
    "phase_psnr": "phase PSNR",
    "amplitude_psnr": "amplitude PSNR",
    "phase_mae": "phase MAE",
    "amplitude_mae": "amplitude MAE",
    "frc_resolution_px": "FRC resolution",
    "frc_resolution_fraction": "FRC cut-off",
}

METRIC_UNITS: dict[str, str] = {
    "phase_ssim": "",
    "amplitude_ssim": "",
    "phase_psnr": "dB",
    "amplitude_psnr": "dB",
    "phase_mae": "rad",
    "amplitude_mae": "truth amplitude units",
    "frc_resolution_px": "px, full period",
    "frc_resolution_fraction": "fraction of Nyquist",
}

HIGHER_IS_BETTER: frozenset[str] = frozenset(
    {"phase_ssim", "amplitude_ssim", "phase_psnr", "amplitude_psnr", "frc_resolution_fraction"}
)
"""Metrics where a larger value is a better reconstruction; the others (MAE, resolution in px) are lower-is-better."""

EXPECTED_DOSE_EXPONENT = -0.25
"""Dose fractionation for 2-D imaging: the resolvable feature size scales as d ∝ D^(-1/4)."""

NYQUIST_RESOLUTION_PX = 2.0
"""The finest full-period resolution a pixel grid can show; ``quality.score`` reports it when the FRC
never drops below the threshold (a saturated, not a measured, value)."""

VIEW_COLORS: dict[str, str] = {"baseline": "#1f77b4", "dense": "#2ca02c", "sparse": "#d62728"}
VIEW_MARKERS: dict[str, str] = {"baseline": "o", "dense": "s", "sparse": "^"}
VIEW_LINESTYLES: dict[str, str] = {"baseline": "-", "dense": "--", "sparse": ":"}
VIEW_MARKER_SIZES: dict[str, float] = {"baseline": 9.0, "dense": 6.0, "sparse": 6.0}
"""Consistent per-view styles in every figure; the baseline is drawn widest so a view lying on top of it
stays distinguishable."""

ROW_KEYS: tuple[str, ...] = ("dose", "view", "split", "status", "n_patterns", *METRICS, "reason")
"""The columns of a quality row (and of the CSV), in order."""

_UNAVAILABLE_FACE = "#d9d9d9"


# --------------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------------


def dose_label(dose: int) -> str:
    """``1000 -> "1e3"`` (any power of ten); other doses as plain integers."""
    exponent = math.log10(dose) if dose > 0 else float("nan")
    if math.isfinite(exponent) and float(exponent).is_integer():
        return f"1e{int(exponent)}"
    return str(dose)


def _float_or_none(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def quality_rows(records: list[dict]) -> list[dict]:
    """One row per job of the full study grid, in ``study.ALL_DATASETS`` order (dose, view, split).

    Each row has exactly the keys :data:`ROW_KEYS`. Metrics are floats for succeeded jobs and None
    otherwise (a succeeded record lacking a metric gets None for it). A job with no record gets status
    ``"missing"`` and a reason saying so. Records may carry extra keys (``shift_yx``, paths); they are
    not copied. A record for a job outside the grid, or two records for one job, raise ValueError.
    """
    by_job: dict[tuple[int, str, str], dict] = {}
    grid = {(job.dose, job.view, job.split) for job in ALL_DATASETS}
    for record in records:
        key = (int(record["dose"]), str(record["view"]), str(record["split"]))
        if key not in grid:
            raise ValueError(f"quality record for {key} is not a job of the study grid")
        if key in by_job:
            raise ValueError(f"two quality records for dose {key[0]}, view {key[1]!r}, split {key[2]!r}")
        by_job[key] = record

    rows = []
    for job in ALL_DATASETS:
        record = by_job.get((job.dose, job.view, job.split))
        if record is None:
            row = {**job.as_record(), "status": MISSING, "n_patterns": None, "reason": MISSING_REASON}
            row.update({metric: None for metric in METRICS})
        else:
            status = str(record.get("status") or MISSING)
            n_patterns = record.get("n_patterns")
            row = {
                **job.as_record(),
                "status": status,
                "n_patterns": int(n_patterns) if n_patterns is not None else None,
                "reason": record.get("reason"),
            }
            for metric in METRICS:
                row[metric] = _float_or_none(record.get(metric)) if status == SUCCEEDED else None
        rows.append({key: row[key] for key in ROW_KEYS})
    return rows


def rows_to_csv(rows: list[dict]) -> str:
    """CSV with header :data:`ROW_KEYS`; empty cells for None, metrics at full float precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ROW_KEYS)
    for row in rows:
        writer.writerow(["" if row.get(key) is None else row[key] for key in ROW_KEYS])
    return buffer.getvalue()


def _sig3(value: float | None) -> str:
    return "" if value is None else f"{value:#.3g}"


def _md_cell(text) -> str:
    return "" if text is None else str(text).replace("\n", " ").replace("|", "\\|")


def _metric_header(metric: str) -> str:
    unit = METRIC_UNITS[metric]
    arrow = "↑" if metric in HIGHER_IS_BETTER else "↓"
    short_unit = {"px, full period": "px", "fraction of Nyquist": "×Nyquist", "truth amplitude units": ""}.get(unit, unit)
    return f"{METRIC_LABELS[metric]}{f' ({short_unit})' if short_unit else ''} {arrow}"


def rows_to_markdown(rows: list[dict]) -> str:
    """A Markdown pipe table: dose, view, split, status, n (patterns), each metric to 3 significant digits
    (↑ higher is better, ↓ lower is better), and the reason for every job that did not succeed."""
    header = ["dose", "view", "split", "status", "n", *(_metric_header(m) for m in METRICS), "reason"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---:", "---", "---", "---", "---:", *(["---:"] * len(METRICS)), "---"]) + "|",
    ]
    for row in rows:
        status = row["status"]
        shown_status = status if status == SUCCEEDED else f"**{status}**"
        cells = [
            dose_label(row["dose"]),
            row["view"],
            row["split"],
            shown_status,
            "" if row.get("n_patterns") is None else str(row["n_patterns"]),
            *(_sig3(row.get(m)) for m in METRICS),
            "" if status == SUCCEEDED else _md_cell(row.get("reason") or "(no reason given)"),
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells[:-1]) + f" | {cells[-1]} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# the dose exponent and the headline
# --------------------------------------------------------------------------------------------------


def _resolution_points(rows: list[dict], view: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    points = [
        (float(r["dose"]), float(r["frc_resolution_px"]))
        for r in rows
        if r["view"] == view
        and r["split"] == split
        and r["status"] == SUCCEEDED
        and r.get("frc_resolution_px") is not None
        and math.isfinite(r["frc_resolution_px"])
        and r["frc_resolution_px"] > 0
    ]
    points.sort()
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def dose_exponents(rows: list[dict], split: str = "train") -> dict[str, dict]:
    """Per view, the power law ``frc_resolution_px ≈ prefactor * dose ** exponent``.

    Ordinary least squares of ``log(frc_resolution_px)`` against ``log(dose)`` over the view's succeeded
    rows of ``split`` (finite, positive resolutions only). Returns ``{view: {"exponent", "prefactor",
    "n_points"}}`` for every view of the study; ``exponent`` and ``prefactor`` are None when fewer than
    two distinct doses are available. Compare the exponent with :data:`EXPECTED_DOSE_EXPONENT`
    (-1/4). Caveat: a resolution pinned at the 2 px Nyquist floor (FRC never below 1/7) is a bound, not
    a measurement, and flattens the fitted slope.
    """
    out: dict[str, dict] = {}
    for view in VIEWS:
        doses, resolutions = _resolution_points(rows, view, split)
        n_points = int(doses.size)
        if np.unique(doses).size < 2:
            out[view] = {"exponent": None, "prefactor": None, "n_points": n_points}
            continue
        slope, intercept = np.polyfit(np.log(doses), np.log(resolutions), 1)
        out[view] = {"exponent": float(slope), "prefactor": float(np.exp(intercept)), "n_points": n_points}
    return out


def headline(rows: list[dict], view: str = "baseline", split: str = "train") -> str:
    """One line: ``view``'s phase SSIM on ``split`` at each dose (or the job's status where it was not
    scored) and its FRC resolution dose exponent beside the expected -0.25."""
    parts = []
    for dose in DOSES:
        row = next((r for r in rows if r["dose"] == dose and r["view"] == view and r["split"] == split), None)
        if row is None:
            text = MISSING
        elif row["status"] == SUCCEEDED and row.get("phase_ssim") is not None:
            text = f"{row['phase_ssim']:.2f}"
        else:
            text = row["status"]
        parts.append(f"{dose_label(dose)} {text}")
    fit = dose_exponents(rows, split)[view]
    if fit["exponent"] is None:
        exponent = f"n/a ({fit['n_points']} scored dose{'s' if fit['n_points'] != 1 else ''})"
    else:
        exponent = f"{fit['exponent']:.2f}"
    return (
        f"{view} phase SSIM ({split}) by dose: {' · '.join(parts)}; "
        f"FRC resolution exponent {exponent} (expected {EXPECTED_DOSE_EXPONENT:.2f})"
    )


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def _unavailable_panel(axis, text: str) -> None:
    axis.set_facecolor(_UNAVAILABLE_FACE)
    axis.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#404040", transform=axis.transAxes, wrap=True)


def _bare(axis) -> None:
    axis.set_xticks([])
    axis.set_yticks([])


def phase_grid_png(
    truth_phase: np.ndarray,
    phases: dict[tuple[int, str], np.ndarray | None],
    split: str,
    notes: dict[tuple[int, str], str] | None = None,
) -> bytes:
    """The truth phase (top left), then one row per view and one column per dose of aligned
    reconstructed phases, all on the truth's colour scale (radians).

    A ``(dose, view)`` whose value is None is drawn as a grey "not reconstructed" panel, one absent
    from ``phases`` as a grey "missing" panel; ``notes`` may give the text for such a panel (e.g.
    ``"skipped: sparse view not written"``).
    """
    notes = notes or {}
    truth_phase = np.asarray(truth_phase, dtype=float)
    vmin, vmax = float(np.nanmin(truth_phase)), float(np.nanmax(truth_phase))
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    n_rows, n_cols = len(VIEWS), len(DOSES) + 1
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols + 0.8, 2.6 * n_rows), squeeze=False)
    image = axes[0, 0].imshow(truth_phase, cmap="viridis", vmin=vmin, vmax=vmax)
    axes[0, 0].set_title("ground truth", fontweight="bold")
    _bare(axes[0, 0])
    for r in range(1, n_rows):
        axes[r, 0].set_axis_off()

    for r, view in enumerate(VIEWS):
        for c, dose in enumerate(DOSES, start=1):
            axis = axes[r, c]
            _bare(axis)
            if r == 0:
                axis.set_title(f"{dose_label(dose)} photons/pattern")
            if c == 1:
                axis.set_ylabel(view, fontsize=12, fontweight="bold", color=VIEW_COLORS.get(view, "black"))
            key = (dose, view)
            panel = phases.get(key)
            if panel is None:
                default = "not reconstructed\n(skipped or failed)" if key in phases else "missing"
                _unavailable_panel(axis, notes.get(key, default))
                axis.set_box_aspect(truth_phase.shape[0] / truth_phase.shape[1])
                continue
            axis.imshow(np.asarray(panel, dtype=float), cmap="viridis", vmin=vmin, vmax=vmax)
    figure.colorbar(image, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label="phase (rad)")
    figure.suptitle(f"Object phase after registration and phase-offset removal ({split} split)", fontsize=13)
    return png_bytes(figure)


def _metric_axis_label(metric: str) -> str:
    unit = METRIC_UNITS[metric]
    return f"{METRIC_LABELS[metric]} ({unit})" if unit else METRIC_LABELS[metric]


def metrics_vs_dose_png(rows: list[dict], split: str = "train") -> bytes:
    """One panel per metric, dose on a log axis, one line per view (consistent colours). The legend
    says how many doses each view has scored, so a view without data is visible as such."""
    n_cols = 4
    n_rows = math.ceil(len(METRICS) / n_cols)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 3.0 * n_rows + 0.6), squeeze=False)
    handles = {}
    for axis, metric in zip(axes.ravel(), METRICS):
        for view in VIEWS:
            values = []
            for dose in DOSES:
                row = next((r for r in rows if r["dose"] == dose and r["view"] == view and r["split"] == split), None)
                value = row.get(metric) if row is not None and row["status"] == SUCCEEDED else None
                values.append(np.nan if value is None else value)
            n_scored = int(np.sum(np.isfinite(values)))
            (line,) = axis.plot(
                DOSES,
                values,
                color=VIEW_COLORS.get(view),
                marker=VIEW_MARKERS.get(view, "o"),
                markersize=VIEW_MARKER_SIZES.get(view, 6.0),
                linestyle=VIEW_LINESTYLES.get(view, "-"),
                linewidth=2.5 if view == "baseline" else 1.5,
                label=f"{view} ({n_scored}/{len(DOSES)} doses scored)",
            )
            handles[view] = line
        axis.set_xscale("log")
        axis.set_xticks(DOSES, [dose_label(d) for d in DOSES])
        axis.set_xlim(min(DOSES) / 2, max(DOSES) * 2)
        axis.minorticks_off()
        better = "higher is better" if metric in HIGHER_IS_BETTER else "lower is better"
        axis.set_title(f"{METRIC_LABELS[metric]} ({better})", fontsize=10)
        axis.set_ylabel(_metric_axis_label(metric), fontsize=9)
        axis.set_xlabel("dose (photons per pattern)", fontsize=9)
        axis.grid(True, alpha=0.3)
    for axis in axes.ravel()[len(METRICS):]:
        axis.set_axis_off()
    figure.suptitle(f"Reconstruction quality against dose ({split} split)", fontsize=13)
    figure.tight_layout(rect=(0, 0.06, 1, 0.96))
    figure.legend(
        [handles[v] for v in VIEWS], [handles[v].get_label() for v in VIEWS], loc="lower center", ncol=len(VIEWS), frameon=False
    )
    return png_bytes(figure)


def _log_minor_label(value: float, _position=None) -> str:
    """Label the 2, 3 and 5 minor ticks of a log axis (a resolution range is often under a decade)."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (2.0, 3.0, 5.0) else ""


def resolution_fit_png(rows: list[dict], exponents: dict[str, dict], split: str = "train") -> bytes:
    """Log-log FRC resolution (px) against dose per view with its fitted power law, the 2 px Nyquist
    floor, and the D^-1/4 expectation drawn through the baseline's middle scored point."""
    figure, axis = plt.subplots(figsize=(7.0, 5.0))
    dose_grid = np.geomspace(min(DOSES) / 1.5, max(DOSES) * 1.5, 50)
    all_resolutions = []
    handles, labels = [], []
    for view in VIEWS:
        color = VIEW_COLORS.get(view)
        style = {"color": color, "marker": VIEW_MARKERS.get(view, "o"), "markersize": VIEW_MARKER_SIZES.get(view, 6.0) + 1}
        linestyle, linewidth = VIEW_LINESTYLES.get(view, "-"), 2.5 if view == "baseline" else 1.5
        doses, resolutions = _resolution_points(rows, view, split)
        all_resolutions.extend(resolutions.tolist())
        fit = (exponents or {}).get(view) or {}
        if fit.get("exponent") is not None:
            labels.append(f"{view}: exponent {fit['exponent']:+.2f} ({fit['n_points']} doses)")
            axis.plot(dose_grid, fit["prefactor"] * dose_grid ** fit["exponent"], color=color, linestyle=linestyle, linewidth=linewidth)
        else:
            labels.append(f"{view}: no fit ({doses.size} scored dose{'s' if doses.size != 1 else ''})")
        axis.plot(doses, resolutions, linestyle="none", **style)
        handles.append(Line2D([], [], linestyle=linestyle, linewidth=linewidth, **style))
    base_doses, base_res = _resolution_points(rows, "baseline", split)
    if base_doses.size:
        middle = base_doses.size // 2
        anchor_dose, anchor_res = base_doses[middle], base_res[middle]
        expected = anchor_res * (dose_grid / anchor_dose) ** EXPECTED_DOSE_EXPONENT
        (line,) = axis.plot(dose_grid, expected, color="black", linestyle="-.", linewidth=1.2)
        handles.append(line)
        labels.append(f"expected $D^{{-1/4}}$ ({EXPECTED_DOSE_EXPONENT:+.2f}), through baseline at {dose_label(int(anchor_dose))}")
        all_resolutions.extend(expected.tolist())
    handles.append(axis.axhline(NYQUIST_RESOLUTION_PX, color="grey", linestyle=":", linewidth=1.0))
    labels.append(f"Nyquist floor ({NYQUIST_RESOLUTION_PX:g} px)")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xticks(DOSES, [dose_label(d) for d in DOSES])
    axis.set_xlim(dose_grid[0], dose_grid[-1])
    if all_resolutions:
        low, high = min(min(all_resolutions), NYQUIST_RESOLUTION_PX), max(all_resolutions)
        axis.set_ylim(low / 1.3, high * 1.3)
    else:
        axis.text(0.5, 0.6, f"no scored jobs on the {split} split", ha="center", transform=axis.transAxes, color="#404040")
    axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.yaxis.set_minor_formatter(FuncFormatter(_log_minor_label))
    axis.set_xlabel("dose (photons per pattern)")
    axis.set_ylabel("FRC resolution (px, full period)")
    axis.set_title(f"FRC resolution (1/7 threshold) against dose, {split} split: lower is finer")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(handles, labels, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    figure.tight_layout()
    return png_bytes(figure)


# --------------------------------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------------------------------


def _split_pipe_row(line: str) -> list[str]:
    body = line.strip()
    body = body.removeprefix("|")
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", body)]


def _inline_markdown(text: str) -> str:
    escaped = html.escape(text)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def markdown_table_to_html(markdown_table: str) -> str:
    """A pipe table (as :func:`rows_to_markdown` writes it) as an HTML ``<table>``: header row, the
    alignment row's ``---:`` as right alignment, ``**bold**`` kept, everything else escaped."""
    lines = [line for line in markdown_table.strip().splitlines() if line.strip()]
    if len(lines) < 2:
        return f"<pre>{html.escape(markdown_table)}</pre>"
    header, alignment, body = _split_pipe_row(lines[0]), _split_pipe_row(lines[1]), lines[2:]
    aligns = ["right" if a.endswith(":") and not a.startswith(":") else "center" if a.startswith(":") and a.endswith(":") else "left" for a in alignment]
    aligns += ["left"] * (len(header) - len(aligns))
    out = ["<table>", "<thead><tr>"]
    out += [f'<th style="text-align:{a}">{_inline_markdown(h)}</th>' for h, a in zip(header, aligns)]
    out.append("</tr></thead>")
    out.append("<tbody>")
    for line in body:
        cells = _split_pipe_row(line)
        row_class = "" if SUCCEEDED in cells else ' class="unscored"'
        out.append(f"<tr{row_class}>" + "".join(
            f'<td style="text-align:{a}">{_inline_markdown(c)}</td>' for c, a in zip(cells, aligns)
        ) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
p.headline { font-size: 1.15em; background: #eef4fb; border-left: 4px solid #1f77b4; padding: 0.6em 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; white-space: nowrap; }
th { background: #f2f2f2; }
tr.unscored td { background: #f4f4f4; color: #555; }
td:last-child { white-space: normal; max-width: 28em; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
"""


def html_page(title: str, headline: str, markdown_table: str, images: dict[str, bytes], notes: list[str]) -> str:
    """One self-contained HTML document: the headline, notes, the quality table (converted from the
    Markdown pipe table) and every image inline as a base64 ``data:`` URI; no external resources."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="headline">{html.escape(headline)}</p>',
    ]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in notes) + "</ul>")
    parts.append("<h2>Quality per job</h2>")
    parts.append(
        "<p>Metrics against the ground truth after registration and phase-offset removal; ↑ higher is better, "
        "↓ lower is better. Jobs that were not scored are shaded, with their reason.</p>"
    )
    parts.append(markdown_table_to_html(markdown_table))
    if images:
        parts.append("<h2>Figures</h2>")
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def exponents_markdown(exponents: dict[str, dict]) -> str:
    """The per-view dose exponents as a Markdown table, with the expected value."""
    lines = [
        "| view | exponent | prefactor (px) | doses fitted |",
        "| --- | ---: | ---: | ---: |",
    ]
    for view, fit in exponents.items():
        exponent = "n/a" if fit.get("exponent") is None else f"{fit['exponent']:+.3f}"
        prefactor = "n/a" if fit.get("prefactor") is None else f"{fit['prefactor']:.3g}"
        lines.append(f"| {view} | {exponent} | {prefactor} | {fit.get('n_points', 0)} |")
    lines.append(f"| *expected (dose fractionation)* | {EXPECTED_DOSE_EXPONENT:+.3f} | | |")
    return "\n".join(lines) + "\n"


def report_markdown(
    headline: str, markdown_table: str, images: dict[str, bytes], exponents: dict[str, dict], notes: list[str] = ()
) -> str:
    """Markdown for the Dagster UI: the headline, notes, the FRC resolution dose exponents (resolution ≈
    prefactor · dose^exponent), every image inline, and the quality table."""
    parts = [
        f"**{headline}**",
        "",
        *[f"- {note}" for note in notes],
        "",
        "### FRC resolution against dose: fitted exponents",
        "",
        exponents_markdown(exponents),
    ]
    for name, png in images.items():
        parts += [f"### {name}", "", markdown_image(png, name), ""]
    parts += ["### Quality per job", "", markdown_table]
    return "\n".join(parts)
