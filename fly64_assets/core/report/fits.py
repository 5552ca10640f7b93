"""Fits and verdicts drawn from the numbers: the FRC resolution's dose exponent per view (a power law fitted in
log-log to each split, then the mean ± half-difference of the two fits, beside the expected −1/4) with its
Markdown table, and the convergence verdicts: from the quality-against-the-truth curves recorded every few
epochs, whether each run was still improving, levelled off or got worse after its best epoch, as one sentence
per dose."""

from __future__ import annotations

import math

import numpy as np

from fly64_assets.core.design import DOSES, SPLITS, VIEWS
from fly64_assets.core.report.records import (
    EXPECTED_DOSE_EXPONENT,
    HIGHER_IS_BETTER,
    METRIC_LABELS,
    METRIC_UNITS,
    NYQUIST_RESOLUTION_PX,
    SUCCEEDED,
    significant_decimals,
    dose_label,
    md_cell,
)


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
            f"| {view} | {exponent} | {uncertainty} | {' | '.join(split_cells)} | {prefactor} | {fit.get('n_points', 0)} | {md_cell(note)} |"
        )
    lines.append(f"| *expected (dose fractionation)* | {EXPECTED_DOSE_EXPONENT:+.3f} | | | | | | Howells et al. 2009 |")
    return "\n".join(lines) + "\n"


# --- convergence against the truth ---

CONVERGENCE_METRICS: tuple[str, ...] = ("phase_mae", "frc_resolution_px")
"""What the convergence figure draws against the epoch (beside the loss)."""

LEVEL_TOLERANCE = 0.02
"""A curve has levelled off from the first snapshot after which it stays within 2 % of its final value."""

STILL_IMPROVING = 0.01
"""A curve whose last snapshot interval still improved it by more than 1 % is still improving."""


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
        return f"{v:.{significant_decimals(v)}f}{unit}"

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
