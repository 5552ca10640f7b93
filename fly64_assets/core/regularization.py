"""Choosing the object's total-variation (TV) weight per dataset without the ground truth.

Why: at low dose an unregularized LSQML reconstruction fits the photon noise, and a TV step after each epoch
removes much of it; at high dose the same weight blurs real detail. The right weight follows the dose (and the
overlap, the object, the probe), so it is chosen from the data themselves, the way it would be on real data:

1. Hold out a seeded random ``holdout_percent`` of the patterns.
2. Reconstruct on the rest once per candidate weight (0 = no regularization among them). To keep this cheap
   the candidates share an unregularized start (20 % of the epochs, on the kept patterns), then each
   candidate continues from that object and probe for 10 % of the epochs with its own weight. The candidates
   are independent of each other: on a dask cluster each is a task of its own, run at once (``CandidateMap``).
3. Predict each held-out pattern from each candidate's object and probe, with pty-chi's forward model
   (``|FFT(probe x object window)|^2``, DC-centred like the files) and score the prediction against the
   measured counts by the Poisson deviance (the photon-counting likelihood, zero for a perfect fit).
4. Keep the **most** regularized candidate whose deviance is within one standard error of the lowest (the
   one-standard-error rule of Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, 7.10: the
   simplest model, here the smoothest object, that the held-out data cannot tell from the best; the paired
   per-pattern differences give the errors), and reconstruct the final result on every pattern, from scratch,
   for the options' full number of epochs: unregularized, then the chosen weight in the last 10 % of them
   (``tv_last_epochs``), the same TV phase after unregularized epochs that the candidates were scored with.

Why TV only at the end: TV also slows the convergence of the object's smooth, low-frequency phase, which the short
candidates cannot show; on a smooth field at high dose TV in every epoch cost up to +7.6 % where no weight helps,
and the held-out patterns still preferred a weight. With the late TV phase no measured pick was worse than none by
more than 2.9 % (72 datasets; the smooth field at 1e5), most of the low-dose gain stays, and the rule can lean
towards the smoother object, which the low doses need (docs/SCIENCE.md, "TV in the last epochs"). Regularization
is a bias that the spec's plain LSQML does not have: ``off`` stays one option away.

The record says how decisive the held-out evidence was (``choice_evidence``): ``flat`` when every candidate
scored within one standard error of the lowest, i.e. the data could not tell the weights apart and the kept
weight is only the rule's default (issue 20: on some object families the held-out deviance varies by under 3 %
across a 100-fold range of weights); the report marks such a choice.

A held-out pattern tests a candidate only where the other patterns' probes lit the object under it; in a scan
with little overlap nothing can be validated, and ``auto`` then reconstructs without regularization and records
why (``MIN_COVERAGE``), as it does for a dataset with too few patterns to spare any (``MIN_PATTERNS``).

The measurements behind the method and its cost are in docs/SCIENCE.md. No Dagster here; torch and pty-chi are
only imported by ``core.lsqml`` when a reconstruction runs.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from fly64_assets.core.coverage import LIT_LEVEL, illumination, probe_intensity, window_starts
from fly64_assets.core.lsqml import (
    EpochCallback,
    ReconstructionResult,
    SnapshotCallback,
    reconstruct,
)
from fly64_assets.core.options import ReconstructionOptions, Regularization

log = logging.getLogger(__name__)
"""The choice's progress (a reconstruction's log file captures it): it runs before the final reconstruction's
epochs, for 0.72x as long."""

CANDIDATES: tuple[Regularization, ...] = (
    Regularization.off,
    Regularization.tv_0_003,
    Regularization.tv_0_01,
    Regularization.tv_0_03,
    Regularization.tv_0_1,
    Regularization.tv_0_3,
)
"""The weights ``auto`` compares: none and every fixed weight of the grid (0.003 ... 0.3)."""

SHARED_FRACTION = 0.2
"""Unregularized epochs the candidates start from, as a fraction of the options' epochs (20 of 100). Measured: the
choice agrees with the one made from candidates reconstructed from scratch for all 100 epochs (docs/SCIENCE.md)."""
CANDIDATE_FRACTION = 0.1
"""Epochs of each candidate after the shared start, as a fraction of the options' epochs (10 of 100)."""
HOLDOUT_SEED_KEY = 7919
"""Mixed with the options' random_seed so the held-out set does not depend on pty-chi's own batching stream."""
MIN_PATTERNS = 20
"""Fewer patterns than this: nothing can be held out without hurting the reconstruction; no regularization."""
MIN_COVERAGE = 0.5
"""A held-out pattern can only judge a candidate where the kept patterns' probes lit the object under it. Below
this mean ``held_out_coverage`` (a scan with little overlap, like the study's dense and sparse views) the choice
cannot be validated, so ``auto`` falls back to no regularization and says so."""


