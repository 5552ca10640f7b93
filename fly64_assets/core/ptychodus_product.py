"""Each reconstruction as a ptychodus product, so that ptychodus opens it: the NPZ product
(``NPZProductFileIO``, ``plugins/npz_product_file.py``) and the HDF5 product that ptychodus batch mode and
workflows exchange (``H5ProductFileIO``, i.e. ``api/io.py`` ``load_product``/``save_product``), with the keys
and layout of ptychodus 1.7.0's own writers. Metadata ptychodus has a place for but the study does not know
(exposure time, mass attenuation, angles, focus distance) is written as ptychodus's own "unset" value, 0.

Positions. ptychodus 1.7.0 places a position (x_m, y_m) on the object by
``ObjectGeometry.map_coordinates_probe_to_object`` (``api/object.py``)::

    x_px = (x_m - center_x_m) / pixel_width_m + (width_px - 1) / 2      # and y likewise

(its "centered-pixel convention": pixel index i is centred at i, and the object's centre at index (W - 1) / 2),
and puts the probe array's own middle, index (n - 1) / 2, on that point (``ProbeGeometry.resolve_patch_bounds``).
pty-chi uses the same convention: ptychodus's pty-chi backend (``model/ptychi/task.py``) passes exactly these
x_px, y_px to pty-chi with ``position_origin_coords = 0``, and pty-chi cuts the patch starting at
``position - (n - 1) / 2``. In our reconstruction a probe centre (y, x) in ``objectGuess`` pixels sits at object
index (y - origin_y, x - origin_x), ``origin = result.object_origin_yx``. So positions are written in the input
frame scaled to metres, ``x_m = x * pixel`` (0 is the centre of ``objectGuess`` pixel [0, 0]), and the object
centre is ``center_x_m = (origin_x + (W - 1) / 2) * pixel``; ptychodus then maps each position to
x_px = x - origin_x, y_px = y - origin_y: the object pixel where the probe centre was.

Position indexes are the rows of the input file (pattern i of the input NPZ); losses are numbered from epoch 0,
as pty-chi's loss table and ptychodus number them. The probe is (n_opr = 1, modes, h, w), the object
(layers = 1, H, W), both complex64, and the probe shares the object's pixel size (far field).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fly64_assets.core.artifacts import atomic_file, write_npz
from fly64_assets.core.geometry import Geometry
from fly64_assets.core.lsqml import ReconstructionResult

NPZ_PRODUCT_FILE = "ptychodus_product.npz"
H5_PRODUCT_FILE = "ptychodus_product.h5"


def _comments(result: ReconstructionResult, geometry: Geometry, comments: str) -> str:
    """What was reconstructed and how (every option, so none is left out), then where each geometry value came
    from."""
    how = (
        f"pty-chi LSQML, {result.options.epochs} epochs on {result.n_patterns} patterns, batch size used "
        f"{result.batch_sizes_tried[-1]}, {result.wall_time_s:.1f} s on {result.device}; positions are the input "
        f"file's{' (their refinement is not kept)' if result.options.optimize_positions else ''}\n"
        f"options {json.dumps(result.options.as_dict(), sort_keys=True)}"
    )
    return "\n".join(part for part in (comments, how, "Geometry:", geometry.describe()) if part)


def _product(
    name: str, result: ReconstructionResult, ycoords: np.ndarray, xcoords: np.ndarray, dose: float,
    geometry: Geometry, comments: str,
) -> dict:
    """The product's values, named as ptychodus's NPZ product names them."""
    pixel = geometry.object_pixel_size_m
    origin_y, origin_x = result.object_origin_yx
    height, width = result.object.shape[-2:]
    return {
        "name": name,
        "comments": _comments(result, geometry, comments),
        "detector_object_distance_m": geometry.detector_distance_m,
        "photon_energy_eV": geometry.photon_energy_eV,
        "probe_photon_count": float(dose),
        "exposure_time_s": 0.0,
        "mass_attenuation_m2_per_kg": 0.0,
        "tomography_angle_deg": 0.0,
        "focus_object_distance_m": 0.0,
        "tilt_angle_deg": 0.0,
        "far_field": True,
        "probe_position_indexes": np.arange(len(xcoords), dtype=np.int64),
        "probe_position_x_m": np.asarray(xcoords, dtype=np.float64) * pixel,
        "probe_position_y_m": np.asarray(ycoords, dtype=np.float64) * pixel,
        "probe": np.asarray(result.probe, dtype=np.complex64)[np.newaxis],
        "probe_pixel_width_m": pixel,
        "probe_pixel_height_m": pixel,
        "object": np.asarray(result.object, dtype=np.complex64)[np.newaxis],
        "object_center_x_m": (origin_x + (width - 1) / 2) * pixel,
        "object_center_y_m": (origin_y + (height - 1) / 2) * pixel,
        "object_pixel_width_m": pixel,
        "object_pixel_height_m": pixel,
        "object_layer_spacing_m": np.zeros(0, dtype=np.float64),
        "loss_epochs": np.arange(len(result.loss_per_epoch), dtype=np.int64),
        "loss_values": np.asarray(result.loss_per_epoch, dtype=np.float64),
    }


_H5_ROOT_ATTRIBUTES = (
    "name", "comments", "detector_object_distance_m", "photon_energy_eV", "probe_photon_count", "exposure_time_s",
    "mass_attenuation_m2_per_kg", "tomography_angle_deg", "focus_object_distance_m", "tilt_angle_deg", "far_field",
)
_H5_DATASETS = (
    "probe_position_indexes", "probe_position_x_m", "probe_position_y_m", "object_layer_spacing_m", "loss_epochs",
    "loss_values",
)


def _write_h5(path: Path, product: dict) -> None:
    """ptychodus's HDF5 layout: metadata as root attributes, pixel sizes and centre as attributes of the
    ``probe`` and ``object`` datasets. Written through a file object so the atomic temporary file is reused."""
    import h5py

    with atomic_file(path, "w+b") as handle, h5py.File(handle, "w") as h5:
        for key in _H5_ROOT_ATTRIBUTES:
            h5.attrs[key] = product[key]
        for key in _H5_DATASETS:
            h5.create_dataset(key, data=product[key])
        probe = h5.create_dataset("probe", data=product["probe"])
        probe.attrs["pixel_width_m"] = product["probe_pixel_width_m"]
        probe.attrs["pixel_height_m"] = product["probe_pixel_height_m"]
        obj = h5.create_dataset("object", data=product["object"])
        obj.attrs["center_x_m"] = product["object_center_x_m"]
        obj.attrs["center_y_m"] = product["object_center_y_m"]
        obj.attrs["pixel_width_m"] = product["object_pixel_width_m"]
        obj.attrs["pixel_height_m"] = product["object_pixel_height_m"]


def write_products(
    out_dir: Path, name: str, result: ReconstructionResult, ycoords: np.ndarray, xcoords: np.ndarray,
    dose: float, geometry: Geometry, comments: str = "",
) -> dict[str, Path]:
    """Write the NPZ and HDF5 products of one reconstruction atomically; returns ``{"npz": path, "h5": path}``.

    ``ycoords``/``xcoords`` are the input's probe centres in ``objectGuess`` pixels (as given to ``reconstruct``),
    ``dose`` the photons per pattern (ptychodus's probe photon count), ``comments`` a first line saying what was
    reconstructed; how, and the geometry's sources, are appended.
    """
    product = _product(name, result, ycoords, xcoords, dose, geometry, comments)
    paths = {"npz": Path(out_dir) / NPZ_PRODUCT_FILE, "h5": Path(out_dir) / H5_PRODUCT_FILE}
    write_npz(paths["npz"], {key: np.asarray(value) for key, value in product.items()})
    _write_h5(paths["h5"], product)
    return paths
