"""The embedded synthetic study: physics (dose, Poisson noise, pty-chi's forward model), geometry and files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fly64_assets.core import synthetic
from fly64_assets.core.design import (
    DOSES,
    MIN_ACCEPTANCE,
    PATTERN_SIZE,
    PHASE_D_VIEWS,
    SPLITS,
    SUBSAMPLING_SEED,
    spacing_threshold,
)

DATA_001_DTYPES = {
    "diffraction": np.float32,
    "probeGuess": np.complex64,
    "objectGuess": np.complex64,
    "xcoords": np.float64,
    "ycoords": np.float64,
}


def _expected_files(views: tuple[str, ...]) -> set[str]:
    files = {f"phase_c/dose_{d}/patched_{s}.npz" for d in DOSES for s in SPLITS}
    return files | {f"phase_d/dose_{d}/{v}/{v}_{s}.npz" for d in DOSES for v in views for s in SPLITS}


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _counts(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return arrays["diffraction"].astype(np.float64) ** 2


def _poisson_residuals(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel (counts - expected) / sqrt(expected) against the file's noise-free model, and the expectation.

    Tests select pixels on the expectation, not on the counts, so the selection does not bias the residuals.
    """
    expected = synthetic.far_field_intensity(
        arrays["probeGuess"], arrays["objectGuess"], arrays["ycoords"], arrays["xcoords"]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.round(_counts(arrays)) - expected) / np.sqrt(expected), expected


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo_study")
    return root, synthetic.simulate_study(root, "demo")


@pytest.fixture(scope="module")
def demo_train_high_dose() -> dict[str, np.ndarray]:
    return synthetic.simulate_split("demo", 100000, "train")


# --- probe and object -------------------------------------------------------------------------------------------


def test_probe_is_a_compact_unit_energy_spot_with_a_band_limited_far_field():
    probe = synthetic.make_probe()
    assert probe.shape == (PATTERN_SIZE, PATTERN_SIZE) and probe.dtype == np.complex64
    intensity = np.abs(probe.astype(np.complex128)) ** 2
    assert intensity.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(intensity, intensity[::-1, ::-1], atol=1e-6 * intensity.max())  # centred at 31.5
    k = np.arange(PATTERN_SIZE) - PATTERN_SIZE // 2
    radius = np.hypot(k[:, None], k[None, :])
    assert intensity[radius <= 25].sum() > 0.9  # a ~45 px spot ...
    assert intensity[radius > 30].sum() < 0.01  # ... that does not wrap around the window
    far_field = np.abs(np.fft.fftshift(np.fft.fft2(probe))) ** 2
    outside_aperture = radius > synthetic.APERTURE_RADIUS_PX + 3 * synthetic.APERTURE_EDGE_PX
    assert far_field[outside_aperture].sum() < 1e-3 * far_field.sum()


def test_object_has_bounded_amplitude_sharp_phase_features_and_is_reproducible():
    obj = synthetic.make_object(96, np.random.default_rng(0))
    assert obj.shape == (96, 96) and obj.dtype == np.complex64
    amplitude, phase = np.abs(obj), np.angle(obj)
    assert amplitude.min() >= 0.6 - 1e-6 and amplitude.max() <= 1.0 + 1e-6
    assert np.abs(phase).max() < 1.2 and phase.std() > 0.1
    # Sharp shapes: some neighbouring pixels differ in phase by far more than the smooth texture does.
    assert np.abs(np.diff(phase, axis=1)).max() > 0.4
    np.testing.assert_array_equal(obj, synthetic.make_object(96, np.random.default_rng(0)))


# --- geometry ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(synthetic.SCALES))
def test_scan_is_a_jittered_raster_with_every_window_inside_the_object(name):
    scale = synthetic.SCALES[name]
    ycoords, xcoords = synthetic.scan_positions(scale, np.random.default_rng(1))
    assert ycoords.shape == xcoords.shape == (scale.positions_per_side**2,)
    half = (PATTERN_SIZE - 1) / 2
    for coords in (ycoords, xcoords):
        starts = coords - half
        np.testing.assert_array_equal(starts, np.round(starts))  # pty-chi's integer-window convention
        assert starts.min() >= 0 and starts.max() + PATTERN_SIZE <= scale.object_size
    rows = ycoords.reshape(scale.positions_per_side, -1).mean(axis=1)
    assert np.diff(rows) == pytest.approx(scale.scan_step, abs=2 * scale.jitter)


