"""The study report: what the fly64 study says about dose and overlap (see the spec, "Quality").

Everything here works on plain "quality records", one per (dose, view, split) job, as the
``reconstruction_quality`` asset writes them::

    {"dose": 1000, "view": "baseline", "split": "train",
     "status": "succeeded" | "skipped" | "failed" | "missing" | ...,
     "reason": str | None, "n_patterns": int | None,
     "amplitude_mae": float, ..., "frc_resolution_fraction": float,   # metrics only when succeeded
     "requested_regularization": "auto" | "off" | "tv_0_1" | ..., "tv_weight": float,  # the TV weight run
     "regularization_choice": dict | None}   # regularization.RegularizationChoice.as_dict() when auto was asked

and turns them into a table over the full 3 x 3 x 2 grid (absent jobs become ``"missing"``, never
dropped), a CSV and a Markdown table, the FRC resolution's dose exponent beside the dose-fractionation
expectation ``d ∝ D^(-1/4)``, figures (PNG bytes), a self-contained HTML page and Markdown for the
Dagster UI.

Replicates: the train and test splits are independent halves of each (dose, view) dataset, i.e. two
replicates. Every metric is summarised per (dose, view) as both values, their mean and the half-difference
``|a - b| / 2`` as its spread (for two values this is exactly the standard error of their mean; the error bar
mean ± spread spans the two values). The dose exponent is fitted to each split separately and reported as
the mean ± half-difference of the two fits. A (dose, view) with one scored split shows that value, no
spread, and says which split it is.

Regularization: each row says which total-variation weight its reconstruction ran with and how it was
picked; :func:`regularization_markdown` shows, for the jobs that asked for ``auto``, the held-out scores behind
each choice (or why none could be made).

Convergence: each reconstruction may carry its quality against the truth every few epochs (the
reconstruction record's ``convergence``); :func:`convergence_png` draws it beside the loss curve and
:func:`convergence_notes` says, from the data, whether the run was too short, long enough or too long.

Pure NumPy and matplotlib (through :mod:`fly64_assets.core.figures`); no Dagster object is used here.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
from collections import Counter

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from fly64_assets.core.figures import markdown_image, plt, png_bytes
from fly64_assets.core.design import ALL_DATASETS, DOSES, SPLITS, VIEWS

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

REPLICATE_KEYS: tuple[str, ...] = ("n_replicates", *(f"{m}_{stat}" for m in METRICS for stat in ("mean", "spread")))
"""Columns added after the job's own: how many splits of the job's (dose, view) were scored, and each metric's
mean and half-difference over them (the same on the train and the test row; spread empty with one replicate)."""

REGULARIZATION_KEYS: tuple[str, ...] = ("regularization", "tv_weight")
"""Columns added last: the job's regularization in a few words (:func:`regularization_text`) and the TV weight
its reconstruction ran with (0 = none); None unless the job was scored."""

COVERAGE_KEYS: tuple[str, ...] = ("scan_area_lit",)
"""The share of the scored area that the dataset's probes light (at >= 10 % of the probe's peak,
``coverage.lit_fraction``): a thinned view that leaves gaps scores them as errors; None unless scored."""

ROW_KEYS: tuple[str, ...] = (
    "dose", "view", "split", "status", "n_patterns", *METRICS, "reason", *REPLICATE_KEYS, *REGULARIZATION_KEYS,
    *COVERAGE_KEYS,
)
"""The columns of a quality row (and of the CSV), in order: the job's own first (as before), then the
replicate summary of its (dose, view), then its regularization and coverage (appended, so earlier columns keep
their place)."""

SUMMARY_KEYS: tuple[str, ...] = (
    "dose",
    "view",
    "n_replicates",
    "replicates",
    *(f"{m}_{stat}" for m in METRICS for stat in (*SPLITS, "mean", "spread")),
    "note",
)
"""The columns of a (dose, view) summary row (:func:`replicate_summary`, ``quality_summary.csv``)."""

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


def _job_key(record: dict) -> tuple[int, str, str]:
    return int(record["dose"]), str(record["view"]), str(record["split"])


def quality_rows(records: list[dict]) -> list[dict]:
    """One row per job of the full study grid, in ``study.ALL_DATASETS`` order (dose, view, split).

    Each row has exactly the keys :data:`ROW_KEYS`. Metrics are floats for succeeded jobs and None
    otherwise (a succeeded record lacking a metric gets None for it). A job with no record gets status
    ``"missing"`` and a reason saying so. Records may carry extra keys (``shift_yx``, paths); they are
    not copied. A record for a job outside the grid, or two records for one job, raise ValueError.
    The :data:`REPLICATE_KEYS` columns repeat its (dose, view)'s :func:`replicate_summary`; the
    :data:`REGULARIZATION_KEYS` are the job's own (None unless succeeded).
    """
    by_job: dict[tuple[int, str, str], dict] = {}
    grid = {(job.dose, job.view, job.split) for job in ALL_DATASETS}
    for record in records:
        key = _job_key(record)
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
            row.update({key: None for key in (*METRICS, *REGULARIZATION_KEYS, *COVERAGE_KEYS)})
        else:
            status = str(record.get("status") or MISSING)
            n_patterns = record.get("n_patterns")
            row = {
                **job.as_record(),
                "status": status,
                "n_patterns": int(n_patterns) if n_patterns is not None else None,
                "reason": record.get("reason"),
            }
            scored = status == SUCCEEDED
            for metric in METRICS:
                row[metric] = _float_or_none(record.get(metric)) if scored else None
            row["regularization"] = regularization_text(record) if scored else None
            row["tv_weight"] = _float_or_none(record.get("tv_weight")) if scored else None
            row["scan_area_lit"] = _float_or_none(record.get("scan_area_lit")) if scored else None
        rows.append(row)
    summary = {(s["dose"], s["view"]): s for s in replicate_summary(rows)}
    for row in rows:
        row.update({key: summary[(row["dose"], row["view"])][key] for key in REPLICATE_KEYS})
    return [{key: row[key] for key in ROW_KEYS} for row in rows]


# --------------------------------------------------------------------------------------------------
# replicates: the train and test splits
# --------------------------------------------------------------------------------------------------


def _usable(value) -> bool:
    return value is not None and math.isfinite(value)


def _absent_splits_text(split_rows: dict[str, dict | None], absent: list[str]) -> str:
    """``"train and test skipped (reason)"``: the absent splits grouped by status, with their reason when the
    group shares one (else a pointer to the per-job table, where each reason is)."""
    groups: dict[str, list[tuple[str, str | None]]] = {}
    for split in absent:
        row = split_rows[split]
        status, reason = (MISSING, MISSING_REASON) if row is None else (str(row["status"]), row.get("reason"))
        groups.setdefault(status, []).append((split, reason))
    parts = []
    for status, members in groups.items():
        reasons = {reason for _, reason in members if reason}
        why = f" ({reasons.pop()})" if len(reasons) == 1 else " (reasons in the per-job table)" if reasons else ""
        parts.append(f"{' and '.join(split for split, _ in members)} {status}{why}")
    return "; ".join(parts)


def replicate_summary(rows: list[dict]) -> list[dict]:
    """One row per (dose, view) of the grid (dose, then view order): the two splits as replicates.

    Keys :data:`SUMMARY_KEYS`. For each metric: ``<metric>_train`` and ``<metric>_test`` (None where that
    split was not scored), ``<metric>_mean`` (the mean of the scored values) and ``<metric>_spread``
    (``|train - test| / 2``, the standard error of the mean of two; None unless both were scored).
    ``n_replicates`` counts the succeeded splits, ``replicates`` names them (``"train+test"``, ``"train"``,
    ``""``), and ``note`` says why a split is absent (None when both were scored).
    """
    by_job = {(r["dose"], r["view"], r["split"]): r for r in rows}
    out = []
    for dose in DOSES:
        for view in VIEWS:
            split_rows = {split: by_job.get((dose, view, split)) for split in SPLITS}
            scored = [s for s in SPLITS if split_rows[s] is not None and split_rows[s]["status"] == SUCCEEDED]
            summary = {"dose": dose, "view": view, "n_replicates": len(scored), "replicates": "+".join(scored)}
            for metric in METRICS:
                values = {}
                for split in SPLITS:
                    value = split_rows[split].get(metric) if split in scored else None
                    summary[f"{metric}_{split}"] = value if _usable(value) else None
                    if _usable(value):
                        values[split] = value
                summary[f"{metric}_mean"] = float(np.mean(list(values.values()))) if values else None
                summary[f"{metric}_spread"] = (
                    abs(values[SPLITS[0]] - values[SPLITS[1]]) / 2.0 if len(values) == len(SPLITS) == 2 else None
                )
            absent = [s for s in SPLITS if s not in scored]
            described = _absent_splits_text(split_rows, absent)
            if not absent:
                note = None
            elif not scored:
                note = f"no split scored: {described}"
            else:
                note = f"one replicate ({scored[0]} only, no spread): {described}"
            summary["note"] = note
            out.append({key: summary[key] for key in SUMMARY_KEYS})
    return out


def _decimals(value: float) -> int:
    """Decimals that show ``value`` to 3 significant digits (0 for |value| >= 100)."""
    if value == 0 or not math.isfinite(value):
        return 3
    return max(0, 2 - math.floor(math.log10(abs(value))))


def format_replicates(
    mean: float | None, spread: float | None, replicates: str = "", decimals: int | None = None, unit: str = ""
) -> str:
    """``"0.300 ± 0.005"``; one replicate: ``"0.300 (train only)"``; none: ``"n/a"``. The spread is shown
    to the mean's decimals (3 significant digits of the mean unless ``decimals`` is given); ``unit`` follows
    the number (``"0.300 ± 0.005 rad"``, ``"0.300 rad (train only)"``)."""
    if mean is None:
        return "n/a"
    places = _decimals(mean) if decimals is None else decimals
    unit = f" {unit}" if unit else ""
    if spread is None:
        only = f" ({replicates} only)" if replicates and "+" not in replicates else ""
        return f"{mean:.{places}f}{unit}{only}"
    return f"{mean:.{places}f} ± {spread:.{places}f}{unit}"


def _csv(rows: list[dict], keys) -> str:
    """CSV with header ``keys``; empty cells for None, floats at full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    for row in rows:
        writer.writerow(["" if row.get(key) is None else row[key] for key in keys])
    return buffer.getvalue()


