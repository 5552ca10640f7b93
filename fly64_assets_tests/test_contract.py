"""DATA-001, the NPZ contract: every rule on files built here, plus damaged and hostile files."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fly64_assets.core.contract import (
    FILE_KEY,
    METADATA_KEY,
    REQUIRED_KEYS,
    ContractError,
    Violation,
    check_file,
    load_npz,
    load_valid,
    read_metadata,
    validate,
)
from fly64_assets_tests.support import call_as_plain_user, world_traversable_folder

N, SIZE, OBJECT_SIZE = 5, 16, 32
METADATA = {"selection_strategy": "greedy", "spacing_threshold": 38.4, "n_accepted": 5, "acceptance_rate": 0.5}


def valid_arrays(n: int = N, size: int = SIZE, object_size: int = OBJECT_SIZE) -> dict[str, np.ndarray]:
    """A small dataset that meets DATA-001: n patterns of size x size, an object_size^2 object."""
    rng = np.random.default_rng(0)
    return {
        "diffraction": rng.random((n, size, size), dtype=np.float32),
        "probeGuess": (rng.random((size, size)) + 1j * rng.random((size, size))).astype(np.complex64),
        "objectGuess": np.ones((object_size, object_size), np.complex64),
        "xcoords": rng.uniform(size / 2, object_size - size / 2, n),
        "ycoords": rng.uniform(size / 2, object_size - size / 2, n).astype(np.float32),
    }


def write_npz(path: Path, save=np.savez, **members: np.ndarray | None) -> Path:
    """The valid dataset at ``path``, with ``members`` replacing or adding keys (None removes a key)."""
    contents = {**valid_arrays(), **members}
    save(path, **{key: value for key, value in contents.items() if value is not None})
    return path


def add_raw_member(path: Path, key: str, header: dict, body: bytes) -> None:
    """Append ``<key>.npy`` with a hand-written header and body, whatever they claim."""
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{key}.npy", member.getvalue() + body)


def the_violation(violations: list[Violation], key: str) -> Violation:
    """The single violation, checked to be about ``key``."""
    assert len(violations) == 1, violations
    assert violations[0].key == key, violations
    return violations[0]


def peak_traced_bytes(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- a valid file -------------------------------------------------------------------------------


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_valid_file_passes(tmp_path, save):
    path = write_npz(tmp_path / "valid.npz", save=save)

    assert check_file(path) == []
    arrays, metadata = load_valid(path)

    assert metadata == {}
    assert sorted(arrays) == sorted(REQUIRED_KEYS)
    for key, expected in valid_arrays().items():
        np.testing.assert_array_equal(arrays[key], expected)
        assert arrays[key].dtype == expected.dtype
    assert arrays["diffraction"].flags.writeable


def test_optional_and_unknown_keys_are_allowed(tmp_path):
    path = write_npz(
        tmp_path / "full.npz",
        Y=np.zeros((N, 8, 8), np.complex64),
        filenames=np.array([f"pattern_{i}.tif" for i in range(N)]),
        nn_indices=np.zeros((N, 4), np.int64),
        scan_index=np.arange(N),
        notes=np.array("anything goes"),
        probeGuess=np.asfortranarray(valid_arrays()["probeGuess"]),
    )

    assert check_file(path) == []
    np.testing.assert_array_equal(load_npz(path)["probeGuess"], valid_arrays()["probeGuess"])


# --- rule by rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_each_required_key_is_required(tmp_path, key):
    path = write_npz(tmp_path / "missing.npz", **{key: None})

    violation = the_violation(check_file(path), key)

    assert "required key is missing" in violation.rule


def test_float64_diffraction_is_a_dtype_violation(tmp_path):
    path = write_npz(tmp_path / "f64.npz", diffraction=valid_arrays()["diffraction"].astype(np.float64))

    violation = the_violation(check_file(path), "diffraction")

    assert "float32" in violation.rule
    assert violation.found == "float64"


def test_integer_diffraction_reads_as_raw_counts(tmp_path):
    counts = np.random.default_rng(1).integers(0, 1000, (N, SIZE, SIZE)).astype(np.uint16)
    path = write_npz(tmp_path / "counts.npz", diffraction=counts)

    violation = the_violation(check_file(path), "diffraction")

    assert "counts" in violation.rule and "amplitude" in violation.rule
    assert violation.found == "uint16"


@pytest.mark.parametrize("key", ["objectGuess", "probeGuess"])
def test_complex128_object_and_probe_are_violations(tmp_path, key):
    path = write_npz(tmp_path / "c128.npz", **{key: valid_arrays()[key].astype(np.complex128)})

    violation = the_violation(check_file(path), key)

    assert "complex64" in violation.rule
    assert violation.found == "complex128"


def test_probe_must_match_the_pattern_size(tmp_path):
    path = write_npz(tmp_path / "probe.npz", probeGuess=np.ones((8, 8), np.complex64))

    violation = the_violation(check_file(path), "probeGuess")

    assert f"{SIZE} x {SIZE}" in violation.rule
    assert "(8, 8)" in violation.found


def test_object_must_be_at_least_as_large_as_the_probe(tmp_path):
    path = write_npz(tmp_path / "object.npz", objectGuess=np.ones((8, 40), np.complex64))

    violation = the_violation(check_file(path), "objectGuess")

    assert "at least as large as the probe" in violation.rule
    assert "(8, 40)" in violation.found


def test_patterns_must_be_square(tmp_path):
    arrays = valid_arrays()
    path = write_npz(
        tmp_path / "rect.npz",
        diffraction=arrays["diffraction"][:, :, :12].copy(),
        probeGuess=arrays["probeGuess"][:, :12].copy(),
    )

    violation = the_violation(check_file(path), "diffraction")

    assert "square" in violation.rule
    assert violation.found == "16 x 12 patterns"


@pytest.mark.parametrize("key", ["xcoords", "ycoords"])
def test_coordinates_need_one_entry_per_pattern(tmp_path, key):
    path = write_npz(tmp_path / "coords.npz", **{key: valid_arrays()[key][:-1]})

    violation = the_violation(check_file(path), key)

    assert f"n = {N}" in violation.rule
    assert violation.found == f"length {N - 1}"


@pytest.mark.parametrize("key", ["diffraction", "xcoords", "ycoords"])
@pytest.mark.parametrize("bad, expected", [(np.nan, "1 NaN and 0 Inf"), (np.inf, "0 NaN and 1 Inf")])
def test_values_must_be_finite(tmp_path, key, bad, expected):
    array = valid_arrays()[key]
    array.flat[3] = bad
    path = write_npz(tmp_path / "nonfinite.npz", **{key: array})

    violation = the_violation(check_file(path), key)

    assert "finite" in violation.rule
    assert expected in violation.found


def test_amplitudes_must_not_be_negative(tmp_path):
    diffraction = valid_arrays()["diffraction"]
    diffraction[2, 3, 4] = -0.5
    path = write_npz(tmp_path / "negative.npz", diffraction=diffraction)

    violation = the_violation(check_file(path), "diffraction")

    assert ">= 0" in violation.rule
    assert violation.found == "1 negative values, smallest -0.5"


def test_at_least_one_pattern(tmp_path):
    path = write_npz(tmp_path / "empty.npz", **valid_arrays(n=0))

    violation = the_violation(check_file(path), "diffraction")

    assert "n >= 1" in violation.rule


def test_all_violations_are_reported_together(tmp_path):
    arrays = valid_arrays()
    arrays["xcoords"][0] = np.nan
    path = write_npz(
        tmp_path / "many.npz",
        diffraction=arrays["diffraction"].astype(np.float64),
        probeGuess=np.ones((8, 8), np.complex128),
        xcoords=arrays["xcoords"],
        ycoords=None,
    )

    violations = check_file(path)
    with pytest.raises(ContractError) as raised:
        load_valid(path)

    assert {(violation.key, violation.found) for violation in violations} == {
        ("diffraction", "float64"),
        ("probeGuess", "shape (8, 8)"),
        ("probeGuess", "complex128"),
        ("xcoords", "1 NaN and 0 Inf values"),
        ("ycoords", f"keys {sorted(['diffraction', 'probeGuess', 'objectGuess', 'xcoords'])}"),
    }
    assert raised.value.violations == violations
    assert str(raised.value).splitlines() == [str(violation) for violation in violations]


def test_optional_keys_are_checked_when_present(tmp_path):
    path = write_npz(
        tmp_path / "optional.npz",
        Y=np.zeros((N + 1, 8, 8), np.complex128),
        scan_index=np.arange(N - 1),
        filenames=np.array("one name for all"),
    )

    found = {(violation.key, violation.found) for violation in check_file(path)}

    assert found == {
        ("Y", "shape (6, 8, 8)"),
        ("Y", "complex128"),
        ("scan_index", "shape (4,)"),
        ("filenames", "a 0-d scalar"),
    }


def test_misshapen_arrays_are_reported_never_raised():
    arrays = {
        "diffraction": np.zeros((SIZE, SIZE), np.float32),
        "probeGuess": np.zeros((1, SIZE, SIZE), np.complex64),
        "objectGuess": np.zeros(7, np.complex64),
        "xcoords": np.zeros((N, 2)),
        "ycoords": np.array("text"),
        "Y": np.zeros(3, np.complex64),
        "filenames": np.array(["a", None], dtype=object),
        "nn_indices": np.array(4),
        "scan_index": [0, 1, 2],
    }

    violations = validate(arrays, "odd.npz")

    assert {violation.key for violation in violations} == set(arrays)
    assert all(violation.path == "odd.npz" for violation in violations)
    assert validate({"diffraction": np.array(1.0, np.float32)}, "scalar.npz")
    assert validate({"diffraction": np.array([["a"]], dtype=object)}, "objects.npz")


# --- damaged files ------------------------------------------------------------------------------


def truncated_zip(tmp_path: Path) -> Path:
    path = write_npz(tmp_path / "truncated.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.npz"
    path.write_text("diffraction, probeGuess: see the logbook\n")
    return path


def zero_byte_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.npz"
    path.touch()
    return path


def directory(tmp_path: Path) -> Path:
    path = tmp_path / "dataset.npz"
    path.mkdir()
    return path


def missing_file(tmp_path: Path) -> Path:
    return tmp_path / "never_written.npz"


@pytest.mark.parametrize(
    "make_file, expected_rule",
    [
        (truncated_zip, "truncated, corrupt or not an NPZ"),
        (text_file, "truncated, corrupt or not an NPZ"),
        (zero_byte_file, "file is empty"),
        (directory, "must be an NPZ file"),
        (missing_file, "file must exist"),
    ],
)
def test_unusable_files_are_contract_errors(tmp_path, make_file, expected_rule):
    path = make_file(tmp_path)

    violation = the_violation(check_file(path), FILE_KEY)
    for load in (load_npz, read_metadata, load_valid):
        with pytest.raises(ContractError) as raised:
            load(path)
        assert raised.value.violations == [violation]

    assert expected_rule in violation.rule
    assert violation.path == str(path)


def test_unreadable_file_is_a_contract_error():
    folder = world_traversable_folder("fly64-unreadable-")
    try:
        path = write_npz(folder / "locked.npz")
        path.chmod(0o644)
        assert check_file(path) == []  # as this user first: the check's lazy imports happen here
        assert call_as_plain_user(check_file, path) == []  # a plain user reads it while it is readable
        path.chmod(0)
        violation = the_violation(call_as_plain_user(check_file, path), FILE_KEY)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    assert "readable" in violation.rule
    assert "permission denied" in violation.found


def test_corrupt_member_is_named(tmp_path):
    path = write_npz(tmp_path / "bitrot.npz")
    raw = bytearray(path.read_bytes())
    raw[raw.find(valid_arrays()["diffraction"].tobytes()) + 10] ^= 0xFF
    path.write_bytes(bytes(raw))

    violation = the_violation(check_file(path), "diffraction")

    assert "corrupt" in violation.rule
    assert "CRC" in violation.found


def test_huge_declared_shape_is_refused_without_allocating_it(tmp_path):
    path = write_npz(tmp_path / "forged.npz", diffraction=None)
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6, 64)}
    add_raw_member(path, "diffraction", header, b"\0" * 64)

    def load():
        with pytest.raises(ContractError) as raised:
            load_npz(path)
        violation = the_violation(raised.value.violations, "diffraction")
        assert "declares more data than the member holds" in violation.rule
        assert "64 present" in violation.found

    assert peak_traced_bytes(lambda: np.ones(2**22, np.uint8)) >= 2**22  # NumPy's allocations are traced
    assert peak_traced_bytes(load) < 2**22
    the_violation(check_file(path), "diffraction")  # the other rules skip the unreadable key


def test_object_array_members_are_refused_and_the_rest_still_checked(tmp_path):
    path = write_npz(
        tmp_path / "objects.npz",
        filenames=np.array([f"p{i}" for i in range(N)], dtype=object),
        diffraction=valid_arrays()["diffraction"].astype(np.float64),
    )

    with pytest.raises(ContractError) as raised:
        load_npz(path)
    violation = the_violation(raised.value.violations, "filenames")

    assert "object" in violation.rule
    assert {violation.key for violation in check_file(path)} == {"filenames", "diffraction"}


# --- _metadata ----------------------------------------------------------------------------------


def test_no_metadata_reads_as_empty(tmp_path):
    assert read_metadata(write_npz(tmp_path / "plain.npz")) == {}


@pytest.mark.parametrize("encode", [str, str.encode], ids=["unicode", "bytes"])
def test_safe_metadata_decodes(tmp_path, encode):
    path = write_npz(tmp_path / "safe.npz", _metadata=np.array(encode(json.dumps(METADATA))))

    arrays, metadata = load_valid(path)

    assert metadata == METADATA
    assert METADATA_KEY not in arrays


def test_legacy_pickled_metadata_decodes(tmp_path):
    path = write_npz(tmp_path / "legacy.npz", _metadata=np.array(json.dumps(METADATA), dtype=object))

    assert read_metadata(path) == METADATA
    assert check_file(path) == []
    assert METADATA_KEY not in load_npz(path)


def _touch(path: str) -> None:
    Path(path).touch()


class _CreatesMarker:
    """Unpickling this calls ``_touch(marker)``: a stand-in for whatever code a hostile file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def test_metadata_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    control_marker, marker = tmp_path / "control_ran", tmp_path / "payload_ran"
    control = write_npz(tmp_path / "control.npz", _metadata=np.array(_CreatesMarker(control_marker), dtype=object))
    np.load(control, allow_pickle=True)[METADATA_KEY]  # what a plain pickle load does with this payload
    assert control_marker.exists()
    path = write_npz(tmp_path / "hostile.npz", _metadata=np.array(_CreatesMarker(marker), dtype=object))

    with pytest.raises(ContractError) as raised:
        read_metadata(path)
    violation = the_violation(check_file(path), METADATA_KEY)

    assert raised.value.violations == [violation]
    assert "refused" in violation.rule
    assert "_touch" in violation.found
    assert not marker.exists()


