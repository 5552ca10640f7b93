"""Pictures of reconstructions, rendered off-screen to PNG bytes (matplotlib's Agg backend)."""

from __future__ import annotations

import base64
import functools
import io
import math
import threading

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def png_bytes(figure, crop: bool = True, close: bool = True) -> bytes:
    """The figure as PNG. ``crop`` trims it to what is drawn, at the cost of one more full draw; figures whose panels
    are placed by hand pass False. ``close=False`` keeps a figure that is drawn again (the previews)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight" if crop else None)
    if close:
        plt.close(figure)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Inline Markdown image (data URI), so the Dagster UI shows it without serving files."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def _log_minor_label(value: float, _position=None) -> str:
    """Label the 2, 3 and 5 minor ticks of a log axis (a range is often under a decade)."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (2.0, 3.0, 5.0) else ""


def log_scale_plain_labels(axis) -> None:
    """A log y axis labelled in plain numbers (0.01, 2, 5e-05). Matplotlib's default labels are ``10^n`` set in
    mathtext, which costs ~30 ms per distinct label to typeset: most of a small figure's drawing time."""
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.yaxis.set_minor_formatter(FuncFormatter(_log_minor_label))


def _show_image(image, data: np.ndarray) -> None:
    """Put ``data`` into an ``imshow`` image of any earlier shape, on its own colour scale."""
    height, width = data.shape
    image.set_data(data)
    image.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))
    image.axes.set_xlim(-0.5, width - 0.5)
    image.axes.set_ylim(height - 0.5, -0.5)
    image.autoscale()


class _ReconstructionCanvas:
    """The preview of a reconstruction: built once per process, then redrawn with each partition's images.
    Building it (three images, three colour bars) costs as much as drawing it, and every partition draws one."""

    PANELS = (("object amplitude", "gray"), ("object phase (rad)", "twilight"), ("probe amplitude", "magma"))

    def __init__(self) -> None:
        self.figure, axes = plt.subplots(1, 3, figsize=(10, 3.4))
        self.images = []
        for axis, (label, cmap) in zip(axes, self.PANELS):
            image = axis.imshow(np.zeros((2, 2)), cmap=cmap)
            axis.set_title(label)
            axis.set_axis_off()
            self.figure.colorbar(image, ax=axis, fraction=0.046)
            self.images.append(image)
        self.title = self.figure.suptitle("")
        self.figure.subplots_adjust(left=0.01, right=0.95, bottom=0.03, top=0.8, wspace=0.3)
        self.lock = threading.Lock()

    def draw(self, panels: tuple[np.ndarray, ...], title: str) -> bytes:
        with self.lock:
            for image, data in zip(self.images, panels):
                _show_image(image, data)
            self.title.set_text(title)
            return png_bytes(self.figure, crop=False, close=False)


class _CurvesCanvas:
    """The loss per epoch (log scale) and, ``with_truth``, the phase error at the convergence snapshots: built
    once per process and layout, then redrawn with each partition's curves."""

    def __init__(self, with_truth: bool) -> None:
        self.figure, axes = plt.subplots(1, 2 if with_truth else 1, figsize=(8.0 if with_truth else 4.2, 2.6), squeeze=False)
        self.axes = axes.ravel()
        (self.loss,) = self.axes[0].plot([], [], color="#1f77b4")
        log_scale_plain_labels(self.axes[0])
        self.axes[0].set(title="loss (pty-chi)", xlabel="epoch")
        self.phase_error = None
        if with_truth:
            (self.phase_error,) = self.axes[1].plot([], [], color="#d62728", marker="o", markersize=4)
            self.axes[1].set(title="phase error against the truth", xlabel="epoch", ylabel="phase MAE (rad)")
        for axis in self.axes:
            axis.grid(True, alpha=0.3)
        self.figure.subplots_adjust(left=0.1 if with_truth else 0.17, right=0.98, bottom=0.19, top=0.89, wspace=0.32)
        self.lock = threading.Lock()

    def draw(self, loss: np.ndarray, epochs=None, phase_mae=None) -> bytes:
        with self.lock:
            self.loss.set_data(np.arange(1, loss.size + 1), loss)
            if self.phase_error is not None:
                self.phase_error.set_data(epochs, phase_mae)
            for axis in self.axes:
                axis.relim()
                axis.autoscale_view()
            return png_bytes(self.figure, crop=False, close=False)


@functools.cache
def _reconstruction_canvas() -> _ReconstructionCanvas:
    return _ReconstructionCanvas()


@functools.cache
def _curves_canvas(with_truth: bool) -> _CurvesCanvas:
    return _CurvesCanvas(with_truth)


def reconstruction_preview(obj: np.ndarray, probe: np.ndarray, title: str) -> bytes:
    """Object amplitude and phase, and probe amplitude, side by side."""
    panels = (np.abs(obj), np.angle(obj), np.abs(probe.reshape(-1, *probe.shape[-2:])[0]))
    return _reconstruction_canvas().draw(panels, title)


def curves_preview(loss_per_epoch, convergence: dict | None) -> bytes:
    """The loss per epoch (log scale) and, when a convergence curve was recorded (``{"epochs": [...],
    "phase_mae": [...], ...}``), the phase error against the truth at its snapshots, side by side."""
    epochs = (convergence or {}).get("epochs") or []
    loss = np.asarray(loss_per_epoch, dtype=float)
    if epochs and len((convergence or {}).get("phase_mae") or []) == len(epochs):
        return _curves_canvas(True).draw(loss, epochs, np.asarray(convergence["phase_mae"], dtype=float))
    return _curves_canvas(False).draw(loss)