def summary_to_csv(summary: list[dict]) -> str:
    """CSV with header :data:`SUMMARY_KEYS`; empty cells for None."""
    return _csv(summary, SUMMARY_KEYS)


def summary_to_markdown(summary: list[dict]) -> str:
    """A Markdown pipe table, one row per (dose, view): each metric as mean ± half-difference of the
    train and test splits (one value and the split's name where only one was scored), and a note."""
    header = ["dose", "view", "splits scored", *(_metric_header(m) for m in METRICS), "note"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---:", "---", "---", *(["---:"] * len(METRICS)), "---"]) + "|",
    ]
    for row in summary:
        cells = [
            dose_label(row["dose"]),
            row["view"],
            row["replicates"].replace("+", " + ") if row["n_replicates"] else "**none**",
            *(
                format_replicates(row[f"{m}_mean"], row[f"{m}_spread"], row["replicates"])
                if row[f"{m}_mean"] is not None
                else ""
                for m in METRICS
            ),
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + f" | {_md_cell(row['note'] or '')} |")
    return "\n".join(lines) + "\n"


def rows_to_csv(rows: list[dict]) -> str:
    """CSV with header :data:`ROW_KEYS`; empty cells for None, metrics at full float precision."""
    return _csv(rows, ROW_KEYS)


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
    """A Markdown pipe table: dose, view, split, status, n (patterns), the share of the scored area the probes
    light, the regularization method, each metric to 3 significant digits (↑ higher is better, ↓ lower is
    better), and the reason for every job that did not succeed."""
    header = ["dose", "view", "split", "status", "n", "area lit", "method", *(_metric_header(m) for m in METRICS), "reason"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---:", "---", "---", "---", "---:", "---:", "---", *(["---:"] * len(METRICS)), "---"]) + "|",
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
            "" if row.get("scan_area_lit") is None else f"{100 * row['scan_area_lit']:.0f} %",
            row.get("regularization") or "",
            *(_sig3(row.get(m)) for m in METRICS),
            "" if status == SUCCEEDED else _md_cell(row.get("reason") or "(no reason given)"),
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells[:-1]) + f" | {cells[-1]} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# regularization: the TV weight each job ran with, and how auto chose it
# --------------------------------------------------------------------------------------------------

AUTO = "auto"
"""``options.Regularization.auto``'s value: the request to choose the weight per dataset without the truth."""

_AUTO_TEXT = f"{AUTO} → "
"""How :func:`regularization_text` begins for a job that asked for auto."""

REGULARIZATION_TITLE = "Regularization chosen without the truth"

