"""One pty-chi LSQML reconstruction: arrays in, result out (no Dagster here).

torch and pty-chi are imported inside the functions that need them: a process that only loads the code
location (the daemon, the code server, a summary run) never pays for them. The physics follows the study spec: pty-chi is given intensities (amplitudes squared, DC centred),
probe-centre positions zero-centred on their mean, the file's probe as the starting probe and an
object of ones (never ``objectGuess``, which is the ground truth in this study).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from fly64_assets.core.imports import import_for_good
from fly64_assets.core.options import ReconstructionOptions

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, float], None]
"""Called after every epoch with (epoch number from 1, loss); raising from it stops the run."""

SnapshotCallback = Callable[[int, np.ndarray, tuple[float, float]], None]
"""Called every ``snapshot_every`` epochs (and after the last) with (epoch, the object so far as complex64,
``object_origin_yx``): e.g. to score convergence against a known truth. Copying the object off the device
costs a few milliseconds, so it is only done when asked for."""


def import_ptychi() -> None:
    """torch and pty-chi, imported once per process and frozen (``core.imports.import_for_good`` says why)."""
    import_for_good("torch", "ptychi.api.task", "ptychi.utils")


class DeviceUnavailableError(RuntimeError):
    """The requested torch device does not exist on this machine."""


class GpuOutOfMemoryError(RuntimeError):
    """The reconstruction did not fit in GPU memory even at the smallest batch size tried."""


MAX_OOM_RETRIES = 3
"""Out-of-memory restarts, each at half the previous batch size."""


@dataclass(frozen=True)
class ReconstructionResult:
    """What one reconstruction produced."""

    object: np.ndarray
    """Reconstructed object, complex64 (H, W)."""
    probe: np.ndarray
    """Reconstructed probe, complex64 (modes, h, w)."""
    loss_per_epoch: np.ndarray
    """pty-chi's displayed loss after each epoch, float64 (epochs,)."""
    wall_time_s: float
    """Wall time of building the task and running every epoch."""
    device: str
    """The torch device it ran on, e.g. ``cpu`` or ``cuda:0``."""
    n_patterns: int
    options: ReconstructionOptions
    object_origin_yx: tuple[float, float]
    """Where pixel [0, 0] of ``object`` lies in the input frame (``objectGuess`` pixels)."""
    batch_sizes_tried: tuple[int, ...]
    """Mini-batch sizes used, in order: more than one means out-of-memory restarts; the last one succeeded."""


def balanced_batch_size(n_patterns: int, batch_size: int) -> int:
    """The batch size giving as many mini-batches as ``batch_size`` does, but of equal sizes.

    pty-chi's loader leaves the remainder as a last batch: 98 patterns at 96 gives batches of 96 and
    2, and the 2-pattern update is noisy. Keeping the count and evening the sizes (49 + 49) keeps the
    spec's cost per epoch and removes that noise.
    """
    n_batches = max(1, math.ceil(n_patterns / batch_size))
    return math.ceil(n_patterns / n_batches)


def resolve_device(requested: str):
    """Turn ``auto``/``cpu``/``cuda``/``cuda:i`` into a ``torch.device`` that exists, or raise DeviceUnavailableError."""
    import torch

    if requested == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise DeviceUnavailableError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:<index>") from error
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceUnavailableError(f"unsupported device {requested!r}: use auto, cpu, cuda or cuda:<index>")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {requested!r} was requested but this machine has no CUDA GPU")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"device {requested!r} was requested but only {torch.cuda.device_count()} CUDA GPU(s) are visible"
        )
    return torch.device("cuda", index)


PTYCHI_EPOCH_LOGGER = "ptychi.reconstructors.base"
"""At INFO this logger prints the loss per epoch (we report it ourselves) and makes pty-chi draw a tqdm
progress bar on stderr, which floods consoles and run logs; it is held at WARNING during a run."""


@contextlib.contextmanager
def _isolated_ptychi_state(device, cpu_threads: int | None = None) -> Iterator[None]:
    """pty-chi sets torch's process-wide default device and dtypes; restore them (and torch's thread count,
    when ``cpu_threads`` sets it for a CPU reconstruction) afterwards."""
    import ptychi.utils
    import torch

    saved_device = torch.get_default_device()
    saved_dtype = torch.get_default_dtype()
    saved_complex = ptychi.utils.get_default_complex_dtype()
    epoch_logger = logging.getLogger(PTYCHI_EPOCH_LOGGER)
    saved_level = epoch_logger.level
    epoch_logger.setLevel(logging.WARNING)
    saved_threads = torch.get_num_threads()
    if cpu_threads is not None and device.type == "cpu":
        torch.set_num_threads(cpu_threads)
    cuda_context = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with cuda_context:
            yield
    finally:
        torch.set_default_device(saved_device)
        torch.set_default_dtype(saved_dtype)
        ptychi.utils.set_default_complex_dtype(saved_complex)
        epoch_logger.setLevel(saved_level)
        torch.set_num_threads(saved_threads)


