"""A bias check for the TV weight: does a candidate change the object by more than the noise could? (issue 20)

    python bench/consistency_check.py collect bench.json [more.json ...] --out DIR
    python bench/consistency_check.py evaluate bench.json [more.json ...] --out DIR [--json summary.json]

The idea is Hausman's specification test (Econometrica 46, 1251, 1978): of two estimators, one consistent (here
no regularization) and one more efficient but possibly biased (a TV weight), the difference between them should,
if the efficient one is unbiased, be no larger than the consistent one's own noise:
E |x_0 - x_w|^2 = tr Var(x_0) - tr Var(x_w) <= tr Var(x_0). Regularization that only removes noise cannot move the
object further than the noise reaches; a weight that moves it further has added a bias, and is not allowed. At low
dose the noise is large and every weight passes; at high dose it is small and a TV step that flattens a smooth
field is caught.

The noise of the unregularized object, tr Var(x_0), comes without the truth from the Poisson statistics of the
counts, the way PURE's divergence does (Ramani, Blu & Unser, IEEE TIP 17, 1540, 2008): the same schedule is run
again from counts perturbed by ``eps sqrt(y) b`` (b = +-1 at random), whose covariance is eps^2 times the counts'
Poisson covariance, so |x_0(y') - x_0(y)|^2 / eps^2 estimates tr Var(x_0) to first order (one Monte-Carlo draw).
Both distances are the object's phase on the scan's probe-centre box, after removing what ptychography cannot
determine (global phase and the linear ramp of the difference, ``quality.remove_phase_offset(..., plane=True)``),
as a mean square per pixel.

``collect`` runs per dataset of ``bench/regularization_study.py --json`` files (demo scale):

- ``holdout``: the study's choice (``core.regularization``: the same held-out 10 %, 20 % shared + 10 % per candidate
  epochs on the kept patterns), keeping each candidate's object and the held-out deviance per pattern, and the
  unregularized candidate once more from perturbed counts (the shared start and the w = 0 candidate: +0.27x,
  1.72 + 0.27 = 1.99x one reconstruction);
- ``pure_budget``: PURE of the intensity error at the budget (10 shared + 5 per candidate epochs on all patterns,
  plain and perturbed: 1.8x, ``choice_criteria.py``), keeping each candidate's object: its perturbed pass already
  holds the noise probe, so the check costs nothing more there.

``evaluate`` scores each rule's pick with the truth errors of the bench file's fixed-weight runs against issue 20's
goals (``summarize_regularization.meets``): the held-out 1se rule and PURE 1se, each alone and restricted to the
weights that pass the check (the rule applied to the candidates up to the first that fails).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fly64_assets.core.options import ReconstructionOptions, Regularization
from fly64_assets.core.quality import remove_phase_offset
from fly64_assets.core.regularization import (
    candidate_epochs_for,
    holdout_mask,
    pattern_deviances,
    predict_intensities,
)
from fly64_assets.core.synthetic import simulate_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from choice_criteria import (
    EPS,
    candidates_run,
    key,
    load_rows,
    one_se,
    perturbed_counts,
)
from regularization_study import BENCH_SCALES, phase_errors, scan_box
from summarize_regularization import WEIGHTS, meets


def box_of(result, arrays) -> np.ndarray:
    """The object over the scan's probe-centre box (object pixels = truth pixels - origin)."""
    ymin, ymax, xmin, xmax = scan_box(arrays)
    oy, ox = (round(v) for v in result.object_origin_yx)
    return np.asarray(result.object)[math.ceil(ymin) - oy: math.floor(ymax) + 1 - oy,
                                     math.ceil(xmin) - ox: math.floor(xmax) + 1 - ox].astype(np.complex64)


def phase_distance(moving: np.ndarray, reference: np.ndarray) -> float:
    """Mean square phase difference per pixel, global phase and linear ramp of the difference removed."""
    aligned = remove_phase_offset(moving.astype(np.complex128), reference.astype(np.complex128), plane=True)
    return float(np.mean(np.angle(aligned * np.conj(reference)) ** 2))


def collect_one(arrays, epochs: int) -> dict:
    amplitudes = np.asarray(arrays["diffraction"])
    y, x = np.asarray(arrays["ycoords"], float), np.asarray(arrays["xcoords"], float)
    options = ReconstructionOptions(epochs=epochs, device="cpu", regularization=Regularization.off)
    counts, moved, b = perturbed_counts(amplitudes, seed=0)
    out: dict = {}
    timings = {}

    began = time.perf_counter()
    held = holdout_mask(len(amplitudes), options.holdout_percent, options.random_seed)
    shared, candidate = candidate_epochs_for(epochs)
    plain = candidates_run(amplitudes, arrays["probeGuess"], y, x, options, ~held, shared, candidate)
    out["hold_deviance"] = np.array([
        pattern_deviances(counts[held], predict_intensities(r.object, r.probe, r.object_origin_yx, y[held], x[held]))
        for r in plain])
    out["hold_boxes"] = np.array([box_of(r, arrays) for r in plain])
    out["hold_truth_mae"] = np.array([phase_errors(r.object, r.object_origin_yx, arrays)["phase_mae"] for r in plain])
    timings["holdout"] = time.perf_counter() - began
    began = time.perf_counter()
    noise = candidates_run(moved, arrays["probeGuess"], y, x, options, ~held, shared, candidate, members=1)
    out["hold_noise_box"] = box_of(noise[0], arrays)
    timings["holdout_noise"] = time.perf_counter() - began

    began = time.perf_counter()
    plain = candidates_run(amplitudes, arrays["probeGuess"], y, x, options, None, 10, 5)
    perturbed = candidates_run(moved, arrays["probeGuess"], y, x, options, None, 10, 5)
    pure = []
    for a, c in zip(plain, perturbed):
        f = predict_intensities(a.object, a.probe, a.object_origin_yx, y, x)
        g = predict_intensities(c.object, c.probe, c.object_origin_yx, y, x)
        divergence = np.sqrt(counts) * b * (g - f) / EPS
        pure.append(((f - counts) ** 2 - counts + 2 * divergence).sum((1, 2)))
    out["pure_per_pattern"] = np.array(pure)
    out["pure_boxes"] = np.array([box_of(r, arrays) for r in plain])
    out["pure_noise_box"] = box_of(perturbed[0], arrays)
    out["pure_truth_mae"] = np.array([phase_errors(r.object, r.object_origin_yx, arrays)["phase_mae"] for r in plain])
    timings["pure_budget"] = time.perf_counter() - began
    return out | {f"wall_{k}": np.array(v) for k, v in timings.items()}


