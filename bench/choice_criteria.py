"""Other truth-free criteria for the TV weight, measured against the study's one-standard-error rule (issue 20, item 2).

    python bench/choice_criteria.py collect bench.json [more.json ...] --out DIR [--what holdout,pure,pure_budget]
    python bench/choice_criteria.py evaluate bench.json [more.json ...] --out DIR [--json summary.json]
    python bench/choice_criteria.py stability summary.json [summary_other_holdout.json ...]

``collect`` re-runs, for every dataset of ``bench/regularization_study.py --json`` files (object family, probe,
scan, dose, split, epochs; demo scale), the parts of the choice a criterion needs, and saves per dataset an ``.npz``
in ``DIR``; ``evaluate`` applies every criterion to them and scores its pick with the truth errors of the bench
file's fixed-weight runs (no final reconstruction is run: the choice's error is the fixed run of the weight it
picks, as in ``--choice-only``), against issue 20's goals (``summarize_regularization.meets``).

What ``collect`` runs:

- ``holdout``: the study's cheap choice exactly (``core.regularization``: the same held-out set, 20 % shared + 10 %
  per candidate epochs on the kept patterns), keeping each candidate's predicted held-out patterns, and saves the
  Poisson deviance of every held-out pattern summed per 1-px ring of spatial frequency (distance from the DC pixel)
  with the counts per ring, plus the radial profiles of the mean measured pattern and of the probe's far field.
  Criteria from it reuse the study's candidate reconstructions, so they cost nothing extra (0.72 + 1 = 1.72x).
- ``pure``: Monte-Carlo PURE (Poisson unbiased risk estimate; Luisier, Vonesch, Blu & Unser, Signal Processing 90,
  415, 2010) and Efron's covariance-penalty estimate of the deviance (Efron, JASA 99, 619, 2004), with a
  Monte-Carlo divergence (Ramani, Blu & Unser, IEEE TIP 17, 1540, 2008): the candidates are reconstructed on all
  the patterns (shared start + candidates, the study's epochs), then again from counts perturbed by
  ``eps sqrt(n) b`` (b = +-1 at random, only where n > 0; same seed, same mini-batches) and the divergence
  ``sum_k y_k d f_k / d y_k`` is estimated by ``sum_k sqrt(y_k) b_k (f_k(y') - f_k(y)) / eps`` (f the predicted
  intensities). Cost: 2 x (20 + 6 x 10) = 160 full-data epochs + the final 100 = 2.6x one reconstruction.
- ``pure_budget``: the same with 10 shared + 5 per candidate epochs: 2 x 40 + 100 = 1.8x (within the 2x budget).
Saved per candidate and per 1-px ring: the data fit (Poisson deviance, squared intensity error), the counts and
the two divergence sums (weights y and y / f), so the estimates can be restricted to rings as well.
``--holdout-seed N`` (holdout): another held-out set (pty-chi's batching seed stays 0); ``--probe-seed N`` and
``--eps E`` (pure*): another Monte-Carlo probe b, another perturbation size (saved under other names).

The criteria (``criteria``; docs/SCIENCE.md, "Other criteria"): the study's rule and the lowest deviance; the held-out
deviance restricted to the rings beyond a radius ("outer", the dark field) or inside it ("inner", the bright field),
the radius taken from the probe guess's far field (the ring beyond which it stays below 1e-3 of its peak, or inside
which 99 % of its power lies), from the mean measured pattern (90 %, 99 % of the counts) or fixed (8, 16, 24 px),
each with the 1se rule; combinations (the rings weighted alike, inner and outer weighted alike, inner among the
outer-1se set, min / max of the two picks, the outer score where the dark field holds >= 100 counts per held-out
pattern); the rule in Hastie et al.'s direction (the largest weight within one standard error); the 2-se rule;
"none unless the spread of the mean deviances exceeds X"; and from the pure passes, per pattern
``sum_k (f_k - y_k)^2 - y_k + 2 y_k df_k/dy_k`` (PURE of the intensity MSE, up to a constant), Efron's
``sum_k dev_k + 2 (y_k / f_k) df_k/dy_k`` (the deviance's prediction error), the GCV of the deviance, each with
the lowest or the 1se rule, and the intensity fit without its divergence (a control).
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

from fly64_assets.core.lsqml import reconstruct
from fly64_assets.core.options import ReconstructionOptions, Regularization
from fly64_assets.core.regularization import (
    CANDIDATES,
    candidate_epochs_for,
    holdout_mask,
    predict_intensities,
)
from fly64_assets.core.synthetic import simulate_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularization_study import BENCH_SCALES
from summarize_regularization import TV, WEIGHTS, meets

N_RINGS = 46  # distance from the DC pixel of a 64 x 64 pattern, rounded down: 0 ... 45
EPS = 0.1  # the perturbation, in units of each pixel's Poisson standard deviation sqrt(n)


def ring_index(size: int = 64) -> np.ndarray:
    """(size, size) ring number of each pixel of a DC-centred pattern (DC at size // 2)."""
    k = np.arange(size) - size // 2
    return np.minimum(np.floor(np.hypot(k[:, None], k[None, :])).astype(int), N_RINGS - 1)


RINGS = ring_index()


def per_ring(values: np.ndarray) -> np.ndarray:
    """(n, h, w) -> (n, N_RINGS): the sum of each pattern's pixels per ring."""
    flat = values.reshape(values.shape[0], -1)
    out = np.zeros((values.shape[0], N_RINGS))
    for r in range(N_RINGS):
        out[:, r] = flat[:, RINGS.ravel() == r].sum(1)
    return out


def deviance_map(n: np.ndarray, mu: np.ndarray) -> np.ndarray:
    mu = np.maximum(mu, 1e-9)
    log_term = np.where(n > 0, n * np.log(np.where(n > 0, n, 1.0) / mu), 0.0)
    return 2.0 * (log_term - (n - mu))


def radial_profile(image: np.ndarray) -> np.ndarray:
    return np.array([image[RINGS == r].mean() for r in range(N_RINGS)])


def key(row: dict) -> str:
    return f"{row['family']}_{row['probe']}_{row['scan']}_{row['dose']}_{row['split']}"


def candidates_run(amplitudes, probe_guess, ycoords, xcoords, options, use, shared_epochs, candidate_epochs,
                   members: int | None = None):
    """The study's candidate schedule (shared unregularized start, then each weight, or the first ``members``):
    the candidate results."""
    shared = reconstruct(amplitudes, probe_guess, ycoords, xcoords,
                         options.model_copy(update={"regularization": Regularization.off, "epochs": shared_epochs}),
                         cpu_threads=1, use_patterns=use)
    results = []
    for member in CANDIDATES[:members]:
        results.append(reconstruct(amplitudes, probe_guess, ycoords, xcoords,
                                   options.model_copy(update={"regularization": member, "epochs": candidate_epochs}),
                                   cpu_threads=1, use_patterns=use, initial_object=shared.object,
                                   initial_probe=shared.probe))
    return results


def collect_holdout(arrays, epochs: int, holdout_seed: int | None = None) -> dict:
    amplitudes = np.asarray(arrays["diffraction"])
    y, x = np.asarray(arrays["ycoords"], float), np.asarray(arrays["xcoords"], float)
    options = ReconstructionOptions(epochs=epochs, device="cpu", regularization=Regularization.off)
    seed = options.random_seed if holdout_seed is None else holdout_seed  # another held-out set, same batching
    held = holdout_mask(len(amplitudes), options.holdout_percent, seed)
    shared, candidate = candidate_epochs_for(epochs)
    results = candidates_run(amplitudes, arrays["probeGuess"], y, x, options, ~held, shared, candidate)
    counts = np.square(amplitudes[held].astype(np.float64))
    deviance = []
    for result in results:
        mu = predict_intensities(result.object, result.probe, result.object_origin_yx, y[held], x[held])
        deviance.append(per_ring(deviance_map(counts, mu)))
    probe = np.asarray(arrays["probeGuess"], np.complex128)
    far = np.fft.fftshift(np.abs(np.fft.fft2(probe)) ** 2)
    return {"held_ring_deviance": np.array(deviance), "held_ring_counts": per_ring(counts),
            "mean_pattern_profile": radial_profile(np.mean(np.square(amplitudes.astype(np.float64)), 0)),
            "probe_far_field_profile": radial_profile(far), "ring_pixels": np.bincount(RINGS.ravel(), minlength=N_RINGS)}


def perturbed_counts(amplitudes: np.ndarray, seed: int, eps: float = EPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, the amplitudes of counts + eps sqrt(counts) b, b): b = +-1 at random where counts > 0."""
    counts = np.rint(np.square(amplitudes.astype(np.float64)))
    rng = np.random.default_rng(seed + 12345)
    b = rng.choice([-1.0, 1.0], size=counts.shape) * (counts > 0)
    return counts, np.sqrt(np.maximum(counts + eps * np.sqrt(counts) * b, 0.0)).astype(amplitudes.dtype), b


def collect_pure(arrays, epochs: int, shared: int, candidate: int, seed: int = 0, eps: float = EPS) -> dict:
    amplitudes = np.asarray(arrays["diffraction"])
    y, x = np.asarray(arrays["ycoords"], float), np.asarray(arrays["xcoords"], float)
    options = ReconstructionOptions(epochs=epochs, device="cpu", regularization=Regularization.off)
    counts, perturbed, b = perturbed_counts(amplitudes, seed, eps)
    plain = candidates_run(amplitudes, arrays["probeGuess"], y, x, options, None, shared, candidate)
    moved = candidates_run(perturbed, arrays["probeGuess"], y, x, options, None, shared, candidate)
    out = {k: [] for k in ("fit_deviance", "fit_sq_error", "div_intensity", "div_log")}
    for a, c in zip(plain, moved):
        f = predict_intensities(a.object, a.probe, a.object_origin_yx, y, x)
        g = predict_intensities(c.object, c.probe, c.object_origin_yx, y, x)
        change = np.sqrt(counts) * b * (g - f) / eps  # y_k d f_k / d y_k, one Monte-Carlo probe, per pixel
        out["fit_deviance"].append(per_ring(deviance_map(counts, f)))
        out["fit_sq_error"].append(per_ring((f - counts) ** 2 - counts))
        out["div_intensity"].append(per_ring(change))
        out["div_log"].append(per_ring(change / np.maximum(f, 1e-9)))
    return {k: np.array(v) for k, v in out.items()} | {"counts_rings": per_ring(counts),
                                                       "pure_epochs": np.array([shared, candidate])}


def load_rows(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        saved = json.loads(path.read_text())
        for row in saved["rows"]:
            row.setdefault("probe", saved.get("probe", "focused"))
            row.setdefault("scan", saved.get("scan", "raster"))
            row.setdefault("epochs", saved.get("epochs"))
            row.setdefault("family", "default")
            rows.append(row)
    return rows


def collect(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    what = set(args.what.split(","))
    for row in load_rows(args.bench_json):
        path = args.out / f"{key(row)}.npz"
        saved = dict(np.load(path)) if path.exists() else {}
        arrays = simulate_split(BENCH_SCALES[args.scale], row["dose"], row["split"], family=row["family"],
                                probe=row["probe"], scan=row["scan"])
        epochs = args.epochs or row["epochs"]
        timings = {}
        if "holdout" in what and "held_ring_deviance" not in saved:
            began = time.perf_counter()
            saved |= collect_holdout(arrays, epochs, args.holdout_seed)
            timings["holdout"] = time.perf_counter() - began
        for name, (shared, candidate) in (("pure", candidate_epochs_for(epochs)), ("pure_budget", (10, 5))):
            if name not in what:
                continue
            if args.probe_seed:
                name = f"{name}_s{args.probe_seed}"
            if args.eps != EPS:
                name = f"{name}_e{args.eps:g}"
            if f"{name}_fit_deviance" not in saved:
                began = time.perf_counter()
                saved |= {f"{name}_{k}": v for k, v in
                          collect_pure(arrays, epochs, shared, candidate, args.probe_seed, args.eps).items()}
                timings[name] = time.perf_counter() - began
        for name, seconds in timings.items():
            saved[f"wall_{name}"] = np.array(seconds)
        np.savez(path, **saved)
        print(f"{key(row)}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), flush=True)


# ---------------------------------------------------------------------------------------------------- criteria


def one_se(per_pattern: np.ndarray, tolerance: float = 1.0) -> int:
    """(candidates, patterns) scores, lower better: the least regularized within ``tolerance`` standard errors of
    the lowest mean (paired differences), as ``regularization.one_standard_error_rule``."""
    means = per_pattern.mean(1)
    lowest = int(np.argmin(means))
    excess = per_pattern - per_pattern[lowest]
    error = excess.std(1, ddof=1) / math.sqrt(per_pattern.shape[1])
    return int(min(i for i in range(len(means)) if excess[i].mean() <= tolerance * error[i]))


def _within(per_pattern: np.ndarray, tolerance: float = 1.0) -> list[int]:
    means = per_pattern.mean(1)
    lowest = int(np.argmin(means))
    excess = per_pattern - per_pattern[lowest]
    error = excess.std(1, ddof=1) / math.sqrt(per_pattern.shape[1])
    return [i for i in range(len(means)) if excess[i].mean() <= tolerance * error[i]]


def largest_within_se(per_pattern: np.ndarray, tolerance: float = 1.0) -> int:
    """The most regularized candidate within ``tolerance`` standard errors of the lowest (ESL's direction)."""
    means = per_pattern.mean(1)
    lowest = int(np.argmin(means))
    excess = per_pattern - per_pattern[lowest]
    error = excess.std(1, ddof=1) / math.sqrt(per_pattern.shape[1])
    return int(max(i for i in range(len(means)) if excess[i].mean() <= tolerance * error[i]))


def enclosing_radius(profile: np.ndarray, pixels: np.ndarray, fraction: float) -> int:
    """The first ring inside which ``fraction`` of the profile's total power lies."""
    power = np.cumsum(profile * pixels)
    return int(np.searchsorted(power / power[-1], fraction))


def level_radius(profile: np.ndarray, level: float) -> int:
    """The first ring beyond which the profile stays below ``level`` of its peak."""
    above = np.nonzero(profile >= level * profile.max())[0]
    return int(above.max()) + 1


def criteria(data: dict, row: dict) -> dict[str, tuple[str, str]]:
    """Each criterion's pick (a WEIGHTS name) and a note (e.g. the radius used)."""
    picks: dict[str, tuple[str, str]] = {}
    if "held_ring_deviance" in data:
        rings = data["held_ring_deviance"]  # (candidates, held patterns, rings)
        pixels = data["ring_pixels"]
        whole = rings.sum(2) / 4096
        picks["1se (study)"] = (WEIGHTS[one_se(whole)], "")
        picks["lowest"] = (WEIGHTS[int(np.argmin(whole.mean(1)))], "")
        radii = {
            "probe 99 %": enclosing_radius(data["probe_far_field_profile"], pixels, 0.99),
            "probe 1e-3": level_radius(data["probe_far_field_profile"], 1e-3),
            "data 90 %": enclosing_radius(data["mean_pattern_profile"], pixels, 0.90),
            "data 99 %": enclosing_radius(data["mean_pattern_profile"], pixels, 0.99),
            "r 8": 8, "r 16": 16, "r 24": 24,
        }
        for name, radius in radii.items():
            outer = rings[:, :, radius:].sum(2) / pixels[radius:].sum()
            picks[f"outer 1se, {name}"] = (WEIGHTS[one_se(outer)], f"r>={radius}")
            inner = rings[:, :, :radius].sum(2) / pixels[:radius].sum()
            picks[f"inner 1se, {name}"] = (WEIGHTS[one_se(inner)], f"r<{radius}")
            if name == "probe 99 %":
                picks[f"outer lowest, {name}"] = (WEIGHTS[int(np.argmin(outer.mean(1)))], f"r>={radius}")
                picks[f"inner lowest, {name}"] = (WEIGHTS[int(np.argmin(inner.mean(1)))], f"r<{radius}")
        # bright field decides how much noise to remove, the dark field vetoes what blurs detail: the inner-score
        # pick among the weights the outer (r >= probe 1e-3 radius) score does not show worse than its lowest
        r_out = radii["probe 1e-3"]
        outer = rings[:, :, r_out:].sum(2) / pixels[r_out:].sum()
        inner = rings[:, :, :r_out].sum(2) / pixels[:r_out].sum()
        allowed = [i for i in range(len(WEIGHTS)) if i in _within(outer)]
        picks["inner lowest among outer-1se"] = (WEIGHTS[min(allowed, key=lambda i: inner[i].mean())], "")
        picks["inner 1se among outer-1se"] = (WEIGHTS[allowed[one_se(inner[allowed])]], "")
        # every ring (spatial frequency) weighted alike: each ring's deviance over its mean across candidates and
        # patterns, summed; and the bright and dark field weighted alike
        ring_mean = rings.mean((0, 1))
        used = ring_mean > 0
        picks["1se, rings weighted alike"] = (WEIGHTS[one_se((rings[:, :, used] / ring_mean[used]).sum(2))], "")
        halves = inner / inner.mean() + outer / outer.mean()
        picks["1se, bright and dark field weighted alike"] = (WEIGHTS[one_se(halves)], "")
        dark_counts = data["held_ring_counts"][:, r_out:].sum(1).mean()
        picks["outer 1se if >= 100 dark-field counts per pattern, else 1se"] = (
            WEIGHTS[one_se(outer)] if dark_counts >= 100 else WEIGHTS[one_se(whole)], f"{dark_counts:.0f} counts")
        picks["min(inner 1se, outer 1se)"] = (WEIGHTS[min(one_se(inner), one_se(outer))], "")
        picks["max(inner 1se, outer 1se)"] = (WEIGHTS[max(one_se(inner), one_se(outer))], "")
        # the classic direction of the rule (Hastie et al.: the most parsimonious model within one standard error)
        picks["largest w within 1se"] = (WEIGHTS[largest_within_se(whole)], "")
        # 1se, but none unless the held-out evidence is clear AND the spread of the mean deviances exceeds X
        means = whole.mean(1)
        spread = (means.max() - means.min()) / means.min()
        chosen = WEIGHTS[one_se(whole)]
        for x in (0.05, 0.1, 0.2):
            picks[f"1se, none if spread < {x:g}"] = (chosen if spread >= x else "off", f"spread {spread:.3f}")
        for t in (2.0,):
            picks[f"{t:g}-se rule"] = (WEIGHTS[one_se(whole, t)], "")
    for name in sorted({k[: -len("_fit_deviance")] for k in data if k.endswith("_fit_deviance")}):
        fit_dev, fit_sq = data[f"{name}_fit_deviance"], data[f"{name}_fit_sq_error"]  # (cand, patterns, rings)
        div_i, div_l = data[f"{name}_div_intensity"], data[f"{name}_div_log"]
        pure = (fit_sq + 2 * div_i).sum(2)  # per pattern: PURE of the intensity MSE (up to a constant)
        efron = (fit_dev + 2 * div_l).sum(2)  # per pattern: the deviance's covariance-penalty estimate
        tag = {"pure": "PURE", "pure_budget": "PURE (budget)"}.get(name, name)
        picks[f"{tag}: intensity fit alone (no divergence), 1se"] = (WEIGHTS[one_se(fit_sq.sum(2))], "")
        picks[f"{tag}: intensity MSE, lowest"] = (WEIGHTS[int(np.argmin(pure.mean(1)))], "")
        picks[f"{tag}: intensity MSE, 1se"] = (WEIGHTS[one_se(pure)], "")
        picks[f"{tag}: deviance (Efron), lowest"] = (WEIGHTS[int(np.argmin(efron.mean(1)))], "")
        picks[f"{tag}: deviance (Efron), 1se"] = (WEIGHTS[one_se(efron)], "")
        # generalized cross-validation of the deviance (Golub, Heath & Wahba 1979; randomized trace: Girard 1989)
        n_pix = fit_dev.shape[1] * 4096
        df = div_l.sum((1, 2))
        gcv = fit_dev.sum((1, 2)) / n_pix / (1 - df / n_pix) ** 2
        picks[f"{tag}: GCV of the deviance, lowest"] = (WEIGHTS[int(np.argmin(gcv))], f"df/N {df.max() / n_pix:.3f}")
        r = 16
        outer = (fit_dev + 2 * div_l)[:, :, r:].sum(2)
        picks[f"{tag}: deviance (Efron) r>=16, 1se"] = (WEIGHTS[one_se(outer)], "")
    return picks


def evaluate(args) -> None:
    rows = load_rows(args.bench_json)
    tally: dict[str, dict] = {}
    details = []
    for row in rows:
        path = args.out / f"{key(row)}.npz"
        if not path.exists():
            continue
        data = dict(np.load(path))
        fixed = row["fixed"]
        mae = {w: fixed[w]["phase_mae"] for w in WEIGHTS}
        none, best_w = mae["off"], min(WEIGHTS, key=mae.get)
        best = mae[best_w]
        picks = criteria(data, row)
        if "1se (study)" in picks and picks["1se (study)"][0] != row["auto"]["chosen"]:
            print(f"note: {key(row)}: re-run 1se picks {picks['1se (study)'][0]}, the bench file {row['auto']['chosen']}")
        hard = row["probe"] == "aperture" and row["scan"] == "random"
        for name, (w, note) in picks.items():
            t = tally.setdefault(name, {"bench": {1000: [0, 0], 10000: [0, 0], 100000: [0, 0]}, "hard": [0, 0],
                                        "misses": []})
            ok = meets(row["dose"], mae[w], none, best)
            if hard:
                t["hard"][0] += ok
                t["hard"][1] += 1
            else:
                t["bench"][row["dose"]][0] += ok
                t["bench"][row["dose"]][1] += 1
            t.setdefault("regret", []).append(100 * (mae[w] / best - 1))
            t.setdefault("gain", []).append(100 * (mae[w] / none - 1))
            if not ok:
                t["misses"].append(f"{'hard ' if hard else ''}{row['family']} {row['dose']:g} {row['split']}: "
                                   f"{TV[w]:g} ({100 * (mae[w] / none - 1):+.1f} % vs none, "
                                   f"{100 * (mae[w] / best - 1):+.1f} % vs best {TV[best_w]:g})")
        details.append({"dataset": key(row), "none": none, "best": [best_w, best],
                        "picks": {n: [w, note, mae[w]] for n, (w, note) in picks.items()}})
    print("| criterion | 1e3 | 1e4 | 1e5 | bench (36) | hard case (6) | mean vs truth-best | mean vs none | worst vs "
          "truth-best | misses |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, t in tally.items():
        per = [t["bench"][d] for d in (1000, 10000, 100000)]
        total = [sum(p[0] for p in per), sum(p[1] for p in per)]
        print(f"| {name} | " + " | ".join(f"{a}/{b}" for a, b in per) + f" | {total[0]}/{total[1]} | "
              f"{t['hard'][0]}/{t['hard'][1]} | {np.mean(t['regret']):+.1f} % | {np.mean(t['gain']):+.1f} % | "
              f"{np.max(t['regret']):+.1f} % | " + "; ".join(t["misses"]) + " |")
    if args.json:
        args.json.write_text(json.dumps({"tally": tally, "datasets": details}, indent=1, default=float))


def stability(paths: list[Path]) -> None:
    """One line per criterion over several ``evaluate --json`` files (e.g. other held-out sets): goals met of all
    datasets, of the hard case, the mean error against the truth-best weight and against none, per file."""
    runs = [json.loads(path.read_text())["tally"] for path in paths]
    print("| criterion | goals met, all (per file) | hard case | mean vs truth-best | mean vs none |")
    print("|---|---|---|---|---|")
    for name in runs[0]:
        cells = [[], [], [], []]
        for tally in runs:
            t = tally.get(name)
            if t is None:
                continue
            ok = sum(v[0] for v in t["bench"].values()) + t["hard"][0]
            n = sum(v[1] for v in t["bench"].values()) + t["hard"][1]
            cells[0].append(f"{ok}/{n}")
            cells[1].append(f"{t['hard'][0]}/{t['hard'][1]}")
            cells[2].append(f"{np.mean(t['regret']):+.1f}")
            cells[3].append(f"{np.mean(t['gain']):+.1f}")
        print(f"| {name} | " + " | ".join(", ".join(c) for c in cells) + " |")


def main() -> None:
    if sys.argv[1:2] == ["stability"]:
        stability([Path(a) for a in sys.argv[2:]])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("collect", "evaluate"))
    parser.add_argument("bench_json", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder of the per-dataset .npz files")
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--epochs", type=int, default=0, help="0: the bench file's")
    parser.add_argument("--what", default="holdout", help="comma-separated: holdout,pure,pure_budget")
    parser.add_argument("--holdout-seed", type=int, default=None,
                        help="collect holdout: another held-out set (pty-chi's batching seed stays 0)")
    parser.add_argument("--probe-seed", type=int, default=0,
                        help="collect pure*: another Monte-Carlo probe b (saved as pure*_s<seed>)")
    parser.add_argument("--eps", type=float, default=EPS, help="collect pure*: the perturbation (saved as pure*_e<eps>)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    collect(args) if args.mode == "collect" else evaluate(args)


if __name__ == "__main__":
    main()
