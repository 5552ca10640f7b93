"""The embedded default dataset: a simulated fly64-like dose/overlap study in the spec's file layout.

One object (the ground truth) is scanned by one focused probe on a jittered raster; the far-field
patterns are simulated with pty-chi's own forward model, scaled to each dose and Poisson-sampled.
Phase C holds every position of a split; Phase D thins them with the greedy minimum-spacing selection
and, like the real study, writes no file for a view whose acceptance is under the guard.

Conventions, read from pty-chi 2.2.0 (``forward_models.py``, ``propagate.py``, ``io_handles.py``,
``image_proc.py``, ``data_structures/object.py``), so that a reconstruction started from
``probeGuess`` fits the data on their own scale:

- Far field: ``FourierPropagator()`` is built with ``norm=None``, i.e. an unnormalised forward
  ``torch.fft.fft2`` ("backward" norm), and the predicted intensity is ``|fft2(probe * patch)|**2``
  with DC in the corner. By Parseval the counts of a pattern sum to ``N * sum |probe * patch|**2``
  with ``N = 64 * 64``.
- Shift: with the default ``data_options.fft_shift=True`` pty-chi applies ``fftshift`` to the
  measured patterns, so files hold them DC-centred: ``fftshift(|fft2(...)|**2)`` (64 is even, so
  ``fftshift`` and ``ifftshift`` agree).
- Positions: pty-chi takes probe centres ``(y, x)`` in object pixels relative to an origin
  (``pos_origin_coords``, a half-integer); a centre ``c`` (origin added) selects the window starting
  at ``round(c - (64 - 1) / 2)`` (``extract_patches_integer``), i.e. the centre is the mean index of
  the window's pixels. The files use the same convention in ``objectGuess`` pixels: a window starting
  at integer pixel ``s`` has centre ``s + 31.5``. Positions are therefore half-integers, and any two
  differ by whole pixels, so no sub-pixel interpolation is involved.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fly64_assets.core.coverage import window_starts
from fly64_assets.core.design import (
    DOSES,
    MIN_ACCEPTANCE,
    PATTERN_SIZE,
    PHASE_D_VIEWS,
    SIMULATION_SEED,
    SPLITS,
    SUBSAMPLING_SEED,
    Dataset,
    spacing_threshold,
)


@dataclass(frozen=True)
class Scale:
    """The size of a simulated study; the physics (probe, object statistics, doses) is the same at every scale."""

    name: str
    object_size: int
    """Side of the square ground-truth object, pixels."""
    scan_step: int
    """Raster step, pixels; with the probe's ~45 px spot this sets the overlap, and against the Phase D
    spacing thresholds (38.4 / 102.4 px) it sets the dense and sparse acceptance."""
    jitter: int = 2
    """Each position moves by a uniform integer offset in [-jitter, jitter] px, to break the raster's periodicity."""

    @property
    def positions_per_side(self) -> int:
        """Raster points along each axis: as many as fit with the jittered probe window inside the object."""
        return (self.object_size - PATTERN_SIZE - 2 * self.jitter) // self.scan_step + 1


SCALES: dict[str, Scale] = {
    # 14 x 14 raster, 98 patterns per split: seconds on a laptop CPU, for tests and a first look. Step = 1/3 of the
    # spot diameter. The dense view keeps 13 positions per split, too few to cover the split's scan area.
    "demo": Scale("demo", object_size=264, scan_step=15),
    # The default study: 16 x 16 raster, 128 patterns per split. A step of 19 px, just under half the dense
    # spacing (38.4 px), lets the greedy selection keep ~19 % of the positions (24 per split) packed at ~42 px,
    # so the dense probes light 87-90 % of the scan area at >= 10 % of the probe's peak and 96-99 % at >= 1 %
    # (demo: 87-89 % and 95 %; larger rasters at step 15-18 keep 10-16 % and light 77-87 %). The sparse view
    # (102.4 px) keeps 3-4 % and is not written at any scale: the expected skip.
    "standard": Scale("standard", object_size=360, scan_step=19),
    # 64 x 64 raster, 2048 patterns per split, like fly64. The step is a little larger so the dense view
    # keeps >= 10 % of the positions over a large area (the greedy selection packs more loosely in the bulk).
    "full": Scale("full", object_size=1204, scan_step=18),
}
DEFAULT_SCALE = "standard"
"""The scale of ``fly64 study`` / ``make study``."""