def test_split_is_spatial_along_y_and_balanced():
    ycoords, _ = synthetic.scan_positions(synthetic.SCALES["demo"], np.random.default_rng(3))
    masks = synthetic.split_mask(ycoords)
    assert set(masks) == {"train", "test"}
    np.testing.assert_array_equal(masks["train"] ^ masks["test"], True)
    assert ycoords[masks["train"]].max() < ycoords[masks["test"]].min()
    assert masks["train"].sum() == masks["test"].sum()


def test_greedy_min_spacing_keeps_spaced_points_and_is_maximal():
    rng = np.random.default_rng(5)
    ycoords, xcoords = rng.uniform(0, 300, (2, 400))
    threshold = 38.4
    kept = synthetic.greedy_min_spacing(ycoords, xcoords, threshold, np.random.default_rng(SUBSAMPLING_SEED))
    assert np.all(np.diff(kept) > 0)
    distance = np.hypot(ycoords[:, None] - ycoords[None, :], xcoords[:, None] - xcoords[None, :])
    among_kept = distance[np.ix_(kept, kept)] + np.diag(np.full(kept.size, np.inf))
    assert among_kept.min() >= threshold
    rejected = np.setdiff1d(np.arange(ycoords.size), kept)
    assert np.all(distance[np.ix_(rejected, kept)].min(axis=1) < threshold)
    again = synthetic.greedy_min_spacing(ycoords, xcoords, threshold, np.random.default_rng(SUBSAMPLING_SEED))
    np.testing.assert_array_equal(kept, again)


@pytest.mark.parametrize("name", list(synthetic.SCALES))
def test_dense_view_passes_and_sparse_view_fails_the_acceptance_guard(name):
    ycoords, xcoords = synthetic.scan_positions(synthetic.SCALES[name], np.random.default_rng(42))
    for split, mask in synthetic.split_mask(ycoords).items():
        acceptance = {
            view: synthetic.greedy_min_spacing(
                ycoords[mask], xcoords[mask], spacing_threshold(view), np.random.default_rng(SUBSAMPLING_SEED)
            ).size
            / mask.sum()
            for view in PHASE_D_VIEWS
        }
        assert acceptance["dense"] >= MIN_ACCEPTANCE + 0.01, (split, acceptance)
        assert acceptance["sparse"] < MIN_ACCEPTANCE, (split, acceptance)


def test_the_default_study_lights_the_scan_area_of_every_view_it_writes(tmp_path):
    """The default scale exists so that every view the default study reconstructs covers the area it is scored
    on (the split's Phase C probe-centre box): the dense probes light >= 85 % of it at 10 % of the probe's peak
    and >= 95 % at 1 %. The sparse view is not written (the expected skip)."""
    from fly64_assets.core.coverage import lit_fraction

    summary = synthetic.simulate_study(tmp_path)
    assert summary["scale"] == synthetic.DEFAULT_SCALE
    assert {Path(name).parent.name for name in summary["skipped"]} == {"sparse"}
    for name in summary["written"]:
        view_file = _load(tmp_path / name)
        split = Path(name).stem.split("_")[-1]
        phase_c = _load(tmp_path / "phase_c" / Path(name).parts[1] / f"patched_{split}.npz")
        box = (phase_c["ycoords"].min(), phase_c["ycoords"].max(), phase_c["xcoords"].min(), phase_c["xcoords"].max())
        args = (view_file["probeGuess"], view_file["ycoords"], view_file["xcoords"], box)
        assert view_file["diffraction"].shape[0] >= 20, name
        assert lit_fraction(*args) >= 0.85 and lit_fraction(*args, level=0.01) >= 0.95, name


def test_simulated_scale_reads_the_tree_and_passes_over_a_broken_file(demo_study, tmp_path):
    root, _ = demo_study
    assert synthetic.simulated_scale(root) == "demo"
    assert synthetic.simulated_scale(tmp_path) is None
    broken = tmp_path / "phase_c" / "dose_1000" / "patched_train.npz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an npz")
    assert synthetic.simulated_scale(tmp_path) is None


# --- physics of one split ---------------------------------------------------------------------------------------