REGULARIZATION_INTRO = (
    "With regularization auto, each dataset's total-variation weight w is chosen from its own patterns, not from "
    "the truth: a seeded share of the patterns is held out, every candidate weight reconstructs the rest and is "
    "scored by how well it predicts the held-out photon counts (Poisson deviance per pixel, lower is better; the "
    "lowest in bold). The least regularized candidate within one standard error of the lowest (its excess ± that "
    "error shown) is kept (✓) and "
    "reconstructed on every pattern; where the kept scan does not overlap the held-out patterns (too little "
    "coverage) nothing can be validated and no regularization is used. Method and measurements: docs/SCIENCE.md."
)


def regularization_text(record: dict) -> str | None:
    """How a scored job was regularized, in a few words: ``"auto → TV 0.3"``, ``"auto → off (held-out coverage
    0.08 < 0.5)"`` (auto could not choose: why), ``"off"`` or ``"fixed TV 0.1"``. None for a record that does not
    say (one written before regularization was recorded)."""
    weight = _float_or_none(record.get("tv_weight"))
    if weight is None:
        return None
    used = "off" if weight == 0 else f"TV {weight:g}"
    if record.get("requested_regularization") != AUTO:
        return used if weight == 0 else f"fixed {used}"
    choice = record.get("regularization_choice") or {}
    why = "" if choice.get("candidates") else f" ({_no_choice_note(choice).split(':')[0]})"
    return f"{_AUTO_TEXT}{used}{why}"


def _no_choice_note(choice: dict) -> str:
    return "; ".join(choice.get("notes") or ["no choice recorded"])


def _job_label(record: dict) -> str:
    return f"{dose_label(int(record['dose']))} {record['view']} {record['split']}"


def _deviance_cell(candidate: dict, choice: dict) -> str:
    """``"0.2145"``, bold when it is the lowest; a candidate within one standard error of the lowest also shows its
    excess over it ± that error (``"0.3160 (+0.0073 ± 0.0074)"``); ✓ marks the chosen candidate."""
    text = f"{candidate['poisson_deviance']:.4f}"
    excess, error = candidate.get("excess_over_lowest"), candidate.get("excess_standard_error")
    if candidate["regularization"] == choice.get("lowest_deviance"):
        text = f"**{text}**"
    elif excess is not None and error is not None and excess <= error:
        text += f" (+{excess:.4f} ± {error:.4f})"
    return text + (" ✓" if candidate["regularization"] == choice["chosen"] else "")


