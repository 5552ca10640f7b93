"""A pooled, repeated held-out choice of the TV weight, against the study's single held-out set (issue 20, item 2).

    python bench/repeated_holdout.py bench.json [more.json ...] [--repeats 3] [--json out.json]

For every dataset of ``bench/regularization_study.py --json`` files (object family, probe, scan, dose, split,
epochs): the study's cheap choice (``score_candidates``: 10 % held out, 20 % shared + 10 % per candidate epochs)
is run ``--repeats`` times with different held-out sets (``random_seed`` 0, 1, ...; seed 0 is the study's), the
per-pattern held-out deviances of all repeats are pooled, and the one-standard-error rule is applied to the pool
(``3 x 10 %`` = 30 % of the patterns judged, at ``repeats x 0.72`` reconstructions' cost instead of 0.72). The
truth errors of each weight come from the bench file (its fixed-weight runs), so no final reconstruction is run.
Repeated random sub-sampling validation: Hastie, Tibshirani & Friedman, The Elements of Statistical Learning
(2nd ed., 2009), section 7.10; the one-standard-error rule, ibid. and Breiman et al., CART (1984).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fly64_assets.core.options import ReconstructionOptions, Regularization
from fly64_assets.core.regularization import CANDIDATES, choice_evidence, one_standard_error_rule, score_candidates
from fly64_assets.core.synthetic import simulate_split

from regularization_study import BENCH_SCALES  # noqa: E402  (bench/ is on the path when run as a script)


def pooled(repeats: list[list]) -> list:
    """One CandidateScore per candidate with the held-out patterns of every repeat."""
    out = []
    for i, first in enumerate(repeats[0]):
        per_pattern = [d for scores in repeats for d in scores[i].pattern_deviances]
        out.append(replace(first, pattern_deviances=per_pattern, poisson_deviance=float(np.mean(per_pattern))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_json", nargs="+", type=Path)
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--doses", default="", help="only these doses (comma-separated); default all")
    parser.add_argument("--families", default="", help="only these object families (comma-separated); default all")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    doses = {int(d) for d in args.doses.split(",") if d}
    families = {f for f in args.families.split(",") if f}
    results = []
    print("| family | dose | split | 1se (seed 0): w, evidence | repeated: w, evidence | none | truth-best w: MAE | "
          "seed 0 vs best | repeated vs best | repeated vs none |")
    print("|" + "---|" * 10)
    for path in args.bench_json:
        saved = json.loads(path.read_text())
        for row in saved["rows"]:
            if (doses and row["dose"] not in doses) or (families and row["family"] not in families):
                continue
            arrays = simulate_split(BENCH_SCALES[args.scale], row["dose"], row["split"], family=row["family"],
                                    probe=row["probe"], scan=row["scan"])
            data = (arrays["diffraction"], arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"])
            started = time.perf_counter()
            repeats = []
            for seed in range(args.repeats):
                options = ReconstructionOptions(epochs=row["epochs"], device="cpu", random_seed=seed,
                                                regularization=Regularization.auto)
                repeats.append(score_candidates(*data, options, CANDIDATES, cpu_threads=1)[0])
            single_chosen, single_lowest, single = one_standard_error_rule(repeats[0])
            chosen, lowest, pool = one_standard_error_rule(pooled(repeats))
            fixed = row["fixed"]
            mae = {m.value: fixed[m.value]["phase_mae"] for m in CANDIDATES}
            best = min(mae, key=mae.get)
            w_single, w_pool = CANDIDATES[single_chosen].value, CANDIDATES[chosen].value
            result = {**{k: row[k] for k in ("family", "probe", "scan", "dose", "split", "epochs")},
                      "single": w_single, "single_evidence": choice_evidence(single, single_chosen, single_lowest),
                      "pooled": w_pool, "pooled_evidence": choice_evidence(pool, chosen, lowest),
                      "pooled_scores": [s.poisson_deviance for s in pool], "mae": mae,
                      "wall_time_s": time.perf_counter() - started}
            results.append(result)
            tv = {m.value: m.tv_weight for m in CANDIDATES}
            print(f"| {row['family']} | {row['dose']:g} | {row['split']} | {tv[w_single]:g}, {result['single_evidence']} | "
                  f"{tv[w_pool]:g}, {result['pooled_evidence']} | {mae['off']:.4f} | {tv[best]:g}: {mae[best]:.4f} | "
                  f"{100 * (mae[w_single] / mae[best] - 1):+.1f} % | {100 * (mae[w_pool] / mae[best] - 1):+.1f} % | "
                  f"{100 * (mae[w_pool] / mae['off'] - 1):+.1f} % |", flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
