"""The quality record's vocabulary, shared by every part of the report: the statuses a job can end with, the
metrics in display order with their labels, units and which way is better, the physics the report compares
against (the dose-fractionation exponent, the Nyquist floor), and the few formatting rules every table uses
(dose labels, significant digits, a Markdown cell). No part of the report logic lives here."""

from __future__ import annotations

import math

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


def dose_label(dose: int) -> str:
    """``1000 -> "1e3"`` (any power of ten); other doses as plain integers."""
    exponent = math.log10(dose) if dose > 0 else float("nan")
    if math.isfinite(exponent) and float(exponent).is_integer():
        return f"1e{int(exponent)}"
    return str(dose)


def float_or_none(value) -> float | None:
    """A record's number as a float; None where it is absent or not a number."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def job_key(record: dict) -> tuple[int, str, str]:
    """(dose, view, split) of a record."""
    return int(record["dose"]), str(record["view"]), str(record["split"])


def significant_decimals(value: float) -> int:
    """Decimals that show ``value`` to 3 significant digits (0 for |value| >= 100)."""
    if value == 0 or not math.isfinite(value):
        return 3
    return max(0, 2 - math.floor(math.log10(abs(value))))


def spread_decimals(spread: float | None, decimals: int) -> int:
    """The decimals to show a value ± ``spread`` at: ``decimals``, or more where a non-zero spread would round to
    zero at them (every ± shows at least its first significant digit, and its value the same decimals)."""
    if spread is None or spread == 0 or not math.isfinite(spread):
        return decimals
    while float(f"{spread:.{decimals}f}") == 0:
        decimals += 1
    return decimals


def md_cell(text) -> str:
    """``text`` as one Markdown table cell: on one line, its pipes escaped; empty for None."""
    return "" if text is None else str(text).replace("\n", " ").replace("|", "\\|")
