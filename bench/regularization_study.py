"""The object's TV regularization per dose: fixed weights against the truth-free choice, scored against the truth.

    python bench/regularization_study.py [--scale demo|standard|mid|mid18|full] [--splits train,test]
        [--doses 1000,10000,100000] [--epochs 100] [--threads 1] [--check-expensive] [--json out.json]
        [--family default|smooth|discs|natural|weak_phase|strong_phase] [--probe focused|aperture]
        [--scan raster|random] [--choice-only] [--snapshot-every 10]

For each (dose, split) of the baseline view (Phase C, ``synthetic.simulate_split``, of the object family, probe
and scan asked for; the study's by default): LSQML with no regularization, with each fixed TV weight of the grid,
and with ``regularization=auto`` (``core.regularization.choose_and_reconstruct``: candidates scored on held-out
patterns, then the final reconstruction with the winner). Each result is scored like the study's
``reconstruction_quality`` asset scores a baseline partition, on the probe-centre bounding box of the split's
Phase C scan, twice: with the **fair score** (``quality.compare_to_truth``'s default: registration, amplitude
scale, global phase offset and the linear phase ramp of the difference removed) and with the older offset-only
score (``phase_plane=False``), so tables made before the fair score can be compared.

``--choice-only`` runs the choice and then auto's final as a plain run of the chosen weight with TV in the last
epochs (``tv_last_epochs``: the same options, seed and result as ``choose_and_reconstruct``'s final; none when it
chose none, read from that column), and keeps the candidates' scores without their per-pattern values. ``--snapshot-every N`` also scores every fixed-weight run against the truth every N epochs (the
epoch count as a second lever). For every fixed-weight run the bench also records its fit to its own data (the
Poisson deviance per pixel of every pattern) against the deviance Poisson noise alone would give at the fitted
intensities (the discrepancy principle, docs/SCIENCE.md).
``--check-expensive`` also scores the candidates the expensive way (each from scratch for the full epochs on the
kept patterns) and says whether the cheap choice (shared start, short candidates) picks the same weight.

Scales: ``demo``, ``standard`` (the default study) and ``full`` are the study's (``synthetic.SCALES``); two more are
defined only here: ``mid`` (544 px object, step 15 like demo: 512 patterns per split) and ``mid18`` (640 px, step
18 like full: 512 patterns per split, the full study's overlap).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fly64_assets.core.lsqml import reconstruct
from fly64_assets.core.options import ReconstructionOptions, Regularization
from fly64_assets.core.quality import compare_to_truth
from fly64_assets.core.regularization import (
    CANDIDATES,
    candidate_epochs_for,
    choice_evidence,
    choose_and_reconstruct,
    expected_poisson_deviance,
    one_standard_error_rule,
    pattern_deviances,
    predict_intensities,
    score_candidates,
)
from fly64_assets.core.synthetic import (
    OBJECT_FAMILIES,
    PROBES,
    SCALES,
    SCANS,
    Scale,
    simulate_split,
)

BENCH_SCALES = {
    **SCALES,
    "mid": Scale("mid", object_size=544, scan_step=15),
    "mid18": Scale("mid18", object_size=640, scan_step=18),
}


def scan_box(arrays) -> tuple[float, float, float, float]:
    """The probe-centre bounding box of the split's Phase C scan (the baseline view's own positions)."""
    ys, xs = arrays["ycoords"], arrays["xcoords"]
    return float(ys.min()), float(ys.max()), float(xs.min()), float(xs.max())


def phase_errors(obj, origin_yx, arrays) -> dict:
    """Phase MAE with the fair score and with the offset-only one, and the ramp the fair score removed."""
    box = scan_box(arrays)
    fair = compare_to_truth(obj, arrays["objectGuess"], tuple(origin_yx), box)
    old = compare_to_truth(obj, arrays["objectGuess"], tuple(origin_yx), box, phase_plane=False)
    return {"phase_mae": fair.phase_mae, "phase_mae_offset_only": old.phase_mae,
            "phase_ramp_yx": [fair.phase_ramp_y, fair.phase_ramp_x], "frc_resolution_px": fair.frc_resolution_px}


def data_fit(result, arrays) -> dict:
    """The run's Poisson deviance per pixel on its own patterns and what Poisson noise alone would give at the
    fitted intensities (their ratio: the discrepancy principle's statistic, 1 = fits the noise level)."""
    counts = np.square(arrays["diffraction"].astype(np.float64))
    predicted = predict_intensities(result.object, result.probe, result.object_origin_yx, arrays["ycoords"],
                                    arrays["xcoords"])
    deviance = float(pattern_deviances(counts, predicted).mean())
    expected = float(expected_poisson_deviance(predicted).mean())
    return {"fit_deviance": deviance, "noise_deviance": expected, "discrepancy_ratio": deviance / expected}


def one_dataset(scale: Scale, dose: int, split: str, epochs: int, threads: int, check_expensive: bool,
                family: str, probe: str, scan: str, choice_only: bool, snapshot_every: int) -> dict:
    arrays = simulate_split(scale, dose, split, family=family, probe=probe, scan=scan)
    args = (arrays["diffraction"], arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"])
    base = ReconstructionOptions(epochs=epochs, device="cpu")
    row: dict = {"dose": dose, "split": split, "n_patterns": len(arrays["xcoords"]), "family": family,
                 "probe": probe, "scan": scan, "epochs": epochs, "fixed": {}}
    for member in CANDIDATES:
        curve: dict = {"epochs": [], "phase_mae": []}

        def snapshot(epoch, obj, origin_yx, curve=curve):
            curve["epochs"].append(epoch)
            curve["phase_mae"].append(phase_errors(obj, origin_yx, arrays)["phase_mae"])

        result = reconstruct(*args, base.model_copy(update={"regularization": member}), cpu_threads=threads,
                             snapshot_every=snapshot_every, on_snapshot=snapshot if snapshot_every else None)
        entry = {"tv_weight": member.tv_weight, **phase_errors(result.object, result.object_origin_yx, arrays),
                 **data_fit(result, arrays), "wall_time_s": result.wall_time_s}
        if snapshot_every:
            entry["curve"] = curve
        row["fixed"][member.value] = entry
        print(f"  {family} {dose:>6} {split:5} {member.value:9} phase MAE {entry['phase_mae']:.4f} (offset only "
              f"{entry['phase_mae_offset_only']:.4f}) fit/noise {entry['discrepancy_ratio']:.3f} "
              f"({result.wall_time_s:.1f} s)", flush=True)
    auto = base.model_copy(update={"regularization": Regularization.auto})
    if choice_only:
        started = time.perf_counter()
        scores, held, spent = score_candidates(*args, auto, CANDIDATES, cpu_threads=threads)
        chosen, lowest, scores = one_standard_error_rule(scores)
        member = CANDIDATES[chosen]
        final = row["fixed"]["off"]
        if member.tv_weight:  # auto's final: the chosen weight in the candidates' last epochs only
            late = base.model_copy(update={"regularization": member, "tv_last_epochs": candidate_epochs_for(epochs)[1]})
            result = reconstruct(*args, late, cpu_threads=threads)
            final = phase_errors(result.object, result.object_origin_yx, arrays)
        row["auto"] = {**{k: final[k] for k in ("phase_mae", "phase_mae_offset_only")},
                       "chosen": member.value, "chosen_tv_weight": member.tv_weight,
                       "lowest_deviance": CANDIDATES[lowest].value,
                       "candidates": [s.__dict__ | {"pattern_deviances": None} for s in scores],
                       "n_held_out": int(held.sum()), "cost_factor": (spent + epochs) / epochs,
                       "choice_wall_time_s": time.perf_counter() - started, "final_wall_time_s": None,
                       "evidence": choice_evidence(scores, chosen, lowest)}
        summary = f"chosen {member.tv_weight:g} ({row['auto']['evidence']})"
    else:
        result, choice = choose_and_reconstruct(*args, auto, cpu_threads=threads)
        row["auto"] = {**phase_errors(result.object, result.object_origin_yx, arrays), **choice.as_dict()}
        summary = choice.summary()
    print(f"  {family} {dose:>6} {split:5} auto      phase MAE {row['auto']['phase_mae']:.4f}: {summary}", flush=True)
    if check_expensive:
        started = time.perf_counter()
        scores, _, spent = score_candidates(*args, auto, CANDIDATES, shared_epochs=0, candidate_epochs=epochs,
                                            cpu_threads=threads)
        best = scores[one_standard_error_rule(scores)[0]]
        row["expensive"] = {"chosen": best.regularization, "chosen_tv_weight": best.tv_weight,
                            "scores": [s.poisson_deviance for s in scores], "epochs_spent": spent,
                            "wall_time_s": time.perf_counter() - started}
        print(f"  {dose:>6} {split:5} expensive choice {best.tv_weight:g} "
              f"(cheap: {row['auto']['chosen_tv_weight']:g}) in {row['expensive']['wall_time_s']:.1f} s", flush=True)
    return row


def _pct(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.1f} %"


def table(rows: list[dict], key: str = "phase_mae") -> str:
    """Phase MAE per fixed weight and for auto (``key``: the fair score, or ``phase_mae_offset_only``)."""
    weights = [m.value for m in CANDIDATES]
    head = ["family", "dose", "split", "n"] + [f"w={Regularization(w).tv_weight:g}" for w in weights] + [
        "auto: chosen w", "evidence", "auto MAE", "auto vs none", "best fixed vs none", "auto vs best", "cost x"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        none = row["fixed"]["off"][key]
        best = min(v[key] for v in row["fixed"].values())
        auto = row["auto"]
        chosen = f"{auto['chosen_tv_weight']:g}"
        if "expensive" in row:
            chosen += f" (expensive: {row['expensive']['chosen_tv_weight']:g})"
        cells = [row.get("family", "default"), str(row["dose"]), row["split"], str(row["n_patterns"])]
        cells += [f"{row['fixed'][w][key]:.4f}" for w in weights]
        cells += [chosen, auto.get("evidence", ""), f"{auto[key]:.4f}", _pct(auto[key], none), _pct(best, none),
                  _pct(auto[key], best), f"{auto['cost_factor']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scores_table(rows: list[dict]) -> str:
    head = ["family", "dose", "split", "held out"] + [f"w={m.tv_weight:g}" for m in CANDIDATES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        scores = {c["regularization"]: c for c in row["auto"]["candidates"]}
        cells = [row.get("family", "default"), str(row["dose"]), row["split"],
                 f"{row['auto']['n_held_out']}/{row['n_patterns']}"]
        for member in CANDIDATES:
            score = scores[member.value]
            cell = f"{score['poisson_deviance']:.4f}"
            if member.value == row["auto"]["lowest_deviance"]:
                cell = f"**{cell}**"
            elif score["excess_over_lowest"] <= score["excess_standard_error"]:
                cell += f" (+{score['excess_over_lowest']:.4f} ± {score['excess_standard_error']:.4f})"
            cells.append(cell + (" ✓" if member.value == row["auto"]["chosen"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def discrepancy_table(rows: list[dict]) -> str:
    """Each fixed weight's fit to its own data over the Poisson noise level (1 = fits the noise, < 1 over-fits)."""
    head = ["family", "dose", "split"] + [f"w={m.tv_weight:g}" for m in CANDIDATES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.get("family", "default"), str(row["dose"]), row["split"]]
        cells += [f"{row['fixed'][m.value]['discrepancy_ratio']:.3f}" for m in CANDIDATES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(BENCH_SCALES), default="mid")
    parser.add_argument("--splits", default="train", help="comma-separated: train,test")
    parser.add_argument("--doses", default="1000,10000,100000")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per reconstruction")
    parser.add_argument("--family", default="default", help="comma-separated: " + ",".join(OBJECT_FAMILIES))
    parser.add_argument("--probe", choices=sorted(PROBES), default="focused")
    parser.add_argument("--scan", choices=sorted(SCANS), default="raster")
    parser.add_argument("--choice-only", action="store_true",
                        help="the choice, then its final as a plain run of the chosen weight (TV in the last epochs)")
    parser.add_argument("--snapshot-every", type=int, default=0)
    parser.add_argument("--check-expensive", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    scale = BENCH_SCALES[args.scale]
    print(f"scale {scale}, {args.epochs} epochs, probe {args.probe}, scan {args.scan}, {args.threads} torch "
          f"thread(s), {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
          flush=True)
    started = time.perf_counter()
    rows = []
    for family in args.family.split(","):
        for split in args.splits.split(","):
            for dose in args.doses.split(","):
                rows.append(one_dataset(scale, int(dose), split, args.epochs, args.threads, args.check_expensive,
                                        family, args.probe, args.scan, args.choice_only, args.snapshot_every))
                if args.json:  # written as it goes: a long run cut short keeps what it measured
                    args.json.write_text(json.dumps({"scale": args.scale, "epochs": args.epochs, "probe": args.probe,
                                                     "scan": args.scan, "threads": args.threads, "rows": rows},
                                                    indent=1, default=float))
    print(f"\nphase MAE against the truth (rad, fair score: ramp, offset and scale removed), baseline view, scale "
          f"{args.scale}, {args.epochs} epochs:\n")
    print(table(rows))
    print("\nthe same, offset-only score (before issue 20):\n")
    print(table(rows, "phase_mae_offset_only"))
    print("\nheld-out Poisson deviance per pixel of each candidate (lowest in bold; within one standard error of it: "
          "excess ± error; chosen: ✓):\n")
    print(scores_table(rows))
    print("\nfit to its own data over the Poisson noise level (discrepancy ratio), each fixed weight:\n")
    print(discrepancy_table(rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
