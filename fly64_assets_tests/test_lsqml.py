"""The pure reconstruction module: device choice, torch defaults, epoch callback, batching, frames."""

import numpy as np
import pytest
import torch

from fly64_assets.core.lsqml import DeviceUnavailableError, balanced_batch_size, reconstruct, resolve_device
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.synthetic import simulate_split


@pytest.fixture(scope="module")
def dense_like():
    """A small real dataset: every third position of the demo baseline split at the highest dose."""
    arrays = simulate_split("demo", 100000, "train")
    keep = slice(None, None, 3)
    return {key: arrays[key][keep] if key in ("diffraction", "xcoords", "ycoords") else arrays[key] for key in arrays}


def test_auto_and_cpu_resolve_here_and_missing_gpus_fail_clearly():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(DeviceUnavailableError, match="unknown device 'tpu:0'|unsupported device"):
        resolve_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(DeviceUnavailableError, match="GPU\\(s\\) are visible"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_options_reject_nonsense():
    with pytest.raises(ValueError, match="epochs"):
        ReconstructionOptions(epochs=0)
    with pytest.raises(ValueError, match="noise_model"):
        ReconstructionOptions(noise_model="laplace")
    with pytest.raises(ValueError, match="device"):
        ReconstructionOptions(device="gpu")
    with pytest.raises(ValueError, match="extra"):
        ReconstructionOptions(epoch=5)


@pytest.mark.parametrize("n, batch, expected", [(98, 96, 49), (13, 96, 13), (192, 96, 96), (2048, 96, 94), (200, 32, 29)])
def test_balanced_batches_keep_the_batch_count_and_even_the_sizes(n, batch, expected):
    size = balanced_batch_size(n, batch)
    assert size == expected
    assert -(-n // size) == -(-n // batch)


def test_reconstruction_reports_every_epoch_and_leaves_torch_defaults_alone(dense_like):
    torch.set_default_dtype(torch.float64)
    try:
        seen = []
        result = reconstruct(
            dense_like["diffraction"], dense_like["probeGuess"], dense_like["ycoords"], dense_like["xcoords"],
            ReconstructionOptions(epochs=4, device="cpu", regularization="off"), on_epoch=lambda epoch, loss: seen.append((epoch, loss)),
        )
        assert torch.get_default_dtype() == torch.float64
        assert torch.get_default_device() == torch.device("cpu")
    finally:
        torch.set_default_dtype(torch.float32)
    assert [epoch for epoch, _ in seen] == [1, 2, 3, 4]
    assert np.allclose([loss for _, loss in seen], result.loss_per_epoch)
    assert result.object.dtype == np.complex64 and result.probe.shape == (1, 64, 64)
    assert result.n_patterns == len(dense_like["xcoords"]) and result.device == "cpu"
    # The object frame: a position's window lies inside the reconstruction buffer.
    oy, ox = result.object_origin_yx
    ys, xs = dense_like["ycoords"] - oy, dense_like["xcoords"] - ox
    assert ys.min() >= 31.5 and xs.min() >= 31.5
    assert ys.max() <= result.object.shape[0] - 32.5 and xs.max() <= result.object.shape[1] - 32.5


def test_a_raising_callback_stops_the_run(dense_like):
    def stop_after_two(epoch, loss):
        if epoch == 2:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        reconstruct(dense_like["diffraction"], dense_like["probeGuess"], dense_like["ycoords"], dense_like["xcoords"],
                    ReconstructionOptions(epochs=50, device="cpu", regularization="off"), on_epoch=stop_after_two)
    assert torch.get_default_dtype() == torch.float32


def test_cpu_threads_cap_torch_during_the_reconstruction_only(dense_like):
    torch.set_num_threads(2)
    seen = []
    reconstruct(dense_like["diffraction"], dense_like["probeGuess"], dense_like["ycoords"], dense_like["xcoords"],
                ReconstructionOptions(epochs=2, device="cpu", regularization="off"), on_epoch=lambda epoch, loss: seen.append(torch.get_num_threads()),
                cpu_threads=1)
    assert seen == [1, 1]
    assert torch.get_num_threads() == 2


def test_snapshots_give_the_object_every_few_epochs_and_at_the_end(dense_like):
    snapshots = []
    result = reconstruct(
        dense_like["diffraction"], dense_like["probeGuess"], dense_like["ycoords"], dense_like["xcoords"],
        ReconstructionOptions(epochs=5, device="cpu", regularization="off"), snapshot_every=2,
        on_snapshot=lambda epoch, obj, origin: snapshots.append((epoch, obj, origin)),
    )
    assert [epoch for epoch, _, _ in snapshots] == [2, 4, 5]
    assert all(origin == result.object_origin_yx for _, _, origin in snapshots)
    assert np.array_equal(snapshots[-1][1], result.object)
    assert not np.array_equal(snapshots[0][1], result.object)  # a copy of the object then, not a view of it
