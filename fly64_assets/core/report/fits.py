"""Fits and verdicts drawn from the numbers: the FRC resolution's dose exponent per view (a power law fitted in
log-log to each split, then the mean ± half-difference of the two fits, beside the expected −1/4) with its
Markdown table, and the convergence verdicts: from the quality-against-the-truth curves recorded every few
epochs, whether each run was still improving, levelled off or got worse after its best epoch, judged on the
epochs that ran without regularization (a TV phase in the last epochs is reported beside the verdict, by its own
effect), as one sentence per dose."""

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
    spread_decimals,
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
    """``"-0.23 ± 0.02"`` (``"-0.321 ± 0.005"`` where two decimals would show the uncertainty as zero),
    ``"-0.23 (train only)"`` or ``"n/a"``."""
    if fit.get("exponent") is None:
        return "n/a"
    if fit.get("uncertainty") is None:
        only = fit.get("replicates")
        return f"{fit['exponent']:+.2f}" + (f" ({only} only)" if only else "")
    places = spread_decimals(fit["uncertainty"], 2)
    return f"{fit['exponent']:+.{places}f} ± {fit['uncertainty']:.{places}f}"


def exponents_markdown(exponents: dict[str, dict]) -> str:
    """The per-view dose exponents as a Markdown table, with the expected value. Takes either
    :func:`dose_exponent_replicates` (mean ± half-difference of the splits' fits, each split's own fit) or one
    split's :func:`dose_exponents` (the ± and per-split cells are then empty)."""
    lines = [
        "| view | exponent | ± (half-difference) | train fit | test fit | prefactor (px) | doses fitted | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for view, fit in exponents.items():
        places = spread_decimals(fit.get("uncertainty"), 3)
        exponent = "n/a" if fit.get("exponent") is None else f"{fit['exponent']:+.{places}f}"
        uncertainty = "" if fit.get("uncertainty") is None else f"{fit['uncertainty']:.{places}f}"
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


def _convergence_curve(
    curves: dict, dose: int, view: str, metric: str
) -> tuple[np.ndarray, np.ndarray, str, int | None] | None:
    """(epochs, values, splits, tv_from_epoch) of a (dose, view): the mean of the splits' curves where they share
    their epochs and their TV phase (else the first split's), None when no split recorded one."""
    found = []
    for split in SPLITS:
        curve = curves.get((dose, view, split)) or {}
        epochs, values = curve.get("epochs") or [], curve.get(metric) or []
        if epochs and len(epochs) == len(values):
            found.append((split, np.asarray(epochs, dtype=int), np.asarray(values, dtype=float), curve.get("tv_from_epoch")))
    if not found:
        return None
    (split, epochs, values, tv_from), *others = found
    if others and np.array_equal(epochs, others[0][1]) and tv_from == others[0][3]:
        return epochs, (values + others[0][2]) / 2.0, f"{split}+{others[0][0]}", tv_from
    return epochs, values, split, tv_from


def convergence_verdict(epochs, values, higher_is_better: bool = False, tv_from_epoch: int | None = None) -> dict:
    """How a quality-vs-epoch curve ends, from its snapshots alone, judged on the epochs that ran without
    regularization: the snapshots before ``tv_from_epoch`` (the first epoch with a TV step; None: no TV, the
    whole curve). A TV phase lowers the error by its own means (its smoothing), not by convergence, so it is
    reported beside the verdict, never judged as convergence.

    ``"rises"``: the last judged value is more than :data:`LEVEL_TOLERANCE` worse than the best (the run went on
    past its best epoch: more epochs would not help); ``"still improving"``: the last judged interval improved it
    by more than :data:`STILL_IMPROVING` (more epochs would help); ``"levels off"``: otherwise, with
    ``plateau_epoch`` the first snapshot from which every judged value is within :data:`LEVEL_TOLERANCE` of the
    last one; ``"regularized throughout"``: TV from the first epoch, no unregularized epochs to judge;
    ``"too few snapshots"`` with fewer than two to judge. Returns ``{"verdict", "epochs_run", "judged_to",
    "plateau_epoch", "best_epoch", "best", "final", "last_change", "tv_from_epoch", "after_tv", "tv_change"}``:
    ``judged_to`` and ``final`` are the last judged snapshot's epoch and value, ``last_change`` the relative change
    over the last judged interval (positive = better); ``after_tv`` the run's last value and ``tv_change`` its
    relative change from ``final`` (negative = lower), both None without a TV phase after a judged snapshot.
    """
    epochs, values = np.asarray(epochs, dtype=int), np.asarray(values, dtype=float)
    sign = -1.0 if higher_is_better else 1.0  # work on "lower is better"
    ok = np.isfinite(values)
    epochs, values = epochs[ok], values[ok]
    judged = epochs < tv_from_epoch if tv_from_epoch is not None else np.ones(epochs.size, dtype=bool)
    out = {"verdict": "too few snapshots", "epochs_run": int(epochs[-1]) if epochs.size else None, "judged_to": None,
           "plateau_epoch": None, "best_epoch": None, "best": None, "final": None, "last_change": None,
           "tv_from_epoch": tv_from_epoch, "after_tv": None, "tv_change": None}
    if tv_from_epoch is not None and tv_from_epoch <= 1:
        out.update(verdict="regularized throughout", after_tv=float(values[-1]) if values.size else None)
        return out
    if judged.any():
        out.update(judged_to=int(epochs[judged][-1]), final=float(values[judged][-1]))
        if not judged[-1]:
            out["after_tv"] = float(values[-1])
            out["tv_change"] = (out["after_tv"] - out["final"]) / abs(out["final"]) if out["final"] else None
    epochs, values = epochs[judged], values[judged]
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
    share their epochs and TV phase), plus ``"splits"``: which splits it rests on. A curve's ``tv_from_epoch``
    (:func:`.regularization.tv_from_epoch`; absent: no TV) says where its unregularized epochs end."""
    out = {}
    for dose in DOSES:
        for view in VIEWS:
            curve = _convergence_curve(curves, dose, view, metric)
            if curve is not None:
                verdict = convergence_verdict(curve[0], curve[1], metric in HIGHER_IS_BETTER, tv_from_epoch=curve[3])
                out[(dose, view)] = {**verdict, "splits": curve[2]}
    return out


def _percent(change: float) -> str:
    """``-0.123 -> "−12.3%"`` (a true minus sign), ``0.04 -> "+4.0%"``, ``-0.0003 -> "−0.03%"`` (never a zero that
    is not one)."""
    percent = change * 100
    text = f"{percent:+.1f}" if abs(percent) >= 0.05 or percent == 0 else f"{percent:+.1g}"
    return f"{text}%".replace("-", "−")


def _verdict_text(verdict: dict, metric: str) -> str:
    unit = " rad" if METRIC_UNITS.get(metric) == "rad" else ""

    def value(v: float) -> str:
        return f"{v:.{significant_decimals(v)}f}{unit}"

    kind, run, end, tv = verdict["verdict"], verdict["epochs_run"], verdict["judged_to"], verdict["tv_from_epoch"]
    if kind == "regularized throughout":
        now = "" if verdict["after_tv"] is None else f" ({value(verdict['after_tv'])} at epoch {run})"
        return f"ran with TV in every epoch: no unregularized epochs to judge convergence on{now}"
    if verdict["after_tv"] is None:  # no TV phase: the whole curve was judged
        text = _unregularized_text(verdict, value, "")
    else:
        text = _unregularized_text(verdict, value, "before TV ")
        change = "n/a" if verdict["tv_change"] is None else _percent(verdict["tv_change"])
        since = "" if end == tv - 1 else f" from epoch {end}"
        last = "the last epoch" if run == tv else f"the last {run - tv + 1} epochs"
        text += f" — TV in {last}: {change}{since} (to {value(verdict['after_tv'])} at epoch {run})"
    return text


def _unregularized_text(verdict: dict, value, before: str) -> str:
    """The verdict on the judged (unregularized) snapshots; ``before``: ``""`` when they are the whole run,
    ``"before TV "`` when a TV phase followed them."""
    kind, end = verdict["verdict"], verdict["judged_to"]
    if kind == "rises":
        worse = abs(verdict["final"] / verdict["best"] - 1) * 100 if verdict["best"] else float("nan")
        advice = "more epochs would not help" if before else "fewer epochs would do as well (too many)"
        return f"{before}best at epoch {verdict['best_epoch']} ({value(verdict['best'])}), {worse:.0f}% worse by epoch {end}: {advice}"
    if kind == "still improving":
        advice = "more epochs before TV would help (too few)" if before else "more epochs would help (too few)"
        return (f"{before}still improving at epoch {end} ({verdict['last_change'] * 100:.1f}% over the last snapshot "
                f"interval, {'then' if before else 'now'} {value(verdict['final'])}): {advice}")
    if kind == "levels off":
        if verdict["plateau_epoch"] >= end:
            last = "the last snapshot before TV" if before else "the last snapshot"
            return f"levels off only at {last}, epoch {end} ({value(verdict['final'])}): about enough"
        of = f"its {value(verdict['final'])} at epoch {end}" if before else f"its final {value(verdict['final'])}"
        return (f"{before}stops improving after ~{verdict['plateau_epoch']} epochs (within {LEVEL_TOLERANCE:.0%} of "
                f"{of}): {end} is enough")
    if verdict["tv_from_epoch"] is not None:
        return f"too few snapshots before TV (from epoch {verdict['tv_from_epoch']}) to judge"
    return f"too few snapshots to judge ({verdict['epochs_run']} epochs)"


def convergence_notes(curves: dict, metric: str = "phase_mae") -> list[str]:
    """One sentence per dose, computed from the recorded curves: for each view, whether ``metric`` (against
    the truth, mean of the splits) is still improving at the last unregularized epoch, levelled off (after ~N
    epochs) or got worse after its best epoch, and beside it what a TV phase in the last epochs did to it (a run
    with TV in every epoch is not judged). Empty when no curve was recorded."""
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