@dataclass(frozen=True)
class CandidateScore:
    """One candidate weight, scored on the held-out patterns."""

    regularization: str
    tv_weight: float
    poisson_deviance: float
    """Mean over held-out pixels of 2 (n log(n / mu) - (n - mu)), n the measured counts, mu the prediction."""
    pattern_deviances: list[float]
    """The same mean per held-out pattern (in held-out order): the paired differences between candidates."""
    amplitude_mse: float
    """Mean over held-out pixels of (sqrt(mu) - sqrt(n))^2: the Gaussian (amplitude) model's score, for comparison."""
    wall_time_s: float
    ran_on: dict = field(default_factory=dict)
    """host and pid of the process that reconstructed this candidate (a dask worker's, when they run as tasks)."""
    excess_over_lowest: float = 0.0
    """Mean over the held-out patterns of this candidate's deviance minus the lowest-scoring candidate's."""
    excess_standard_error: float = 0.0
    """Standard error of that mean (paired differences); the rule keeps the most regularized candidate whose
    excess is at most one standard error."""


@dataclass(frozen=True)
class RegularizationChoice:
    """The record of one truth-free choice: what was compared, how it scored, what was kept, what it cost."""

    chosen: str
    chosen_tv_weight: float
    lowest_deviance: str | None
    """The candidate with the lowest mean held-out deviance (None without a choice); the chosen one is the most
    regularized within one standard error of it (``one_standard_error_rule``)."""
    candidates: list[CandidateScore]
    n_patterns: int
    n_held_out: int
    holdout_seed: int
    held_out_coverage: float
    """``held_out_coverage`` of the held-out set (about 1: every held-out window overlapped by the kept scan)."""
    shared_epochs: int
    candidate_epochs: int
    final_epochs: int
    final_tv_epochs: int
    """The final reconstruction's last epochs in which the chosen weight acted (its ``tv_last_epochs``)."""
    epochs_spent: int
    """Pattern-epochs of every reconstruction, in units of full-data epochs (kept fraction x epochs for the
    candidates), including the final reconstruction."""
    cost_factor: float
    """``epochs_spent / final_epochs``: the cost relative to one fixed-weight reconstruction."""
    choice_wall_time_s: float
    """Wall time of the choice (shared start, candidates, scoring)."""
    final_wall_time_s: float
    wall_time_s: float
    """Choice plus final reconstruction."""
    notes: list[str] = field(default_factory=list)
    evidence: str = ""
    """How decisive the held-out scores were (``choice_evidence``): ``"flat"`` when every candidate scored within
    one standard error of the lowest (the data could not tell the weights apart, so the choice is the rule's
    default, the most regularized), ``"clear"`` otherwise; empty when no choice was made."""
    deviance_spread: float = 0.0
    """(highest - lowest) / lowest of the candidates' mean held-out deviances: how much the weights mattered to
    the held-out patterns at all (0 when no choice was made)."""

    def as_dict(self) -> dict:
        """Plain JSON values, for the reconstruction record and the partition's metadata."""
        return asdict(self)

    def summary(self) -> str:
        if not self.candidates:
            return "; ".join(self.notes)
        scores = ", ".join(
            f"{c.tv_weight:g}: {c.poisson_deviance:.6g} (+{c.excess_over_lowest:.2g} ± {c.excess_standard_error:.2g})"
            for c in self.candidates
        )
        flat = " (flat evidence: every candidate within one standard error of the lowest)" if self.evidence == FLAT else ""
        return (
            f"TV weight {self.chosen_tv_weight:g}{flat} chosen on {self.n_held_out} held-out patterns (the final "
            f"reconstruction regularized in its last {self.final_tv_epochs} of {self.final_epochs} epochs), the most "
            f"regularized within one standard error of the lowest ({self.lowest_deviance}); Poisson deviance per pixel (excess over the "
            f"lowest ± its standard error) {scores}; cost {self.cost_factor:.2f}x one reconstruction, {self.wall_time_s:.1f} s"
        )


