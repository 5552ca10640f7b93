"""What a figure must show to count as drawn, checked on its pixels rather than on its file signature."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from matplotlib import image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_SPREAD = 0.05
"""The least standard deviation of the grey levels (0 black … 1 white): a blank or flat image has about 0."""
MIN_DRAWN_SHARE = 0.03
"""The least share of pixels that differ from the background (the most common grey level)."""
MIN_AXIS_LINE = 0.2
MIN_AXIS_PX = 40
"""An axis line: an unbroken run of dark pixels along a row or column, at least this share of the image's width
or height and this many pixels long (text, however dark, is broken between its letters and short)."""


def assert_figure_drawn(png: bytes, name: str = "figure") -> None:
    """``png`` decodes as a PNG whose pixels vary, a fair share of which are drawn on the background, with at least
    one unbroken dark line as long as a fifth of the image (an axis or a panel's frame)."""
    assert png.startswith(PNG_SIGNATURE), f"{name}: not a PNG"
    grey = image.imread(io.BytesIO(png), format="png")[..., :3].mean(axis=-1)
    assert grey.std() > MIN_SPREAD, f"{name}: blank (grey-level spread {grey.std():.3f})"
    levels, counts = np.unique(np.round(grey, 2), return_counts=True)
    drawn = np.mean(np.abs(grey - levels[np.argmax(counts)]) > 0.02)
    assert drawn > MIN_DRAWN_SHARE, f"{name}: only {drawn:.1%} of the pixels drawn"
    dark = grey < 0.5
    along_rows, along_columns = _longest_run(dark), _longest_run(dark.T)
    assert max(along_rows / grey.shape[1], along_columns / grey.shape[0]) > MIN_AXIS_LINE and max(
        along_rows, along_columns
    ) >= MIN_AXIS_PX, f"{name}: no axis drawn (longest dark lines {along_rows} and {along_columns} px)"


def _longest_run(mask: np.ndarray) -> int:
    """The longest run of True along any row of ``mask``."""
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    return int((ends[1] - starts[1]).max()) if starts[1].size else 0


def png_in_markdown(text: str) -> bytes:
    """The PNG of the one inline image (``![alt](data:image/png;base64,...)``) in Markdown metadata."""
    (encoded,) = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    return base64.b64decode(encoded)
