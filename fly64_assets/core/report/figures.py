"""The report's figures, as PNG bytes (matplotlib, off-screen): the phase images over the dose × view grid, the
metrics against dose with replicate error bars, the FRC resolution against dose with its fitted power laws, and
the convergence curves beside the loss. Colours, markers and line styles are the same per view in every
figure; a panel with nothing to show says why on grey."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fly64_assets.core.design import DOSES, SPLITS, VIEWS
from fly64_assets.core.figures import log_scale_plain_labels, plt, png_bytes
from fly64_assets.core.report.fits import CONVERGENCE_METRICS, convergence_verdicts, format_exponent
from fly64_assets.core.report.records import (
    EXPECTED_DOSE_EXPONENT,
    HIGHER_IS_BETTER,
    METRIC_LABELS,
    METRIC_UNITS,
    METRICS,
    NYQUIST_RESOLUTION_PX,
    SUCCEEDED,
    dose_label,
)
from fly64_assets.core.report.tables import replicate_summary

VIEW_COLORS: dict[str, str] = {"baseline": "#1f77b4", "dense": "#2ca02c", "sparse": "#d62728"}
VIEW_MARKERS: dict[str, str] = {"baseline": "o", "dense": "s", "sparse": "^"}
VIEW_LINESTYLES: dict[str, str] = {"baseline": "-", "dense": "--", "sparse": ":"}
VIEW_MARKER_SIZES: dict[str, float] = {"baseline": 9.0, "dense": 6.0, "sparse": 6.0}
"""Consistent per-view styles in every figure; the baseline is drawn widest so a view lying on top of it
stays distinguishable."""
_UNAVAILABLE_FACE = "#d9d9d9"
SPLIT_LINESTYLES: dict[str, str] = {"train": "-", "test": "--"}


def _unavailable_panel(axis, text: str) -> None:
    axis.set_facecolor(_UNAVAILABLE_FACE)
    axis.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#404040", transform=axis.transAxes, wrap=True)


def _bare(axis) -> None:
    axis.set_xticks([])
    axis.set_yticks([])


def phase_grid_png(
    truth_phase: np.ndarray,
    phases: dict[tuple[int, str], np.ndarray | None],
    split: str,
    notes: dict[tuple[int, str], str] | None = None,
) -> bytes:
    """The truth phase (top left), then one row per view and one column per dose of aligned
    reconstructed phases, all on the truth's colour scale (radians).

    A ``(dose, view)`` whose value is None is drawn as a grey "not reconstructed" panel, one absent
    from ``phases`` as a grey "missing" panel; ``notes`` may give the text for such a panel (e.g.
    ``"skipped: sparse view not written"``).
    """
    notes = notes or {}
    truth_phase = np.asarray(truth_phase, dtype=float)
    vmin, vmax = float(np.nanmin(truth_phase)), float(np.nanmax(truth_phase))
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    n_rows, n_cols = len(VIEWS), len(DOSES) + 1
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols + 0.8, 2.6 * n_rows), squeeze=False)
    image = axes[0, 0].imshow(truth_phase, cmap="viridis", vmin=vmin, vmax=vmax)
    axes[0, 0].set_title("ground truth", fontweight="bold")
    _bare(axes[0, 0])
    for r in range(1, n_rows):
        axes[r, 0].set_axis_off()

    for r, view in enumerate(VIEWS):
        for c, dose in enumerate(DOSES, start=1):
            axis = axes[r, c]
            _bare(axis)
            if r == 0:
                axis.set_title(f"{dose_label(dose)} photons/pattern")
            if c == 1:
                axis.set_ylabel(view, fontsize=12, fontweight="bold", color=VIEW_COLORS.get(view, "black"))
            key = (dose, view)
            panel = phases.get(key)
            if panel is None:
                default = "not reconstructed\n(skipped or failed)" if key in phases else "missing"
                _unavailable_panel(axis, notes.get(key, default))
                axis.set_box_aspect(truth_phase.shape[0] / truth_phase.shape[1])
                continue
            axis.imshow(np.asarray(panel, dtype=float), cmap="viridis", vmin=vmin, vmax=vmax)
    figure.colorbar(image, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label="phase (rad)")
    figure.suptitle(f"Object phase after registration and phase offset and ramp removal ({split} split)", fontsize=13)
    return png_bytes(figure)


def _metric_axis_label(metric: str) -> str:
    unit = METRIC_UNITS[metric]
    return f"{METRIC_LABELS[metric]} ({unit})" if unit else METRIC_LABELS[metric]


def _metric_points(rows: list[dict], summary: list[dict] | None, view: str, metric: str, split: str | None):
    """Per dose (``DOSES`` order): value (NaN where unscored), error (0 where none) and whether it rests on
    one split only. ``split`` None: mean ± half-difference over the splits (``summary``); else that split."""
    values, errors, single = [], [], []
    for dose in DOSES:
        if split is None:
            entry = next(s for s in summary if s["dose"] == dose and s["view"] == view)
            value, spread = entry[f"{metric}_mean"], entry[f"{metric}_spread"]
            one = value is not None and spread is None
        else:
            row = next((r for r in rows if r["dose"] == dose and r["view"] == view and r["split"] == split), None)
            value = row.get(metric) if row is not None and row["status"] == SUCCEEDED else None
            spread, one = None, False
        values.append(np.nan if value is None else value)
        errors.append(0.0 if spread is None else spread)
        single.append(one)
    return np.array(values, dtype=float), np.array(errors, dtype=float), np.array(single, dtype=bool)


def _view_style(view: str) -> dict:
    return {
        "color": VIEW_COLORS.get(view),
        "marker": VIEW_MARKERS.get(view, "o"),
        "markersize": VIEW_MARKER_SIZES.get(view, 6.0),
        "linestyle": VIEW_LINESTYLES.get(view, "-"),
        "linewidth": 2.5 if view == "baseline" else 1.5,
    }


def _draw_points(axis, doses, values, errors, single, view: str, with_line: bool = True) -> None:
    """Values with error bars (capped; drawn only where there is a spread), hollow markers where the point
    rests on one split, and the view's line through them when ``with_line``."""
    style = _view_style(view)
    has_error = errors > 0
    axis.errorbar(
        doses, values, yerr=np.where(has_error, errors, np.nan), fmt="none", ecolor=style["color"],
        elinewidth=1.2, capsize=4, capthick=1.2, zorder=3,
    )
    if with_line:
        axis.plot(doses, values, color=style["color"], linestyle=style["linestyle"], linewidth=style["linewidth"], zorder=2)
    marker = {"marker": style["marker"], "markersize": style["markersize"], "linestyle": "none", "zorder": 4}
    axis.plot(np.where(single, np.nan, doses), values, color=style["color"], **marker)
    axis.plot(np.where(single, doses, np.nan), values, color=style["color"], markerfacecolor="white", markeredgewidth=1.5, **marker)


