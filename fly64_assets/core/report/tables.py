"""The table over the study grid: one row per (dose, view, split) job of the 3 × 3 × 2 grid from the quality
records (an absent job becomes ``"missing"``, never dropped), the replicate statistics of the train and test
splits per (dose, view) (mean ± half-difference), and these as the CSV and Markdown texts the report writes
(``quality.csv``/``.md``, ``quality_summary.csv``/``.md``). The job's regularization column comes from
:mod:`.regularization`."""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from fly64_assets.core.design import ALL_DATASETS, DOSES, SPLITS, VIEWS
from fly64_assets.core.report.records import (
    HIGHER_IS_BETTER,
    METRIC_LABELS,
    METRIC_UNITS,
    METRICS,
    MISSING,
    MISSING_REASON,
    SUCCEEDED,
    significant_decimals,
    spread_decimals,
    dose_label,
    float_or_none,
    job_key,
    md_cell,
)
from fly64_assets.core.report.regularization import regularization_text

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
        key = job_key(record)
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
                row[metric] = float_or_none(record.get(metric)) if scored else None
            row["regularization"] = regularization_text(record) if scored else None
            row["tv_weight"] = float_or_none(record.get("tv_weight")) if scored else None
            row["scan_area_lit"] = float_or_none(record.get("scan_area_lit")) if scored else None
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


def format_replicates(
    mean: float | None, spread: float | None, replicates: str = "", decimals: int | None = None, unit: str = ""
) -> str:
    """``"0.300 ± 0.005"``; one replicate: ``"0.300 (train only)"``; none: ``"n/a"``. The spread is shown
    to the mean's decimals (3 significant digits of the mean unless ``decimals`` is given), more for both where
    the spread would otherwise read zero (``"0.1250 ± 0.0003"``, :func:`spread_decimals`); ``unit`` follows
    the number (``"0.300 ± 0.005 rad"``, ``"0.300 rad (train only)"``)."""
    if mean is None:
        return "n/a"
    places = significant_decimals(mean) if decimals is None else decimals
    unit = f" {unit}" if unit else ""
    if spread is None:
        only = f" ({replicates} only)" if replicates and "+" not in replicates else ""
        return f"{mean:.{places}f}{unit}{only}"
    places = spread_decimals(spread, places)
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
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + f" | {md_cell(row['note'] or '')} |")
    return "\n".join(lines) + "\n"


def rows_to_csv(rows: list[dict]) -> str:
    """CSV with header :data:`ROW_KEYS`; empty cells for None, metrics at full float precision."""
    return _csv(rows, ROW_KEYS)


def _sig3(value: float | None) -> str:
    return "" if value is None else f"{value:#.3g}"


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
            "" if status == SUCCEEDED else md_cell(row.get("reason") or "(no reason given)"),
        ]
        lines.append("| " + " | ".join(md_cell(c) for c in cells[:-1]) + f" | {cells[-1]} |")
    return "\n".join(lines) + "\n"
