"""A partition's two previews are drawn on figures that each process builds once and redraws: a preview must not
depend on what was drawn before it (another object's shape or values, curves with or without a truth). Each is
compared, pixel for pixel, with the same figure built from scratch the plain matplotlib way."""

from __future__ import annotations

import io

import numpy as np
from matplotlib import image

from fly64_assets.core import figures
from fly64_assets.core.figures import log_scale_plain_labels, plt, png_bytes
from fly64_assets_tests.figure_checks import assert_figure_drawn


def _pixels(png: bytes) -> np.ndarray:
    return image.imread(io.BytesIO(png), format="png")


def _object(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((0.2 + rng.random(shape)) * np.exp(1j * rng.uniform(-2, 2, shape))).astype(np.complex64)


def _probe(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((1, 1, size, size)) * 3.0).astype(np.complex64)


def _preview_from_scratch(obj: np.ndarray, probe: np.ndarray, title: str) -> bytes:
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    panels = (np.abs(obj), np.angle(obj), np.abs(probe[0, 0]))
    for axis, data, (label, cmap) in zip(axes, panels, figures._ReconstructionCanvas.PANELS):  # noqa: SLF001
        shown = axis.imshow(data, cmap=cmap)
        axis.set_title(label)
        axis.set_axis_off()
        figure.colorbar(shown, ax=axis, fraction=0.046)
    figure.suptitle(title)
    figure.subplots_adjust(left=0.01, right=0.95, bottom=0.03, top=0.8, wspace=0.3)
    return png_bytes(figure, crop=False)


def _curves_from_scratch(loss: np.ndarray, convergence: dict | None) -> bytes:
    figure, axes = plt.subplots(1, 2 if convergence else 1, figsize=(8.0 if convergence else 4.2, 2.6), squeeze=False)
    axes[0, 0].plot(np.arange(1, loss.size + 1), loss, color="#1f77b4")
    log_scale_plain_labels(axes[0, 0])
    axes[0, 0].set(title="loss (pty-chi)", xlabel="epoch")
    if convergence:
        axes[0, 1].plot(convergence["epochs"], convergence["phase_mae"], color="#d62728", marker="o", markersize=4)
        axes[0, 1].set(title="phase error against the truth", xlabel="epoch", ylabel="phase MAE (rad)")
    for axis in axes.ravel():
        axis.grid(True, alpha=0.3)
    figure.subplots_adjust(left=0.1 if convergence else 0.17, right=0.98, bottom=0.19, top=0.89, wspace=0.32)
    return png_bytes(figure, crop=False)


def test_a_reconstruction_preview_is_the_same_whatever_was_drawn_before_it():
    wide, wide_probe = _object((90, 210), seed=1), _probe(48, seed=2)
    fresh = _preview_from_scratch(wide, wide_probe, "wide")
    figures.reconstruction_preview(_object((160, 120), seed=3), _probe(64, seed=4), "tall, other values")
    redrawn = figures.reconstruction_preview(wide, wide_probe, "wide")
    assert_figure_drawn(redrawn, "preview")
    np.testing.assert_array_equal(_pixels(redrawn), _pixels(fresh))


def test_a_curves_preview_is_the_same_whatever_was_drawn_before_it():
    loss = np.geomspace(3.0, 2e-4, 40)
    convergence = {"epochs": [10, 20, 30, 40], "phase_mae": [0.9, 0.5, 0.3, 0.25]}
    fresh_with, fresh_without = _curves_from_scratch(loss, convergence), _curves_from_scratch(loss, None)
    figures.curves_preview(np.geomspace(1e6, 5e5, 7), {"epochs": [1, 7], "phase_mae": [3.0, 2.9]})
    figures.curves_preview(np.linspace(0.5, 0.4, 3), None)
    with_truth, without = figures.curves_preview(loss, convergence), figures.curves_preview(loss, None)
    assert_figure_drawn(with_truth, "curves with the truth")
    np.testing.assert_array_equal(_pixels(with_truth), _pixels(fresh_with))
    np.testing.assert_array_equal(_pixels(without), _pixels(fresh_without))
    assert _pixels(with_truth).shape[1] > _pixels(without).shape[1], "the phase error panel is missing"
