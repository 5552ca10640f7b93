"""Where a scan's probes light the object: the summed probe intensity over the scan, and the share of a region it
lights. A reconstruction can only be trusted where the probe went, and overlap-based methods (the held-out
validation of ``core.regularization``) only where several positions overlap.

Positions are probe centres in object pixels, as in the DATA-001 files (a window starts at ``centre - (N-1)/2``).
"""

from __future__ import annotations

import numpy as np

LIT_LEVEL = 0.1
"""A pixel counts as lit when the summed probe intensity there reaches this fraction of the probe's peak."""


def probe_intensity(probe: np.ndarray) -> np.ndarray:
    """|probe|² summed over its modes: (N, N)."""
    probe = np.asarray(probe)
    return np.sum(np.abs(probe.reshape(-1, *probe.shape[-2:]).astype(np.complex128)) ** 2, axis=0)


def window_starts(coords: np.ndarray, size: int) -> np.ndarray:
    """First pixel (integer) of the ``size``-wide window centred on each probe centre: ``round(c - (size-1)/2)``."""
    return np.rint(np.asarray(coords, float) - (size - 1) / 2).astype(np.int64)


def illumination(
    probe: np.ndarray, ycoords: np.ndarray, xcoords: np.ndarray, lighting: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """(map, origin_yx): the probe intensity summed over the positions (those where the boolean ``lighting`` is
    True, when given), on a grid just large enough for every position's window, whose pixel ``[0, 0]`` is object
    pixel ``origin_yx`` (positions rounded to whole pixels)."""
    intensity = probe_intensity(probe)
    size = intensity.shape[-1]
    starts_y, starts_x = window_starts(ycoords, size), window_starts(xcoords, size)
    origin = (int(starts_y.min()), int(starts_x.min()))
    lit = np.zeros((starts_y.max() - origin[0] + size, starts_x.max() - origin[1] + size))
    chosen = np.ones(starts_y.size, bool) if lighting is None else np.asarray(lighting, bool)
    for y, x in zip(starts_y[chosen] - origin[0], starts_x[chosen] - origin[1]):
        lit[y : y + size, x : x + size] += intensity
    return lit, origin


def lit_fraction(
    probe: np.ndarray, ycoords: np.ndarray, xcoords: np.ndarray, box: tuple[float, float, float, float],
    level: float = LIT_LEVEL,
) -> float:
    """Share of the object pixels whose centres lie in ``box = (ymin, ymax, xmin, xmax)`` where the scan's summed
    probe intensity reaches ``level`` times the probe's peak (1: the scan lights the whole box)."""
    lit, (oy, ox) = illumination(probe, ycoords, xcoords)
    ymin, ymax, xmin, xmax = box
    rows = np.arange(int(np.ceil(ymin)), int(np.floor(ymax)) + 1)
    cols = np.arange(int(np.ceil(xmin)), int(np.floor(xmax)) + 1)
    if rows.size == 0 or cols.size == 0:
        raise ValueError(f"box {box} holds no pixel centre")
    inside_y = (rows >= oy) & (rows < oy + lit.shape[0])
    inside_x = (cols >= ox) & (cols < ox + lit.shape[1])
    region = np.zeros((rows.size, cols.size))
    region[np.ix_(inside_y, inside_x)] = lit[np.ix_(rows[inside_y] - oy, cols[inside_x] - ox)]
    return float(np.mean(region >= level * probe_intensity(probe).max()))