def _choice_table(records: list[dict]) -> str:
    """One row per job with a choice: its chosen weight, every candidate's held-out deviance (one column per
    weight present in any record, ascending), the held-out share, the held-out coverage and the cost."""
    weights = sorted({c["tv_weight"] for r in records for c in r["regularization_choice"]["candidates"]})
    header = ["dose", "view", "split", "chosen w", *(f"w = {w:g}" for w in weights), "held out", "coverage", "cost"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---:", "---", "---", "---:", *(["---:"] * len(weights)), "---:", "---:", "---:"]) + "|",
    ]
    for record in records:
        choice = record["regularization_choice"]
        by_weight = {c["tv_weight"]: _deviance_cell(c, choice) for c in choice["candidates"]}
        cells = [
            dose_label(int(record["dose"])), record["view"], record["split"], f"{choice['chosen_tv_weight']:g}",
            *(by_weight.get(w, "") for w in weights),
            f"{choice['n_held_out']}/{choice['n_patterns']}", f"{choice['held_out_coverage']:.2f}", f"{choice['cost_factor']:.2f}×",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _methods_text(records: list[dict]) -> str:
    """``"off (4 jobs), fixed TV 0.1 (2 jobs)"``: the methods of ``records`` and how many jobs ran each."""
    counts = Counter(regularization_text(record) or "not recorded" for record in records)
    return ", ".join(f"{method} ({n} job{'s' if n != 1 else ''})" for method, n in counts.items())


def regularization_markdown(records: list[dict]) -> str:
    """The report's :data:`REGULARIZATION_TITLE` section, from the quality records (as for
    :func:`quality_rows`): a table of the scored jobs whose auto request made a choice (:func:`_choice_table`),
    then those where it could not, each with its reason, then the method of the jobs that did not ask for
    auto. When none did, one line says which method the reconstructions ran with."""
    order = {(job.dose, job.view, job.split): i for i, job in enumerate(ALL_DATASETS)}
    scored = sorted((r for r in records if r.get("status") == SUCCEEDED), key=lambda r: order[_job_key(r)])
    if not scored:
        return "No reconstruction has been scored."
    auto = [r for r in scored if r.get("requested_regularization") == AUTO]
    if not auto:
        methods = {regularization_text(r) for r in scored}
        if len(methods) == 1 and None not in methods:
            return f"All {len(scored)} reconstructions ran with regularization {methods.pop()}; none asked for auto."
        return f"No reconstruction asked for auto; they ran with: {_methods_text(scored)}."
    chosen = [r for r in auto if (r.get("regularization_choice") or {}).get("candidates")]
    blocks = [_choice_table(chosen)] if chosen else []
    unchosen = [r for r in auto if r not in chosen]
    if unchosen:
        blocks.append("Auto could not choose a weight for:")
        blocks.append("\n".join(f"- {_job_label(r)}: {_no_choice_note(r.get('regularization_choice') or {})}" for r in unchosen))
    others = [r for r in scored if r not in auto]
    if others:
        blocks.append(f"Not asked to choose: {_methods_text(others)}.")
    return "\n\n".join(blocks) + "\n"


def _chosen_weights_text(rows: list[dict], view: str) -> str:
    """``"TV weight chosen without the truth: 0.3 at 1e3, 0.03/0.1 at 1e4"`` (train/test where the splits
    differ) over ``view``'s scored jobs that asked for auto; empty when none did."""
    parts = []
    for dose in DOSES:
        weights = [
            f"{row['tv_weight']:g}" for row in rows  # rows are in split order
            if (row["dose"], row["view"]) == (dose, view) and (row["regularization"] or "").startswith(_AUTO_TEXT)
        ]
        if weights:
            parts.append(f"{'/'.join(dict.fromkeys(weights))} at {dose_label(dose)}")
    return f"TV weight chosen without the truth: {', '.join(parts)}" if parts else ""


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


def dose_exponent_replicates(rows: list[dict]) -> dict[str, dict]:
    """Per view, the FRC resolution's dose exponent with its uncertainty from the two replicates.

    Method (chosen over a weighted fit of the means, which with two replicates would rest on spreads
    estimated from two values each): :func:`dose_exponents` fits each split on its own; the exponent is the
    mean of the two fitted exponents and its uncertainty their half-difference ``|a - b| / 2`` (the
    standard error of the mean of two), the same rule as every metric's error bar. The prefactor is the
    geometric mean of the two (the line is the mean of the two fitted lines in log-log). With one split
    fitted: its exponent, uncertainty None, and ``note`` says which split. Returns ``{view: {"exponent",
    "uncertainty", "prefactor", "n_points", "n_replicates", "replicates", "per_split", "n_at_floor",
    "note"}}``; ``n_points`` is the largest number of doses fitted in one split; ``n_at_floor`` counts
    fitted points at the 2 px Nyquist floor (bounds, not measurements: they flatten the slope).
    """
    per_split = {split: dose_exponents(rows, split) for split in SPLITS}
    out: dict[str, dict] = {}
    for view in VIEWS:
        fits = {split: per_split[split][view] for split in SPLITS}
        fitted = [split for split in SPLITS if fits[split]["exponent"] is not None]
        exponents = [fits[split]["exponent"] for split in fitted]
        n_at_floor = sum(
            int(np.sum(np.isclose(_resolution_points(rows, view, split)[1], NYQUIST_RESOLUTION_PX))) for split in fitted
        )
        entry = {
            "exponent": float(np.mean(exponents)) if exponents else None,
            "uncertainty": abs(exponents[0] - exponents[1]) / 2.0 if len(exponents) == 2 else None,
            "prefactor": float(np.exp(np.mean([np.log(fits[s]["prefactor"]) for s in fitted]))) if fitted else None,
            "n_points": max((fits[split]["n_points"] for split in SPLITS), default=0),
            "n_replicates": len(fitted),
            "replicates": "+".join(fitted),
            "per_split": fits,
            "n_at_floor": n_at_floor,
        }
        if len(fitted) == 2:
            entry["note"] = None
        elif fitted:
            entry["note"] = f"{fitted[0]} split only: no uncertainty"
        else:
            entry["note"] = "fewer than two scored doses in either split"
        out[view] = entry
    return out


def format_exponent(fit: dict) -> str:
    """``"-0.23 ± 0.02"``, ``"-0.23 (train only)"`` or ``"n/a"``."""
    if fit.get("exponent") is None:
        return "n/a"
    if fit.get("uncertainty") is None:
        only = fit.get("replicates")
        return f"{fit['exponent']:+.2f}" + (f" ({only} only)" if only else "")
    return f"{fit['exponent']:+.2f} ± {fit['uncertainty']:.2f}"


def _scored_doses(summary: list[dict], view: str, metric: str) -> list[dict]:
    return [s for s in summary if s["view"] == view and s[f"{metric}_mean"] is not None]


def _unscored_text(rows: list[dict], view: str) -> str:
    """How a view's unscored doses ended: ``"skipped at 1e3, 1e4; missing at 1e5"``."""
    by_status: dict[str, list[str]] = {}
    for dose in DOSES:
        statuses = {r["status"] for r in rows if r["dose"] == dose and r["view"] == view} or {MISSING}
        if SUCCEEDED not in statuses:
            by_status.setdefault("/".join(sorted(statuses)), []).append(dose_label(dose))
    return "; ".join(f"{status} at {', '.join(doses)}" for status, doses in by_status.items())


def _phase_error(s: dict) -> str:
    return format_replicates(s["phase_mae_mean"], s["phase_mae_spread"], s["replicates"], decimals=3, unit="rad")


def headline(rows: list[dict], view: str = "baseline") -> str:
    """The study's answer in two sentences, with mean ± half-difference of the two splits throughout (a
    value resting on one split says so: ``"0.300 rad (train only)"``):
    how ``view``'s phase error changes from the lowest to the highest scored dose, its FRC resolution's
    dose exponent beside the expected -1/4 (and, where ``view`` asked for auto regularization, the TV weight chosen
    at each dose), and where each other view ends up (at its highest scored dose, beside ``view`` there) or why it
    was not scored."""
    summary = replicate_summary(rows)
    fits = dose_exponent_replicates(rows)
    scored = _scored_doses(summary, view, "phase_mae")
    unscored = [dose_label(s["dose"]) for s in summary if s["view"] == view and s["phase_mae_mean"] is None]
    gaps = f" ({', '.join(unscored)} not scored)" if unscored and scored else ""
    if len(scored) >= 2:
        first, last = scored[0], scored[-1]
        verb = "falls" if last["phase_mae_mean"] < first["phase_mae_mean"] else "rises" if last["phase_mae_mean"] > first["phase_mae_mean"] else "stays"
        lead = (
            f"{view.capitalize()} phase error {verb} from {_phase_error(first)} at {dose_label(first['dose'])} "
            f"to {_phase_error(last)} at {dose_label(last['dose'])} photons/pattern{gaps}"
        )
    elif scored:
        lead = f"{view.capitalize()} phase error {_phase_error(scored[0])} at {dose_label(scored[0]['dose'])} photons/pattern, the only dose scored"
    else:
        lead = f"The {view} view was not scored at any dose ({_unscored_text(rows, view)})"
    fit = fits[view]
    if fit["exponent"] is not None:
        resolution = f"FRC resolution scales as D^({format_exponent(fit)}), expected -1/4"
    else:
        resolution = f"the FRC resolution's dose exponent is n/a ({fit['note']}; expected -1/4)"
    chosen = _chosen_weights_text(rows, view)
    resolution += f"; {chosen}" if chosen else ""
    first_sentence = f"Over the train and test splits (mean ± half-difference), {lead[0].lower()}{lead[1:]}; {resolution}."

    others = []
    for other in VIEWS:
        if other == view:
            continue
        other_scored = _scored_doses(summary, other, "phase_mae")
        if not other_scored:
            others.append(f"the {other} view was not scored ({_unscored_text(rows, other)})")
            continue
        top = other_scored[-1]
        beside = next((s for s in scored if s["dose"] == top["dose"]), None)
        text = f"the {other} view reaches {_phase_error(top)} at {dose_label(top['dose'])}"
        if beside is not None:
            text += f" ({view} {_phase_error(beside)})"
        if fits[other]["exponent"] is not None:
            text += f" and scales as D^({format_exponent(fits[other])})"
        others.append(text)
    if not others:
        return first_sentence
    second = "; ".join(others)
    return f"{first_sentence} {second[0].upper()}{second[1:]}."


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


def _metric_points(rows: list[dict], summary: list[dict] | None, view: str, metric: str, split: str | None):
    """Per dose (``DOSES`` order): value (NaN where unscored), error (0 where none) and whether it rests on
    one split only. ``split`` None: mean ± half-difference over the splits (``summary``); else that split."""
    values, errors, single = [], [], []
    for dose in DOSES:
        if split is None:
            entry = next(s for s in summary if s["dose"] == dose and s["view"] == view)
            value, spread = entry[f"{metric}_mean"], entry[f"{metric}_spread"]
            one = value is not None and spread is None
        else:
            row = next((r for r in rows if r["dose"] == dose and r["view"] == view and r["split"] == split), None)
            value = row.get(metric) if row is not None and row["status"] == SUCCEEDED else None
            spread, one = None, False
        values.append(np.nan if value is None else value)
        errors.append(0.0 if spread is None else spread)
        single.append(one)
    return np.array(values, dtype=float), np.array(errors, dtype=float), np.array(single, dtype=bool)


def _view_style(view: str) -> dict:
    return {
        "color": VIEW_COLORS.get(view),
        "marker": VIEW_MARKERS.get(view, "o"),
        "markersize": VIEW_MARKER_SIZES.get(view, 6.0),
        "linestyle": VIEW_LINESTYLES.get(view, "-"),
        "linewidth": 2.5 if view == "baseline" else 1.5,
    }


def _draw_points(axis, doses, values, errors, single, view: str, with_line: bool = True) -> None:
    """Values with error bars (capped; drawn only where there is a spread), hollow markers where the point
    rests on one split, and the view's line through them when ``with_line``."""
    style = _view_style(view)
    has_error = errors > 0
    axis.errorbar(
        doses, values, yerr=np.where(has_error, errors, np.nan), fmt="none", ecolor=style["color"],
        elinewidth=1.2, capsize=4, capthick=1.2, zorder=3,
    )
    if with_line:
        axis.plot(doses, values, color=style["color"], linestyle=style["linestyle"], linewidth=style["linewidth"], zorder=2)
    marker = {"marker": style["marker"], "markersize": style["markersize"], "linestyle": "none", "zorder": 4}
    axis.plot(np.where(single, np.nan, doses), values, color=style["color"], **marker)
    axis.plot(np.where(single, doses, np.nan), values, color=style["color"], markerfacecolor="white", markeredgewidth=1.5, **marker)


_ONE_SPLIT_HANDLE_LABEL = "hollow: one split scored (no error bar)"


def _one_split_handle() -> Line2D:
    return Line2D([], [], color="#555555", marker="o", markerfacecolor="white", linestyle="none", markersize=7)


def _replicates_caption(split: str | None) -> str:
    return f"{split} split" if split is not None else "mean ± half-difference of the train and test splits"


def metrics_vs_dose_png(rows: list[dict], split: str | None = None) -> bytes:
    """One panel per metric, dose on a log axis, one line per view (consistent colours).

    ``split`` None (the default): each point is the mean of the train and test splits with the
    half-difference as its error bar (it spans the two values); a point resting on one split is drawn
    hollow without a bar. A split's name: that split's values only. The legend says how many doses each
    view has scored, so a view without data is visible as such."""
    summary = replicate_summary(rows) if split is None else None
    n_cols = 4
    n_rows = math.ceil(len(METRICS) / n_cols)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 3.0 * n_rows + 0.7), squeeze=False)
    doses = np.array(DOSES, dtype=float)
    counts = {}
    for axis, metric in zip(axes.ravel(), METRICS):
        for view in VIEWS:
            values, errors, single = _metric_points(rows, summary, view, metric, split)
            counts[view] = max(counts.get(view, 0), int(np.sum(np.isfinite(values))))
            _draw_points(axis, doses, values, errors, single, view)
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
    figure.suptitle(f"Reconstruction quality against dose ({_replicates_caption(split)})", fontsize=13)
    figure.tight_layout(rect=(0, 0.07, 1, 0.96))
    handles = [Line2D([], [], **_view_style(view)) for view in VIEWS]
    labels = [f"{view} ({counts[view]}/{len(DOSES)} doses scored)" for view in VIEWS]
    if split is None:
        handles.append(_one_split_handle())
        labels.append(_ONE_SPLIT_HANDLE_LABEL)
    figure.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    return png_bytes(figure)


