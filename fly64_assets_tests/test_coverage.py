"""Where a scan's probes light the object (``core.coverage``), on hand-made probes and positions."""

from __future__ import annotations

import numpy as np
import pytest

from fly64_assets.core.coverage import illumination, lit_fraction

SIZE = 8
CENTRE = (SIZE - 1) / 2


def _flat_probe() -> np.ndarray:
    """A probe of uniform intensity 1 over its whole 8 x 8 window."""
    return np.ones((SIZE, SIZE), np.complex64)


def test_illumination_sums_the_windows_on_a_frame_just_large_enough():
    lit, origin = illumination(_flat_probe(), np.array([10 + CENTRE, 14 + CENTRE]), np.array([20 + CENTRE, 20 + CENTRE]))
    assert origin == (10, 20) and lit.shape == (12, 8)
    assert lit[:4].max() == lit[:4].min() == 1 and lit[4:8].min() == 2 and lit[8:].max() == 1  # overlap counts twice
    only_first, _ = illumination(_flat_probe(), np.array([10 + CENTRE, 14 + CENTRE]), np.array([20 + CENTRE] * 2),
                                 lighting=np.array([True, False]))
    assert only_first[:8].min() == 1 and only_first[8:].max() == 0  # the frame still holds the second window


def test_lit_fraction_is_the_share_of_the_box_under_the_probes():
    probe = _flat_probe()
    ys, xs = np.array([CENTRE]), np.array([CENTRE])
    assert lit_fraction(probe, ys, xs, (0, SIZE - 1, 0, SIZE - 1)) == 1.0  # the window itself
    assert lit_fraction(probe, ys, xs, (0, SIZE - 1, 0, 2 * SIZE - 1)) == 0.5  # twice as wide: half lit
    assert lit_fraction(probe, ys, xs, (100, 110, 100, 110)) == 0.0  # far away, outside the map
    dim = probe.copy()
    dim[:, SIZE // 2 :] *= 0.2  # intensity 0.04 of the peak on the right half
    assert lit_fraction(dim, ys, xs, (0, SIZE - 1, 0, SIZE - 1)) == 0.5
    assert lit_fraction(dim, ys, xs, (0, SIZE - 1, 0, SIZE - 1), level=0.01) == 1.0
    with pytest.raises(ValueError, match="no pixel centre"):
        lit_fraction(probe, ys, xs, (0.2, 0.8, 0, 3))