def holdout_mask(n_patterns: int, percent: int, seed: int | None) -> np.ndarray:
    """Boolean (n,): True for the held-out patterns, a seeded random ``percent`` of them (at least one, and at
    least one kept)."""
    if n_patterns < 2:
        raise ValueError(f"choosing a regularization needs at least 2 patterns, got {n_patterns}")
    n_out = min(n_patterns - 1, max(1, round(n_patterns * percent / 100)))
    rng = np.random.default_rng(np.random.SeedSequence([HOLDOUT_SEED_KEY, 0 if seed is None else seed]))
    held = np.zeros(n_patterns, dtype=bool)
    held[rng.choice(n_patterns, size=n_out, replace=False)] = True
    return held


def held_out_coverage(probe: np.ndarray, ycoords: np.ndarray, xcoords: np.ndarray, held: np.ndarray) -> float:
    """Mean over the held-out positions of the fraction of their probe's intensity that falls on object pixels
    lit by the kept positions' probes (``coverage.illumination`` at least ``LIT_LEVEL`` of the probe's peak):
    about 1 for an overlapping raster, near 0 when the positions are farther apart than the probe is wide."""
    intensity = probe_intensity(probe)
    size = intensity.shape[-1]
    kept_map, (oy, ox) = illumination(probe, ycoords, xcoords, lighting=~held)
    lit = kept_map >= LIT_LEVEL * intensity.max()
    starts_y = window_starts(np.asarray(ycoords, float)[held], size) - oy
    starts_x = window_starts(np.asarray(xcoords, float)[held], size) - ox
    fractions = [np.sum(intensity * lit[y : y + size, x : x + size]) / np.sum(intensity) for y, x in zip(starts_y, starts_x)]
    return float(np.mean(fractions))


def _fourier_shift(patches: np.ndarray, shift_yx: np.ndarray) -> np.ndarray:
    """Shift each (h, w) patch by its own sub-pixel ``shift_yx`` (out[i] = patch[i - shift]), periodic."""
    fy = np.fft.fftfreq(patches.shape[-2])[None, :, None]
    fx = np.fft.fftfreq(patches.shape[-1])[None, None, :]
    ramp = np.exp(-2j * np.pi * (fy * shift_yx[:, 0, None, None] + fx * shift_yx[:, 1, None, None]))
    return np.fft.ifft2(np.fft.fft2(patches) * ramp)