def _log_minor_label(value: float, _position=None) -> str:
    """Label the 2, 3 and 5 minor ticks of a log axis (a resolution range is often under a decade)."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (2.0, 3.0, 5.0) else ""


def resolution_fit_png(rows: list[dict], exponents: dict[str, dict], split: str | None = None) -> bytes:
    """Log-log FRC resolution (px) against dose per view with its fitted power law, the 2 px Nyquist
    floor, and the D^-1/4 expectation drawn through the baseline's middle scored point.

    ``split`` None (the default): points are the mean ± half-difference of the two splits (hollow: one
    split) and ``exponents`` is :func:`dose_exponent_replicates` (the legend gives exponent ± uncertainty);
    a split's name: that split's points and ``exponents`` from :func:`dose_exponents` for it."""
    summary = replicate_summary(rows) if split is None else None
    figure, axis = plt.subplots(figsize=(7.0, 5.2))
    dose_grid = np.geomspace(min(DOSES) / 1.5, max(DOSES) * 1.5, 50)
    doses = np.array(DOSES, dtype=float)
    all_resolutions = []
    handles, labels = [], []
    baseline_points = None
    for view in VIEWS:
        style = _view_style(view)
        values, errors, single = _metric_points(rows, summary, view, "frc_resolution_px", split)
        values = np.where(values > 0, values, np.nan)
        finite = np.isfinite(values)
        all_resolutions.extend((values[finite] - errors[finite]).tolist() + (values[finite] + errors[finite]).tolist())
        if view == "baseline":
            baseline_points = (doses[finite], values[finite])
        fit = (exponents or {}).get(view) or {}
        n_doses = int(finite.sum())
        if fit.get("exponent") is not None:
            shown = format_exponent(fit) if split is None else f"{fit['exponent']:+.2f}"
            labels.append(f"{view}: exponent {shown} ({fit['n_points']} doses)")
            axis.plot(dose_grid, fit["prefactor"] * dose_grid ** fit["exponent"], color=style["color"],
                      linestyle=style["linestyle"], linewidth=style["linewidth"])
        else:
            labels.append(f"{view}: no fit ({n_doses} scored dose{'s' if n_doses != 1 else ''})")
        style["markersize"] += 1
        _draw_points(axis, doses, values, errors, single, view, with_line=False)
        handles.append(Line2D([], [], **style))
    if baseline_points is not None and baseline_points[0].size:
        middle = baseline_points[0].size // 2
        anchor_dose, anchor_res = baseline_points[0][middle], baseline_points[1][middle]
        expected = anchor_res * (dose_grid / anchor_dose) ** EXPECTED_DOSE_EXPONENT
        (line,) = axis.plot(dose_grid, expected, color="black", linestyle="-.", linewidth=1.2)
        handles.append(line)
        labels.append(f"expected $D^{{-1/4}}$ ({EXPECTED_DOSE_EXPONENT:+.2f}), through baseline at {dose_label(int(anchor_dose))}")
        all_resolutions.extend(expected.tolist())
    handles.append(axis.axhline(NYQUIST_RESOLUTION_PX, color="grey", linestyle=":", linewidth=1.0))
    labels.append(f"Nyquist floor ({NYQUIST_RESOLUTION_PX:g} px)")
    if split is None:
        handles.append(_one_split_handle())
        labels.append(_ONE_SPLIT_HANDLE_LABEL)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xticks(DOSES, [dose_label(d) for d in DOSES])
    axis.set_xlim(dose_grid[0], dose_grid[-1])
    if all_resolutions:
        low, high = min(min(all_resolutions), NYQUIST_RESOLUTION_PX), max(all_resolutions)
        axis.set_ylim(low / 1.3, high * 1.3)
    else:
        where = "either split" if split is None else f"the {split} split"
        axis.text(0.5, 0.6, f"no scored jobs on {where}", ha="center", transform=axis.transAxes, color="#404040")
    axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.yaxis.set_minor_formatter(FuncFormatter(_log_minor_label))
    axis.set_xlabel("dose (photons per pattern)")
    axis.set_ylabel("FRC resolution (px, full period)")
    axis.set_title(f"FRC resolution (1/7 threshold) against dose: lower is finer\n({_replicates_caption(split)})", fontsize=11)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(handles, labels, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    figure.tight_layout()
    return png_bytes(figure)


# --------------------------------------------------------------------------------------------------
# convergence against the truth
# --------------------------------------------------------------------------------------------------

CONVERGENCE_METRICS: tuple[str, ...] = ("phase_mae", "frc_resolution_px")
"""What the convergence figure draws against the epoch (beside the loss)."""

LEVEL_TOLERANCE = 0.02
"""A curve has levelled off from the first snapshot after which it stays within 2 % of its final value."""

STILL_IMPROVING = 0.01
"""A curve whose last snapshot interval still improved it by more than 1 % is still improving."""

SPLIT_LINESTYLES: dict[str, str] = {"train": "-", "test": "--"}


def _convergence_curve(curves: dict, dose: int, view: str, metric: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(epochs, values, splits) of a (dose, view): the mean of the splits' curves where they share their
    epochs (else the first split's), None when no split recorded one."""
    found = []
    for split in SPLITS:
        curve = curves.get((dose, view, split)) or {}
        epochs, values = curve.get("epochs") or [], curve.get(metric) or []
        if epochs and len(epochs) == len(values):
            found.append((split, np.asarray(epochs, dtype=int), np.asarray(values, dtype=float)))
    if not found:
        return None
    if len(found) == 2 and np.array_equal(found[0][1], found[1][1]):
        return found[0][1], (found[0][2] + found[1][2]) / 2.0, "+".join(split for split, _, _ in found)
    return found[0][1], found[0][2], found[0][0]