def test_split_arrays_follow_data_001():
    arrays = synthetic.simulate_split("demo", 1000, "test")
    n = arrays["diffraction"].shape[0]
    assert 90 <= n <= 130
    for key, dtype in DATA_001_DTYPES.items():
        assert arrays[key].dtype == dtype, key
    assert arrays["diffraction"].shape == (n, PATTERN_SIZE, PATTERN_SIZE)
    assert arrays["probeGuess"].shape == (PATTERN_SIZE, PATTERN_SIZE)
    assert arrays["xcoords"].shape == arrays["ycoords"].shape == arrays["scan_index"].shape == (n,)
    assert np.all(np.isfinite(arrays["diffraction"])) and arrays["diffraction"].min() >= 0
    # DC at the centre: the brightest pixel of the mean pattern sits near the middle of the detector.
    peak = np.unravel_index(np.argmax(_counts(arrays).mean(axis=0)), (PATTERN_SIZE, PATTERN_SIZE))
    assert np.hypot(peak[0] - PATTERN_SIZE // 2, peak[1] - PATTERN_SIZE // 2) < synthetic.APERTURE_RADIUS_PX


@pytest.mark.parametrize("dose", DOSES)
def test_mean_counts_per_pattern_equal_the_dose(dose):
    per_split = [_counts(synthetic.simulate_split("demo", dose, split)).sum(axis=(1, 2)) for split in SPLITS]
    for totals in per_split:
        assert totals.mean() == pytest.approx(dose, rel=0.05)
    # The probe is scaled over the whole scan, so both splits together hit the dose almost exactly.
    assert np.concatenate(per_split).mean() == pytest.approx(dose, rel=0.01)


def test_counts_are_poisson_draws_around_the_noise_free_model(demo_train_high_dose):
    arrays = demo_train_high_dose
    counts = _counts(arrays)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # integers, stored as sqrt
    residuals, expected = _poisson_residuals(arrays)
    z = residuals[expected >= 10]  # tens of thousands of pixels
    # Unbiased, and variance equal to the mean (Poisson), not e.g. noise-free (0) or noise on the amplitude.
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert z.var() == pytest.approx(1.0, abs=0.05)


def test_noise_free_model_equals_ptychi_forward_model():
    """The conventions match pty-chi: unnormalised FFT, DC-centred files, centre = window start + 31.5."""
    import torch
    from ptychi import api
    from ptychi.api.task import PtychographyTask

    from fly64_assets.core.lsqml import _isolated_ptychi_state

    arrays = synthetic.simulate_split(synthetic.Scale("tiny", object_size=160, scan_step=15), 10000, "train")
    obj, probe, ycoords, xcoords = (arrays[k] for k in ("objectGuess", "probeGuess", "ycoords", "xcoords"))
    expected = synthetic.far_field_intensity(probe, obj, ycoords, xcoords)
    options = api.LSQMLOptions()
    options.reconstructor_options.default_device = api.Devices.CPU
    # pty-chi's default origin of the positions for an (M, M) object is round(M / 2) - 0.5.
    origin = np.round(np.array(obj.shape) / 2) - 0.5
    with _isolated_ptychi_state(torch.device("cpu")):
        task = PtychographyTask(
            options,
            diffraction_data=expected.astype(np.float32),
            object_data=obj[None],
            probe_data=probe[None, None],
            probe_position_y_px=ycoords - origin[0],
            probe_position_x_px=xcoords - origin[1],
        )
        with torch.no_grad():
            predicted = task.reconstructor.forward_model.forward(torch.arange(ycoords.size)).cpu().numpy()
    np.testing.assert_allclose(
        np.fft.fftshift(predicted, axes=(-2, -1)), expected, rtol=1e-4, atol=1e-4 * expected.max()
    )


def test_same_seed_same_arrays_and_independent_noise_per_dose():
    first = synthetic.simulate_split("demo", 10000, "train")
    second = synthetic.simulate_split("demo", 10000, "train")
    for key in first:
        assert first[key].tobytes() == second[key].tobytes(), key
    higher = synthetic.simulate_split("demo", 100000, "train")
    np.testing.assert_array_equal(first["objectGuess"], higher["objectGuess"])  # one truth for the dose series
    np.testing.assert_array_equal(first["xcoords"], higher["xcoords"])
    # The two doses draw their noise from independent streams: their Poisson residuals are uncorrelated.
    residuals_first, expected = _poisson_residuals(first)
    residuals_higher, _ = _poisson_residuals(higher)
    bright = expected >= 10
    correlation = np.corrcoef(residuals_first[bright], residuals_higher[bright])[0, 1]
    assert abs(correlation) < 5 / np.sqrt(bright.sum())


# --- the study tree ---------------------------------------------------------------------------------------------


def test_study_writes_the_spec_layout_with_sparse_missing(demo_study):
    root, summary = demo_study
    assert _files_under(root) == _expected_files(("dense",))  # no temporary or partial files either
    assert set(summary["written"]) == _expected_files(("dense",))
    sparse = {f"phase_d/dose_{d}/sparse/sparse_{s}.npz" for d in DOSES for s in SPLITS}
    assert set(summary["skipped"]) == sparse
    for skip in summary["skipped"].values():
        assert skip["acceptance_rate"] < MIN_ACCEPTANCE
        assert "sparse view not written by Phase D" in skip["reason"] and "10%" in skip["reason"]


def test_every_file_loads_without_pickle_and_follows_data_001(demo_study):
    root, summary = demo_study
    for relative, n in summary["written"].items():
        arrays = _load(root / relative)
        assert arrays["diffraction"].shape == (n, PATTERN_SIZE, PATTERN_SIZE)
        for key, dtype in DATA_001_DTYPES.items():
            assert arrays[key].dtype == dtype, (relative, key)
        metadata = arrays["_metadata"]
        assert metadata.shape == () and metadata.dtype.kind == "U"
        assert isinstance(json.loads(metadata.item()), dict)


def test_phase_c_metadata_and_dose(demo_study):
    root, _ = demo_study
    for dose in DOSES:
        for split in SPLITS:
            arrays = _load(root / f"phase_c/dose_{dose}/patched_{split}.npz")
            facts = json.loads(arrays["_metadata"].item())
            assert facts == {"dose": dose, "split": split, "seed": 42, "scale": "demo", "photons_per_pattern": dose}
            assert _counts(arrays).sum(axis=(1, 2)).mean() == pytest.approx(dose, rel=0.05)


def test_phase_d_files_are_consistent_subsets_of_phase_c(demo_study):
    root, _ = demo_study
    for dose in DOSES:
        for split in SPLITS:
            source = f"dose_{dose}/patched_{split}.npz"
            phase_c = _load(root / "phase_c" / source)
            dense = _load(root / f"phase_d/dose_{dose}/dense/dense_{split}.npz")
            facts = json.loads(dense["_metadata"].item())
            n = phase_c["diffraction"].shape[0]
            assert facts["selection_strategy"] == "greedy_min_spacing"
            assert facts["overlap_view"] == "dense" and facts["source_file"] == source
            assert facts["spacing_threshold"] == pytest.approx(38.4)
            assert facts["seed"] == SUBSAMPLING_SEED and facts["effective_min_acceptance"] == MIN_ACCEPTANCE
            assert facts["n_accepted"] + facts["n_rejected"] == n
            assert facts["n_accepted"] == dense["diffraction"].shape[0]
            assert facts["acceptance_rate"] == pytest.approx(facts["n_accepted"] / n)
            assert facts["acceptance_rate"] >= MIN_ACCEPTANCE
            rows = np.searchsorted(phase_c["scan_index"], dense["scan_index"])
            np.testing.assert_array_equal(phase_c["scan_index"][rows], dense["scan_index"])
            for key in ("diffraction", "ycoords", "xcoords"):
                np.testing.assert_array_equal(phase_c[key][rows], dense[key])
            for key in ("probeGuess", "objectGuess"):
                np.testing.assert_array_equal(phase_c[key], dense[key])
            distance = np.hypot(*(dense[k][:, None] - dense[k][None, :] for k in ("ycoords", "xcoords")))
            assert (distance + np.diag(np.full(len(distance), np.inf))).min() >= 38.4


def test_same_seed_gives_identical_files_and_another_seed_differs(demo_study, tmp_path):
    root, summary = demo_study
    again = synthetic.simulate_study(tmp_path / "again", "demo")
    other = synthetic.simulate_study(tmp_path / "other", "demo", seed=7)
    assert again == summary
    for relative in summary["written"]:
        first, second = _load(root / relative), _load(tmp_path / "again" / relative)
        assert first.keys() == second.keys()
        for key in first:
            assert first[key].tobytes() == second[key].tobytes(), (relative, key)
    differs = _load(tmp_path / "other" / "phase_c/dose_1000/patched_train.npz")
    reference = _load(root / "phase_c/dose_1000/patched_train.npz")
    assert not np.array_equal(differs["objectGuess"], reference["objectGuess"])
    assert other["seed"] == 7 and json.loads(differs["_metadata"].item())["seed"] == 7


def test_acceptance_guard_decides_which_views_exist_and_stale_files_go(tmp_path):
    scale = synthetic.Scale("tiny", object_size=160, scan_step=15)
    lenient = synthetic.simulate_study(tmp_path, scale, min_acceptance=0.0)
    assert not lenient["skipped"] and _files_under(tmp_path) == _expected_files(PHASE_D_VIEWS)
    sparse = _load(tmp_path / "phase_d/dose_1000/sparse/sparse_train.npz")
    assert json.loads(sparse["_metadata"].item())["effective_min_acceptance"] == 0.0
    strict = synthetic.simulate_study(tmp_path, scale, min_acceptance=1.01)
    assert _files_under(tmp_path) == _expected_files(()) and len(strict["skipped"]) == 12


# --- other kinds of data, for the benchmarks (issue 20) ---------------------------------------------------------


def test_the_default_keywords_are_the_default_study():
    """Naming the default family, probe and scan gives the very same arrays as not naming them."""
    plain = synthetic.simulate_split("demo", 1000, "train")
    named = synthetic.simulate_split("demo", 1000, "train", family="default", probe="focused", scan="raster")
    assert plain.keys() == named.keys()
    for key in plain:
        assert plain[key].tobytes() == named[key].tobytes(), key


@pytest.mark.parametrize("family", sorted(synthetic.OBJECT_FAMILIES))
def test_every_object_family_follows_data_001_and_the_dose(family):
    arrays = synthetic.simulate_split("demo", 10000, "train", family=family)
    for key, dtype in DATA_001_DTYPES.items():
        assert arrays[key].dtype == dtype, key
    obj = arrays["objectGuess"]
    assert obj.shape == (264, 264) and np.all(np.isfinite(obj))
    assert 0.3 <= np.abs(obj).min() and np.abs(obj).max() <= 1.0 + 1e-6
    assert np.ptp(np.angle(obj)) > 0.2  # every family has phase contrast
    assert _counts(arrays).sum(axis=(1, 2)).mean() == pytest.approx(10000, rel=0.1)
    again = synthetic.simulate_split("demo", 10000, "train", family=family)
    assert again["objectGuess"].tobytes() == obj.tobytes()  # reproducible for a seed


def test_object_families_differ_in_character():
    size, seed = 264, 3
    objects = {name: make(size, np.random.default_rng(seed)) for name, make in synthetic.OBJECT_FAMILIES.items()}
    phases = {name: np.angle(obj) for name, obj in objects.items()}

    def edge_share(phase):  # share of the phase's gradient energy in steps larger than 0.2 rad
        steps = np.abs(np.diff(phase, axis=1)).ravel()
        return np.sum(steps[steps > 0.2] ** 2) / np.sum(steps**2)

    assert edge_share(phases["smooth"]) < 0.05 < edge_share(phases["discs"])
    weak, strong, default = (np.ptp(phases[n]) for n in ("weak_phase", "strong_phase", "default"))
    assert weak < 0.3 * default and strong > 2.5 * default


@pytest.mark.parametrize("probe", sorted(synthetic.PROBES))
@pytest.mark.parametrize("scan", sorted(synthetic.SCANS))
def test_probes_and_scans_give_patterns_of_the_noise_free_model(probe, scan):
    arrays = synthetic.simulate_split("demo", 100000, "test", probe=probe, scan=scan)
    n = arrays["diffraction"].shape[0]
    assert 60 <= n <= 140
    assert np.sum(np.abs(arrays["probeGuess"]) ** 2) > 0
    expected = synthetic.far_field_intensity(arrays["probeGuess"], arrays["objectGuess"], arrays["ycoords"], arrays["xcoords"])
    assert _counts(arrays).sum() == pytest.approx(expected.sum(), rel=0.01)
    starts = np.concatenate([arrays["ycoords"], arrays["xcoords"]]) - (PATTERN_SIZE - 1) / 2
    assert np.all(starts == np.round(starts)) and starts.min() >= 0 and starts.max() + PATTERN_SIZE <= 264


def test_the_aperture_probe_is_a_sharp_edged_spot_with_a_curved_phase():
    probe = synthetic.make_aperture_probe()
    assert np.sum(np.abs(probe) ** 2) == pytest.approx(1.0, rel=1e-5)
    r = np.arange(PATTERN_SIZE) - (PATTERN_SIZE - 1) / 2
    radius = np.hypot(r[:, None], r[None, :])
    inside, outside = np.abs(probe[radius < 12]), np.abs(probe[radius > 22])
    assert inside.min() > 0.9 * inside.max() and outside.max() < 0.01 * inside.max()
    phase = np.angle(probe * np.conj(probe[31, 31]))
    assert abs(phase[radius < 12].max() - phase[radius < 12].min()) > 1.5  # the curved wavefront


def test_random_scan_is_not_a_raster_and_unknown_names_are_refused():
    ys, xs = synthetic.random_scan_positions(synthetic.SCALES["demo"], np.random.default_rng(0))
    assert ys.size == synthetic.SCALES["demo"].positions_per_side ** 2
    assert np.unique(xs).size > 2 * synthetic.SCALES["demo"].positions_per_side
    for keyword in ("family", "probe", "scan"):
        with pytest.raises(ValueError, match="unknown"):
            synthetic.simulate_split("demo", 1000, "train", **{keyword: "nope"})