def object_windows(
    obj: np.ndarray, origin_yx: tuple[float, float], ycoords: np.ndarray, xcoords: np.ndarray, size: int
) -> np.ndarray:
    """The (n, size, size) object windows under the probe at each position, as pty-chi cuts them.

    Positions are probe centres in the input frame (``objectGuess`` pixels); ``obj[i, j]`` lies at
    ``origin_yx + (i, j)``. A window's first pixel is ``centre - (size - 1) / 2``; on the pixel grid (the
    synthetic case) it is cut as is, otherwise cut one pixel wider and moved by the fraction with a Fourier
    shift, as pty-chi's ``extract_patches_fourier_shift`` does.
    """
    starts = np.stack([np.asarray(ycoords, float) - origin_yx[0], np.asarray(xcoords, float) - origin_yx[1]], 1)
    starts = starts - (size - 1) / 2
    whole = np.floor(starts + 1e-6).astype(np.int64)
    fraction = starts - whole
    on_grid = bool(np.all(np.abs(fraction) < 1e-6))
    pad = 0 if on_grid else 1
    first = whole - pad
    width = size + 2 * pad
    if first.min() < 0 or (first[:, 0] + width).max() > obj.shape[-2] or (first[:, 1] + width).max() > obj.shape[-1]:
        raise ValueError("a position's window reaches outside the reconstructed object")
    offsets = np.arange(width)
    windows = obj[first[:, 0, None, None] + offsets[None, :, None], first[:, 1, None, None] + offsets[None, None, :]]
    if on_grid:
        return windows.astype(np.complex128)
    shifted = _fourier_shift(windows.astype(np.complex128), -fraction)
    return shifted[:, pad:-pad, pad:-pad]


def predict_intensities(
    obj: np.ndarray, probe: np.ndarray, origin_yx: tuple[float, float], ycoords: np.ndarray, xcoords: np.ndarray
) -> np.ndarray:
    """Predicted patterns (n, h, w), DC-centred like the files: ``fftshift(sum_modes |fft2(probe_m x window)|^2)``
    (pty-chi's far field: unnormalised FFT). ``probe`` is (h, w) or (modes, h, w)."""
    probe = np.asarray(probe, dtype=np.complex128).reshape(-1, *np.shape(probe)[-2:])
    windows = object_windows(obj, origin_yx, ycoords, xcoords, probe.shape[-1])
    intensity = np.zeros(windows.shape, dtype=np.float64)
    for mode in probe:
        intensity += np.abs(np.fft.fft2(mode[None] * windows)) ** 2
    return np.fft.fftshift(intensity, axes=(-2, -1))