def convergence_verdict(epochs, values, higher_is_better: bool = False) -> dict:
    """How a quality-vs-epoch curve ends, from its snapshots alone.

    ``"rises"``: the final value is more than :data:`LEVEL_TOLERANCE` worse than the best (the run went on
    past its best epoch: fewer epochs would do as well); ``"still improving"``: the last interval improved
    it by more than :data:`STILL_IMPROVING` (more epochs would help); ``"levels off"``: otherwise, with
    ``plateau_epoch`` the first snapshot from which every value is within :data:`LEVEL_TOLERANCE` of the
    final one; ``"too few snapshots"`` with fewer than two. Returns ``{"verdict", "epochs_run",
    "plateau_epoch", "best_epoch", "best", "final", "last_change"}`` (``last_change``: the relative change
    over the last interval, positive = better).
    """
    epochs, values = np.asarray(epochs, dtype=int), np.asarray(values, dtype=float)
    sign = -1.0 if higher_is_better else 1.0  # work on "lower is better"
    ok = np.isfinite(values)
    epochs, values = epochs[ok], values[ok]
    out = {"verdict": "too few snapshots", "epochs_run": int(epochs[-1]) if epochs.size else None, "plateau_epoch": None,
           "best_epoch": None, "best": None, "final": float(values[-1]) if values.size else None, "last_change": None}
    if values.size < 2:
        return out
    loss = sign * values
    best = int(np.argmin(loss))
    final = loss[-1]
    scale = abs(final) if final != 0 else 1.0
    out.update(best_epoch=int(epochs[best]), best=float(values[best]), last_change=float((loss[-2] - loss[-1]) / scale))
    within = np.abs(loss - final) <= LEVEL_TOLERANCE * scale
    outside = np.flatnonzero(~within)
    out["plateau_epoch"] = int(epochs[outside[-1] + 1]) if outside.size else int(epochs[0])
    if final - loss[best] > LEVEL_TOLERANCE * scale:
        out["verdict"] = "rises"
    elif out["last_change"] > STILL_IMPROVING:
        out["verdict"] = "still improving"
    else:
        out["verdict"] = "levels off"
    return out


def convergence_verdicts(curves: dict, metric: str = "phase_mae") -> dict[tuple[int, str], dict]:
    """:func:`convergence_verdict` per (dose, view) with a recorded curve (mean of the splits where both
    share their epochs), plus ``"splits"``: which splits it rests on."""
    out = {}
    for dose in DOSES:
        for view in VIEWS:
            curve = _convergence_curve(curves, dose, view, metric)
            if curve is not None:
                out[(dose, view)] = {**convergence_verdict(curve[0], curve[1], metric in HIGHER_IS_BETTER), "splits": curve[2]}
    return out