def _grid_preserving_center(coords: np.ndarray) -> float:
    """The mean of ``coords``, moved by under half a pixel to a value with the positions' own fractional part.

    pty-chi adds a half-integer origin to the zero-centred positions and cuts windows starting at
    ``round(centre - (64 - 1) / 2)``. Subtracting a centre with the positions' fractional part keeps
    positions that sit exactly on pty-chi's window grid (as the synthetic ones do) exactly on it, so
    no sub-pixel interpolation blurs them; for arbitrary positions it is just a near-mean centre.
    """
    coords = np.asarray(coords, dtype=float)
    fraction = float(coords[0] % 1.0)
    return float(np.round(np.mean(coords) - fraction) + fraction)


def _fixed_tv_weight(options: ReconstructionOptions) -> float:
    weight = options.regularization.tv_weight
    if weight is None:
        raise ValueError(
            "regularization auto chooses the TV weight per dataset: call fly64_assets.core.regularization."
            "choose_and_reconstruct (reconstruct() takes off or a fixed tv_* weight)"
        )
    return weight


def _build_options(options: ReconstructionOptions, device, batch_size: int, warm_probe: bool = False):
    import ptychi.api as api

    tv_weight = _fixed_tv_weight(options)

    lsqml = api.LSQMLOptions()
    lsqml.data_options.fft_shift = True  # the files hold DC-centred patterns
    recon = lsqml.reconstructor_options
    recon.num_epochs = options.epochs
    recon.batch_size = batch_size
    recon.noise_model = api.NoiseModels(options.noise_model.value)
    recon.default_device = api.Devices.GPU if device.type == "cuda" else api.Devices.CPU
    recon.random_seed = options.random_seed
    # A probe carried over from an earlier reconstruction is already on the data's scale.
    recon.rescale_probe_intensity_in_first_epoch = not warm_probe
    lsqml.object_options.optimizable = options.optimize_object
    if tv_weight > 0:  # pty-chi: a Chambolle TV step on the object after every epoch (of its plan)
        lsqml.object_options.total_variation.enabled = True
        lsqml.object_options.total_variation.weight = tv_weight
        if options.tv_last_epochs is not None:
            lsqml.object_options.total_variation.optimization_plan.start = max(0, options.epochs - options.tv_last_epochs)
    lsqml.probe_options.optimizable = options.optimize_probe
    lsqml.probe_position_options.optimizable = options.optimize_positions
    return lsqml


@dataclass(frozen=True)
class _Prepared:
    """The arrays pty-chi is given, in its conventions."""

    intensities: np.ndarray
    probe: np.ndarray
    positions_yx: np.ndarray
    center_yx: tuple[float, float]
    object_shape: tuple[int, int]
    initial_object: np.ndarray | None = None
    """(H, W) starting object in this frame; None: ones."""
    initial_probe: np.ndarray | None = None
    """(1, 1, h, w) starting probe already on the data's scale (no first-epoch rescaling); None: the file's probe."""


def _prepare(diffraction_amplitude, probe_guess, ycoords, xcoords) -> _Prepared:
    from ptychi.utils import get_suggested_object_size

    center_yx = (_grid_preserving_center(ycoords), _grid_preserving_center(xcoords))
    positions = np.stack([np.asarray(ycoords, float) - center_yx[0], np.asarray(xcoords, float) - center_yx[1]], axis=1)
    # The object buffer is centred on the origin of the positions; the centre need not be the mid-point
    # of the scan, so pad by the offset on both sides to keep every probe window inside the buffer.
    skew = np.abs(positions.max(axis=0) + positions.min(axis=0)).max()
    return _Prepared(
        intensities=np.square(np.asarray(diffraction_amplitude, dtype=np.float32)),
        probe=np.asarray(probe_guess, dtype=np.complex64).reshape(1, 1, *probe_guess.shape[-2:]),
        positions_yx=positions,
        center_yx=center_yx,
        object_shape=get_suggested_object_size(positions, probe_guess.shape[-2:], extra=int(np.ceil(skew)) + 2),
    )


def _object_origin_yx(data: _Prepared, task) -> tuple[float, float]:
    """Where pixel [0, 0] of the task's object lies in the input frame."""
    origin = task.object.pos_origin_coords.detach().cpu().numpy()
    return data.center_yx[0] - float(origin[0]), data.center_yx[1] - float(origin[1])


def _run_lsqml(
    data: _Prepared, options: ReconstructionOptions, device, batch_size: int, on_epoch, cpu_threads=None,
    snapshot: tuple[int, SnapshotCallback] | None = None,
):
    """One attempt: build the task, run every epoch, return (object, probe, losses, origin, device)."""
    from ptychi.api.task import PtychographyTask

    losses: list[float] = []
    with _isolated_ptychi_state(device, cpu_threads):
        start_object = np.ones(data.object_shape, np.complex64) if data.initial_object is None else data.initial_object
        task = PtychographyTask(
            _build_options(options, device, batch_size, warm_probe=data.initial_probe is not None),
            diffraction_data=data.intensities,
            object_data=np.array(start_object, dtype=np.complex64).reshape(1, *data.object_shape),
            probe_data=data.probe if data.initial_probe is None else data.initial_probe,
            probe_position_x_px=data.positions_yx[:, 1],
            probe_position_y_px=data.positions_yx[:, 0],
        )
        origin_yx = _object_origin_yx(data, task)
        for epoch in range(1, options.epochs + 1):
            task.run(1)
            losses.append(float(task.reconstructor.loss_tracker.table["loss"].iloc[-1]))
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
            if snapshot is not None and (epoch % snapshot[0] == 0 or epoch == options.epochs):
                snapshot[1](epoch, task.get_data_to_cpu("object", as_numpy=True)[0].astype(np.complex64), origin_yx)
        obj = task.get_data_to_cpu("object", as_numpy=True)[0].astype(np.complex64)
        probe = task.get_data_to_cpu("probe", as_numpy=True)[0].astype(np.complex64)
        return obj, probe, losses, origin_yx, str(task.object.data.device)