def pattern_deviances(counts: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Poisson deviance per pixel, ``2 (n log(n / mu) - (n - mu))`` (n log n = 0 at n = 0), averaged over each
    pattern's pixels: (n_patterns,) from (n_patterns, h, w)."""
    n = np.asarray(counts, dtype=np.float64)
    mu = np.maximum(np.asarray(predicted, dtype=np.float64), 1e-9)
    log_term = np.where(n > 0, n * np.log(np.where(n > 0, n, 1.0) / mu), 0.0)
    return np.mean(2.0 * (log_term - (n - mu)), axis=(-2, -1))


def amplitude_mse(counts: np.ndarray, predicted: np.ndarray) -> float:
    """Mean squared amplitude error per pixel (the Gaussian noise model's misfit)."""
    return float(np.mean((np.sqrt(np.maximum(predicted, 0.0)) - np.sqrt(np.maximum(counts, 0.0))) ** 2))


def _weight(member: Regularization) -> float:
    weight = member.tv_weight
    if weight is None:
        raise ValueError(f"{member.value} is not a fixed weight")
    return weight


def _score(result: ReconstructionResult, amplitudes, ycoords, xcoords, member: Regularization, wall: float) -> CandidateScore:
    predicted = predict_intensities(result.object, result.probe, result.object_origin_yx, ycoords, xcoords)
    counts = np.square(np.asarray(amplitudes, dtype=np.float64))
    per_pattern = pattern_deviances(counts, predicted)
    return CandidateScore(
        regularization=member.value,
        tv_weight=_weight(member),
        poisson_deviance=float(per_pattern.mean()),
        pattern_deviances=per_pattern.tolist(),
        amplitude_mse=amplitude_mse(counts, predicted),
        wall_time_s=wall,
        ran_on={"host": socket.gethostname(), "pid": os.getpid()},
    )


CandidateMap = Callable[[Callable[[Any, Any], Any], Any, list], list]
"""How the candidates run: ``map_candidates(function, shared, items)`` returns ``[function(shared, item) for item
in items]``, in order. ``in_turn`` does exactly that, here; a partition running as a dask task is given one that
runs each candidate as a task of its own (``lib.dask_compute.candidates_as_tasks``), so that they run at once on
the cluster's free workers. ``shared`` is what every candidate needs (the data: sent once), ``items`` what differs."""


def in_turn(function: Callable[[Any, Any], Any], shared: Any, items: list) -> list:
    """The candidates one after another, in this process."""
    return [function(shared, item) for item in items]


@dataclass(frozen=True)
class CandidateInputs:
    """What every candidate of one choice needs: the data, the held-out mask and the shared start."""

    amplitudes: np.ndarray
    probe_guess: np.ndarray
    ycoords: np.ndarray
    xcoords: np.ndarray
    held: np.ndarray
    initial_object: np.ndarray | None
    initial_probe: np.ndarray | None
    cpu_threads: int | None
    on_epoch: EpochCallback | None
    """Asked every epoch; raising stops the candidate (a run that was terminated). Picklable where the candidates
    run as tasks."""


def reconstruct_and_score(inputs: CandidateInputs, options: ReconstructionOptions) -> CandidateScore:
    """One candidate: reconstruct on the kept patterns with ``options`` (a fixed weight), score on the held-out."""
    began = time.perf_counter()
    kept, held = ~inputs.held, inputs.held
    result = reconstruct(inputs.amplitudes, inputs.probe_guess, inputs.ycoords, inputs.xcoords, options, inputs.on_epoch,
                         inputs.cpu_threads, use_patterns=kept, initial_object=inputs.initial_object,
                         initial_probe=inputs.initial_probe)
    return _score(result, inputs.amplitudes[held], inputs.ycoords[held], inputs.xcoords[held], options.regularization,
                  time.perf_counter() - began)


def one_standard_error_rule(scores: list[CandidateScore]) -> tuple[int, int, list[CandidateScore]]:
    """(chosen, lowest, scores with their excess over the lowest): ``lowest`` scored the lowest mean held-out
    deviance (ties: the earlier); ``chosen`` is the candidate of largest TV weight whose excess over it, paired
    pattern by pattern, is at most one standard error of that excess."""
    lowest = min(range(len(scores)), key=lambda i: (scores[i].poisson_deviance, i))
    reference = np.asarray(scores[lowest].pattern_deviances)
    compared = []
    for score in scores:
        excess = np.asarray(score.pattern_deviances) - reference
        error = float(excess.std(ddof=1) / math.sqrt(excess.size)) if excess.size > 1 else 0.0
        compared.append(replace(score, excess_over_lowest=float(excess.mean()), excess_standard_error=error))
    within = [i for i, score in enumerate(compared) if score.excess_over_lowest <= score.excess_standard_error]
    chosen = max(within, key=lambda i: (compared[i].tv_weight, -i))
    return chosen, lowest, compared


FLAT, CLEAR = "flat", "clear"
"""``choice_evidence``'s verdicts."""


def choice_evidence(scores: list[CandidateScore], chosen: int, lowest: int) -> str:
    """``"flat"`` when every candidate's excess over the lowest (``one_standard_error_rule``'s scores) is within
    one standard error: the held-out patterns could not tell the weights apart; ``"clear"`` otherwise (some
    weight was shown worse than the lowest)."""
    del chosen, lowest  # the verdict is about all the candidates, whichever was kept
    return FLAT if all(s.excess_over_lowest <= s.excess_standard_error for s in scores) else CLEAR


def deviance_spread(scores: list[CandidateScore]) -> float:
    """(highest - lowest) / lowest of the candidates' mean held-out deviances."""
    values = [s.poisson_deviance for s in scores]
    return (max(values) - min(values)) / min(values) if values and min(values) > 0 else 0.0


def _expected_deviance_table() -> tuple[np.ndarray, np.ndarray]:
    """E[2 (n log(n / mu) - (n - mu))] for n ~ Poisson(mu), on a log grid of mu from 1e-4 to 1e4."""
    from scipy.stats import poisson

    mus = np.logspace(-4, 4, 321)
    values = []
    for mu in mus:
        n = np.arange(0, int(mu + 12 * np.sqrt(mu) + 30))
        pmf = poisson.pmf(n, mu)
        n_log_n = np.where(n > 0, n * np.log(np.maximum(n, 1) / mu), 0.0)
        values.append(float(np.sum(pmf * 2.0 * (n_log_n - (n - mu)))))
    return np.log(mus), np.asarray(values)


_EXPECTED_DEVIANCE: tuple[np.ndarray, np.ndarray] | None = None


def expected_poisson_deviance(mu: np.ndarray) -> np.ndarray:
    """The deviance per pixel that Poisson noise alone gives at mean ``mu`` (the same shape): about 1 for mu >> 1
    (1 + 1 / (6 mu) + ...), smaller for sparse counts (about 2 mu |log mu| as mu -> 0). The discrepancy principle
    for Poisson data (Bertero et al., Inverse Problems 26, 105004, 2010) asks a regularized fit to reach this
    level, no lower (over-fitting the noise) and no higher (over-smoothing)."""
    global _EXPECTED_DEVIANCE
    if _EXPECTED_DEVIANCE is None:
        _EXPECTED_DEVIANCE = _expected_deviance_table()
    log_mus, values = _EXPECTED_DEVIANCE
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-12)
    inside = np.interp(np.log(np.clip(mu, 1e-4, 1e4)), log_mus, values)
    low = values[0] * mu / 1e-4 * (np.log(mu) / np.log(1e-4))  # 2 mu |log mu| scaling below the table
    return np.where(mu < 1e-4, low, np.where(mu > 1e4, 1.0 + 1.0 / (6.0 * mu), inside))


