"""TV only in the last epochs: does it keep regularization's low-dose gain without slowing convergence? (issue 20)

    python bench/late_regularization.py run --datasets default:focused:raster:1000:train,... [--late 10,30,50]
        [--json out.json]
    python bench/late_regularization.py evaluate --bench study.json [...] --late out.json [...]
        [--criteria DIR] [--tv-epochs 10]
    python bench/late_regularization.py final --bench study.json [...] --rule least|largest [--json out.json]
    python bench/late_regularization.py schedule --bench study.json [...] --criteria DIR --finals final.json [...]
        [--json out.json]
    python bench/late_regularization.py phases --datasets ... [--schedules 0.3x100,0x90+0.3x10,0.3x90+0x10]
        [--json out.json]

On the smooth field at high dose the phase error is still falling steeply at epoch 100 (0.101 -> 0.095 rad over the
last ten epochs of the unregularized run) and TV slows that fall: the misses of every truth-free criterion there
are about convergence, not noise. pty-chi applies TV as a Chambolle step after each epoch (``object.
constrain_total_variation``), scheduled by its ``OptimizationPlan``; this bench measures the schedule where TV is
on only for the last L epochs of the 100: an unregularized run to 100 - L epochs, continued with each weight for L
epochs (``lsqml.reconstruct(initial_object=..., initial_probe=...)``, as the study's candidates continue from
their shared start). Each end result is scored like the study (fair score, ``regularization_study.phase_errors``).

``evaluate`` scores truth-free picks against issue 20's goals (``summarize_regularization.meets``) twice: with the
final reconstruction regularized in every epoch (the fixed-weight runs of ``regularization_study.py --json``) and
in the last ``--tv-epochs`` only (this bench's runs). The picks: the one the study file's ``auto`` made (the
least regularized weight within one standard error: the rule before issue 20's late TV phase) and, from
``consistency_check.py collect`` files (``--criteria``), the lowest held-out deviance, the largest weight within
one standard error (the study's rule since) and PURE of the intensity error (1se). "none" is the unregularized 100-epoch run;
"best" the truth-best fixed weight, TV in every epoch or in the last epochs, whichever is lower.

``final`` re-chooses from the candidates' held-out scores stored in ``regularization_study.py --json`` files by a
one-standard-error rule (``least``: the least regularized weight within one standard error of the lowest;
``largest``: the most regularized, the direction of Hastie, Tibshirani & Friedman) and runs that weight's final
reconstruction as ``auto`` does (TV in the last 10 % of the epochs: one plain run; none when it picks none, read
from the file), scored like the study.

``schedule`` asks whether the held-out patterns can also choose the schedule: for the weight the study's rule
picks (from ``--criteria``), one more candidate, that weight in every epoch of a run from scratch as long as the
shared start plus a candidate, scored on the same held-out patterns against the study's candidate; it records the
paired excess and its standard error beside the truth errors of both finals (``--finals``: ``final --rule
largest``'s JSON; the every-epoch error from the bench file's fixed run).

``phases`` asks which epochs of TV carry its gain and which its cost: each schedule is a sequence of phases
``weight x epochs`` joined by ``+`` (``0.3x90+0x10``: the weight 0.3 for 90 epochs, then 10 without TV), run as
one reconstruction continued from the last object and probe at each phase change, like ``run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fly64_assets.core.lsqml import reconstruct
from fly64_assets.core.options import ReconstructionOptions, Regularization
from fly64_assets.core.regularization import (
    CANDIDATES,
    candidate_epochs_for,
    holdout_mask,
    pattern_deviances,
    predict_intensities,
)
from fly64_assets.core.synthetic import simulate_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from choice_criteria import key, largest_within_se, load_rows, one_se
from regularization_study import BENCH_SCALES, phase_errors
from summarize_regularization import TV, WEIGHTS, meets


def simulate(spec: str, scale: str) -> tuple[dict, tuple]:
    """The split named ``family:probe:scan:dose:split``, and the arrays ``reconstruct`` takes first."""
    family, probe, scan, dose, split = spec.split(":")
    arrays = simulate_split(BENCH_SCALES[scale], int(dose), split, family=family, probe=probe, scan=scan)
    return arrays, (arrays["diffraction"], arrays["probeGuess"], np.asarray(arrays["ycoords"], float),
                    np.asarray(arrays["xcoords"], float))


def continued_from(state) -> dict:
    """``reconstruct``'s keywords to go on from an earlier result's object and probe (none: start afresh)."""
    return {} if state is None else {"initial_object": state.object, "initial_probe": state.probe}


def one_dataset(spec: str, epochs: int, lates: list[int], scale: str) -> dict:
    arrays, args = simulate(spec, scale)
    base = ReconstructionOptions(epochs=epochs, device="cpu", regularization=Regularization.off)
    row: dict = {"dataset": spec, "late": {}}
    done, state = 0, None
    for late in sorted(lates, reverse=True) + [0]:
        steps = epochs - late - done
        state = reconstruct(*args, base.model_copy(update={"epochs": steps}), cpu_threads=1, **continued_from(state))
        done = epochs - late
        if late == 0:
            row["none_continued"] = phase_errors(state.object, state.object_origin_yx, arrays)["phase_mae"]
            break
        row["late"][late] = {}
        for member in CANDIDATES[1:]:
            result = reconstruct(*args, base.model_copy(update={"epochs": late, "regularization": member}),
                                 cpu_threads=1, initial_object=state.object, initial_probe=state.probe)
            row["late"][late][member.value] = phase_errors(result.object, result.object_origin_yx, arrays)["phase_mae"]
        print(spec, late, {k: round(v, 4) for k, v in row["late"][late].items()}, flush=True)
    print(spec, "none (continued)", round(row["none_continued"], 4), flush=True)
    return row


def picks(row: dict, criteria: Path | None) -> dict[str, str]:
    chosen = {"least within 1se (the earlier rule)": row["auto"]["chosen"]}
    path = criteria / f"{key(row)}.npz" if criteria else None
    if path is not None and path.exists():
        data = np.load(path)
        held, pure = data["hold_deviance"], data["pure_per_pattern"]
        chosen |= {"lowest": WEIGHTS[int(np.argmin(held.mean(1)))],
                   "largest within 1se (the study's rule)": WEIGHTS[largest_within_se(held)], "PURE 1se": WEIGHTS[one_se(pure)]}
    return chosen


def evaluate(args) -> None:
    late_rows = {row["dataset"]: row for path in args.late for row in json.loads(path.read_text())}
    tally: dict[str, list] = {}
    print("| family | probe, scan | dose | split | none | best (w, TV epochs): MAE | study's w | every epoch: MAE, vs none "
          "| last epochs: MAE, vs none | goal (every / last) |")
    print("|" + "---|" * 10)
    for row in load_rows(args.bench):
        spec = f"{row['family']}:{row['probe']}:{row['scan']}:{row['dose']}:{row['split']}"
        if spec not in late_rows:
            continue
        every = {w: row["fixed"][w]["phase_mae"] for w in WEIGHTS}
        last = {"off": every["off"], **late_rows[spec]["late"][str(args.tv_epochs)]}
        none = every["off"]
        best_every, best_last = min(WEIGHTS, key=every.get), min(WEIGHTS, key=last.get)
        best = min(every[best_every], last[best_last])
        best_cell = (f"{TV[best_every]:g}, all: {every[best_every]:.4f}" if every[best_every] <= last[best_last]
                     else f"{TV[best_last]:g}, last {args.tv_epochs}: {last[best_last]:.4f}")
        group = "hard case" if row["probe"] == "aperture" and row["family"] == "discs" else (
            "out of sample" if row["probe"] == "aperture" else "bench")
        for rule, weight in picks(row, args.criteria).items():
            for final, errors in (("every epoch", every), (f"last {args.tv_epochs}", last)):
                ok = meets(row["dose"], errors[weight], none, best)
                tally.setdefault(f"{rule}, TV {final}", []).append(
                    (ok, errors[weight] / none - 1, errors[weight] / best - 1, group, row["dose"], spec))
        w = row["auto"]["chosen"]
        print(f"| {row['family']} | {row['probe']}, {row['scan']} | {row['dose']:g} | {row['split']} | {none:.4f} | "
              f"{best_cell} | {TV[w]:g} | {every[w]:.4f}, {every[w] / none - 1:+.1%} | {last[w]:.4f}, "
              f"{last[w] / none - 1:+.1%} | {'✓' if meets(row['dose'], every[w], none, best) else '✗'} / "
              f"{'✓' if meets(row['dose'], last[w], none, best) else '✗'} |")
    print()
    print("| rule, final | bench 1e3 | bench 1e4 | bench 1e5 | bench | hard case | out of sample | all | mean vs none | "
          "mean vs best | worst vs best |")
    print("|" + "---|" * 11)
    for rule, results in tally.items():
        def met(group=None, dose=None, results=results):
            chosen = [r for r in results if (group is None or r[3] == group) and (dose is None or r[4] == dose)]
            return f"{sum(r[0] for r in chosen)}/{len(chosen)}"
        print(f"| {rule} | {met('bench', 1000)} | {met('bench', 10000)} | {met('bench', 100000)} | {met('bench')} | "
              f"{met('hard case')} | {met('out of sample')} | {met()} | {np.mean([r[1] for r in results]):+.1%} | "
              f"{np.mean([r[2] for r in results]):+.1%} | {max(r[2] for r in results):+.1%} |")
    for rule, results in tally.items():
        misses = [f"{r[5]} ({r[1]:+.1%} vs none, {r[2]:+.1%} vs best)" for r in results if not r[0]]
        print(f"{rule}: misses {'; '.join(misses) or 'none'}")


def within_one_se(candidates: list[dict]) -> list[str]:
    return [c["regularization"] for c in candidates if c["excess_over_lowest"] <= c["excess_standard_error"]]


def final(args) -> None:
    out = []
    for path in args.bench:
        saved = json.loads(path.read_text())
        for row in saved["rows"]:
            within = within_one_se(row["auto"]["candidates"])
            pick = within[-1] if args.rule == "largest" else within[0]  # candidates in ascending weight
            fixed = row["fixed"]
            entry = {"family": row.get("family", "default"), "probe": row.get("probe", saved.get("probe", "focused")),
                     "scan": row.get("scan", saved.get("scan", "raster")), "scale": saved["scale"], "dose": row["dose"],
                     "split": row["split"], "rule": args.rule, "pick": pick, "none": fixed["off"]["phase_mae"],
                     "best_every_epoch": min(v["phase_mae"] for v in fixed.values()),
                     "pick_every_epoch": fixed[pick]["phase_mae"]}
            if pick == "off":
                entry["final"] = fixed["off"]["phase_mae"]
            else:
                arrays = simulate_split(BENCH_SCALES[saved["scale"]], row["dose"], row["split"], family=entry["family"],
                                        probe=entry["probe"], scan=entry["scan"])
                epochs = row.get("epochs", saved["epochs"])
                options = ReconstructionOptions(epochs=epochs, device="cpu", regularization=Regularization(pick),
                                                tv_last_epochs=candidate_epochs_for(epochs)[1])
                result = reconstruct(arrays["diffraction"], arrays["probeGuess"], arrays["ycoords"], arrays["xcoords"],
                                     options, cpu_threads=1)
                entry["final"] = phase_errors(result.object, result.object_origin_yx, arrays)["phase_mae"]
            out.append(entry)
            print(f"{entry['scale']} {entry['family']} {entry['probe']} {entry['scan']} {entry['dose']} {entry['split']}: "
                  f"{args.rule} within 1se {pick}: {entry['final']:.4f} (none {entry['none']:.4f}, "
                  f"{entry['final'] / entry['none'] - 1:+.1%}; best every-epoch weight {entry['best_every_epoch']:.4f}, "
                  f"{entry['final'] / entry['best_every_epoch'] - 1:+.1%})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def schedule(args) -> None:
    """Which TV schedule for the chosen weight: scored on the same held-out patterns, the weight in every epoch of a
    run from scratch (as long as the shared start plus a candidate) against the study's candidate (the shared
    unregularized start, then the weight)."""
    finals = {f"{e['family']}:{e['probe']}:{e['scan']}:{e['dose']}:{e['split']}": e
              for path in args.finals for e in json.loads(path.read_text())}
    out = []
    for row in load_rows(args.bench):
        spec = f"{row['family']}:{row['probe']}:{row['scan']}:{row['dose']}:{row['split']}"
        data = np.load(args.criteria / f"{key(row)}.npz")
        held_scores = data["hold_deviance"]
        pick = largest_within_se(held_scores)
        entry = {"dataset": spec, "pick": WEIGHTS[pick], "none": row["fixed"]["off"]["phase_mae"],
                 "every_epoch": row["fixed"][WEIGHTS[pick]]["phase_mae"], "late": finals[spec]["final"]}
        if pick:
            arrays = simulate_split(BENCH_SCALES[args.scale], row["dose"], row["split"], family=row["family"],
                                    probe=row["probe"], scan=row["scan"])
            amplitudes = np.asarray(arrays["diffraction"])
            y, x = np.asarray(arrays["ycoords"], float), np.asarray(arrays["xcoords"], float)
            options = ReconstructionOptions(device="cpu", regularization=CANDIDATES[pick])
            held = holdout_mask(len(amplitudes), options.holdout_percent, options.random_seed)
            shared, candidate = candidate_epochs_for(row["epochs"])
            result = reconstruct(amplitudes, arrays["probeGuess"], y, x, options.model_copy(update={"epochs": shared + candidate}),
                                 cpu_threads=1, use_patterns=~held)
            counts = np.square(amplitudes[held].astype(np.float64))
            scratch = pattern_deviances(counts, predict_intensities(result.object, result.probe, result.object_origin_yx,
                                                                   y[held], x[held]))
            excess = scratch - held_scores[pick]
            entry |= {"excess": float(excess.mean()), "error": float(excess.std(ddof=1) / np.sqrt(excess.size))}
        out.append(entry)
        print(spec, {k: (round(v, 5) if isinstance(v, float) else v) for k, v in entry.items() if k != "dataset"}, flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def parse_schedule(text: str) -> list[tuple[Regularization, int]]:
    """``0.3x90+0x10`` -> [(tv_0_3, 90), (off, 10)]; weights from the study's grid."""
    members = {TV[m.value]: m for m in CANDIDATES}
    phases = []
    for phase in text.split("+"):
        weight, epochs = phase.split("x")
        if float(weight) not in members:
            raise SystemExit(f"schedule {text!r}: weight {weight} is not on the grid {sorted(members)}")
        phases.append((members[float(weight)], int(epochs)))
    return phases