def reconstruct(
    diffraction_amplitude: np.ndarray,
    probe_guess: np.ndarray,
    ycoords: np.ndarray,
    xcoords: np.ndarray,
    options: ReconstructionOptions,
    on_epoch: EpochCallback | None = None,
    cpu_threads: int | None = None,
    snapshot_every: int = 0,
    on_snapshot: SnapshotCallback | None = None,
    *,
    use_patterns: np.ndarray | None = None,
    initial_object: np.ndarray | None = None,
    initial_probe: np.ndarray | None = None,
) -> ReconstructionResult:
    """Reconstruct one dataset with pty-chi LSQML, epoch by epoch.

    ``diffraction_amplitude`` is (n, H, W) amplitude as stored in DATA-001 files; positions are probe
    centres in ``objectGuess`` pixels. Raises DeviceUnavailableError before any work if the device is
    absent. A CUDA out-of-memory error restarts the run with half the batch size, at most
    ``MAX_OOM_RETRIES`` times, then raises GpuOutOfMemoryError naming the sizes tried. ``cpu_threads`` caps
    torch's threads for a CPU reconstruction (None: torch's default, every core), so that reconstructions
    running side by side share the cores instead of oversubscribing them. ``on_snapshot`` gets the object every
    ``snapshot_every`` epochs and after the last (see ``SnapshotCallback``).

    The object is regularized as ``options.regularization`` fixes it (``off`` or a ``tv_*`` weight;
    ``auto`` raises ValueError: the choice is ``core.regularization.choose_and_reconstruct``'s). For that
    choice: ``use_patterns`` (boolean, one per pattern) reconstructs on a subset only, in the object frame
    (size and ``object_origin_yx``) of all the positions, so a left-out position's window lies inside the
    object; ``initial_object`` (an earlier result's object, same frame) and ``initial_probe`` (its probe,
    not rescaled again) continue from an earlier state.
    """
    import_ptychi()
    import torch

    device = resolve_device(options.device)
    _fixed_tv_weight(options)  # auto: fail before any work
    data = _prepare(diffraction_amplitude, probe_guess, ycoords, xcoords)
    if use_patterns is not None:
        use_patterns = np.asarray(use_patterns, dtype=bool)
        if use_patterns.shape != (len(data.intensities),) or not use_patterns.any():
            raise ValueError(f"use_patterns must be a boolean mask of {len(data.intensities)} patterns, not all False")
        data = dataclasses.replace(
            data, intensities=data.intensities[use_patterns], positions_yx=data.positions_yx[use_patterns]
        )
    if initial_object is not None:
        initial_object = np.asarray(initial_object, dtype=np.complex64).reshape(-1, *initial_object.shape[-2:])[0]
        if initial_object.shape != data.object_shape:
            raise ValueError(f"initial_object has shape {initial_object.shape}, this dataset's frame is {data.object_shape}")
    if initial_probe is not None:
        initial_probe = np.asarray(initial_probe, dtype=np.complex64).reshape(1, 1, *data.probe.shape[-2:])
    data = dataclasses.replace(data, initial_object=initial_object, initial_probe=initial_probe)
    batch_size = balanced_batch_size(len(data.intensities), options.batch_size)
    snapshot = (snapshot_every, on_snapshot) if snapshot_every > 0 and on_snapshot is not None else None
    tried: list[int] = []
    start = time.perf_counter()
    while True:
        tried.append(batch_size)
        try:
            obj, probe, losses, origin, ran_on = _run_lsqml(data, options, device, batch_size, on_epoch, cpu_threads, snapshot)
            break
        except torch.OutOfMemoryError as error:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if len(tried) > MAX_OOM_RETRIES or batch_size == 1:
                raise GpuOutOfMemoryError(
                    f"out of GPU memory on {device} with {len(data.intensities)} patterns at batch sizes {tried}"
                ) from error
            batch_size = max(1, batch_size // 2)
            logger.warning("out of GPU memory at batch size %d: retrying at %d", tried[-1], batch_size)
    return ReconstructionResult(
        object=obj,
        probe=probe,
        loss_per_epoch=np.asarray(losses, dtype=np.float64),
        wall_time_s=time.perf_counter() - start,
        device=ran_on,
        n_patterns=int(data.intensities.shape[0]),
        options=options,
        object_origin_yx=origin,
        batch_sizes_tried=tuple(tried),
    )