def _verdict_text(verdict: dict, metric: str) -> str:
    unit = " rad" if METRIC_UNITS.get(metric) == "rad" else ""

    def value(v: float) -> str:
        return f"{v:.{_decimals(v)}f}{unit}"

    kind, run = verdict["verdict"], verdict["epochs_run"]
    if kind == "rises":
        worse = abs(verdict["final"] / verdict["best"] - 1) * 100 if verdict["best"] else float("nan")
        return (f"best at epoch {verdict['best_epoch']} ({value(verdict['best'])}), {worse:.0f}% worse by epoch {run}: "
                f"fewer epochs would do as well (too many)")
    if kind == "still improving":
        return (f"still improving at epoch {run} ({verdict['last_change'] * 100:.1f}% over the last snapshot interval, "
                f"now {value(verdict['final'])}): more epochs would help (too few)")
    if kind == "levels off":
        if verdict["plateau_epoch"] >= run:
            return f"levels off only at the last snapshot, epoch {run} ({value(verdict['final'])}): about enough"
        return (f"stops improving after ~{verdict['plateau_epoch']} epochs (within {LEVEL_TOLERANCE:.0%} of its final "
                f"{value(verdict['final'])}): {run} is enough")
    return f"too few snapshots to judge ({run} epochs)"


def convergence_notes(curves: dict, metric: str = "phase_mae") -> list[str]:
    """One sentence per dose, computed from the recorded curves: for each view, whether ``metric`` (against
    the truth, mean of the splits) is still improving at the last epoch, levelled off (after ~N epochs) or
    got worse after its best epoch. Empty when no curve was recorded."""
    verdicts = convergence_verdicts(curves, metric)
    if not verdicts:
        return []
    notes = []
    label = METRIC_LABELS.get(metric, metric)
    for dose in DOSES:
        parts = []
        for view in VIEWS:
            verdict = verdicts.get((dose, view))
            if verdict is None:
                parts.append(f"{view}: no curve recorded")
            else:
                splits = "" if "+" in verdict["splits"] else f" ({verdict['splits']} only)"
                parts.append(f"{view}{splits} {_verdict_text(verdict, metric)}")
        notes.append(f"At {dose_label(dose)}, {label} vs epoch: " + "; ".join(parts) + ".")
    return notes


def convergence_png(curves: dict) -> bytes:
    """Quality against the truth vs epoch beside the loss: one row per dose, columns phase MAE, FRC
    resolution (:data:`CONVERGENCE_METRICS`) and the loss per epoch (log scale); colour and marker = view,
    solid = train, dashed = test; a dotted vertical line in a view's colour marks where its phase error
    stops improving (:func:`convergence_notes`; at its best epoch when it then gets worse). ``curves`` maps (dose, view, split) to ``{"epochs": [...], "<metric>":
    [...], "loss_per_epoch": [...]}`` (any part may be absent); a dose with nothing recorded is greyed."""
    columns = (*CONVERGENCE_METRICS, "loss_per_epoch")
    verdicts = convergence_verdicts(curves, CONVERGENCE_METRICS[0])
    figure, axes = plt.subplots(len(DOSES), len(columns), figsize=(4.4 * len(columns), 2.9 * len(DOSES) + 0.8), squeeze=False)
    for r, dose in enumerate(DOSES):
        for c, column in enumerate(columns):
            axis = axes[r, c]
            drawn = False
            for view in VIEWS:
                for split in SPLITS:
                    curve = curves.get((dose, view, split)) or {}
                    style = {"color": VIEW_COLORS.get(view), "linestyle": SPLIT_LINESTYLES.get(split, "-"),
                             "linewidth": 2.0 if view == "baseline" else 1.4}
                    if column == "loss_per_epoch":
                        loss = np.asarray(curve.get("loss_per_epoch") or [], dtype=float)
                        if loss.size:
                            axis.plot(np.arange(1, loss.size + 1), loss, **style)
                            drawn = True
                    else:
                        epochs, values = curve.get("epochs") or [], curve.get(column) or []
                        if epochs and len(epochs) == len(values):
                            axis.plot(epochs, np.asarray(values, dtype=float), marker=VIEW_MARKERS.get(view, "o"), markersize=4, **style)
                            drawn = True
            if r == 0:
                title = "loss (pty-chi, per epoch)" if column == "loss_per_epoch" else f"{METRIC_LABELS[column]} vs truth"
                better = "" if column == "loss_per_epoch" else (" ↑" if column in HIGHER_IS_BETTER else " ↓")
                axis.set_title(title + better, fontsize=11)
            if c == 0:
                axis.set_ylabel(f"{dose_label(dose)} photons/pattern\n{_metric_axis_label(column)}", fontsize=9)
            elif column != "loss_per_epoch":
                axis.set_ylabel(_metric_axis_label(column), fontsize=9)
            if r == len(DOSES) - 1:
                axis.set_xlabel("epoch")
            if not drawn:
                _unavailable_panel(axis, "nothing recorded")
                _bare(axis)
                continue
            if column in ("loss_per_epoch", "frc_resolution_px"):  # a FRC that never correlates is tens of px
                axis.set_yscale("log")
            if column == "frc_resolution_px":
                axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                axis.yaxis.set_minor_formatter(FuncFormatter(_log_minor_label))
            if column == "frc_resolution_px":
                axis.axhline(NYQUIST_RESOLUTION_PX, color="grey", linestyle=":", linewidth=1.0)
            if column == CONVERGENCE_METRICS[0]:
                for view in VIEWS:  # where the notes say it stops improving (or is best, when it then gets worse)
                    verdict = verdicts.get((dose, view)) or {}
                    epoch = verdict.get("best_epoch") if verdict.get("verdict") == "rises" else verdict.get("plateau_epoch")
                    if epoch is not None and verdict.get("verdict") != "still improving":
                        axis.axvline(epoch, color=VIEW_COLORS.get(view), linestyle=":", linewidth=1.2, alpha=0.8)
            axis.grid(True, alpha=0.3)
    figure.suptitle("Convergence: quality against the truth every few epochs, beside the loss", fontsize=13)
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    handles = [Line2D([], [], color=VIEW_COLORS.get(v), marker=VIEW_MARKERS.get(v, "o"), linewidth=2) for v in VIEWS]
    handles += [Line2D([], [], color="#555555", linestyle=SPLIT_LINESTYLES[s]) for s in SPLITS]
    handles.append(Line2D([], [], color="#555555", linestyle=":", linewidth=1.2))
    labels = [*VIEWS, *(f"{s} split" for s in SPLITS), "phase error stops improving (or is best) here"]
    figure.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
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
    bold = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"(?<![*\w])\*([^*]+?)\*(?![*\w])", r"<em>\1</em>", bold)


