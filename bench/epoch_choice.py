"""The epoch count chosen with the weight from the held-out deviance (issue 20, item 3), against the truth.

    python bench/epoch_choice.py bench.json [--families default] [--every 10] [--json out.json]

For every dataset of a ``bench/regularization_study.py --snapshot-every 10 --json`` file: hold out the study's 10 %
(seed 0), reconstruct the kept patterns with each candidate weight in chunks of ``--every`` epochs (each chunk
warm-started from the previous object and probe, ``lsqml.reconstruct(initial_object=, initial_probe=)``: close to,
not the same as, one continuous run) and score the held-out Poisson deviance after each chunk. The (weight, epoch)
of the lowest deviance, and the one-standard-error rule over all (weight, epoch) pairs (least weight, then fewest
epochs), are looked up in the bench file's truth curves of the full-data fixed-weight runs. Cost: every weight for
the full epochs on 90 % of the patterns, 5.4 reconstructions: a measurement of whether the held-out deviance finds
the semi-convergence, not a cheap method.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fly64_assets.core.lsqml import reconstruct
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.regularization import CANDIDATES, _score, holdout_mask, one_standard_error_rule
from fly64_assets.core.synthetic import simulate_split

from regularization_study import BENCH_SCALES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_json", type=Path)
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--families", default="")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    families = {f for f in args.families.split(",") if f}
    saved = json.loads(args.bench_json.read_text())
    out = []
    print("| family | dose | split | truth at 100 epochs, 1se weight | lowest held-out (w, epoch): truth | 1se (w, epoch): truth "
          "| truth-best (w, epoch) |")
    print("|---|---|---|---|---|---|---|")
    for row in saved["rows"]:
        if families and row["family"] not in families:
            continue
        arrays = simulate_split(BENCH_SCALES[args.scale], row["dose"], row["split"], family=row["family"],
                                probe=row["probe"], scan=row["scan"])
        data = (arrays["diffraction"], arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"])
        held = holdout_mask(len(data[0]), 10, 0)
        counts = data[0][held]
        scores, pairs = [], []
        for member in CANDIDATES:
            obj = probe = None
            for epoch in range(args.every, row["epochs"] + 1, args.every):
                options = ReconstructionOptions(epochs=args.every, device="cpu", regularization=member)
                result = reconstruct(*data, options, cpu_threads=1, use_patterns=~held, initial_object=obj,
                                     initial_probe=probe)
                obj, probe = result.object, result.probe
                scores.append(_score(result, counts, data[2][held], data[3][held], member, 0.0))
                pairs.append((member.value, epoch))
        # the rule's order: least weight first, then fewest epochs (one_standard_error_rule keeps the smallest weight;
        # ties in weight go to the earlier index, i.e. the fewer epochs)
        chosen, lowest, _ = one_standard_error_rule(scores)

        def truth(pair):
            curve = row["fixed"][pair[0]]["curve"]
            return curve["phase_mae"][curve["epochs"].index(pair[1])]

        final = row["fixed"][row["auto"]["chosen"]]["phase_mae"]
        best = min(((truth((w, e)), w, e) for w in row["fixed"] for e in row["fixed"][w]["curve"]["epochs"]))
        tv = {m.value: m.tv_weight for m in CANDIDATES}
        lw, le = pairs[lowest]
        cw, ce = pairs[chosen]
        out.append({"family": row["family"], "dose": row["dose"], "split": row["split"], "final_1se": final,
                    "lowest": [lw, le, truth((lw, le))], "chosen": [cw, ce, truth((cw, ce))], "best": list(best),
                    "deviances": [s.poisson_deviance for s in scores], "pairs": pairs})
        print(f"| {row['family']} | {row['dose']:g} | {row['split']} | {tv[row['auto']['chosen']]:g}: {final:.4f} | "
              f"{tv[lw]:g}, {le}: {truth((lw, le)):.4f} | {tv[cw]:g}, {ce}: {truth((cw, ce)):.4f} | "
              f"{tv[best[1]]:g}, {best[2]}: {best[0]:.4f} |", flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