def test_pickled_object_array_must_hold_a_str(tmp_path):
    holds_list = np.empty((), dtype=object)
    holds_list[()] = ["not", "a", "string"]
    path = write_npz(tmp_path / "list.npz", _metadata=holds_list)

    violation = the_violation(check_file(path), METADATA_KEY)

    assert "must hold a str" in violation.rule
    assert violation.found.startswith("list")


def test_pickled_array_of_many_strings_is_refused(tmp_path):
    path = write_npz(tmp_path / "many.npz", _metadata=np.array(["{}", "{}"], dtype=object))

    violation = the_violation(check_file(path), METADATA_KEY)

    assert "0-d" in violation.rule


def test_pickle_forging_a_huge_array_is_refused_without_allocating_it(tmp_path):
    reconstruct, args, _state = np.empty(0).__reduce__()
    huge_state = (1, (10**12,), np.dtype(object), False, ["{}"])

    class ForgedArray:
        def __reduce__(self):
            return (reconstruct, args, huge_state)

    path = write_npz(tmp_path / "forged_pickle.npz")
    add_raw_member(
        path,
        METADATA_KEY,
        {"descr": "|O", "fortran_order": False, "shape": ()},
        pickle.dumps(ForgedArray(), protocol=3),
    )

    def read():
        with pytest.raises(ContractError) as raised:
            read_metadata(path)
        assert "0-d object array" in the_violation(raised.value.violations, METADATA_KEY).rule

    assert peak_traced_bytes(read) < 2**22