APERTURE_RADIUS_PX = 12.0
"""Radius of the probe-forming aperture in the far field (detector pixels)."""
APERTURE_EDGE_PX = 2.0
"""Width of the aperture's soft edge; a hard edge would give ringing tails that wrap around the 64 px window."""
DEFOCUS_PHASE_RAD = 14.0
"""Defocus phase at the aperture edge; spreads the focus into a ~45 px spot (90 % of the energy within r ~ 23 px)."""

_OBJECT_STREAM, _SCAN_STREAM, _NOISE_STREAM = 0, 1, 2
"""Independent random streams derived from the simulation seed."""


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator for one purpose, independent of the others derived from the same seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def make_probe(size: int = PATTERN_SIZE) -> np.ndarray:
    """A focused probe of unit energy: a soft-edged circular aperture with defocus, propagated to the sample.

    The far field is band-limited by the aperture, so the probe is a compact spot with Fresnel rings.
    A linear phase in the far field moves the spot by half a pixel, onto the window's centre
    ``(size - 1) / 2``, which is where the scan positions point.
    """
    k = np.arange(size) - size // 2
    kr = np.hypot(k[:, None], k[None, :])
    aperture = 0.5 * (1.0 - np.tanh((kr - APERTURE_RADIUS_PX) / APERTURE_EDGE_PX))
    defocus = DEFOCUS_PHASE_RAD * (kr / APERTURE_RADIUS_PX) ** 2
    half_pixel_shift = np.pi * (k[:, None] + k[None, :]) / size
    far_field = aperture * np.exp(1j * (defocus + half_pixel_shift))
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(far_field)))
    return (probe / np.sqrt(np.sum(np.abs(probe) ** 2))).astype(np.complex64)