def phases(args) -> None:
    none_text = f"0x{args.epochs}"
    schedules = {text: parse_schedule(text) for text in [none_text] + args.schedules.split(",")}
    for text, schedule_phases in schedules.items():
        if sum(epochs for _, epochs in schedule_phases) != args.epochs:
            raise SystemExit(f"schedule {text!r}: its phases do not add up to --epochs {args.epochs}")
    out = []
    for spec in args.datasets.split(","):
        arrays, data = simulate(spec, args.scale)
        row: dict = {"dataset": spec, "schedules": {}}
        for text, schedule_phases in schedules.items():
            state = None
            for member, epochs in schedule_phases:
                options = ReconstructionOptions(epochs=epochs, device="cpu", regularization=member)
                state = reconstruct(*data, options, cpu_threads=1, **continued_from(state))
            row["schedules"][text] = phase_errors(state.object, state.object_origin_yx, arrays)["phase_mae"]
            none = row["schedules"][none_text]
            print(f"{spec} {text}: {row['schedules'][text]:.4f} ({row['schedules'][text] / none - 1:+.1%} vs none)",
                  flush=True)
        out.append(row)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("run", "evaluate", "final", "schedule", "phases"))
    parser.add_argument("--datasets", help="run: comma-separated family:probe:scan:dose:split")
    parser.add_argument("--late", default="10,30,50", help="run: TV epochs at the end; evaluate: this bench's JSON files")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--bench", nargs="*", type=Path, default=[], help="evaluate: regularization_study.py JSON files")
    parser.add_argument("--criteria", type=Path, help="evaluate: consistency_check.py collect's folder")
    parser.add_argument("--tv-epochs", type=int, default=10, help="evaluate: the final's TV epochs")
    parser.add_argument("--rule", choices=("least", "largest"), default="least", help="final: the 1se rule's direction")
    parser.add_argument("--schedules", default="0.3x100,0x90+0.3x10,0x50+0.3x50,0.3x90+0x10,0.3x50+0x50",
                        help="phases: comma-separated schedules, each weight x epochs joined by +")
    parser.add_argument("--finals", nargs="*", type=Path, default=[], help="schedule: final's JSON files (largest rule)")
    args = parser.parse_args()
    if args.mode == "final":
        final(args)
        return
    if args.mode == "schedule":
        schedule(args)
        return
    if args.mode == "phases":
        phases(args)
        return
    if args.mode == "evaluate":
        args.late = [Path(p) for p in args.late.split(",")]
        evaluate(args)
        return
    rows = [one_dataset(spec, args.epochs, [int(v) for v in args.late.split(",")], args.scale)
            for spec in args.datasets.split(",")]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