@pytest.mark.parametrize(
    "metadata, expected_rule",
    [
        (np.array("selection_strategy: greedy"), "must be JSON text"),
        (np.array("[1, 2, 3]"), "JSON must be an object"),
        (np.array('"just a string"'), "JSON must be an object"),
        (np.array("not json", dtype=object), "must be JSON text"),
        (np.array(3.5), "must hold JSON text"),
        (np.array(["{}", "{}"]), "0-d"),
        (np.array(b"\xff\xfe{}"), "UTF-8"),
    ],
)
def test_bad_metadata_is_rejected(tmp_path, metadata, expected_rule):
    path = write_npz(tmp_path / "bad_metadata.npz", _metadata=metadata)

    with pytest.raises(ContractError) as raised:
        read_metadata(path)
    violation = the_violation(check_file(path), METADATA_KEY)

    assert raised.value.violations == [violation]
    assert expected_rule in violation.rule


# --- the report ---------------------------------------------------------------------------------


def test_violation_names_file_key_rule_and_finding(tmp_path):
    path = write_npz(tmp_path / "f64.npz", diffraction=valid_arrays()["diffraction"].astype(np.float64))

    [violation] = check_file(path)

    assert str(violation) == f"{path}: diffraction: {violation.rule} (found float64)"


def test_contract_error_survives_pickling():
    error = ContractError([Violation("a.npz", "diffraction", "dtype must be float32", "float64")])

    copy = pickle.loads(pickle.dumps(error))

    assert copy.violations == error.violations
    assert str(copy) == str(error)