def candidate_epochs_for(epochs: int) -> tuple[int, int]:
    """(shared, per candidate) epochs of the choice for a reconstruction of ``epochs`` epochs: (20, 10) for 100."""
    return max(1, round(SHARED_FRACTION * epochs)), max(1, round(CANDIDATE_FRACTION * epochs))


def _choice_epochs(options: ReconstructionOptions, shared: int | None, candidate: int | None) -> tuple[int, int]:
    """The (shared, per candidate) epochs asked for, ``candidate_epochs_for``'s where left None."""
    default_shared, default_candidate = candidate_epochs_for(options.epochs)
    return (default_shared if shared is None else shared), (default_candidate if candidate is None else candidate)


def score_candidates(
    diffraction_amplitude: np.ndarray,
    probe_guess: np.ndarray,
    ycoords: np.ndarray,
    xcoords: np.ndarray,
    options: ReconstructionOptions,
    candidates: tuple[Regularization, ...] = CANDIDATES,
    shared_epochs: int | None = None,
    candidate_epochs: int | None = None,
    cpu_threads: int | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    map_candidates: CandidateMap = in_turn,
) -> tuple[list[CandidateScore], np.ndarray, float]:
    """Reconstruct each candidate on the kept patterns and score it on the held-out ones.

    ``shared_epochs`` > 0: an unregularized start shared by the candidates, which each continue for
    ``candidate_epochs``; 0: each candidate from scratch for ``candidate_epochs``. Returns the scores (in the
    order of ``candidates``), the held-out mask and the pattern-epochs spent (in full-data epochs). Epochs left
    None follow ``options.epochs`` (``candidate_epochs_for``). ``on_epoch`` is called at every epoch of the shared
    start and of each candidate (to stop them: raise); ``map_candidates`` says where the candidates run.
    """
    shared_epochs, candidate_epochs = _choice_epochs(options, shared_epochs, candidate_epochs)
    amplitudes = np.asarray(diffraction_amplitude)
    ycoords, xcoords = np.asarray(ycoords, float), np.asarray(xcoords, float)
    held = holdout_mask(len(amplitudes), options.holdout_percent, options.random_seed)
    kept_fraction = float(np.mean(~held))
    initial_object = initial_probe = None
    epochs_spent = 0.0
    log.info("choosing the TV weight: %d of %d patterns held out; %d shared unregularized epochs, then %d per "
             "candidate (%s)", held.sum(), len(held), shared_epochs, candidate_epochs,
             ", ".join(f"{member.tv_weight:g}" for member in candidates))
    if shared_epochs > 0:
        shared_options = options.model_copy(update={"regularization": Regularization.off, "epochs": shared_epochs})
        shared = reconstruct(amplitudes, probe_guess, ycoords, xcoords, shared_options, on_epoch, cpu_threads,
                             use_patterns=~held)
        initial_object, initial_probe = shared.object, shared.probe
        epochs_spent += kept_fraction * shared_epochs
    inputs = CandidateInputs(amplitudes, np.asarray(probe_guess), ycoords, xcoords, held, initial_object, initial_probe,
                             cpu_threads, on_epoch)
    each = [options.model_copy(update={"regularization": member, "epochs": candidate_epochs, "tv_last_epochs": None})
            for member in candidates]
    scores = map_candidates(reconstruct_and_score, inputs, each)
    epochs_spent += kept_fraction * candidate_epochs * len(candidates)
    for number, score in enumerate(scores, 1):
        log.info("candidate %d/%d, TV weight %g: held-out Poisson deviance %.5f per pixel (%.1f s, pid %s)", number,
                 len(scores), score.tv_weight, score.poisson_deviance, score.wall_time_s, score.ran_on.get("pid"))
    return scores, held, epochs_spent


