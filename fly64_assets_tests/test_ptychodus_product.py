"""A real reconstruction's ptychodus products, opened by ptychodus 1.7.0's own readers.

ptychodus is not a dependency of the project: its readers need only numpy, h5py, scipy, scikit-image and pydantic
(ours), but installing it pulls some 75 packages (mlflow, pydantic-ai with the OpenAI/Anthropic/Google SDKs, ...)
and downgrades importlib_metadata. So ``make test`` installs the ptychodus 1.7.0 wheel alone (``--no-deps``) into a
folder beside the venv's packages (``.venv/ptychodus-1.7.0``), and the test runs its readers in a subprocess of
this interpreter with that folder on the path.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, materialize_to_memory

from fly64_assets.core.artifacts import PARTIAL_SUFFIX, new_file_mode
from fly64_assets.core.bookkeeping import RECONSTRUCTION_RECORD, read_record
from fly64_assets.core.design import Dataset
from fly64_assets.core.geometry import GeometryError, resolve_geometry, wavelength_m
from fly64_assets.core.lsqml import reconstruct
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.ptychodus_product import write_products
from fly64_assets.core.synthetic import simulate_split
from fly64_assets.defs.reconstruction.assets import ptychi_reconstruction
from fly64_assets_tests.support import study_resources

PTYCHODUS = "ptychodus==1.7.0"
PTYCHODUS_SITE = "ptychodus-1.7.0"
"""The folder under the venv (``sys.prefix``) where the Makefile installs it."""
NAME = "100000|baseline_train"
DOSE = 100000
EPOCHS = 2

READER = r"""
import json, sys
from pathlib import Path
import numpy as np
import ptychodus
from ptychodus.api.illumination import compute_illumination_map
from ptychodus.plugins.h5_product_file import H5ProductFileIO
from ptychodus.plugins.npz_product_file import NPZProductFileIO

out = Path(sys.argv[3])
report = {"version": ptychodus.__version__}
for kind, reader, path in (("npz", NPZProductFileIO(), sys.argv[1]), ("h5", H5ProductFileIO(), sys.argv[2])):
    product = reader.read(Path(path))
    metadata, positions = product.metadata, product.probe_positions
    geometry = product.object_.get_geometry()
    probe_pixel = product.probes.get_pixel_geometry()
    report[kind] = {
        "name": metadata.name, "comments": metadata.comments,
        "detector_distance_m": metadata.detector_distance_m, "photon_energy_eV": metadata.photon_energy_eV,
        "photon_wavelength_m": metadata.photon_wavelength_m, "probe_photon_count": metadata.probe_photon_count,
        "far_field": metadata.far_field,
        "object_pixel_m": [geometry.pixel_width_m, geometry.pixel_height_m],
        "object_center_m": [geometry.center_x_m, geometry.center_y_m],
        "probe_pixel_m": [probe_pixel.width_m, probe_pixel.height_m],
        "object_dtype": str(product.object_.dtype), "probe_dtype": str(product.probes.get_array().dtype),
    }
    np.savez(
        out / f"{kind}.npz",
        object=product.object_.get_array(), probe=product.probes.get_array(),
        indexes=positions.get_indexes(), x_m=positions.get_coordinates_x_m(), y_m=positions.get_coordinates_y_m(),
        x_px=geometry.map_probe_positions_to_object_x_px(positions),
        y_px=geometry.map_probe_positions_to_object_y_px(positions),
        illumination=compute_illumination_map(product).photon_number,
        loss_epochs=np.array([loss.epoch for loss in product.losses]),
        loss_values=np.array([loss.value for loss in product.losses]),
    )