# --- decompression bombs: small files that decompress to gigabytes --------------------------------

BOMB_PATTERNS = 80_000
PEAK_RSS_PROBE = """
import sys, json
from fly64_assets.core.contract import check_file
violations = check_file(sys.argv[1])
# VmHWM: this process's peak resident memory (ru_maxrss would include the parent's, kept across exec).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"violations": [str(v) for v in violations], "peak_mb": peak_kb / 1024}))
"""


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    """The issue's file: 80,000 x 64 x 64 float32 zeros (1.3 GB) with every other array consistent, deflated
    to a few MB. Written member by member in chunks, so making it never holds 1.3 GB either."""
    from fly64_assets.core.synthetic import simulate_split

    small = simulate_split("demo", 1000, "train")
    path = tmp_path_factory.mktemp("bomb") / "patched_train.npz"
    rng = np.random.default_rng(0)
    coords = {key: rng.uniform(100, 200, BOMB_PATTERNS) for key in ("xcoords", "ycoords")}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("diffraction.npy", "w", force_zip64=True) as member:
            shape = (BOMB_PATTERNS, 64, 64)
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": shape})
            block = np.zeros((1000, 64, 64), np.float32).tobytes()
            for _ in range(BOMB_PATTERNS // 1000):
                member.write(block)
        for key, array in {"probeGuess": small["probeGuess"], "objectGuess": small["objectGuess"], **coords}.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, array)
    return path


