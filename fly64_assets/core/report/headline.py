"""The study's answer in two sentences: how the baseline's phase error changes with dose, its FRC resolution's
dose exponent beside the expected −1/4 (and the TV weights chosen without the truth), and where each other view
ends up or why it was not scored; every number the mean ± half-difference of the two splits."""

from __future__ import annotations

from fly64_assets.core.design import DOSES, VIEWS
from fly64_assets.core.report.fits import dose_exponent_replicates, format_exponent
from fly64_assets.core.report.records import MISSING, SUCCEEDED, dose_label
from fly64_assets.core.report.regularization import chosen_weights_text
from fly64_assets.core.report.tables import format_replicates, replicate_summary


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
    chosen = chosen_weights_text(rows, view)
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
