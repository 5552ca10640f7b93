"""The regularization section: which total-variation weight each scored job ran with and how it was picked (a
few words per job for the table's method column), and, for the jobs that asked for ``auto``, the held-out scores
behind each choice or why none could be made (``regularization.md``); the chosen weights in the headline's
words."""

from __future__ import annotations

from collections import Counter

from fly64_assets.core.design import ALL_DATASETS, DOSES
from fly64_assets.core.options import Regularization
from fly64_assets.core.report.records import SUCCEEDED, dose_label, float_or_none, job_key, spread_decimals

AUTO = "auto"
"""``options.Regularization.auto``'s value: the request to choose the weight per dataset without the truth."""

_AUTO_TEXT = f"{AUTO} → "
"""How :func:`regularization_text` begins for a job that asked for auto."""

REGULARIZATION_TITLE = "Regularization chosen without the truth"

REGULARIZATION_INTRO = (
    "With regularization auto, each dataset's total-variation weight w is chosen from its own patterns, not from "
    "the truth: a seeded share of the patterns is held out, every candidate weight reconstructs the rest and is "
    "scored by how well it predicts the held-out photon counts (Poisson deviance per pixel, lower is better; the "
    "lowest in bold). The most regularized candidate within one standard error of the lowest (its excess ± that "
    "error shown) is kept (✓) and "
    "reconstructed on every pattern, unregularized and then with that weight in the last 10 % of the epochs (the "
    "TV phase the candidates were scored with); where the kept scan does not overlap the held-out patterns (too little "
    "coverage) nothing can be validated and no regularization is used. Method and measurements: docs/SCIENCE.md."
)


FLAT = "flat"
"""``RegularizationChoice.evidence`` when every candidate scored within one standard error of the lowest."""
FLAT_TEXT = "flat evidence"
"""How a flat choice is marked in the method column, the choice table and the headline."""
FLAT_NOTE = (
    "*flat evidence*: every candidate scored within one standard error of the lowest, so the held-out patterns "
    "could not tell the weights apart and the rule kept the most regularized of them by default; such a choice "
    "shows no benefit (or harm) of regularization that the data support."
)
"""Said under the choice table when some choice there was flat (records older than the verdict carry none)."""


def tv_from_epoch(options: dict | None) -> int | None:
    """The first epoch (counted from 1) whose object got a TV step, from a reconstruction record's ``options``
    (the weight it ran with: for auto, the chosen one): 1 for a weight in every epoch, ``epochs - tv_last_epochs
    + 1`` for one in the last epochs only (auto's TV phase: pty-chi's plan starts at the 0-based epoch ``epochs -
    tv_last_epochs``); None without TV (off, or auto keeping 0) or where the options do not say."""
    options = options or {}
    try:
        weight = Regularization(options.get("regularization")).tv_weight
    except ValueError:
        return None
    if not weight:
        return None
    last = options.get("tv_last_epochs")
    return 1 if last is None else max(1, int(options["epochs"]) - int(last) + 1)


def regularization_text(record: dict) -> str | None:
    """How a scored job was regularized, in a few words: ``"auto → TV 0.3"``, ``"auto → off (held-out coverage
    0.08 < 0.5)"`` (auto could not choose: why), ``"off"`` or ``"fixed TV 0.1"``. None for a record that does not
    say (one written before regularization was recorded)."""
    weight = float_or_none(record.get("tv_weight"))
    if weight is None:
        return None
    used = "off" if weight == 0 else f"TV {weight:g}"
    if record.get("requested_regularization") != AUTO:
        return used if weight == 0 else f"fixed {used}"
    choice = record.get("regularization_choice") or {}
    why = "" if choice.get("candidates") else f" ({_no_choice_note(choice).split(':')[0]})"
    if choice.get("candidates") and choice.get("evidence") == FLAT:
        why = f" ({FLAT_TEXT})"
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
        places = spread_decimals(error, 4)
        text += f" (+{excess:.{places}f} ± {error:.{places}f})"
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
            dose_label(int(record["dose"])), record["view"], record["split"],
            f"{choice['chosen_tv_weight']:g}" + (f" ({FLAT_TEXT})" if choice.get("evidence") == FLAT else ""),
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
    scored = sorted((r for r in records if r.get("status") == SUCCEEDED), key=lambda r: order[job_key(r)])
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
    if any(r["regularization_choice"].get("evidence") == FLAT for r in chosen):
        blocks.append(FLAT_NOTE)
    unchosen = [r for r in auto if r not in chosen]
    if unchosen:
        blocks.append("Auto could not choose a weight for:")
        blocks.append("\n".join(f"- {_job_label(r)}: {_no_choice_note(r.get('regularization_choice') or {})}" for r in unchosen))
    others = [r for r in scored if r not in auto]
    if others:
        blocks.append(f"Not asked to choose: {_methods_text(others)}.")
    return "\n\n".join(blocks) + "\n"


def chosen_weights_text(rows: list[dict], view: str) -> str:
    """``"TV weight chosen without the truth: 0.3 at 1e3, 0.03/0.1 at 1e4"`` (train/test where the splits
    differ) over ``view``'s scored jobs that asked for auto; empty when none did."""
    parts = []
    for dose in DOSES:
        weights = [
            f"{row['tv_weight']:g}" + (f" ({FLAT_TEXT})" if row["regularization"].endswith(f"({FLAT_TEXT})") else "")
            for row in rows  # rows are in split order
            if (row["dose"], row["view"]) == (dose, view) and (row["regularization"] or "").startswith(_AUTO_TEXT)
        ]
        if weights:
            parts.append(f"{'/'.join(dict.fromkeys(weights))} at {dose_label(dose)}")
    return f"TV weight chosen without the truth: {', '.join(parts)}" if parts else ""