_ONE_SPLIT_HANDLE_LABEL = "hollow: one split scored (no error bar)"


def _one_split_handle() -> Line2D:
    return Line2D([], [], color="#555555", marker="o", markerfacecolor="white", linestyle="none", markersize=7)


def _replicates_caption(split: str | None) -> str:
    return f"{split} split" if split is not None else "mean ± half-difference of the train and test splits"


def metrics_vs_dose_png(rows: list[dict], split: str | None = None) -> bytes:
    """One panel per metric, dose on a log axis, one line per view (consistent colours).

    ``split`` None (the default): each point is the mean of the train and test splits with the
    half-difference as its error bar (it spans the two values); a point resting on one split is drawn
    hollow without a bar. A split's name: that split's values only. The legend says how many doses each
    view has scored, so a view without data is visible as such."""
    summary = replicate_summary(rows) if split is None else None
    n_cols = 4
    n_rows = math.ceil(len(METRICS) / n_cols)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 3.0 * n_rows + 0.7), squeeze=False)
    doses = np.array(DOSES, dtype=float)
    counts = {}
    for axis, metric in zip(axes.ravel(), METRICS):
        for view in VIEWS:
            values, errors, single = _metric_points(rows, summary, view, metric, split)
            counts[view] = max(counts.get(view, 0), int(np.sum(np.isfinite(values))))
            _draw_points(axis, doses, values, errors, single, view)
        axis.set_xscale("log")
        axis.set_xticks(DOSES, [dose_label(d) for d in DOSES])
        axis.set_xlim(min(DOSES) / 2, max(DOSES) * 2)
        axis.minorticks_off()
        better = "higher is better" if metric in HIGHER_IS_BETTER else "lower is better"
        axis.set_title(f"{METRIC_LABELS[metric]} ({better})", fontsize=10)
        axis.set_ylabel(_metric_axis_label(metric), fontsize=9)
        axis.set_xlabel("dose (photons per pattern)", fontsize=9)
        axis.grid(True, alpha=0.3)
    for axis in axes.ravel()[len(METRICS):]:
        axis.set_axis_off()
    figure.suptitle(f"Reconstruction quality against dose ({_replicates_caption(split)})", fontsize=13)
    figure.subplots_adjust(left=0.055, right=0.99, bottom=0.16, top=0.86, wspace=0.3, hspace=0.42)
    handles = [Line2D([], [], **_view_style(view)) for view in VIEWS]
    labels = [f"{view} ({counts[view]}/{len(DOSES)} doses scored)" for view in VIEWS]
    if split is None:
        handles.append(_one_split_handle())
        labels.append(_ONE_SPLIT_HANDLE_LABEL)
    figure.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    return png_bytes(figure, crop=False)