def _check_in_child(path: Path, **env) -> dict:
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-c", PEAK_RSS_PROBE, str(path)], capture_output=True, text=True,
                               env={**os.environ, **env}, check=True)
    return json.loads(completed.stdout)


def test_a_decompression_bomb_is_refused_from_its_headers_with_little_memory(zip_bomb):
    assert zip_bomb.stat().st_size < 10 * 2**20
    result = _check_in_child(zip_bomb)
    (violation,) = result["violations"]
    assert str(zip_bomb) in violation and "diffraction" in violation
    assert "compression ratio must be at most 250:1" in violation and "FLY64_MAX_COMPRESSION_RATIO" in violation
    assert result["peak_mb"] < 300, result  # a check of this file once held 4.1 GB
    with pytest.raises(ContractError, match="compression ratio"):
        load_valid(zip_bomb)  # what the reconstruction step calls: refused there too


def test_checking_a_large_file_streams_it_in_bounded_memory(zip_bomb):
    """With the ratio limit lifted the 1.3 GB file is read whole, in chunks: the check never holds it."""
    result = _check_in_child(zip_bomb, FLY64_MAX_COMPRESSION_RATIO="100000")
    assert result["violations"] == []  # zeros are valid amplitudes: the file is consistent
    assert result["peak_mb"] < 300, result


def test_a_file_beyond_the_decompressed_size_limit_is_refused(zip_bomb, monkeypatch):
    monkeypatch.setenv("FLY64_MAX_COMPRESSION_RATIO", "100000")
    monkeypatch.setenv("FLY64_MAX_INPUT_BYTES", str(2**30))
    (violation,) = check_file(zip_bomb)
    assert violation.key == "<file>" and "decompressed size must be at most 1073741824 bytes" in violation.rule
    assert "FLY64_MAX_INPUT_BYTES" in violation.rule
    assert int(violation.found.split()[0]) > BOMB_PATTERNS * 64 * 64 * 4 and violation.found.endswith("in 5 members")