print(json.dumps(report))
"""


@pytest.fixture(scope="session")
def ptychodus_site() -> Path:
    """The folder holding the ptychodus 1.7.0 package alone (no dependencies of its own: it reads our products
    with the venv's numpy and h5py), a test dependency that ``make test`` installs beside the venv."""
    site = Path(sys.prefix) / PTYCHODUS_SITE
    if not (site / "ptychodus").is_dir():
        pytest.skip(f"{PTYCHODUS} is not installed in {site}: `make test` installs it (the Makefile's ptychodus target)")
    return site


@pytest.fixture(scope="module")
def reconstructed(tmp_path_factory):
    """A small real reconstruction (20 patterns, 2 epochs) and its two products, with the default geometry."""
    arrays = simulate_split("demo", DOSE, "train")
    rows = np.arange(0, len(arrays["xcoords"]), 5)[:20]
    ycoords, xcoords = arrays["ycoords"][rows], arrays["xcoords"][rows]
    result = reconstruct(
        arrays["diffraction"][rows], arrays["probeGuess"], ycoords, xcoords,
        ReconstructionOptions(epochs=EPOCHS, device="cpu", regularization="off"), cpu_threads=1,
    )
    geometry = resolve_geometry({}, arrays["diffraction"].shape[-1], environ={})
    out_dir = tmp_path_factory.mktemp("products")
    paths = write_products(out_dir, NAME, result, ycoords, xcoords, DOSE, geometry, "fly64 test reconstruction")
    return result, ycoords, xcoords, geometry, paths


@pytest.fixture(scope="module")
def read_back(reconstructed, ptychodus_site, tmp_path_factory):
    """(report, {"npz": arrays, "h5": arrays}): what ptychodus 1.7.0's readers made of the two products."""
    paths = reconstructed[-1]
    out = tmp_path_factory.mktemp("ptychodus_read")
    completed = subprocess.run(
        [sys.executable, "-c", READER, str(paths["npz"]), str(paths["h5"]), str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ptychodus_site)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    arrays = {}
    for kind in ("npz", "h5"):
        with np.load(out / f"{kind}.npz", allow_pickle=False) as saved:
            arrays[kind] = dict(saved)
    return report, arrays


@pytest.mark.parametrize("kind", ["npz", "h5"])
def test_ptychodus_reads_every_value_back(reconstructed, read_back, kind):
    result, ycoords, xcoords, geometry, _ = reconstructed
    report, arrays = read_back
    assert report["version"] == "1.7.0"
    meta, saved = report[kind], arrays[kind]
    assert meta["name"] == NAME
    assert "pty-chi LSQML, 2 epochs" in meta["comments"] and "photon energy 8800 eV (default)" in meta["comments"]
    assert meta["detector_distance_m"] == geometry.detector_distance_m == 2.0
    assert meta["photon_energy_eV"] == geometry.photon_energy_eV == 8800.0
    assert meta["photon_wavelength_m"] == pytest.approx(geometry.wavelength_m, rel=1e-9)
    assert meta["probe_photon_count"] == DOSE and meta["far_field"] is True
    pixel = geometry.object_pixel_size_m
    assert pixel == pytest.approx(wavelength_m(8800.0) * 2.0 / (64 * 75e-6), rel=1e-12)
    assert meta["object_pixel_m"] == [pixel, pixel] and meta["probe_pixel_m"] == [pixel, pixel]

    assert meta["object_dtype"] == meta["probe_dtype"] == "complex64"
    assert saved["object"].shape == (1, *result.object.shape)
    np.testing.assert_array_equal(saved["object"][0], result.object)
    assert saved["probe"].shape == (1, *result.probe.shape) == (1, 1, 64, 64)
    np.testing.assert_array_equal(saved["probe"][0], result.probe)

    np.testing.assert_array_equal(saved["indexes"], np.arange(len(xcoords)))
    np.testing.assert_allclose(saved["x_m"], xcoords * pixel, rtol=1e-12)
    np.testing.assert_allclose(saved["y_m"], ycoords * pixel, rtol=1e-12)
    np.testing.assert_array_equal(saved["loss_epochs"], np.arange(EPOCHS))
    np.testing.assert_array_equal(saved["loss_values"], result.loss_per_epoch)


@pytest.mark.parametrize("kind", ["npz", "h5"])
def test_ptychodus_places_each_position_where_the_probe_was(reconstructed, read_back, kind):
    """ptychodus's own geometry maps every position to the reconstruction's pixel of that probe centre, and the
    footprint it illuminates from them is exactly the set of pixels pty-chi updated."""
    result, ycoords, xcoords, _, _ = reconstructed
    saved = read_back[1][kind]
    origin_y, origin_x = result.object_origin_yx
    np.testing.assert_allclose(saved["y_px"], ycoords - origin_y, atol=1e-9)
    np.testing.assert_allclose(saved["x_px"], xcoords - origin_x, atol=1e-9)

    lit = saved["illumination"] > 0
    obj = saved["object"][0]
    assert lit.any() and not lit.all()
    # pty-chi rescales the whole object by one factor; only the pixels under a probe window differ from it.
    untouched = obj[~lit][0]
    np.testing.assert_array_equal(obj != untouched, lit)


def test_products_appear_whole_with_the_users_file_mode(reconstructed):
    paths = reconstructed[-1]
    assert {path.name for path in paths.values()} == {"ptychodus_product.npz", "ptychodus_product.h5"}
    for path in paths.values():
        assert path.stat().st_mode & 0o777 == new_file_mode()
    assert not list(paths["npz"].parent.glob(f"*{PARTIAL_SUFFIX}"))


def test_geometry_prefers_metadata_then_environment_then_defaults():
    environ = {"FLY64_PHOTON_ENERGY_EV": "10000", "FLY64_DETECTOR_DISTANCE_M": "3.5"}
    geometry = resolve_geometry({"detector_object_distance_m": 1.5}, 64, environ)
    assert (geometry.photon_energy_eV, geometry.detector_distance_m, geometry.detector_pixel_size_m) == (10000, 1.5, 75e-6)
    assert geometry.sources == {
        "photon_energy_eV": "environment", "detector_distance_m": "metadata",
        "detector_pixel_size_m": "default", "object_pixel_size_m": "derived",
    }
    assert geometry.object_pixel_size_m == pytest.approx(wavelength_m(10000) * 1.5 / (64 * 75e-6))
    assert wavelength_m(10000) == pytest.approx(1.239842e-10, rel=1e-6)

    direct = resolve_geometry({"object_pixel_size_m": 2e-8, "photon_energy_eV": 7000}, 64, environ)
    assert direct.object_pixel_size_m == 2e-8 and direct.detector_pixel_size_m is None
    assert direct.as_record()["sources"] == {
        "photon_energy_eV": "metadata", "detector_distance_m": "environment", "object_pixel_size_m": "metadata",
    }
    assert "object pixel 2e-08 m (metadata)" in direct.describe()


@pytest.mark.parametrize(
    ("metadata", "environ", "named"),
    [
        ({"photon_energy_eV": -1}, {}, "_metadata photon_energy_eV"),
        ({"detector_distance_m": "far"}, {}, "_metadata detector_distance_m"),
        ({"object_pixel_size_m": True}, {}, "_metadata object_pixel_size_m"),
        ({}, {"FLY64_DETECTOR_PIXEL_SIZE_M": "nan"}, "FLY64_DETECTOR_PIXEL_SIZE_M"),
    ],
)
def test_an_unusable_geometry_value_is_an_error_naming_it(metadata, environ, named):
    with pytest.raises(GeometryError, match=named):
        resolve_geometry(metadata, 64, environ)


def _materialize_dense_train(study_paths, instance):
    """Reconstruct ``1000|dense_train`` (the smallest partition) for 2 epochs through Dagster."""
    return materialize_to_memory(
        [ptychi_reconstruction], partition_key="1000|dense_train", resources=study_resources(study_paths),
        run_config={"ops": {"ptychi_reconstruction": {"config": {"epochs": EPOCHS}}}},
        instance=instance, raise_on_error=False, selection=[AssetKey("ptychi_reconstruction")],
    )


def test_the_reconstruction_asset_writes_and_records_both_products(study_paths, instance, monkeypatch):
    dataset = Dataset(1000, "dense", "train")
    input_path = study_paths.input_path(dataset)
    with np.load(input_path, allow_pickle=False) as saved:
        arrays = dict(saved)
    arrays["_metadata"] = np.array(json.dumps({**json.loads(str(arrays["_metadata"])), "photon_energy_eV": 9000.0}))
    np.savez(input_path, **arrays)
    monkeypatch.setenv("FLY64_DETECTOR_DISTANCE_M", "1.5")
    monkeypatch.delenv("FLY64_DETECTOR_PIXEL_SIZE_M", raising=False)

    result = _materialize_dense_train(study_paths, instance)
    assert result.success
    record = read_record(study_paths.artifact_dir(dataset), RECONSTRUCTION_RECORD)
    assert record["geometry"]["sources"] == {
        "photon_energy_eV": "metadata", "detector_distance_m": "environment",
        "detector_pixel_size_m": "default", "object_pixel_size_m": "derived",
    }
    assert (record["geometry"]["photon_energy_eV"], record["geometry"]["detector_distance_m"]) == (9000.0, 1.5)
    with np.load(record["ptychodus_npz_path"], allow_pickle=False) as product:
        assert str(product["name"]) == "1000|dense_train" and float(product["photon_energy_eV"]) == 9000.0
        assert float(product["probe_photon_count"]) == 1000 and "(environment)" in str(product["comments"])
        np.testing.assert_allclose(product["probe_position_x_m"], arrays["xcoords"] * record["geometry"]["object_pixel_size_m"])
    assert Path(record["ptychodus_h5_path"]).is_file()
    (materialization,) = [event.event_specific_data.materialization for event in result.get_asset_materialization_events()]
    metadata = {name: getattr(value, "value", value) for name, value in materialization.metadata.items()}
    assert metadata["ptychodus_npz_path"] == record["ptychodus_npz_path"]
    assert metadata["ptychodus_h5_path"] == record["ptychodus_h5_path"]
    assert metadata["geometry"] == record["geometry"]


def test_an_unusable_geometry_setting_fails_the_partition_before_it_reconstructs(study_paths, instance, monkeypatch):
    monkeypatch.setenv("FLY64_PHOTON_ENERGY_EV", "8.8 keV")
    result = _materialize_dense_train(study_paths, instance)
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "FLY64_PHOTON_ENERGY_EV" in str(failure.event_specific_data.error)
    assert not (study_paths.artifact_dir(Dataset(1000, "dense", "train")) / "ptychi_reconstruction.npz").exists()
