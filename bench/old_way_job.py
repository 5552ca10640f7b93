"""The old way, as the study script ran each job: one plain pty-chi LSQML process per dataset.

usage: python bench/old_way_job.py INPUT.npz OUTPUT.npz [--epochs 100] [--batch-size 96]
Spec options: LSQML, Gaussian noise, positions fixed, object and probe optimised, intensities =
amplitude squared, positions zero-centred on their mean, object started from ones.
"""

import argparse
import time
from datetime import datetime, timezone

import numpy as np
import ptychi.api as api
import torch
from ptychi.api.task import PtychographyTask
from ptychi.utils import get_suggested_object_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=96)
    args = parser.parse_args()

    data = np.load(args.input, allow_pickle=False)
    intensities = np.square(data["diffraction"].astype(np.float32))
    mean_y, mean_x = float(data["ycoords"].mean()), float(data["xcoords"].mean())
    positions = np.stack([data["ycoords"] - mean_y, data["xcoords"] - mean_x], axis=1)
    probe = data["probeGuess"].astype(np.complex64)[None, None]
    skew = int(np.ceil(np.abs(positions.max(0) + positions.min(0)).max())) + 2
    object_shape = get_suggested_object_size(positions, probe.shape[-2:], extra=skew)

    options = api.LSQMLOptions()
    options.reconstructor_options.num_epochs = args.epochs
    options.reconstructor_options.batch_size = args.batch_size
    options.reconstructor_options.noise_model = api.NoiseModels.GAUSSIAN
    options.reconstructor_options.default_device = api.Devices.GPU if torch.cuda.is_available() else api.Devices.CPU
    options.probe_position_options.optimizable = False

    started, started_utc = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    task = PtychographyTask(
        options,
        diffraction_data=intensities,
        object_data=np.ones((1, *object_shape), dtype=np.complex64),
        probe_data=probe,
        probe_position_x_px=positions[:, 1],
        probe_position_y_px=positions[:, 0],
    )
    task.run()
    origin = task.object.pos_origin_coords.detach().cpu().numpy()
    np.savez(
        args.output,
        reconstructed_object=task.get_data_to_cpu("object", as_numpy=True)[0],
        reconstructed_probe=task.get_data_to_cpu("probe", as_numpy=True)[0],
        object_origin_yx=np.array([mean_y - origin[0], mean_x - origin[1]]),
        wall_time_s=np.array(time.perf_counter() - started),
        started_utc=np.array(started_utc),
        ended_utc=np.array(datetime.now(timezone.utc).isoformat(timespec="milliseconds")),
    )


if __name__ == "__main__":
    main()
