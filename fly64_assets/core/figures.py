"""Pictures of reconstructions, rendered off-screen to PNG bytes (matplotlib's Agg backend)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def png_bytes(figure, crop: bool = True) -> bytes:
    """The figure as PNG; ``crop`` trims it to what is drawn (one more full draw: the per-partition previews, drawn
    for every partition, place their panels themselves instead)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight" if crop else None)
    plt.close(figure)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Inline Markdown image (data URI), so the Dagster UI shows it without serving files."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def reconstruction_preview(obj: np.ndarray, probe: np.ndarray, title: str) -> bytes:
    """Object amplitude and phase, and probe amplitude, side by side."""
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    panels = (
        (np.abs(obj), "object amplitude", "gray"),
        (np.angle(obj), "object phase (rad)", "twilight"),
        (np.abs(probe.reshape(-1, *probe.shape[-2:])[0]), "probe amplitude", "magma"),
    )
    for axis, (image, label, cmap) in zip(axes, panels):
        shown = axis.imshow(image, cmap=cmap)
        axis.set_title(label)
        axis.set_axis_off()
        figure.colorbar(shown, ax=axis, fraction=0.046)
    figure.suptitle(title)
    figure.subplots_adjust(left=0.01, right=0.95, bottom=0.03, top=0.8, wspace=0.3)
    return png_bytes(figure, crop=False)


def curves_preview(loss_per_epoch, convergence: dict | None) -> bytes:
    """The loss per epoch (log scale) and, when a convergence curve was recorded (``{"epochs": [...],
    "phase_mae": [...], ...}``), the phase error against the truth at its snapshots, side by side."""
    epochs = (convergence or {}).get("epochs") or []
    with_truth = bool(epochs) and len((convergence or {}).get("phase_mae") or []) == len(epochs)
    figure, axes = plt.subplots(1, 2 if with_truth else 1, figsize=(8.0 if with_truth else 4.2, 2.6), squeeze=False)
    loss = np.asarray(loss_per_epoch, dtype=float)
    axes[0, 0].plot(np.arange(1, loss.size + 1), loss, color="#1f77b4")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set(title="loss (pty-chi)", xlabel="epoch")
    if with_truth:
        axes[0, 1].plot(epochs, convergence["phase_mae"], color="#d62728", marker="o", markersize=4)
        axes[0, 1].set(title="phase error against the truth", xlabel="epoch", ylabel="phase MAE (rad)")
    for axis in axes.ravel():
        axis.grid(True, alpha=0.3)
    figure.subplots_adjust(left=0.1 if with_truth else 0.17, right=0.98, bottom=0.19, top=0.89, wspace=0.32)
    return png_bytes(figure, crop=False)