def _smooth_texture(size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to [0, 1]."""
    from scipy import ndimage  # scipy only where data are simulated: every fly64 command imports this module

    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma)
    return (texture - texture.min()) / (texture.max() - texture.min())


def _sharp_shapes(size: int, rng: np.random.Generator) -> np.ndarray:
    """Discs and rectangles with hard edges and values of either sign, about one per 80 x 80 px."""
    shapes = np.zeros((size, size))
    yy, xx = np.mgrid[:size, :size]
    for _ in range(max(4, size * size // 6400)):
        value = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
        cy, cx = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            radius = rng.uniform(4, 16)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        else:
            half_h, half_w = rng.uniform(3, 15, 2)
            inside = (np.abs(yy - cy) < half_h) & (np.abs(xx - cx) < half_w)
        shapes[inside] = value
    return shapes


def make_object(size: int, rng: np.random.Generator) -> np.ndarray:
    """The ground truth: amplitude in [0.6, 1], phase within about +-1.1 rad.

    A smooth random texture at two scales plus sharp shapes gives both low-frequency content and
    edges, so resolution (FRC) and phase fidelity can both be judged.
    """
    fine, coarse = _smooth_texture(size, 2.0, rng), _smooth_texture(size, 8.0, rng)
    shapes = _sharp_shapes(size, rng)
    phase = (0.3 * fine + 0.7 * coarse - 0.5) + 0.6 * shapes
    darkening = 0.5 * _smooth_texture(size, 4.0, rng) + 0.5 * np.abs(shapes)
    amplitude = 1.0 - 0.4 * (darkening - darkening.min()) / (darkening.max() - darkening.min())
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


# --------------------------------------------------------------------------------------------------
# Other kinds of data, for benchmarks (bench/regularization_study.py --family/--probe/--scan): object
# families, probes and scan patterns of a different character from the default study's. The default
# study (``simulate_study`` with its defaults, ``simulate_split`` without these keywords) does not use them.
# --------------------------------------------------------------------------------------------------


def _unit(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=float)
    return (image - image.min()) / (image.max() - image.min())


def _discs(size: int, rng: np.random.Generator, n: int, radius: tuple[float, float]) -> np.ndarray:
    """Hard-edged discs of value 1 (overlaps stay 1), centres uniform over the object."""
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((size, size))
    for _ in range(n):
        cy, cx = rng.uniform(0, size, 2)
        out[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(*radius) ** 2] = 1.0
    return out


def object_smooth(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field (correlation lengths ~6 and ~16 px), phase within about +-1 rad, weak amplitude
    (0.85-1) following it: no edges at all."""
    field = 0.5 * _smooth_texture(size, 6.0, rng) + 0.5 * _smooth_texture(size, 16.0, rng)
    phase = 2.0 * (_unit(field) - 0.5)
    amplitude = 1.0 - 0.15 * _unit(_smooth_texture(size, 10.0, rng))
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def object_discs(size: int, rng: np.random.Generator) -> np.ndarray:
    """Sharp-edged discs (radius 3-14 px, about one per 40 x 40 px) of 0.8 rad phase and 0.8 amplitude on a weak
    smooth random phase field (+-0.3 rad): the kind of object the independent simulation of issue 20 used."""
    discs = _discs(size, rng, max(6, size * size // 1600), (3.0, 14.0))
    background = 0.6 * (_unit(_smooth_texture(size, 12.0, rng)) - 0.5)
    phase = background + 0.8 * discs
    amplitude = 1.0 - 0.2 * discs
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def object_natural(size: int, rng: np.random.Generator) -> np.ndarray:
    """A natural image: scikit-image's ``camera`` as phase (0 to 1.6 rad) and ``coins`` as amplitude (0.5-1),
    each cut at a random place (rng) and resampled to ``size``; fine texture, edges and flat areas together."""
    from skimage import data
    from skimage.transform import resize

    def cut(image: np.ndarray) -> np.ndarray:
        side = min(image.shape)
        y0, x0 = (int(rng.integers(0, image.shape[i] - side + 1)) for i in (0, 1))
        return _unit(resize(image[y0 : y0 + side, x0 : x0 + side].astype(float), (size, size), anti_aliasing=True))

    phase = 1.6 * cut(data.camera())
    amplitude = 0.5 + 0.5 * cut(data.coins())
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def object_weak_phase(size: int, rng: np.random.Generator) -> np.ndarray:
    """The default object with its phase scaled to a fifth (within about +-0.15 rad), amplitude as is."""
    obj = make_object(size, rng)
    return (np.abs(obj) * np.exp(0.2j * np.angle(obj))).astype(np.complex64)


def object_strong_phase(size: int, rng: np.random.Generator) -> np.ndarray:
    """The default object with its phase tripled (within about +-2.1 rad at the demo scale), amplitude as is."""
    obj = make_object(size, rng)
    return (np.abs(obj) * np.exp(3j * np.angle(obj))).astype(np.complex64)


OBJECT_FAMILIES = {
    "default": make_object,
    "smooth": object_smooth,
    "discs": object_discs,
    "natural": object_natural,
    "weak_phase": object_weak_phase,
    "strong_phase": object_strong_phase,
}
"""Object families by name: ``f(size, rng) -> complex64 (size, size)``; ``default`` is the study's."""

PINHOLE_RADIUS_PX = 17.0
"""Radius of the aperture-limited probe's pinhole (sample plane, pixels)."""
PINHOLE_CURVATURE_RAD = 6.0
"""Phase of the aperture-limited probe's curved wavefront at the pinhole's edge (quadratic)."""


def make_aperture_probe(size: int = PATTERN_SIZE) -> np.ndarray:
    """An aperture-limited probe of unit energy: a soft-edged circular pinhole in the sample plane (radius
    ``PINHOLE_RADIUS_PX``) with a curved (quadratic) phase, centred on the window's centre ``(size - 1) / 2``.
    Unlike the default focused probe it has a flat-topped, sharp-edged spot and a wide far field."""
    r = np.arange(size) - (size - 1) / 2
    radius = np.hypot(r[:, None], r[None, :])
    amplitude = 0.5 * (1.0 - np.tanh((radius - PINHOLE_RADIUS_PX) / 1.5))
    phase = PINHOLE_CURVATURE_RAD * (radius / PINHOLE_RADIUS_PX) ** 2
    probe = amplitude * np.exp(1j * phase)
    return (probe / np.sqrt(np.sum(np.abs(probe) ** 2))).astype(np.complex64)


PROBES = {"focused": make_probe, "aperture": make_aperture_probe}
"""Probes by name: ``f() -> complex64 (64, 64)`` of unit energy; ``focused`` is the study's."""


def random_scan_positions(scale: Scale, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """As many probe centres as ``scan_positions``' raster, uniformly random (integer window starts) over the same
    area: no periodicity, uneven overlap."""
    n = scale.positions_per_side
    offset = (scale.object_size - PATTERN_SIZE - (n - 1) * scale.scan_step) // 2
    low, high = offset - scale.jitter, offset + (n - 1) * scale.scan_step + scale.jitter
    starts_y, starts_x = rng.integers(low, high + 1, (2, n * n))
    centre = (PATTERN_SIZE - 1) / 2
    order = np.lexsort((starts_x, starts_y))  # row by row, like the raster
    return starts_y[order] + centre, starts_x[order] + centre


SCANS = {"raster": None, "random": random_scan_positions}
"""Scan patterns by name; ``raster`` (the study's jittered raster) is ``scan_positions``."""


def scan_positions(scale: Scale, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Probe centres (ycoords, xcoords) of a jittered square raster, row by row, every window inside the object."""
    n = scale.positions_per_side
    offset = (scale.object_size - PATTERN_SIZE - (n - 1) * scale.scan_step) // 2
    grid = offset + scale.scan_step * np.arange(n)
    starts_y, starts_x = (a.ravel() for a in np.meshgrid(grid, grid, indexing="ij"))
    starts_y = starts_y + rng.integers(-scale.jitter, scale.jitter + 1, starts_y.size)
    starts_x = starts_x + rng.integers(-scale.jitter, scale.jitter + 1, starts_x.size)
    centre = (PATTERN_SIZE - 1) / 2
    return starts_y + centre, starts_x + centre


def split_mask(ycoords: np.ndarray) -> dict[str, np.ndarray]:
    """Spatial split along y: ``train`` is every position below the middle of the y range, ``test`` the rest."""
    ycoords = np.asarray(ycoords)
    middle = (ycoords.min() + ycoords.max()) / 2
    train = ycoords < middle
    return {"train": train, "test": ~train}


def greedy_min_spacing(
    ycoords: np.ndarray, xcoords: np.ndarray, threshold: float, rng: np.random.Generator
) -> np.ndarray:
    """Indices (ascending) of the positions Phase D keeps.

    Positions are visited in a random order; one is kept unless it lies closer than ``threshold`` to a
    position already kept. The result is maximal: every rejected position is within ``threshold`` of a kept one.
    """
    ycoords, xcoords = np.asarray(ycoords, float), np.asarray(xcoords, float)
    blocked = np.zeros(ycoords.size, dtype=bool)
    kept = []
    for i in rng.permutation(ycoords.size):
        if not blocked[i]:
            kept.append(i)
            blocked |= np.hypot(ycoords - ycoords[i], xcoords - xcoords[i]) < threshold
    return np.sort(np.asarray(kept, dtype=np.int64))


def far_field_intensity(probe: np.ndarray, obj: np.ndarray, ycoords: np.ndarray, xcoords: np.ndarray) -> np.ndarray:
    """Noise-free patterns, DC-centred: ``fftshift(|fft2(probe * window)|**2)`` (pty-chi's model, unnormalised FFT)."""
    size = probe.shape[0]
    starts_y, starts_x = window_starts(ycoords, size), window_starts(xcoords, size)
    offsets = np.arange(size)
    patches = obj[starts_y[:, None, None] + offsets[None, :, None], starts_x[:, None, None] + offsets[None, None, :]]
    far_field = np.fft.fft2(probe.astype(np.complex128) * patches.astype(np.complex128))
    return np.fft.fftshift(np.abs(far_field) ** 2, axes=(-2, -1))


def _scale_probe_to_dose(
    probe: np.ndarray, obj: np.ndarray, ycoords: np.ndarray, xcoords: np.ndarray, dose: int
) -> np.ndarray:
    """The probe scaled so the mean total counts per pattern over the whole scan equal ``dose``.

    By Parseval a pattern's total is ``N * sum |probe * window|**2``; the window sums of ``|obj|**2``
    weighted by ``|probe|**2`` are one correlation, so no pattern has to be simulated here.
    """
    from scipy import signal

    weighted = signal.correlate(
        np.abs(obj.astype(np.complex128)) ** 2, np.abs(probe.astype(np.complex128)) ** 2, mode="valid"
    )
    size = probe.shape[0]
    exit_energy = weighted[window_starts(ycoords, size), window_starts(xcoords, size)]
    mean_total = probe.size * exit_energy.mean()
    return (probe * np.sqrt(dose / mean_total)).astype(np.complex64)


@dataclass(frozen=True)
class _Scene:
    """What every dose and split share: the truth, the scan and the unit-energy probe."""

    scale: Scale
    seed: int
    obj: np.ndarray
    ycoords: np.ndarray
    xcoords: np.ndarray
    probe: np.ndarray


def _make_scene(
    scale: str | Scale, seed: int, family: str = "default", probe: str = "focused", scan: str = "raster"
) -> _Scene:
    scale = SCALES[scale] if isinstance(scale, str) else scale
    for kind, name, known in (("object family", family, OBJECT_FAMILIES), ("probe", probe, PROBES), ("scan", scan, SCANS)):
        if name not in known:
            raise ValueError(f"unknown {kind} {name!r}: expected one of {sorted(known)}")
    obj = OBJECT_FAMILIES[family](scale.object_size, _rng(seed, _OBJECT_STREAM))
    positions = SCANS[scan] or scan_positions
    ycoords, xcoords = positions(scale, _rng(seed, _SCAN_STREAM))
    return _Scene(scale, seed, obj, ycoords, xcoords, PROBES[probe]())


def _simulate(scene: _Scene, dose: int, split: str) -> dict[str, np.ndarray]:
    """One split's Phase C arrays at one dose; the noise stream depends on (seed, dose, split)."""
    probe = _scale_probe_to_dose(scene.probe, scene.obj, scene.ycoords, scene.xcoords, dose)
    index = np.flatnonzero(split_mask(scene.ycoords)[split])
    ycoords, xcoords = scene.ycoords[index], scene.xcoords[index]
    intensity = far_field_intensity(probe, scene.obj, ycoords, xcoords)
    counts = _rng(scene.seed, _NOISE_STREAM, dose, SPLITS.index(split)).poisson(intensity)
    return {
        "diffraction": np.sqrt(counts).astype(np.float32),
        "probeGuess": probe,
        "objectGuess": scene.obj,
        "xcoords": xcoords.astype(np.float64),
        "ycoords": ycoords.astype(np.float64),
        "scan_index": index.astype(np.int64),
    }


def simulate_split(
    scale: str | Scale,
    dose: int,
    split: str,
    seed: int = SIMULATION_SEED,
    *,
    family: str = "default",
    probe: str = "focused",
    scan: str = "raster",
) -> dict[str, np.ndarray]:
    """The Phase C arrays (DATA-001 keys, no ``_metadata``) of one split at one dose; ``family``, ``probe`` and
    ``scan`` pick other kinds of data (``OBJECT_FAMILIES``, ``PROBES``, ``SCANS``) for benchmarks, the study's
    by default."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    return _simulate(_make_scene(scale, seed, family, probe, scan), dose, split)


def _metadata(facts: dict) -> np.ndarray:
    """JSON text as a 0-d unicode array, readable with ``allow_pickle=False``."""
    return np.array(json.dumps(facts, sort_keys=True))


def simulated_scale(out_root: str | os.PathLike) -> str | None:
    """The scale named in the ``_metadata`` of the first readable Phase C file under ``out_root/phase_c``, or None
    (no such file, or none readable: a file broken on purpose is the study's to report, not this function's)."""
    for dose in DOSES:
        for split in SPLITS:
            path = Dataset(dose, "baseline", split).input_path(Path(out_root) / "phase_c", Path(out_root) / "phase_d")
            try:
                with np.load(path, allow_pickle=False) as saved:
                    return json.loads(str(saved["_metadata"]))["scale"]
            except (OSError, KeyError, ValueError, TypeError):
                continue
    return None


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temporary ``.npz`` beside ``path`` and rename it, so no reader ever sees a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.npz")
    try:
        with open(temporary, "xb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _phase_d_arrays(
    phase_c: dict[str, np.ndarray], kept: np.ndarray, view: str, source_file: str, min_acceptance: float
) -> dict[str, np.ndarray]:
    """The Phase D file of one view: the kept rows of the Phase C split, and the selection facts as ``_metadata``."""
    n = phase_c["diffraction"].shape[0]
    facts = {
        "selection_strategy": "greedy_min_spacing",
        "spacing_threshold": spacing_threshold(view),
        "n_accepted": int(kept.size),
        "n_rejected": int(n - kept.size),
        "acceptance_rate": kept.size / n,
        "overlap_view": view,
        "source_file": source_file,
        "effective_min_acceptance": min_acceptance,
        "seed": SUBSAMPLING_SEED,
    }
    subset = {key: phase_c[key][kept] for key in ("diffraction", "xcoords", "ycoords", "scan_index")}
    shared = {key: phase_c[key] for key in ("probeGuess", "objectGuess")}
    return {**subset, **shared, "_metadata": _metadata(facts)}


def simulate_study(
    out_root: str | os.PathLike,
    scale: str | Scale = DEFAULT_SCALE,
    seed: int = SIMULATION_SEED,
    min_acceptance: float = MIN_ACCEPTANCE,
) -> dict:
    """Write the whole study under ``out_root/phase_c`` and ``out_root/phase_d``; return what was written and skipped.

    Summary: ``written`` maps each file (path relative to ``out_root``) to its number of patterns;
    ``skipped`` maps each Phase D file not written to its ``reason`` and ``acceptance_rate``. A stale
    file at a skipped path is removed, so the tree always matches the summary.
    """
    out_root = Path(out_root)
    phase_c_root, phase_d_root = out_root / "phase_c", out_root / "phase_d"
    scene = _make_scene(scale, seed)
    split_masks = split_mask(scene.ycoords)
    # Positions are the same at every dose, so each (split, view) selection is computed once.
    selections = {
        (split, view): greedy_min_spacing(
            scene.ycoords[split_masks[split]],
            scene.xcoords[split_masks[split]],
            spacing_threshold(view),
            np.random.default_rng(SUBSAMPLING_SEED),
        )
        for split in SPLITS
        for view in PHASE_D_VIEWS
    }
    summary: dict = {
        "scale": scene.scale.name,
        "seed": seed,
        "min_acceptance": min_acceptance,
        "written": {},
        "skipped": {},
    }
    for dose in DOSES:
        for split in SPLITS:
            arrays = _simulate(scene, dose, split)
            n = arrays["diffraction"].shape[0]
            phase_c_path = Dataset(dose, "baseline", split).input_path(phase_c_root, phase_d_root)
            phase_c_facts = {
                "dose": dose,
                "split": split,
                "seed": seed,
                "scale": scene.scale.name,
                "photons_per_pattern": dose,
            }
            _save_npz_atomic(phase_c_path, {**arrays, "_metadata": _metadata(phase_c_facts)})
            summary["written"][phase_c_path.relative_to(out_root).as_posix()] = n
            for view in PHASE_D_VIEWS:
                kept = selections[(split, view)]
                acceptance = kept.size / n
                path = Dataset(dose, view, split).input_path(phase_c_root, phase_d_root)
                relative = path.relative_to(out_root).as_posix()
                if acceptance < min_acceptance:
                    path.unlink(missing_ok=True)
                    reason = (
                        f"{view} view not written by Phase D: acceptance {acceptance:.1%} "
                        f"< {min_acceptance:.0%} spacing guard"
                    )
                    summary["skipped"][relative] = {"reason": reason, "acceptance_rate": acceptance}
                    continue
                source_file = phase_c_path.relative_to(phase_c_root).as_posix()
                _save_npz_atomic(path, _phase_d_arrays(arrays, kept, view, source_file, min_acceptance))
                summary["written"][relative] = int(kept.size)
    return summary