def resolution_fit_png(rows: list[dict], exponents: dict[str, dict], split: str | None = None) -> bytes:
    """Log-log FRC resolution (px) against dose per view with its fitted power law, the 2 px Nyquist
    floor, and the D^-1/4 expectation drawn through the baseline's middle scored point.

    ``split`` None (the default): points are the mean ± half-difference of the two splits (hollow: one
    split) and ``exponents`` is :func:`dose_exponent_replicates` (the legend gives exponent ± uncertainty);
    a split's name: that split's points and ``exponents`` from :func:`dose_exponents` for it."""
    summary = replicate_summary(rows) if split is None else None
    figure, axis = plt.subplots(figsize=(7.0, 5.2))
    dose_grid = np.geomspace(min(DOSES) / 1.5, max(DOSES) * 1.5, 50)
    doses = np.array(DOSES, dtype=float)
    all_resolutions = []
    handles, labels = [], []
    baseline_points = None
    for view in VIEWS:
        style = _view_style(view)
        values, errors, single = _metric_points(rows, summary, view, "frc_resolution_px", split)
        values = np.where(values > 0, values, np.nan)
        finite = np.isfinite(values)
        all_resolutions.extend((values[finite] - errors[finite]).tolist() + (values[finite] + errors[finite]).tolist())
        if view == "baseline":
            baseline_points = (doses[finite], values[finite])
        fit = (exponents or {}).get(view) or {}
        n_doses = int(finite.sum())
        if fit.get("exponent") is not None:
            shown = format_exponent(fit) if split is None else f"{fit['exponent']:+.2f}"
            labels.append(f"{view}: exponent {shown} ({fit['n_points']} doses)")
            axis.plot(dose_grid, fit["prefactor"] * dose_grid ** fit["exponent"], color=style["color"],
                      linestyle=style["linestyle"], linewidth=style["linewidth"])
        else:
            labels.append(f"{view}: no fit ({n_doses} scored dose{'s' if n_doses != 1 else ''})")
        style["markersize"] += 1
        _draw_points(axis, doses, values, errors, single, view, with_line=False)
        handles.append(Line2D([], [], **style))
    if baseline_points is not None and baseline_points[0].size:
        middle = baseline_points[0].size // 2
        anchor_dose, anchor_res = baseline_points[0][middle], baseline_points[1][middle]
        expected = anchor_res * (dose_grid / anchor_dose) ** EXPECTED_DOSE_EXPONENT
        (line,) = axis.plot(dose_grid, expected, color="black", linestyle="-.", linewidth=1.2)
        handles.append(line)
        labels.append(f"expected $D^{{-1/4}}$ ({EXPECTED_DOSE_EXPONENT:+.2f}), through baseline at {dose_label(int(anchor_dose))}")
        all_resolutions.extend(expected.tolist())
    handles.append(axis.axhline(NYQUIST_RESOLUTION_PX, color="grey", linestyle=":", linewidth=1.0))
    labels.append(f"Nyquist floor ({NYQUIST_RESOLUTION_PX:g} px)")
    if split is None:
        handles.append(_one_split_handle())
        labels.append(_ONE_SPLIT_HANDLE_LABEL)
    axis.set_xscale("log")
    log_scale_plain_labels(axis)
    axis.set_xticks(DOSES, [dose_label(d) for d in DOSES])
    axis.set_xlim(dose_grid[0], dose_grid[-1])
    if all_resolutions:
        low, high = min(min(all_resolutions), NYQUIST_RESOLUTION_PX), max(all_resolutions)
        axis.set_ylim(low / 1.3, high * 1.3)
    else:
        where = "either split" if split is None else f"the {split} split"
        axis.text(0.5, 0.6, f"no scored jobs on {where}", ha="center", transform=axis.transAxes, color="#404040")
    axis.set_xlabel("dose (photons per pattern)")
    axis.set_ylabel("FRC resolution (px, full period)")
    axis.set_title(f"FRC resolution (1/7 threshold) against dose: lower is finer\n({_replicates_caption(split)})", fontsize=11)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(handles, labels, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    figure.subplots_adjust(left=0.115, right=0.885, bottom=0.27, top=0.89)  # centred: the legend below is wider
    return png_bytes(figure, crop=False)


def convergence_png(curves: dict) -> bytes:
    """Quality against the truth vs epoch beside the loss: one row per dose, columns phase MAE, FRC
    resolution (:data:`CONVERGENCE_METRICS`) and the loss per epoch (log scale); colour and marker = view,
    solid = train, dashed = test; a dotted vertical line in a view's colour marks where its phase error
    stops improving (:func:`convergence_notes`, judged before any TV phase; at its best epoch when it then gets
    worse); a grey band marks the epochs with TV where a run had unregularized ones before them. ``curves`` maps
    (dose, view, split) to ``{"epochs": [...], "<metric>": [...], "loss_per_epoch": [...], "tv_from_epoch": int |
    None}`` (any part may be absent); a dose with nothing recorded is greyed."""
    columns = (*CONVERGENCE_METRICS, "loss_per_epoch")
    verdicts = convergence_verdicts(curves, CONVERGENCE_METRICS[0])
    figure, axes = plt.subplots(len(DOSES), len(columns), figsize=(4.4 * len(columns), 2.9 * len(DOSES) + 0.8), squeeze=False)
    for r, dose in enumerate(DOSES):
        for c, column in enumerate(columns):
            axis = axes[r, c]
            drawn = False
            for view in VIEWS:
                for split in SPLITS:
                    curve = curves.get((dose, view, split)) or {}
                    style = {"color": VIEW_COLORS.get(view), "linestyle": SPLIT_LINESTYLES.get(split, "-"),
                             "linewidth": 2.0 if view == "baseline" else 1.4}
                    if column == "loss_per_epoch":
                        loss = np.asarray(curve.get("loss_per_epoch") or [], dtype=float)
                        if loss.size:
                            axis.plot(np.arange(1, loss.size + 1), loss, **style)
                            drawn = True
                    else:
                        epochs, values = curve.get("epochs") or [], curve.get(column) or []
                        if epochs and len(epochs) == len(values):
                            axis.plot(epochs, np.asarray(values, dtype=float), marker=VIEW_MARKERS.get(view, "o"), markersize=4, **style)
                            drawn = True
            if r == 0:
                title = "loss (pty-chi, per epoch)" if column == "loss_per_epoch" else f"{METRIC_LABELS[column]} vs truth"
                better = "" if column == "loss_per_epoch" else (" ↑" if column in HIGHER_IS_BETTER else " ↓")
                axis.set_title(title + better, fontsize=11)
            if c == 0:
                axis.set_ylabel(f"{dose_label(dose)} photons/pattern\n{_metric_axis_label(column)}", fontsize=9)
            elif column != "loss_per_epoch":
                axis.set_ylabel(_metric_axis_label(column), fontsize=9)
            if r == len(DOSES) - 1:
                axis.set_xlabel("epoch")
            if not drawn:
                _unavailable_panel(axis, "nothing recorded")
                _bare(axis)
                continue
            for start in {(curves.get((dose, v, s)) or {}).get("tv_from_epoch") for v in VIEWS for s in SPLITS} - {None, 1}:
                axis.axvspan(start - 1, axis.get_xlim()[1], color="grey", alpha=0.12, linewidth=0)  # after epoch start - 1
            if column in ("loss_per_epoch", "frc_resolution_px"):  # a FRC that never correlates is tens of px
                log_scale_plain_labels(axis)
            if column == "frc_resolution_px":
                axis.axhline(NYQUIST_RESOLUTION_PX, color="grey", linestyle=":", linewidth=1.0)
            if column == CONVERGENCE_METRICS[0]:
                for view in VIEWS:  # where the notes say it stops improving (or is best, when it then gets worse)
                    verdict = verdicts.get((dose, view)) or {}
                    epoch = verdict.get("best_epoch") if verdict.get("verdict") == "rises" else verdict.get("plateau_epoch")
                    if epoch is not None and verdict.get("verdict") != "still improving":
                        axis.axvline(epoch, color=VIEW_COLORS.get(view), linestyle=":", linewidth=1.2, alpha=0.8)
            axis.grid(True, alpha=0.3)
    figure.suptitle("Convergence: quality against the truth every few epochs, beside the loss", fontsize=13)
    figure.subplots_adjust(left=0.075, right=0.99, bottom=0.11, top=0.9, wspace=0.22, hspace=0.2)
    handles = [Line2D([], [], color=VIEW_COLORS.get(v), marker=VIEW_MARKERS.get(v, "o"), linewidth=2) for v in VIEWS]
    handles += [Line2D([], [], color="#555555", linestyle=SPLIT_LINESTYLES[s]) for s in SPLITS]
    handles.append(Line2D([], [], color="#555555", linestyle=":", linewidth=1.2))
    handles.append(Patch(color="grey", alpha=0.12))
    labels = [*VIEWS, *(f"{s} split" for s in SPLITS), "phase error stops improving (or is best) here", "TV phase"]
    figure.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    return png_bytes(figure, crop=False)
