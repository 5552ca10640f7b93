"""Reconstruction quality against the ground-truth object (see the spec, "Quality").

A reconstruction is scored only after the ambiguities ptychography cannot resolve have been removed:
a sub-pixel translation (registration by cross-correlation), a global amplitude factor, a global phase
offset and a linear phase ramp. The ramp is one of ptychography's known ambiguities (a linear phase of
the object trades with a shift of the probe's far field), so the data do not hold it and a reconstruction
that carries one is not wrong: the ramp *of the difference* ``recon * conj(truth)`` is fitted and
removed (``phase_plane=True``, the default since issue 20; ``phase_plane=False`` gives the older score,
offset only). A ramp in the truth itself is not touched (only the difference's ramp is fitted), and
a localized error stays an error: the plane is fitted by least absolute deviations (the L1 norm the phase
MAE measures), so a bump over part of the box does not tilt it. The ramp removed is recorded
(``QualityMetrics.phase_ramp_y`` / ``phase_ramp_x``, rad per truth pixel). Phases are always compared
through the wrapped difference ``angle(recon * conj(truth))`` so that a 2π wrap is never counted as an
error.

Frame convention (set by the reconstruction module): ``recon[i, j]`` sits on
``truth[y0 + i, x0 + j]`` with ``origin_yx = (y0, x0)`` in truth pixels;
``scan_box = (ymin, ymax, xmin, xmax)`` is the region to score, in truth pixels.

Pure NumPy / SciPy / scikit-image; the FRC is the only metric written by hand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import fourier_shift
from scipy.signal.windows import hann
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.registration import phase_cross_correlation

FRC_THRESHOLD = 1.0 / 7.0
MIN_BOX_PX = 7
"""The scored region must be at least this many pixels per side (SSIM's 7x7 window)."""


@dataclass(frozen=True)
class QualityMetrics:
    """Quality of one reconstruction over the scan box.

    PSNR and SSIM use the truth's dynamic range over the scan box as ``data_range``: max - min of
    ``|truth|`` for the amplitude, max - min of ``angle(truth)`` for the phase.
    ``shift_yx`` is where registration found the reconstruction relative to its nominal origin:
    the true origin is ``origin_yx + shift_yx`` (truth pixels).
    """

    amplitude_mae: float
    phase_mae: float
    """Radians, mean |wrapped phase difference| after the phase offset (or plane) is removed."""
    amplitude_psnr: float
    phase_psnr: float
    amplitude_ssim: float
    phase_ssim: float
    frc_resolution_px: float
    """Full-period resolution 2 / ``frc_resolution_fraction`` pixels; 2.0 (Nyquist) if the FRC
    never drops below 1/7."""
    frc_resolution_fraction: float
    """Spatial frequency, as a fraction of Nyquist, where the FRC first drops below 1/7."""
    shift_yx: tuple[float, float]
    phase_ramp_y: float | None = None
    """The linear phase ramp removed before scoring, rad per truth pixel along y: the reconstruction's phase
    minus the truth's had this slope (not an error; a diagnostic). 0.0 when the score removed no ramp
    (``phase_plane=False``), None when the caller of ``score`` did not pass the alignment's ramp."""
    phase_ramp_x: float | None = None
    """The same along x."""

    def as_dict(self) -> dict:
        """Plain floats (and a two-float list for the shift), ready for JSON."""
        out = {key: None if value is None else float(value) for key, value in asdict(self).items() if key != "shift_yx"}
        out["shift_yx"] = [float(v) for v in self.shift_yx]
        return out


def shift_image(image: np.ndarray, shift_yx: tuple[float, float]) -> np.ndarray:
    """Translate ``image`` by ``shift_yx`` pixels (``out[i] = image[i - shift]``), sub-pixel exact
    for band-limited data; content leaving one edge re-enters at the other (periodic)."""
    return np.fft.ifft2(fourier_shift(np.fft.fft2(image), shift_yx))


def register(
    moving: np.ndarray, reference: np.ndarray, upsample: int = 20
) -> tuple[np.ndarray, tuple[float, float]]:
    """Shift ``moving`` onto ``reference``; return the shifted (complex) image and the shift.

    The complex fields are correlated, not the amplitudes: a phase object may have almost no
    amplitude contrast, and a global phase offset only rotates the correlation peak, whose
    modulus is what is searched. Both images are mean-removed and Hann-windowed (their edges are
    not periodic) and the correlation is left unnormalised: phase normalisation whitens the
    spectrum, and on a resolution-limited, noisy reconstruction the out-of-band noise then wins
    (errors of tens of pixels on a low-passed noisy copy). Unnormalised correlation of crops is
    biased towards zero shift by the shrinking overlap, so a second pass measures the residual
    after the first shift. Precision is 1 / ``upsample`` pixel.
    """
    shift = _correlation_shift(moving, reference, upsample)
    shift = shift + _correlation_shift(shift_image(moving, shift), reference, upsample)
    shift_yx = (float(shift[0]), float(shift[1]))
    return shift_image(moving, shift_yx), shift_yx


def _correlation_shift(moving: np.ndarray, reference: np.ndarray, upsample: int) -> np.ndarray:
    window = _hann2d(reference.shape)
    shift, _, _ = phase_cross_correlation(
        (reference - reference.mean()) * window,
        (moving - moving.mean()) * window,
        upsample_factor=upsample,
        normalization=None,
    )
    return shift


def _hann2d(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(hann(shape[0], sym=False), hann(shape[1], sym=False))


def remove_phase_offset(
    moving: np.ndarray, reference: np.ndarray, plane: bool = False
) -> np.ndarray:
    """Rotate ``moving``'s phase so it best matches ``reference``.

    The global offset ``angle(sum(conj(moving) * reference))`` is the least-squares optimum of
    ``|moving * exp(i phi) - reference|^2`` (amplitude-weighted, immune to wrapping). With
    ``plane=True`` a phase ramp of the difference is removed first (see ``_phase_plane``).
    """
    aligned = moving * np.exp(1j * _phase_plane(moving, reference)) if plane else moving
    offset = np.angle(np.vdot(aligned, reference))
    return aligned * np.exp(1j * offset)


def phase_ramp(moving: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(gy, gx), rad per pixel: the linear phase ramp of ``moving * conj(reference)`` (what
    ``remove_phase_offset(..., plane=True)`` takes away from ``moving``)."""
    return _slopes(-_phase_plane(moving, reference))


def _slopes(plane: np.ndarray) -> tuple[float, float]:
    """(d/dy, d/dx) of a plane sampled on the pixel grid."""
    gy = float(plane[1, 0] - plane[0, 0]) if plane.shape[0] > 1 else 0.0
    gx = float(plane[0, 1] - plane[0, 0]) if plane.shape[1] > 1 else 0.0
    return gy, gx


def amplitude_gain(moving: np.ndarray, reference: np.ndarray) -> float:
    """Least-squares real factor matching ``|moving|`` to ``|reference|``.

    Ptychography determines only the product of probe and object: a reconstruction may carry its
    object amplitude times any constant (and the probe divided by it), which is not an error.
    """
    power = float(np.sum(np.abs(moving) ** 2))
    return float(np.sum(np.abs(moving) * np.abs(reference))) / power if power > 0 else 1.0


PLANE_L1_ITERATIONS = 30
"""At most this many iteratively reweighted least-squares steps of the plane's least-absolute-deviations fit."""
PLANE_L1_TOLERANCE = 1e-9
"""The L1 fit stops when no coefficient (rad, rad per pixel) moves by more than this."""


def _phase_plane(moving: np.ndarray, reference: np.ndarray, iterations: int = PLANE_L1_ITERATIONS) -> np.ndarray:
    """Phase ramp (no constant term) that, added to ``moving``, best matches ``reference``.

    A coarse gradient comes from the amplitude-weighted circular mean of neighbour phase steps of
    ``reference * conj(moving)`` (valid even where the ramp wraps); a plane fitted to the remaining,
    unwrapped-small residual refines it: amplitude-weighted least squares, then ``iterations`` steps of
    iteratively reweighted least squares towards the least absolute deviations: like the phase MAE it scores,
    that fit follows the bulk of the box, so an error confined to part of it (a wrong feature, a noisy corner)
    is not tilted away.
    """
    diff = reference * np.conj(moving)
    gy = np.angle(np.vdot(diff[:-1, :], diff[1:, :]))
    gx = np.angle(np.vdot(diff[:, :-1], diff[:, 1:]))
    ny, nx = diff.shape
    y = np.arange(ny, dtype=float) - (ny - 1) / 2  # centred: well-conditioned normal equations
    x = np.arange(nx, dtype=float) - (nx - 1) / 2
    coarse = gy * y[:, None] + gx * x[None, :]
    residual = np.angle(diff * np.exp(-1j * coarse))
    amplitude_weight = np.sqrt(np.abs(diff))
    weight = amplitude_weight
    coefficients = np.zeros(3)
    for step in range(iterations + 1):
        # normal equations of the weighted fit residual ~ c + by * y + bx * x, from separable weighted sums
        wy, wx = weight.sum(axis=1), weight.sum(axis=0)
        wr = weight * residual
        s_w, s_y, s_x = wy.sum(), wy @ y, wx @ x
        s_yy, s_xx, s_xy = wy @ (y * y), wx @ (x * x), y @ weight @ x
        normal = np.array([[s_w, s_y, s_x], [s_y, s_yy, s_xy], [s_x, s_xy, s_xx]])
        rhs = np.array([wr.sum(), y @ wr.sum(axis=1), wr.sum(axis=0) @ x])
        new = np.linalg.solve(normal, rhs)
        converged = step > 0 and np.max(np.abs(new - coefficients)) < PLANE_L1_TOLERANCE
        coefficients = new
        if converged or step == iterations:
            break
        misfit = np.abs(residual - coefficients[0] - coefficients[1] * y[:, None] - coefficients[2] * x[None, :])
        weight = amplitude_weight / np.maximum(misfit, 1e-6)
    _, by, bx = coefficients
    return coarse + by * y[:, None] + bx * x[None, :]


def frc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two same-shape (real or complex) images.

    Each image has its mean removed and is multiplied by a separable Hann window: the image edges
    are the same in both images, so unwindowed their discontinuity would correlate at every
    frequency and inflate the curve. Rings are one frequency pixel (of the shorter side) wide;
    the DC ring is left out. Returns the ring frequencies as a fraction of Nyquist (1/n .. 1, n =
    min(shape) // 2) and ``Re(sum F_a conj(F_b)) / sqrt(sum |F_a|^2 sum |F_b|^2)`` per ring.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"frc needs two 2-D images of the same shape, got {a.shape} and {b.shape}")
    window = _hann2d(a.shape)
    fa = np.fft.fft2((a - a.mean()) * window)
    fb = np.fft.fft2((b - b.mean()) * window)

    n_rings = min(a.shape) // 2
    fy = np.fft.fftfreq(a.shape[0]) / 0.5
    fx = np.fft.fftfreq(a.shape[1]) / 0.5
    radius = np.hypot(fy[:, None], fx[None, :])  # fraction of Nyquist
    ring = np.rint(radius * n_rings).astype(int).ravel()
    keep = (ring >= 1) & (ring <= n_rings)
    ring = ring[keep] - 1

    def ring_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(ring, weights=values.ravel()[keep], minlength=n_rings)

    cross = ring_sum(np.real(fa * np.conj(fb)))
    power = np.sqrt(ring_sum(np.abs(fa) ** 2) * ring_sum(np.abs(fb) ** 2))
    curve = np.divide(cross, power, out=np.zeros(n_rings), where=power > 0)
    return np.arange(1, n_rings + 1) / n_rings, curve


def frc_resolution(freqs: np.ndarray, curve: np.ndarray, threshold: float = FRC_THRESHOLD) -> float:
    """Frequency (fraction of Nyquist) where ``curve`` first drops below ``threshold``, linearly
    interpolated between the rings around the crossing; 1.0 if it never does."""
    below = np.flatnonzero(curve < threshold)
    if below.size == 0:
        return 1.0
    i = int(below[0])
    if i == 0:
        return float(freqs[0])
    t = (curve[i - 1] - threshold) / (curve[i - 1] - curve[i])
    return float(freqs[i - 1] + t * (freqs[i] - freqs[i - 1]))


@dataclass(frozen=True)
class Alignment:
    """A reconstruction brought onto the truth's frame over the scan box, ready to score or show."""

    recon: np.ndarray
    """The reconstruction over the box: registered, phase-aligned and amplitude-scaled to the truth."""
    truth: np.ndarray
    """The truth over the same box."""
    shift_yx: tuple[float, float]
    """True origin = nominal origin + shift (truth pixels)."""
    phase_ramp_yx: tuple[float, float] = (0.0, 0.0)
    """The linear phase ramp (rad per pixel) removed from the reconstruction's difference to the truth."""


def align_to_truth(
    recon: np.ndarray,
    truth: np.ndarray,
    origin_yx: tuple[float, float],
    scan_box: tuple[float, float, float, float],
    phase_plane: bool = True,
) -> Alignment:
    """Cut out the overlap at the rounded origin, register on the scan box, shift the whole overlap (so
    the periodic wrap of the Fourier shift stays in the margin outside the box where there is one),
    then remove the linear phase ramp of the difference (``phase_plane``, the default), the global phase
    offset and the global amplitude factor on the box.
    """
    oy, ox = round(origin_yx[0]), round(origin_yx[1])
    y_lo, y_hi = max(0, oy), min(truth.shape[0], oy + recon.shape[0])
    x_lo, x_hi = max(0, ox), min(truth.shape[1], ox + recon.shape[1])
    truth_ov = truth[y_lo:y_hi, x_lo:x_hi]
    recon_ov = recon[y_lo - oy : y_hi - oy, x_lo - ox : x_hi - ox]

    ymin, ymax, xmin, xmax = scan_box
    r0, r1 = max(math.ceil(ymin), y_lo), min(math.floor(ymax) + 1, y_hi)
    c0, c1 = max(math.ceil(xmin), x_lo), min(math.floor(xmax) + 1, x_hi)
    if min(r1 - r0, c1 - c0) < MIN_BOX_PX:
        raise ValueError(
            f"scan box {scan_box} overlaps the reconstruction (origin {origin_yx}, shape "
            f"{recon.shape}) on fewer than {MIN_BOX_PX} pixels per side"
        )
    box = np.s_[r0 - y_lo : r1 - y_lo, c0 - x_lo : c1 - x_lo]
    truth_box = truth_ov[box]

    moving = recon_ov[box]
    if phase_plane:  # a steep ramp would bias the complex correlation: flatten it first (least squares will do)
        moving = moving * np.exp(1j * _phase_plane(moving, truth_box, iterations=0))
    _, shift = register(moving, truth_box)
    shifted = shift_image(recon_ov, shift)[box]
    ramp = (0.0, 0.0)
    if phase_plane:
        plane = _phase_plane(shifted, truth_box)
        shifted = shifted * np.exp(1j * plane)
        ramp = _slopes(-plane)
    recon_box = remove_phase_offset(shifted, truth_box)
    recon_box = recon_box * amplitude_gain(recon_box, truth_box)
    return Alignment(
        recon=recon_box,
        truth=truth_box,
        shift_yx=(float(shift[0] - (origin_yx[0] - oy)), float(shift[1] - (origin_yx[1] - ox))),
        phase_ramp_yx=ramp,
    )


def score(
    recon_box: np.ndarray,
    truth_box: np.ndarray,
    shift_yx: tuple[float, float] = (0.0, 0.0),
    phase_ramp_yx: tuple[float, float] | None = None,
) -> QualityMetrics:
    """Amplitude and phase MAE, PSNR and SSIM, and the FRC of the complex fields, on aligned boxes
    (``shift_yx`` and ``phase_ramp_yx`` are the alignment's, recorded as they are).

    A truth phase that wraps inside the box is compared on its own branch (recon phase = truth phase
    + wrapped difference), so wraps cost nothing.
    """
    amp_truth, amp_recon = np.abs(truth_box), np.abs(recon_box)
    phase_truth = np.angle(truth_box)
    phase_diff = np.angle(recon_box * np.conj(truth_box))
    phase_recon = phase_truth + phase_diff  # the recon's phase on the truth's branch: no wraps
    amp_range, phase_range = float(np.ptp(amp_truth)), float(np.ptp(phase_truth))

    fraction = frc_resolution(*frc(recon_box, truth_box))
    return QualityMetrics(
        amplitude_mae=float(np.mean(np.abs(amp_recon - amp_truth))),
        phase_mae=float(np.mean(np.abs(phase_diff))),
        amplitude_psnr=float(peak_signal_noise_ratio(amp_truth, amp_recon, data_range=amp_range)),
        phase_psnr=float(peak_signal_noise_ratio(phase_truth, phase_recon, data_range=phase_range)),
        amplitude_ssim=float(structural_similarity(amp_truth, amp_recon, data_range=amp_range)),
        phase_ssim=float(structural_similarity(phase_truth, phase_recon, data_range=phase_range)),
        frc_resolution_px=2.0 / fraction,
        frc_resolution_fraction=fraction,
        shift_yx=shift_yx,
        phase_ramp_y=None if phase_ramp_yx is None else float(phase_ramp_yx[0]),
        phase_ramp_x=None if phase_ramp_yx is None else float(phase_ramp_yx[1]),
    )


def compare_to_truth(
    recon: np.ndarray,
    truth: np.ndarray,
    origin_yx: tuple[float, float],
    scan_box: tuple[float, float, float, float],
    phase_plane: bool = True,
) -> QualityMetrics:
    """Score ``recon`` against ``truth`` over ``scan_box`` (pixels whose centres lie inside it), the linear
    phase ramp of the difference removed unless ``phase_plane=False``."""
    aligned = align_to_truth(recon, truth, origin_yx, scan_box, phase_plane)
    return score(aligned.recon, aligned.truth, aligned.shift_yx, aligned.phase_ramp_yx)