def choose_and_reconstruct(
    diffraction_amplitude: np.ndarray,
    probe_guess: np.ndarray,
    ycoords: np.ndarray,
    xcoords: np.ndarray,
    options: ReconstructionOptions | None = None,
    on_epoch: EpochCallback | None = None,
    cpu_threads: int | None = None,
    snapshot_every: int = 0,
    on_snapshot: SnapshotCallback | None = None,
    *,
    candidates: tuple[Regularization, ...] = CANDIDATES,
    shared_epochs: int | None = None,
    candidate_epochs: int | None = None,
    on_choice_epoch: EpochCallback | None = None,
    map_candidates: CandidateMap = in_turn,
) -> tuple[ReconstructionResult, RegularizationChoice | None]:
    """The reconstruction ``options`` ask for, with the TV weight chosen here when they say ``auto``.

    With ``off`` or a fixed ``tv_*`` weight this is one ``lsqml.reconstruct`` and the record is None. With
    ``auto``: the candidates are scored on held-out patterns (module docstring), then the final reconstruction
    runs on every pattern with the winner and ``options.epochs`` epochs; ``on_epoch`` and the snapshots (as in
    ``lsqml.reconstruct``) are of that final run only, ``on_choice_epoch`` is called at the choice's epochs (to stop
    them: raise), and ``map_candidates`` says where the candidates run (``CandidateMap``); ``options`` None: the
    study's defaults with ``auto``. The returned result's ``options`` carry the chosen weight (e.g. ``tv_0_1``), so
    the record beside the reconstruction says what was run. Deterministic for a given ``options.random_seed``.

    No choice is made (one reconstruction, ``cost_factor`` 1, the reason in ``notes``) when ``candidates`` holds a
    single weight (reusing the weight chosen on a sibling dataset, e.g. the other split at the same dose and
    view), when the dataset has fewer than ``MIN_PATTERNS`` patterns, or when the held-out patterns are not
    overlapped by the kept scan (``MIN_COVERAGE``); the last two reconstruct without regularization.
    """
    options = ReconstructionOptions(regularization=Regularization.auto) if options is None else options
    if options.regularization is not Regularization.auto:
        return reconstruct(diffraction_amplitude, probe_guess, ycoords, xcoords, options, on_epoch, cpu_threads,
                           snapshot_every, on_snapshot), None
    if not candidates or any(member.tv_weight is None for member in candidates):
        raise ValueError(f"regularization auto needs fixed candidate weights (off or tv_*), got {candidates}")
    n_patterns = len(diffraction_amplitude)
    seed = 0 if options.random_seed is None else options.random_seed
    fallback, coverage = Regularization.off, 0.0
    if len(candidates) == 1:
        fallback = candidates[0]
        note = f"a single candidate ({fallback.value}, e.g. the weight chosen on the other split): nothing to choose"
    elif n_patterns < MIN_PATTERNS:
        note = f"only {n_patterns} patterns (< {MIN_PATTERNS}): none to spare for a held-out set"
    else:
        held = holdout_mask(n_patterns, options.holdout_percent, options.random_seed)
        coverage = held_out_coverage(probe_guess, ycoords, xcoords, held)
        note = (f"held-out coverage {coverage:.2f} < {MIN_COVERAGE}: the scan overlaps too little to validate a "
                "weight on held-out patterns" if coverage < MIN_COVERAGE else "")
    shared_epochs, candidate_epochs = _choice_epochs(options, shared_epochs, candidate_epochs)
    if note:
        log.info("no TV weight chosen: %s; reconstructing with %s", note, fallback.value)
        final_options = options.model_copy(
            update={"regularization": fallback, "tv_last_epochs": candidate_epochs if fallback.tv_weight else None})
        result = reconstruct(diffraction_amplitude, probe_guess, ycoords, xcoords, final_options, on_epoch, cpu_threads,
                             snapshot_every, on_snapshot)
        return result, RegularizationChoice(
            chosen=fallback.value, chosen_tv_weight=_weight(fallback), lowest_deviance=None, candidates=[],
            n_patterns=n_patterns, n_held_out=0, holdout_seed=seed, held_out_coverage=coverage, shared_epochs=0, candidate_epochs=0,
            final_epochs=options.epochs, final_tv_epochs=candidate_epochs if fallback.tv_weight else 0,
            epochs_spent=options.epochs, cost_factor=1.0, choice_wall_time_s=0.0,
            final_wall_time_s=result.wall_time_s, wall_time_s=result.wall_time_s,
            notes=[f"{note}; reconstructed with {fallback.value}"],
        )
    began = time.perf_counter()
    scores, held, epochs_spent = score_candidates(
        diffraction_amplitude, probe_guess, ycoords, xcoords, options, candidates, shared_epochs, candidate_epochs,
        cpu_threads, on_epoch=on_choice_epoch, map_candidates=map_candidates,
    )
    best, lowest, scores = one_standard_error_rule(scores)
    chosen = candidates[best]
    choice_wall = time.perf_counter() - began
    log.info("TV weight %g chosen (lowest deviance: %g) in %.1f s; the final reconstruction on every pattern follows",
             scores[best].tv_weight, scores[lowest].tv_weight, choice_wall)
    final_options = options.model_copy(update={"regularization": chosen, "tv_last_epochs": candidate_epochs})
    result = reconstruct(diffraction_amplitude, probe_guess, ycoords, xcoords, final_options, on_epoch, cpu_threads,
                         snapshot_every, on_snapshot)
    epochs_spent += options.epochs
    record = RegularizationChoice(
        chosen=chosen.value,
        chosen_tv_weight=_weight(chosen),
        lowest_deviance=candidates[lowest].value,
        candidates=scores,
        n_patterns=len(held),
        n_held_out=int(held.sum()),
        holdout_seed=seed,
        held_out_coverage=coverage,
        shared_epochs=shared_epochs,
        candidate_epochs=candidate_epochs,
        final_epochs=options.epochs,
        final_tv_epochs=candidate_epochs if chosen.tv_weight else 0,
        epochs_spent=math.ceil(epochs_spent),
        cost_factor=epochs_spent / options.epochs,
        choice_wall_time_s=choice_wall,
        final_wall_time_s=result.wall_time_s,
        wall_time_s=choice_wall + result.wall_time_s,
        evidence=choice_evidence(scores, best, lowest),
        deviance_spread=deviance_spread(scores),
    )
    return result, record
