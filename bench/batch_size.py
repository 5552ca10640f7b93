"""Reconstruction quality against the LSQML batch size, per dose and split: the measurement behind the default.

    python bench/batch_size.py [--scale standard] [--epochs 100] [--batch-sizes 96,256,512,1024,all] [--device auto]

For each dose and split of the baseline view (``synthetic.simulate_split``), LSQML (``regularization: off``, the
spec's plain algorithm) at each batch size; a size at or above the dataset's pattern count is "all" and runs once.
Scored like the study (``quality.compare_to_truth``: the fair score, on the split's scan box): phase MAE and FRC
resolution, with each reconstruction's wall time. Then the rule of docs/PERFORMANCE.md: the largest batch whose
phase error at every dose, in both splits, is within 5 % of batch 96's or within the two splits' spread at 96,
whichever is larger.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fly64_assets.core.design import DOSES, SPLITS  # noqa: E402
from fly64_assets.core.lsqml import balanced_batch_size, reconstruct  # noqa: E402
from fly64_assets.core.options import ReconstructionOptions  # noqa: E402
from fly64_assets.core.quality import compare_to_truth  # noqa: E402
from fly64_assets.core.synthetic import simulate_split  # noqa: E402

TOLERANCE = 0.05


def measure(scale: str, epochs: int, sizes: list[int | None], device: str) -> dict:
    """{(dose, split): {batch label: (phase MAE, FRC px, seconds, effective batch)}}."""
    results = {}
    for dose in DOSES:
        for split in SPLITS:
            data = simulate_split(scale, dose, split)
            n = len(data["xcoords"])
            box = (data["ycoords"].min(), data["ycoords"].max(), data["xcoords"].min(), data["xcoords"].max())
            row, seen = {}, set()
            for size in sizes:
                batch = n if size is None or size >= n else size
                effective = balanced_batch_size(n, batch)
                if effective in seen:
                    continue
                seen.add(effective)
                options = ReconstructionOptions(epochs=epochs, batch_size=batch, regularization="off", device=device)
                result = reconstruct(data["diffraction"], data["probeGuess"], data["ycoords"], data["xcoords"], options)
                metrics = compare_to_truth(result.object, data["objectGuess"], result.object_origin_yx, box)
                label = "all" if batch == n else str(batch)
                row[label] = (metrics.phase_mae, metrics.frc_resolution_px, result.wall_time_s, effective)
                print(f"  {dose:>6} {split:5} batch {label:>5} (x{effective}): phase MAE {metrics.phase_mae:.4f}, "
                      f"FRC {metrics.frc_resolution_px:.2f} px, {result.wall_time_s:.1f} s", flush=True)
            results[(dose, split)] = row
    return results


def chosen_batch(results: dict) -> tuple[str, dict[str, bool]]:
    """The rule: the largest batch within tolerance of 96 at every dose in both splits."""
    labels = list(next(iter(results.values())))
    verdict = {}
    for label in labels:
        ok = True
        for dose in DOSES:
            reference = [results[(dose, split)]["96"][0] for split in SPLITS]
            spread = max(reference) - min(reference)
            for split in SPLITS:
                base = results[(dose, split)]["96"][0]
                here = results[(dose, split)].get(label, (np.inf,))[0]
                ok &= here <= base + max(TOLERANCE * base, spread)
        verdict[label] = ok
    passing = [label for label in labels if verdict[label]]
    return passing[-1], verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="standard")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-sizes", default="96,256,512,1024,all")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    sizes = [None if value == "all" else int(value) for value in args.batch_sizes.split(",")]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"machine: {platform.node()} · {device} · torch {torch.__version__}; scale {args.scale}, {args.epochs} epochs, "
          "baseline view, regularization off")
    results = measure(args.scale, args.epochs, sizes, args.device)
    labels = list(next(iter(results.values())))
    print()
    print("| dose | split | " + " | ".join(f"batch {label}: phase MAE / FRC px / s" for label in labels) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in labels) + " |")
    for (dose, split), row in results.items():
        cells = [f"{row[label][0]:.4f} / {row[label][1]:.2f} / {row[label][2]:.1f}" for label in labels]
        print(f"| {dose} | {split} | " + " | ".join(cells) + " |")
    choice, verdict = chosen_batch(results)
    print()
    print("within max(5 %, the splits' spread) of batch 96 at every dose and split: "
          + ", ".join(f"{label} {'yes' if ok else 'no'}" for label, ok in verdict.items()))
    print(f"largest such batch: {choice}")


if __name__ == "__main__":
    main()