def markdown_table_to_html(markdown_table: str, shade_bold_rows: bool = True) -> str:
    """A pipe table (as :func:`rows_to_markdown` writes it) as an HTML ``<table>``: header row, the
    alignment row's ``---:`` as right alignment, ``**bold**`` kept, everything else escaped. A row with a
    cell in bold (an unscored status, a (dose, view) with no split scored) is shaded, unless
    ``shade_bold_rows`` is False (a table where bold marks a value, not a row)."""
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
        row_class = ' class="unscored"' if shade_bold_rows and any(cell.startswith("**") for cell in cells) else ""
        out.append(f"<tr{row_class}>" + "".join(
            f'<td style="text-align:{a}">{_inline_markdown(c)}</td>' for c, a in zip(cells, aligns)
        ) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _section_html(markdown: str) -> str:
    """A report section's Markdown as HTML: blocks separated by blank lines, each a pipe table (bold cells
    marking values, rows not shaded), a ``- `` list or a paragraph."""
    out = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = block.splitlines()
        if lines[0].startswith("|"):
            out.append(markdown_table_to_html(block, shade_bold_rows=False))
        elif all(line.startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{_inline_markdown(line[2:])}</li>" for line in lines) + "</ul>")
        else:
            out.append(f"<p>{_inline_markdown(' '.join(lines))}</p>")
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
    "those curves (mean of the two splits):"
)


def html_page(
    title: str,
    headline: str,
    markdown_table: str,
    images: dict[str, bytes],
    notes: list[str],
    summary_table: str | None = None,
    exponents: dict[str, dict] | None = None,
    convergence: list[str] | None = None,
    regularization: str | None = None,
) -> str:
    """One self-contained HTML document: the headline, notes, the per-(dose, view) summary of the two
    replicates (:func:`summary_to_markdown`, when given), the dose exponents (when given), what the
    convergence curves show (when given), the regularization choices (:func:`regularization_markdown`, when
    given), every image inline as a base64 ``data:`` URI, and the per-job quality table (converted from the
    Markdown pipe table); no external resources."""
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
    if summary_table:
        parts.append("<h2>Quality per dose and view (two replicates)</h2>")
        parts.append(f"<p>{html.escape(SUMMARY_INTRO)}</p>")
        parts.append(markdown_table_to_html(summary_table))
    if exponents:
        parts.append("<h2>FRC resolution against dose: fitted exponents</h2>")
        parts.append(f"<p>{html.escape(EXPONENT_INTRO)}</p>")
        parts.append(markdown_table_to_html(exponents_markdown(exponents)))
    if convergence:
        parts.append("<h2>Convergence against the truth</h2>")
        parts.append(f"<p>{html.escape(CONVERGENCE_INTRO)}</p>")
        parts.append("<ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in convergence) + "</ul>")
    if regularization:
        parts.append(f"<h2>{REGULARIZATION_TITLE}</h2>")
        parts.append(f"<p>{html.escape(REGULARIZATION_INTRO)}</p>")
        parts.append(_section_html(regularization))
    if images:
        parts.append("<h2>Figures</h2>")
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
        )
    parts.append("<h2>Quality per job</h2>")
    parts.append(
        "<p>Metrics against the ground truth after registration and phase-offset removal; ↑ higher is better, "
        "↓ lower is better. Every view of a split is scored on the area of the split's full (Phase C) scan; "
        "<em>area lit</em> is the share of it that the job's probes light (at ≥ 10 % of the probe's peak). "
        "Jobs that were not scored are shaded, with their reason.</p>"
    )
    parts.append(markdown_table_to_html(markdown_table))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def exponents_markdown(exponents: dict[str, dict]) -> str:
    """The per-view dose exponents as a Markdown table, with the expected value. Takes either
    :func:`dose_exponent_replicates` (mean ± half-difference of the splits' fits, each split's own fit) or one
    split's :func:`dose_exponents` (the ± and per-split cells are then empty)."""
    lines = [
        "| view | exponent | ± (half-difference) | train fit | test fit | prefactor (px) | doses fitted | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for view, fit in exponents.items():
        exponent = "n/a" if fit.get("exponent") is None else f"{fit['exponent']:+.3f}"
        uncertainty = "" if fit.get("uncertainty") is None else f"{fit['uncertainty']:.3f}"
        per_split = fit.get("per_split") or {}
        split_cells = [
            "" if (per_split.get(split) or {}).get("exponent") is None else f"{per_split[split]['exponent']:+.3f}" for split in SPLITS
        ]
        prefactor = "n/a" if fit.get("prefactor") is None else f"{fit['prefactor']:.3g}"
        note = fit.get("note") or ""
        if fit.get("n_at_floor"):
            note = (note + "; " if note else "") + f"{fit['n_at_floor']} point(s) at the {NYQUIST_RESOLUTION_PX:g} px floor"
        lines.append(
            f"| {view} | {exponent} | {uncertainty} | {' | '.join(split_cells)} | {prefactor} | {fit.get('n_points', 0)} | {_md_cell(note)} |"
        )
    lines.append(f"| *expected (dose fractionation)* | {EXPECTED_DOSE_EXPONENT:+.3f} | | | | | | Howells et al. 2009 |")
    return "\n".join(lines) + "\n"


def report_markdown(
    headline: str,
    markdown_table: str,
    images: dict[str, bytes],
    exponents: dict[str, dict],
    notes: list[str] = (),
    summary_table: str | None = None,
    convergence: list[str] | None = None,
    regularization: str | None = None,
) -> str:
    """Markdown for the Dagster UI: the headline, notes, the per-(dose, view) summary of the replicates (when
    given), the FRC resolution dose exponents (resolution ≈ prefactor · dose^exponent), what the convergence
    curves show (when given), the regularization choices (when given), every image inline, and the per-job
    quality table."""
    parts = [f"**{headline}**", "", *[f"- {note}" for note in notes], ""]
    if summary_table:
        parts += ["### Quality per dose and view (two replicates)", "", SUMMARY_INTRO, "", summary_table]
    parts += ["### FRC resolution against dose: fitted exponents", "", EXPONENT_INTRO, "", exponents_markdown(exponents)]
    if convergence:
        parts += ["### Convergence against the truth", "", CONVERGENCE_INTRO, "", *[f"- {note}" for note in convergence], ""]
    if regularization:
        parts += [f"### {REGULARIZATION_TITLE}", "", REGULARIZATION_INTRO, "", regularization, ""]
    for name, png in images.items():
        parts += [f"### {name}", "", markdown_image(png, name), ""]
    parts += ["### Quality per job", "", markdown_table]
    return "\n".join(parts)
