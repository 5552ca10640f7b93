"""Hand-made quality records with known answers, for the report's tests: two replicates (train, test) whose
resolution follows an exact power law of the dose, sparse skipped everywhere."""

from __future__ import annotations

import numpy as np

from fly64_assets.core.design import ALL_DATASETS

PHASE_MAE = {  # (dose, view) -> (train, test), radians
    (1000, "baseline"): (0.30, 0.34),
    (10000, "baseline"): (0.20, 0.21),
    (100000, "baseline"): (0.10, 0.12),
    (1000, "dense"): (0.40, 0.44),
    (10000, "dense"): (0.25, 0.27),
    (100000, "dense"): (0.15, 0.16),
}
EXPONENTS = {"train": -0.22, "test": -0.28}
"""Each split an exact power law: the replicate fit is -0.25 ± 0.03."""


def hand_made_records(exponents: dict[str, float] = EXPONENTS, noise: float = 0.0, seed: int = 0) -> list[dict]:
    """Baseline and dense scored in both splits (phase MAE from PHASE_MAE, resolution 40 * D**exponent of the
    split, times exp(noise * N(0, 1))); sparse skipped everywhere."""
    rng = np.random.default_rng(seed)
    records = []
    for job in ALL_DATASETS:
        record = {"dose": job.dose, "view": job.view, "split": job.split}
        if job.view == "sparse":
            record.update(status="skipped", reason="sparse view not written by Phase D")
        else:
            resolution = 40.0 * job.dose ** exponents[job.split] * float(np.exp(noise * rng.standard_normal()))
            mae = PHASE_MAE[(job.dose, job.view)][0 if job.split == "train" else 1]
            record.update(
                status="succeeded",
                n_patterns=98,
                phase_mae=mae,
                amplitude_mae=mae / 2,
                phase_ssim=1.0 - mae,
                amplitude_ssim=1.0 - mae / 2,
                phase_psnr=30.0 * (1 - mae),
                amplitude_psnr=32.0 * (1 - mae),
                frc_resolution_px=resolution,
                frc_resolution_fraction=2.0 / resolution,
            )
        records.append(record)
    return records