def collect(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    for row in load_rows(args.bench_json):
        path = args.out / f"{key(row)}.npz"
        if path.exists():
            continue
        arrays = simulate_split(BENCH_SCALES[args.scale], row["dose"], row["split"], family=row["family"],
                                probe=row["probe"], scan=row["scan"])
        saved = collect_one(arrays, row["epochs"])
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, **saved)
        partial.replace(path)
        print(f"{key(row)}: " + ", ".join(f"{k[5:]} {float(v):.1f} s" for k, v in saved.items()
                                          if k.startswith("wall_")), flush=True)


def bias_check(boxes: np.ndarray, noise_box: np.ndarray, tolerance: float = 1.0) -> tuple[list[float], float, int]:
    """(distance of each candidate to w = 0, the noise level, the number of leading candidates that pass)."""
    distances = [phase_distance(box, boxes[0]) for box in boxes]
    noise = phase_distance(noise_box, boxes[0]) / EPS**2
    passing = next((i for i, d in enumerate(distances) if d > tolerance * noise), len(distances))
    return distances, noise, passing


def picks(data: dict, tolerance: float = 1.0) -> tuple[dict[str, str], dict]:
    hold_d, hold_noise, hold_pass = bias_check(data["hold_boxes"], data["hold_noise_box"], tolerance)
    pure_d, pure_noise, pure_pass = bias_check(data["pure_boxes"], data["pure_noise_box"], tolerance)
    held, pure = data["hold_deviance"], data["pure_per_pattern"]
    chosen = {
        "least within 1se (the earlier rule)": WEIGHTS[one_se(held)],
        "least within 1se, checked": WEIGHTS[one_se(held[:hold_pass])],
        "PURE 1se": WEIGHTS[one_se(pure)],
        "PURE 1se, checked": WEIGHTS[one_se(pure[:pure_pass])],
        "least within 1se, PURE's check": WEIGHTS[one_se(held[:pure_pass])],
    }
    detail = {"hold_distance": hold_d, "hold_noise": hold_noise, "hold_pass": hold_pass,
              "pure_distance": pure_d, "pure_noise": pure_noise, "pure_pass": pure_pass}
    return chosen, detail


def evaluate(args) -> None:
    rows = load_rows(args.bench_json)
    tally: dict[str, list] = {}
    report = []
    for row in rows:
        path = args.out / f"{key(row)}.npz"
        if not path.exists():
            continue
        data = dict(np.load(path))
        errors = {name: row["fixed"][name]["phase_mae"] for name in WEIGHTS}
        none, best = errors["off"], min(errors.values())
        chosen, detail = picks(data, args.tolerance)
        line = {"dataset": key(row), "none": none, "best": best, **detail, "picks": {}}
        for rule, weight in chosen.items():
            ok = meets(row["dose"], errors[weight], none, best)
            tally.setdefault(rule, []).append((ok, errors[weight] / none - 1, errors[weight] / best - 1, key(row)))
            line["picks"][rule] = {"weight": weight, "error": errors[weight], "meets": ok}
        report.append(line)
        marks = "  ".join(f"{r[:14]:14} {w['weight']:9}{'' if w['meets'] else '✗'}" for r, w in line["picks"].items())
        print(f"{key(row):42} noise {detail['hold_noise']:.2e}/{detail['pure_noise']:.2e} pass "
              f"{detail['hold_pass']}/{detail['pure_pass']}  {marks}")
    print()
    for rule, results in tally.items():
        met = sum(ok for ok, *_ in results)
        misses = [f"{k} ({vs_none:+.1%} vs none, {vs_best:+.1%} vs best)" for ok, vs_none, vs_best, k in results if not ok]
        print(f"{rule:28} meets {met}/{len(results)}  mean vs none {np.mean([r[1] for r in results]):+.1%}  "
              f"mean vs best {np.mean([r[2] for r in results]):+.1%}  worst vs best {max(r[2] for r in results):+.1%}")
        for miss in misses:
            print(f"    miss: {miss}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("collect", "evaluate"))
    parser.add_argument("bench_json", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder of the per-dataset .npz files")
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--tolerance", type=float, default=1.0, help="evaluate: pass if distance <= this x noise")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    collect(args) if args.mode == "collect" else evaluate(args)


if __name__ == "__main__":
    main()
