"""The object's TV regularization per dose: fixed weights against the truth-free choice, scored against the truth.

    python bench/regularization_study.py [--scale demo|standard|mid|mid18|full] [--splits train,test]
        [--doses 1000,10000,100000] [--epochs 100] [--threads 1] [--check-expensive] [--json out.json]

For each (dose, split) of the baseline view (Phase C, ``synthetic.simulate_split``): LSQML with no regularization,
with each fixed TV weight of the grid, and with ``regularization=auto`` (``core.regularization.
choose_and_reconstruct``: candidates scored on held-out patterns, then the final reconstruction with the winner).
Each result is scored like the study's ``reconstruction_quality`` asset scores a baseline partition: phase MAE
after registration and phase-offset removal, on the probe-centre bounding box of the split's Phase C scan.
``--check-expensive`` also scores the candidates the expensive way (each from scratch for the full epochs on the
kept patterns) and says whether the cheap choice (shared start, short candidates) picks the same weight.

Scales: ``demo``, ``standard`` (the default study) and ``full`` are the study's (``synthetic.SCALES``); two more are defined only here:
``mid`` (544 px object, step 15 like demo: 512 patterns per split) and ``mid18`` (640 px, step 18 like full:
512 patterns per split, the full study's overlap).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fly64_assets.core.lsqml import reconstruct
from fly64_assets.core.options import ReconstructionOptions, Regularization
from fly64_assets.core.quality import compare_to_truth
from fly64_assets.core.regularization import (
    CANDIDATES,
    choose_and_reconstruct,
    one_standard_error_rule,
    score_candidates,
)
from fly64_assets.core.synthetic import SCALES, Scale, simulate_split

BENCH_SCALES = {
    **SCALES,
    "mid": Scale("mid", object_size=544, scan_step=15),
    "mid18": Scale("mid18", object_size=640, scan_step=18),
}


def phase_error(result, arrays) -> float:
    """Phase MAE against the truth on the split's Phase C scan box (the baseline view's own positions)."""
    ys, xs = arrays["ycoords"], arrays["xcoords"]
    box = (float(ys.min()), float(ys.max()), float(xs.min()), float(xs.max()))
    return compare_to_truth(result.object, arrays["objectGuess"], result.object_origin_yx, box).phase_mae


def one_dataset(scale: Scale, dose: int, split: str, epochs: int, threads: int, check_expensive: bool) -> dict:
    arrays = simulate_split(scale, dose, split)
    args = (arrays["diffraction"], arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"])
    base = ReconstructionOptions(epochs=epochs, device="cpu")
    row: dict = {"dose": dose, "split": split, "n_patterns": len(arrays["xcoords"]), "fixed": {}}
    for member in CANDIDATES:
        result = reconstruct(*args, base.model_copy(update={"regularization": member}), cpu_threads=threads)
        row["fixed"][member.value] = {"tv_weight": member.tv_weight, "phase_mae": phase_error(result, arrays),
                                      "wall_time_s": result.wall_time_s}
        print(f"  {dose:>6} {split:5} {member.value:9} phase MAE {row['fixed'][member.value]['phase_mae']:.4f} "
              f"({result.wall_time_s:.1f} s)", flush=True)
    auto = base.model_copy(update={"regularization": Regularization.auto})
    result, choice = choose_and_reconstruct(*args, auto, cpu_threads=threads)
    row["auto"] = {"phase_mae": phase_error(result, arrays), **choice.as_dict()}
    print(f"  {dose:>6} {split:5} auto      phase MAE {row['auto']['phase_mae']:.4f}: {choice.summary()}", flush=True)
    if check_expensive:
        started = time.perf_counter()
        scores, _, spent = score_candidates(*args, auto, CANDIDATES, shared_epochs=0, candidate_epochs=epochs,
                                            cpu_threads=threads)
        best = scores[one_standard_error_rule(scores)[0]]
        row["expensive"] = {"chosen": best.regularization, "chosen_tv_weight": best.tv_weight,
                            "scores": [s.poisson_deviance for s in scores], "epochs_spent": spent,
                            "wall_time_s": time.perf_counter() - started}
        print(f"  {dose:>6} {split:5} expensive choice {best.tv_weight:g} "
              f"(cheap: {choice.chosen_tv_weight:g}) in {row['expensive']['wall_time_s']:.1f} s", flush=True)
    return row


def table(rows: list[dict]) -> str:
    weights = [m.value for m in CANDIDATES]
    head = ["dose", "split", "n"] + [f"w={Regularization(w).tv_weight:g}" for w in weights] + [
        "auto: chosen w", "auto MAE", "auto vs none", "best fixed vs none", "cost x", "choice s", "final s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        none = row["fixed"]["off"]["phase_mae"]
        best = min(v["phase_mae"] for v in row["fixed"].values())
        auto = row["auto"]
        chosen = f"{auto['chosen_tv_weight']:g}"
        if "expensive" in row:
            chosen += f" (expensive: {row['expensive']['chosen_tv_weight']:g})"
        cells = [str(row["dose"]), row["split"], str(row["n_patterns"])]
        cells += [f"{row['fixed'][w]['phase_mae']:.4f}" for w in weights]
        cells += [chosen, f"{auto['phase_mae']:.4f}", f"{100 * (auto['phase_mae'] / none - 1):+.1f} %",
                  f"{100 * (best / none - 1):+.1f} %", f"{auto['cost_factor']:.2f}",
                  f"{auto['choice_wall_time_s']:.0f}", f"{auto['final_wall_time_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scores_table(rows: list[dict]) -> str:
    head = ["dose", "split", "held out"] + [f"w={m.tv_weight:g}" for m in CANDIDATES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        scores = {c["regularization"]: c for c in row["auto"]["candidates"]}
        cells = [str(row["dose"]), row["split"], f"{row['auto']['n_held_out']}/{row['n_patterns']}"]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(BENCH_SCALES), default="mid")
    parser.add_argument("--splits", default="train", help="comma-separated: train,test")
    parser.add_argument("--doses", default="1000,10000,100000")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per reconstruction")
    parser.add_argument("--check-expensive", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    scale = BENCH_SCALES[args.scale]
    print(f"scale {scale}, {args.epochs} epochs, {args.threads} torch thread(s), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    rows = [
        one_dataset(scale, int(dose), split, args.epochs, args.threads, args.check_expensive)
        for split in args.splits.split(",")
        for dose in args.doses.split(",")
    ]
    print(f"\nphase MAE against the truth (rad), baseline view, scale {args.scale}:\n")
    print(table(rows))
    print("\nheld-out Poisson deviance per pixel of each candidate (lowest in bold; within one standard error of it: "
          "excess ± error; chosen: ✓):\n")
    print(scores_table(rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"scale": args.scale, "epochs": args.epochs, "threads": args.threads,
                                         "rows": rows}, indent=1, default=float))


if __name__ == "__main__":
    main()
