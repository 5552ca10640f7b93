"""Known-case tests of the quality metrics (fly64_assets.core.quality)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from fly64_assets.core.quality import (
    QualityMetrics,
    compare_to_truth,
    frc,
    frc_resolution,
    register,
    remove_phase_offset,
    shift_image,
)

N = 128


def make_object(seed: int = 0, n: int = N) -> np.ndarray:
    """Smooth random amplitude and phase plus sharp-edged squares and a disc (all frequencies)."""
    rng = np.random.default_rng(seed)
    smooth_a = gaussian_filter(rng.standard_normal((n, n)), 4)
    smooth_p = gaussian_filter(rng.standard_normal((n, n)), 3)
    amplitude = 0.8 + 2.0 * smooth_a
    phase = 8.0 * smooth_p
    yy, xx = np.indices((n, n))
    for _ in range(12):
        y, x, half = rng.integers(8, n - 8), rng.integers(8, n - 8), rng.integers(2, 6)
        square = (abs(yy - y) <= half) & (abs(xx - x) <= half)
        amplitude[square] -= 0.2
        phase[square] += 0.6
    disc = np.hypot(yy - n / 2, xx - n / 3) < 10
    phase[disc] -= 0.8
    return (amplitude * np.exp(1j * phase)).astype(np.complex128)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return make_object()


def complex_noise(shape: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return sigma * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


def low_pass(image: np.ndarray, cutoff: float) -> np.ndarray:
    """Ideal circular low-pass keeping frequencies up to ``cutoff`` (fraction of Nyquist)."""
    fy = np.fft.fftfreq(image.shape[0]) / 0.5
    fx = np.fft.fftfreq(image.shape[1]) / 0.5
    keep = np.hypot(fy[:, None], fx[None, :]) <= cutoff
    return np.fft.ifft2(np.fft.fft2(image) * keep)


FULL_BOX = (0, N - 1, 0, N - 1)


# --- registration -------------------------------------------------------------------------------


def test_register_recovers_known_subpixel_shift(truth):
    moved = shift_image(truth, (2.3, -1.7))
    registered, shift = register(moved, truth)
    assert shift == pytest.approx((-2.3, 1.7), abs=0.1)
    assert np.max(np.abs(registered - truth)) < 0.05 * np.max(np.abs(truth))


def test_register_ignores_global_phase_offset(truth):
    _, shift = register(shift_image(truth, (2.3, -1.7)) * np.exp(1j * 2.5), truth)
    assert shift == pytest.approx((-2.3, 1.7), abs=0.1)


# --- phase alignment ----------------------------------------------------------------------------


def test_remove_phase_offset_undoes_a_global_offset(truth):
    aligned = remove_phase_offset(truth * np.exp(1j * 1.234), truth)
    np.testing.assert_allclose(aligned, truth, atol=1e-10)


def test_remove_phase_plane_undoes_a_wrapping_ramp(truth):
    yy, xx = np.indices(truth.shape)
    ramp = 0.05 * yy - 0.03 * xx + 1.0  # 6.4 rad along y: the ramp wraps
    tilted = truth * np.exp(1j * ramp)
    offset_only = remove_phase_offset(tilted, truth)
    with_plane = remove_phase_offset(tilted, truth, plane=True)
    assert np.mean(np.abs(np.angle(offset_only * np.conj(truth)))) > 0.5
    assert np.max(np.abs(np.angle(with_plane * np.conj(truth)))) < 1e-6


def test_phase_offset_does_not_change_any_metric(truth):
    reference = compare_to_truth(
        truth + complex_noise(truth.shape, 0.05, 1), truth, (0, 0), FULL_BOX
    )
    offset = compare_to_truth(
        (truth + complex_noise(truth.shape, 0.05, 1)) * np.exp(1j * 1.234), truth, (0, 0), FULL_BOX
    )
    for key, value in reference.as_dict().items():
        assert offset.as_dict()[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key

    exact = compare_to_truth(truth * np.exp(1j * 1.234), truth, (0, 0), FULL_BOX)
    assert exact.phase_mae < 1e-9


def test_a_phase_ramp_of_the_reconstruction_is_not_an_error_and_is_recorded(truth):
    """The fair score (the default) removes the linear phase ramp of the difference, one of ptychography's
    ambiguities, and records its slopes; ``phase_plane=False`` is the older, offset-only score."""
    yy, xx = np.indices(truth.shape)
    tilted = truth * np.exp(1j * (0.02 * yy + 0.01 * xx))
    fair = compare_to_truth(tilted, truth, (0, 0), FULL_BOX)
    assert fair.phase_mae < 1e-6 and fair.phase_ssim > 0.999
    assert (fair.phase_ramp_y, fair.phase_ramp_x) == pytest.approx((0.02, 0.01), abs=1e-6)
    assert fair.as_dict()["phase_ramp_y"] == pytest.approx(0.02, abs=1e-6)
    old = compare_to_truth(tilted, truth, (0, 0), FULL_BOX, phase_plane=False)
    assert old.phase_mae > 0.3
    assert (old.phase_ramp_y, old.phase_ramp_x) == (0.0, 0.0)


def bump(shape: tuple[int, int], centre: tuple[float, float], sigma: float, height: float) -> np.ndarray:
    yy, xx = np.indices(shape)
    return height * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("centre", [(30, 90), (64, 64), (110, 15)])
def test_a_localized_phase_error_stays_an_error(truth, centre):
    """A wrong feature off the box's centre must not be tilted away: the plane is fitted by least absolute
    deviations, so the fair score of a 0.8 rad bump equals the offset-only score, with or without a ramp on top."""
    yy, xx = np.indices(truth.shape)
    error = bump(truth.shape, centre, 6.0, 0.8)
    offset_only = compare_to_truth(truth * np.exp(1j * error), truth, (0, 0), FULL_BOX, phase_plane=False)
    fair = compare_to_truth(truth * np.exp(1j * error), truth, (0, 0), FULL_BOX)
    tilted = compare_to_truth(truth * np.exp(1j * (error + 0.03 * yy - 0.02 * xx)), truth, (0, 0), FULL_BOX)
    assert offset_only.phase_mae > 0.01
    assert fair.phase_mae == pytest.approx(offset_only.phase_mae, rel=0.02)
    assert tilted.phase_mae == pytest.approx(offset_only.phase_mae, rel=0.02)
    assert abs(fair.phase_ramp_y) < 1e-4 and abs(fair.phase_ramp_x) < 1e-4
    assert (tilted.phase_ramp_y, tilted.phase_ramp_x) == pytest.approx((0.03, -0.02), abs=1e-4)


def test_the_ramp_fitted_is_the_differences_not_the_truths(truth):
    """A truth with a steep ramp of its own (a wedge) is scored like any other: a reconstruction that reproduces
    it scores perfect with no ramp removed, and a real error on top of it costs what it costs on a flat truth."""
    yy, xx = np.indices(truth.shape)
    wedge = truth * np.exp(1j * (0.08 * yy - 0.05 * xx))  # 10 rad across the box: it wraps
    same = compare_to_truth(wedge, wedge, (0, 0), FULL_BOX)
    assert same.phase_mae < 1e-9
    assert abs(same.phase_ramp_y) < 1e-9 and abs(same.phase_ramp_x) < 1e-9
    error = np.exp(1j * bump(truth.shape, (40, 40), 5.0, 1.0))
    on_wedge = compare_to_truth(wedge * error, wedge, (0, 0), FULL_BOX)
    on_flat = compare_to_truth(truth * error, truth, (0, 0), FULL_BOX)
    assert on_wedge.phase_mae == pytest.approx(on_flat.phase_mae, rel=1e-6)
    assert on_wedge.phase_mae > 0.01


def test_noise_with_a_ramp_scores_like_the_noise_alone(truth):
    yy, xx = np.indices(truth.shape)
    noisy = truth + complex_noise(truth.shape, 0.1, 3)
    alone = compare_to_truth(noisy, truth, (0, 0), FULL_BOX, phase_plane=False)
    with_ramp = compare_to_truth(noisy * np.exp(1j * (-0.015 * yy + 0.004 * xx)), truth, (0, 0), FULL_BOX)
    assert with_ramp.phase_mae == pytest.approx(alone.phase_mae, rel=0.01)
    assert with_ramp.amplitude_mae == pytest.approx(alone.amplitude_mae, rel=0.01)
    assert (with_ramp.phase_ramp_y, with_ramp.phase_ramp_x) == pytest.approx((-0.015, 0.004), abs=5e-4)


# --- metrics on known cases ---------------------------------------------------------------------


def test_identical_images_are_perfect(truth):
    m = compare_to_truth(truth, truth, (0, 0), FULL_BOX)
    assert m.amplitude_mae == pytest.approx(0, abs=1e-12)
    assert m.phase_mae == pytest.approx(0, abs=1e-12)
    assert m.amplitude_ssim == pytest.approx(1) and m.phase_ssim == pytest.approx(1)
    assert m.amplitude_psnr > 200 and m.phase_psnr > 200
    assert m.frc_resolution_fraction == 1.0 and m.frc_resolution_px == 2.0
    assert m.shift_yx == pytest.approx((0, 0), abs=1e-9)
    freqs, curve = frc(truth, truth)
    assert freqs[0] > 0 and freqs[-1] == 1.0
    np.testing.assert_allclose(curve, 1.0, atol=1e-9)


def test_frc_of_independent_noise_is_near_zero():
    """Single rings of a 128 px, Hann-windowed FRC scatter by about +-0.1 around 0, so the test
    checks the mean, the RMS and that most rings beyond the first four lie below 1/7."""
    a, b = complex_noise((N, N), 1.0, 1), complex_noise((N, N), 1.0, 2)
    freqs, curve = frc(a, b)
    beyond_first_rings = curve[4:]
    assert abs(beyond_first_rings.mean()) < 0.02
    assert np.sqrt(np.mean(beyond_first_rings**2)) < 1 / 7
    assert np.mean(np.abs(beyond_first_rings) < 1 / 7) > 0.8
    assert frc_resolution(freqs, curve) < 0.1


@pytest.mark.parametrize("cutoff", [0.3, 0.5, 0.7])
def test_frc_resolution_of_a_low_passed_copy_is_its_cutoff(truth, cutoff):
    """Tolerance 0.05 of Nyquist (about 3 rings of 1/64): the Hann window spreads the edge."""
    freqs, curve = frc(low_pass(truth, cutoff), truth)
    assert frc_resolution(freqs, curve) == pytest.approx(cutoff, abs=0.05)


def test_frc_resolution_interpolates_and_defaults_to_nyquist():
    freqs = np.array([0.25, 0.5, 0.75, 1.0])
    assert frc_resolution(freqs, np.array([1.0, 0.9, 0.8, 0.5])) == 1.0
    crossing = frc_resolution(freqs, np.array([1.0, 0.5, 0.0, 0.0]), threshold=0.25)
    assert crossing == pytest.approx(0.625)


def test_metrics_worsen_with_noise(truth):
    levels = [0.2, 0.3, 0.5]  # strong enough for the FRC to cross 1/7 below Nyquist
    runs = [
        compare_to_truth(truth + complex_noise(truth.shape, s, 7), truth, (0, 0), FULL_BOX)
        for s in levels
    ]
    for better, worse in itertools.pairwise(runs):
        assert worse.amplitude_mae > better.amplitude_mae
        assert worse.phase_mae > better.phase_mae
        assert worse.amplitude_psnr < better.amplitude_psnr
        assert worse.phase_psnr < better.phase_psnr
        assert worse.amplitude_ssim < better.amplitude_ssim
        assert worse.phase_ssim < better.phase_ssim
        assert worse.frc_resolution_fraction < better.frc_resolution_fraction
        assert worse.frc_resolution_px > better.frc_resolution_px


# --- compare_to_truth frames --------------------------------------------------------------------

ORIGIN = (20, 24)
RECON_SHAPE = (90, 90)
BOX = (35.0, 95.0, 39.0, 99.0)


def crop(image: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    return image[origin[0] : origin[0] + RECON_SHAPE[0], origin[1] : origin[1] + RECON_SHAPE[1]]


def assert_near_perfect(m: QualityMetrics) -> None:
    assert m.amplitude_mae < 1e-3 and m.phase_mae < 1e-3
    assert m.amplitude_ssim > 0.999 and m.phase_ssim > 0.999
    assert m.amplitude_psnr > 50 and m.phase_psnr > 50
    assert m.frc_resolution_fraction == 1.0


def test_crop_at_its_origin_is_near_perfect(truth):
    m = compare_to_truth(crop(truth, ORIGIN) * np.exp(-1j * 0.7), truth, ORIGIN, BOX)
    assert_near_perfect(m)
    assert m.shift_yx == pytest.approx((0, 0), abs=1e-6)
    json.dumps(m.as_dict())


def test_wrong_origin_is_registered_and_reported(truth):
    stated = (ORIGIN[0] + 3, ORIGIN[1] - 2)
    m = compare_to_truth(crop(truth, ORIGIN), truth, stated, BOX)
    assert_near_perfect(m)
    assert m.shift_yx == pytest.approx((-3, 2), abs=0.05)


def test_subpixel_origin(truth):
    """recon[i, j] = truth[20.4 + i, 24.3 + j]: the exact origin needs no shift, a rounded one
    reports the fraction."""
    recon = crop(shift_image(truth, (-0.4, -0.3)), ORIGIN)
    exact = compare_to_truth(recon, truth, (ORIGIN[0] + 0.4, ORIGIN[1] + 0.3), BOX)
    rounded = compare_to_truth(recon, truth, ORIGIN, BOX)
    assert exact.shift_yx == pytest.approx((0, 0), abs=0.05)
    assert rounded.shift_yx == pytest.approx((0.4, 0.3), abs=0.05)
    assert exact.phase_mae < 0.02 and rounded.phase_mae < 0.02


def test_box_outside_the_reconstruction_is_an_error(truth):
    with pytest.raises(ValueError, match="scan box"):
        compare_to_truth(crop(truth, ORIGIN), truth, ORIGIN, (0.0, 10.0, 0.0, 10.0))
