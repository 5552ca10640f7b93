"""Tables for docs/SCIENCE.md from ``bench/regularization_study.py --json`` files (no reconstruction here).

    python bench/summarize_regularization.py out1.json [out2.json ...]

Per dataset (object family x dose x split): the error with no regularization, with the truth-best fixed weight and
with each truth-free rule, all with the fair score; then how each rule meets issue 20's goals (1e3: within 3 % of
the truth-best weight or >= 15 % better than none; 1e4: no worse than none; 1e5: within 3 % of none). Rules:

- ``1se``: the study's (least regularized weight within one standard error of the lowest held-out deviance);
- ``lowest``: the lowest held-out deviance;
- ``discrepancy``: the largest weight whose fit to its own data is still at or below the Poisson noise level
  (deviance / expected deviance <= 1; Morozov's discrepancy principle for Poisson data, Bertero et al. 2010),
  from the full fixed-weight runs (so 6 reconstructions' cost as measured here);
- ``flat→none``: the 1se choice, but no regularization where its evidence is flat.
Also the truth-best epoch (from the per-epoch snapshots) of the chosen weight, against its error at the last epoch.
"""

from __future__ import annotations

import json
import sys

WEIGHTS = ("off", "tv_0_003", "tv_0_01", "tv_0_03", "tv_0_1", "tv_0_3")
TV = dict(zip(WEIGHTS, (0.0, 0.003, 0.01, 0.03, 0.1, 0.3)))


def rules(row: dict) -> dict[str, str]:
    auto = row["auto"]
    fixed = row["fixed"]
    below = [w for w in WEIGHTS if fixed[w]["discrepancy_ratio"] <= 1.0]
    return {
        "1se": auto["chosen"],
        "lowest": auto["lowest_deviance"],
        "discrepancy": below[-1] if below else "off",
        "flat→none": "off" if auto.get("evidence") == "flat" else auto["chosen"],
    }


def meets(dose: int, value: float, none: float, best: float) -> bool:
    if dose <= 1000:
        return value <= 1.03 * best or value <= 0.85 * none
    if dose <= 10000:
        return value <= none * 1.0005  # no worse than none (to the 4th digit)
    return value <= 1.03 * none


def main(paths: list[str]) -> None:
    rows = []
    for path in paths:
        saved = json.load(open(path))
        for row in saved["rows"]:
            row.setdefault("probe", saved.get("probe", "focused"))
            row.setdefault("scan", saved.get("scan", "raster"))
            row.setdefault("epochs", saved.get("epochs"))
            rows.append(row)
    names = list(rules(rows[0]))
    print("| family | probe, scan | ep | dose | split | none | truth-best w: MAE | 1se: w (evidence) | 1se vs none | "
          "1se vs best | lowest w | discrepancy w | best epoch of 1se w: MAE | truth-best (w, epoch): MAE |")
    print("|" + "---|" * 14)
    tally = {name: [0, 0] for name in names}
    for row in rows:
        fixed = row["fixed"]
        none = fixed["off"]["phase_mae"]
        best_w = min(WEIGHTS, key=lambda w: fixed[w]["phase_mae"])
        best = fixed[best_w]["phase_mae"]
        chosen = rules(row)
        auto = fixed[chosen["1se"]]["phase_mae"]
        curve = fixed[chosen["1se"]].get("curve") or {"epochs": [], "phase_mae": []}
        epoch_cell = ""
        if curve["epochs"]:
            i = min(range(len(curve["epochs"])), key=lambda k: curve["phase_mae"][k])
            epoch_cell = f"{curve['epochs'][i]}: {curve['phase_mae'][i]:.4f}"
        joint = [(v, TV[w], e) for w in WEIGHTS for e, v in zip((fixed[w].get("curve") or {}).get("epochs", []),
                                                                (fixed[w].get("curve") or {}).get("phase_mae", []))]
        if joint:
            v, w, e = min(joint)
            epoch_cell += f" | {w:g} at {e}: {v:.4f}"
        for name in names:
            tally[name][0] += meets(row["dose"], fixed[chosen[name]]["phase_mae"], none, best)
            tally[name][1] += 1
        print(f"| {row.get('family', 'default')} | {row['probe']}, {row['scan']} | {row['epochs']} | {row['dose']:g} | "
              f"{row['split']} | {none:.4f} | {TV[best_w]:g}: {best:.4f} | {TV[chosen['1se']]:g} "
              f"({row['auto'].get('evidence', '')}) | {100 * (auto / none - 1):+.1f} % | {100 * (auto / best - 1):+.1f} % | "
              f"{TV[chosen['lowest']]:g} | {TV[chosen['discrepancy']]:g} | {epoch_cell} |")
    print()
    for name, (ok, n) in tally.items():
        print(f"rule {name}: meets the goal in {ok} of {n} datasets")
    print()
    print("| family | dose | split | offset-only MAE, w=0 | fair MAE, w=0 | ramp removed (rad/px, y, x), w=0 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        off = row["fixed"]["off"]
        print(f"| {row.get('family', 'default')} | {row['dose']:g} | {row['split']} | {off['phase_mae_offset_only']:.4f} | "
              f"{off['phase_mae']:.4f} | {off['phase_ramp_yx'][0]:+.5f}, {off['phase_ramp_yx'][1]:+.5f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
