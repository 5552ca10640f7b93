"""DATA-001, the NPZ contract: load a study NPZ safely and report every broken rule at once.

Pure NumPy + stdlib (no Dagster), so a notebook or the CLI can vet a file before the study runs.

Two safety properties hold for any file, however it was made:

* Nothing in the file is executed. Members are never unpickled; the one exception, the legacy
  ``_metadata`` string of the PtychoPINN tools (their DATA-002), goes through an unpickler that knows
  only the names of a pickled NumPy array and merely records what the pickle describes.
* Memory follows the bytes really present, never the sizes a header declares: a member's data is read
  in chunks up to its declared size, so a header claiming a terabyte array costs only what is there.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import reprlib
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import IO, NoReturn

import numpy as np

FILE_KEY = "<file>"
"""The ``Violation.key`` of problems with the file as a whole (missing, not a zip, ...)."""

METADATA_KEY = "_metadata"
REQUIRED_KEYS: tuple[str, ...] = ("diffraction", "probeGuess", "objectGuess", "xcoords", "ycoords")
BOOKKEEPING_KEYS: tuple[str, ...] = ("filenames", "nn_indices", "scan_index")

_FLOAT32 = np.dtype(np.float32)
_COMPLEX64 = np.dtype(np.complex64)
_COORDINATE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_CHUNK_BYTES = 16 * 2**20
# What reading a damaged member can raise: zip CRC/structure errors, bad deflate data, early EOF,
# encrypted or unsupported-compression members (RuntimeError), undecodable buffers (ValueError).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError)

PathType = str | PathLike[str]

MAX_INPUT_BYTES_ENV = "FLY64_MAX_INPUT_BYTES"
DEFAULT_MAX_INPUT_BYTES = 8 * 2**30
"""Largest decompressed size of one input file: generous for real studies (the full synthetic study's
largest file is 33 MB; 100,000 patterns of 128 x 128 would be 6.5 GB), below a node's memory."""

MAX_COMPRESSION_RATIO_ENV = "FLY64_MAX_COMPRESSION_RATIO"
DEFAULT_MAX_COMPRESSION_RATIO = 250.0
"""Largest decompressed : compressed ratio of one member. Photon-count amplitudes do not reach it (measured on
the synthetic study: 38:1 at 10^3 photons per pattern, 20:1 at 10^4, 11:1 at 10^5); an array of zeros
compresses 1000:1, which is how a few-MB file decompresses to gigabytes."""

_RATIO_FLOOR_BYTES = 2**20
"""Members smaller than this decompressed are never refused for their ratio (a small constant array may
compress well and costs nothing)."""


def _limit_from_env(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class Violation:
    """One broken rule in one file: enough for a beamline scientist to find and fix it."""

    path: str
    key: str
    rule: str
    found: str

    def __str__(self) -> str:
        return f"{self.path}: {self.key}: {self.rule} (found {self.found})"


class ContractError(Exception):
    """A file breaks DATA-001. ``violations`` holds every broken rule; ``str()`` lists them one per line."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = list(violations)
        super().__init__("\n".join(str(violation) for violation in self.violations))

    def __reduce__(self):
        # Exceptions pickle as ``cls(*args)``; rebuild from the violations, not from the joined message.
        return (type(self), (self.violations,))


def _fail(path: PathType, key: str, rule: str, found: str) -> NoReturn:
    raise ContractError([Violation(str(path), key, rule, found)])


# --- reading the archive ------------------------------------------------------------------------


def _open_archive(path: PathType) -> zipfile.ZipFile:
    """Open the NPZ as a zip archive; every file-level problem becomes a ContractError."""
    file = Path(path)
    if not file.exists():
        _fail(path, FILE_KEY, "file must exist", "no file at this path")
    if file.is_dir():
        _fail(path, FILE_KEY, "must be an NPZ file", "a directory")
    if not file.is_file():
        _fail(path, FILE_KEY, "must be a regular NPZ file", "a special file (not a regular file)")
    try:
        if file.stat().st_size == 0:
            _fail(path, FILE_KEY, "file is empty", "0 bytes")
        return zipfile.ZipFile(file)
    except PermissionError:
        _fail(path, FILE_KEY, "file must be readable", "permission denied")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        _fail(path, FILE_KEY, "must be an NPZ (zip) archive; it is truncated, corrupt or not an NPZ", str(error))


def _key_of(info: zipfile.ZipInfo) -> str:
    return info.filename.removesuffix(".npy")


def _size_violations(archive: zipfile.ZipFile, path: PathType) -> list[Violation]:
    """Refuse, from the zip's headers and before decompressing anything, a file too large once decompressed
    or a member compressed beyond what photon-count data allows. (The zip reader never decompresses a member
    past the size its header declares, so these sizes bound the memory a read can take.)"""
    max_bytes = _limit_from_env(MAX_INPUT_BYTES_ENV, DEFAULT_MAX_INPUT_BYTES)
    max_ratio = _limit_from_env(MAX_COMPRESSION_RATIO_ENV, DEFAULT_MAX_COMPRESSION_RATIO)
    violations = []
    for info in archive.infolist():
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size >= _RATIO_FLOOR_BYTES and ratio > max_ratio:
            violations.append(Violation(
                str(path), _key_of(info),
                f"compression ratio must be at most {max_ratio:g}:1 (photon-count data stays far below; "
                f"limit {MAX_COMPRESSION_RATIO_ENV})",
                f"{info.file_size} bytes compressed into {info.compress_size} ({ratio:.0f}:1)",
            ))
    total = sum(info.file_size for info in archive.infolist())
    if total > max_bytes:
        violations.append(Violation(
            str(path), FILE_KEY,
            f"decompressed size must be at most {max_bytes:.0f} bytes (limit {MAX_INPUT_BYTES_ENV})",
            f"{total} bytes in {len(archive.infolist())} members",
        ))
    return violations


@contextmanager
def _open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: PathType) -> Iterator[IO[bytes]]:
    """Open one member; damaged zip data becomes a ContractError naming its key."""
    try:
        with archive.open(info) as stream:
            yield stream
    except _READ_ERRORS as error:
        _fail(path, _key_of(info), "member is corrupt or unreadable", f"{type(error).__name__}: {error}")


def _read_header(stream: IO[bytes], path: PathType, key: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    """A member's ``.npy`` header: (dtype, shape, Fortran order). Reads no data."""
    try:
        version = np.lib.format.read_magic(stream)
        if version not in _HEADER_READERS:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        shape, fortran_order, dtype = _HEADER_READERS[version](stream)
    except ValueError as error:
        _fail(path, key, "must be a NumPy .npy array with a valid header", str(error))
    if any(size < 0 for size in shape):
        _fail(path, key, "must be a NumPy .npy array with a valid header", f"negative shape {shape}")
    return dtype, shape, fortran_order


def _chunks(stream: IO[bytes], dtype: np.dtype, shape: tuple[int, ...], path: PathType, key: str) -> Iterator[bytes]:
    """The array body in chunks of at most ``_CHUNK_BYTES`` whole items, so that memory never exceeds the bytes
    really present; a body shorter than its header declares is a violation."""
    declared = math.prod(shape) * dtype.itemsize
    step = max(dtype.itemsize, _CHUNK_BYTES - _CHUNK_BYTES % dtype.itemsize)
    read = 0
    while read < declared:
        chunk = stream.read(min(step, declared - read))
        if not chunk or len(chunk) % dtype.itemsize:
            _fail(
                path,
                key,
                "the .npy header declares more data than the member holds (truncated or forged)",
                f"shape {shape} of {dtype}: {declared} bytes declared, {read + len(chunk)} present",
            )
        read += len(chunk)
        yield chunk


def _read_data(
    stream: IO[bytes], dtype: np.dtype, shape: tuple[int, ...], fortran_order: bool, path: PathType, key: str
) -> np.ndarray:
    """The array body, read in bounded chunks (see :func:`_chunks`)."""
    data = bytearray()
    for chunk in _chunks(stream, dtype, shape, path, key):
        data += chunk
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
    return flat.reshape(shape, order="F" if fortran_order else "C")


@dataclass(frozen=True)
class StreamedArray:
    """What the rules need of an array (dtype, shape, counts of NaN, Inf and negative values), gathered
    chunk by chunk so that checking a file never holds its arrays: ``check_file`` uses it."""

    dtype: np.dtype
    shape: tuple[int, ...]
    nan: int = 0
    inf: int = 0
    negative: int = 0
    smallest: float = 0.0

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]


def _stream_facts(stream: IO[bytes], dtype: np.dtype, shape: tuple[int, ...], path: PathType, key: str) -> StreamedArray:
    """Read the array body in bounded chunks (see :func:`_chunks`), keeping only the counts the rules need."""
    nan = inf = negative = 0
    smallest = 0.0
    for chunk in _chunks(stream, dtype, shape, path, key):
        values = np.frombuffer(chunk, dtype=dtype)
        if dtype.kind in "fc":
            nan += int(np.count_nonzero(np.isnan(values)))
            inf += int(np.count_nonzero(np.isinf(values)))
        if dtype.kind in "fi":
            below = values < 0
            if below.any():
                negative += int(np.count_nonzero(below))
                smallest = min(smallest, float(values[below].min()))
    return StreamedArray(dtype, shape, nan, inf, negative, smallest)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: PathType, streamed: bool) -> np.ndarray | StreamedArray:
    key = _key_of(info)
    with _open_member(archive, info, path) as stream:
        dtype, shape, fortran_order = _read_header(stream, path, key)
        if dtype.hasobject:
            _fail(path, key, "must not be an object array (reading it would unpickle, i.e. run code)", str(dtype))
        if streamed:
            return _stream_facts(stream, dtype, shape, path, key)
        return _read_data(stream, dtype, shape, fortran_order, path, key)


def _load_members(path: PathType, streamed: bool = False) -> tuple[dict[str, np.ndarray | StreamedArray], list[Violation]]:
    """Every readable array member except ``_metadata`` (as arrays, or as :class:`StreamedArray` summaries
    when ``streamed``), and a violation for each unreadable one.

    File-level problems, and sizes beyond the limits, raise ContractError.
    """
    arrays: dict[str, np.ndarray] = {}
    violations: list[Violation] = []
    with _open_archive(path) as archive:
        refused = _size_violations(archive, path)
        if refused:
            raise ContractError(refused)
        for info in archive.infolist():
            if _key_of(info) == METADATA_KEY:
                continue
            try:
                arrays[_key_of(info)] = _read_member(archive, info, path, streamed)
            except ContractError as error:
                violations += error.violations
    return arrays, violations


def load_npz(path: PathType) -> dict[str, np.ndarray]:
    """Every array member (``_metadata`` excluded: see ``read_metadata``), never unpickling anything.

    Raises ContractError listing every problem: the file is missing, a directory, unreadable, empty, not a
    zip or truncated (key ``"<file>"``); a member is corrupt, has a bad header, declares more data than it
    holds, or is an object array (key: that member).
    """
    arrays, violations = _load_members(path)
    if violations:
        raise ContractError(violations)
    return arrays


# --- _metadata ----------------------------------------------------------------------------------


class _ArrayPickle:
    """Stands in for NumPy's array rebuild: records the pickled state and allocates nothing.

    (NumPy's own ``ndarray.__setstate__`` allocates the declared shape before looking at the data, so a
    crafted pickle could demand terabytes.)
    """

    state = None

    def __init__(self, *_reconstruct_args) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.state = state


_NDARRAY = object()
"""Placeholder for ``numpy.ndarray`` in a pickle: the real class would let a pickle allocate arrays."""

_PICKLE_GLOBALS: Mapping[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _ArrayPickle,  # written by NumPy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _ArrayPickle,  # written by NumPy 2.x
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
}
"""Every name a pickled NumPy array refers to, and what the legacy unpickler gives for it."""


class _LegacyMetadataUnpickler(pickle.Unpickler):
    """Knows only the names a pickled NumPy array uses; any other global (a payload) is refused."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}") from None


def _legacy_text(stream: IO[bytes], path: PathType) -> str:
    """The str inside a legacy pickled 0-d object array; anything else is rejected."""
    try:
        result = _LegacyMetadataUnpickler(stream).load()
    except Exception as error:  # a malformed pickle can raise nearly anything; only the stand-ins above ran
        _fail(
            path,
            METADATA_KEY,
            "legacy (pickled) _metadata may only hold a plain string; refused to unpickle anything else",
            f"{type(error).__name__}: {error}",
        )
    state = result.state if isinstance(result, _ArrayPickle) else None
    if not (isinstance(state, tuple) and len(state) == 5):
        _fail(path, METADATA_KEY, "legacy (pickled) _metadata must be a pickled NumPy array", reprlib.repr(result))
    _version, shape, dtype, _fortran_order, items = state
    if shape != () or not (isinstance(dtype, np.dtype) and dtype == np.dtype(object)):
        _fail(
            path,
            METADATA_KEY,
            "legacy (pickled) _metadata must be a 0-d object array",
            f"a pickled array of shape {reprlib.repr(shape)} and dtype {reprlib.repr(dtype)}",
        )
    if not (isinstance(items, list) and len(items) == 1 and isinstance(items[0], str)):
        found = items[0] if isinstance(items, list) and len(items) == 1 else items
        _fail(
            path,
            METADATA_KEY,
            "legacy (pickled) _metadata must hold a str",
            f"{type(found).__name__} {reprlib.repr(found)}",
        )
    return items[0]


def _metadata_text(stream: IO[bytes], path: PathType) -> str:
    """The JSON text of a ``_metadata`` member, in the safe (string array) or legacy (pickled) form."""
    dtype, shape, fortran_order = _read_header(stream, path, METADATA_KEY)
    if shape != ():
        _fail(path, METADATA_KEY, "must be a single JSON string (a 0-d array)", f"shape {shape}")
    if dtype == np.dtype(object):
        return _legacy_text(stream, path)
    if dtype.kind not in "US":
        _fail(path, METADATA_KEY, "must hold JSON text (a string array)", str(dtype))
    value = _read_data(stream, dtype, shape, fortran_order, path, METADATA_KEY).item()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            _fail(path, METADATA_KEY, "must be UTF-8 text", str(error))
    return value


def _parse_metadata(text: str, path: PathType) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        _fail(path, METADATA_KEY, "must be JSON text", f"{error}: {reprlib.repr(text)}")
    if not isinstance(value, dict):
        _fail(
            path,
            METADATA_KEY,
            "JSON must be an object ({...} of named fields)",
            f"{type(value).__name__} {reprlib.repr(value)}",
        )
    return value


def read_metadata(path: PathType) -> dict:
    """The decoded ``_metadata`` JSON object, or ``{}`` when the file has none.

    Accepts the safe form (a 0-d unicode or bytes array of JSON text) and the legacy PtychoPINN form (a 0-d
    object array holding a str, stored as a pickle), which is decoded without executing anything. Raises
    ContractError with key ``"_metadata"`` for any other content (``"<file>"`` if the file itself is bad).
    """
    with _open_archive(path) as archive:
        info = next((info for info in archive.infolist() if _key_of(info) == METADATA_KEY), None)
        if info is None:
            return {}
        with _open_member(archive, info, path) as stream:
            text = _metadata_text(stream, path)
    return _parse_metadata(text, path)


# --- the rules ----------------------------------------------------------------------------------

_Problems = Iterator[tuple[str, str]]
"""What a rule check yields: (rule, found) pairs for one key."""


@dataclass(frozen=True)
class _Geometry:
    """What other keys are checked against; None where the defining array is absent or misshapen."""

    n: int | None
    pattern_shape: tuple[int, ...] | None
    probe_shape: tuple[int, ...] | None

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> _Geometry:
        diffraction, probe = arrays.get("diffraction"), arrays.get("probeGuess")
        patterns = diffraction.shape if diffraction is not None and diffraction.ndim == 3 else None
        return cls(
            n=patterns[0] if patterns else None,
            pattern_shape=patterns[1:] if patterns else None,
            probe_shape=probe.shape if probe is not None and probe.ndim == 2 else None,
        )


def _dtype_is(array: np.ndarray, dtype: np.dtype) -> _Problems:
    if array.dtype != dtype:
        yield f"dtype must be {dtype}", str(array.dtype)


def _finite(array: np.ndarray | StreamedArray) -> _Problems:
    if array.dtype.kind not in "fc":  # integers are always finite; other dtypes are a dtype violation already
        return
    if isinstance(array, StreamedArray):
        nan, inf = array.nan, array.inf
    else:
        nan, inf = np.count_nonzero(np.isnan(array)), np.count_nonzero(np.isinf(array))
    if nan or inf:
        yield "values must be finite (no NaN or Inf)", f"{nan} NaN and {inf} Inf values"


def _first_dimension_is_n(array: np.ndarray, geometry: _Geometry) -> _Problems:
    if geometry.n is not None and array.shape[0] != geometry.n:
        yield (
            f"first dimension must equal the number of diffraction patterns (n = {geometry.n})",
            f"shape {array.shape}",
        )


def _diffraction_problems(diffraction: np.ndarray, geometry: _Geometry) -> _Problems:
    if diffraction.ndim != 3:
        yield "must be 3-D (n, H, W): n patterns of H x W pixels", f"shape {diffraction.shape}"
    else:
        n, height, width = diffraction.shape
        if n < 1:
            yield "must hold at least one pattern (n >= 1)", "n = 0"
        if height != width:
            yield "patterns must be square (H == W)", f"{height} x {width} patterns"
    if diffraction.dtype.kind in "iu":
        yield (
            "dtype must be float32 amplitude (sqrt of counts); integers look like raw photon counts",
            str(diffraction.dtype),
        )
    elif diffraction.dtype != _FLOAT32:
        yield "dtype must be float32 (amplitude, the square root of counts)", str(diffraction.dtype)
    yield from _finite(diffraction)
    if diffraction.dtype.kind in "fi":
        if isinstance(diffraction, StreamedArray):
            count, smallest = diffraction.negative, diffraction.smallest
        else:
            below = diffraction < 0  # NaN compares False: reported as non-finite only
            count, smallest = int(np.count_nonzero(below)), (diffraction[below].min() if below.any() else 0)
        if count:
            yield "amplitudes must be >= 0", f"{count} negative values, smallest {smallest}"


def _probe_problems(probe: np.ndarray, geometry: _Geometry) -> _Problems:
    if probe.ndim != 2:
        yield "must be 2-D (H, W)", f"shape {probe.shape}"
    elif geometry.pattern_shape is not None and probe.shape != geometry.pattern_shape:
        height, width = geometry.pattern_shape
        yield f"must have the diffraction pattern size {height} x {width}", f"shape {probe.shape}"
    yield from _dtype_is(probe, _COMPLEX64)
    yield from _finite(probe)


def _object_problems(obj: np.ndarray, geometry: _Geometry) -> _Problems:
    if obj.ndim != 2:
        yield "must be 2-D (M, M')", f"shape {obj.shape}"
    elif geometry.probe_shape is not None and (
        obj.shape[0] < geometry.probe_shape[0] or obj.shape[1] < geometry.probe_shape[1]
    ):
        height, width = geometry.probe_shape
        yield f"must be at least as large as the probe ({height} x {width}) in each axis", f"shape {obj.shape}"
    yield from _dtype_is(obj, _COMPLEX64)
    yield from _finite(obj)


def _coordinate_problems(coords: np.ndarray, geometry: _Geometry) -> _Problems:
    if coords.ndim != 1:
        yield "must be 1-D (n,): one position per pattern", f"shape {coords.shape}"
    elif geometry.n is not None and len(coords) != geometry.n:
        yield f"length must equal the number of diffraction patterns (n = {geometry.n})", f"length {len(coords)}"
    if coords.dtype not in _COORDINATE_DTYPES:
        yield "dtype must be float32 or float64", str(coords.dtype)
    yield from _finite(coords)


def _patch_problems(patches: np.ndarray, geometry: _Geometry) -> _Problems:
    if patches.ndim != 3:
        yield "must be 3-D (n, h, w)", f"shape {patches.shape}"
    else:
        yield from _first_dimension_is_n(patches, geometry)
    yield from _dtype_is(patches, _COMPLEX64)


def _bookkeeping_problems(values: np.ndarray, geometry: _Geometry) -> _Problems:
    if values.ndim == 0:
        yield "must have one entry per pattern (first dimension n)", "a 0-d scalar"
    else:
        yield from _first_dimension_is_n(values, geometry)
    if values.dtype.hasobject:
        yield "dtype must be a plain (non-object) type", str(values.dtype)


_CHECKS: dict[str, Callable[[np.ndarray, _Geometry], _Problems]] = {
    "diffraction": _diffraction_problems,
    "probeGuess": _probe_problems,
    "objectGuess": _object_problems,
    "xcoords": _coordinate_problems,
    "ycoords": _coordinate_problems,
    "Y": _patch_problems,
    **{key: _bookkeeping_problems for key in BOOKKEEPING_KEYS},
}
"""The keys DATA-001 constrains; other keys are allowed and not checked."""


def validate(arrays: Mapping[str, np.ndarray], path: PathType) -> list[Violation]:
    """Every DATA-001 rule, all violations at once.

    Never raises: a rule that needs a shape another array lacks is skipped (that shape is reported instead).
    """
    present = {key: value for key, value in arrays.items() if isinstance(value, (np.ndarray, StreamedArray))}
    problems = [
        (key, "must be a NumPy array", type(value).__name__) for key, value in arrays.items() if key not in present
    ]
    problems += [
        (key, "required key is missing", f"keys {sorted(arrays)}") for key in REQUIRED_KEYS if key not in arrays
    ]
    geometry = _Geometry.of(present)
    for key, check in _CHECKS.items():
        if key in present:
            problems += [(key, rule, found) for rule, found in check(present[key], geometry)]
    return [Violation(str(path), key, rule, found) for key, rule, found in problems]


# --- whole files --------------------------------------------------------------------------------


def _inspect(path: PathType, streamed: bool = False) -> tuple[dict, dict, list[Violation]]:
    """(arrays, metadata, every violation); raises ContractError only when the file cannot be opened or is
    beyond the size limits. ``streamed``: summaries instead of arrays (checking without holding the data)."""
    arrays, violations = _load_members(path, streamed)
    unreadable = {violation.key for violation in violations}
    violations += [violation for violation in validate(arrays, path) if violation.key not in unreadable]
    try:
        metadata = read_metadata(path)
    except ContractError as error:
        metadata, violations = {}, violations + error.violations
    return arrays, metadata, violations


def check_file(path: PathType) -> list[Violation]:
    """Every violation of the file (empty: valid). Data problems are returned, never raised.

    The arrays are read in bounded chunks and never held whole, so checking a file takes a few tens of MB
    whatever its size; a file beyond the size limits is refused from its headers before any decompression.
    """
    try:
        return _inspect(path, streamed=True)[2]
    except ContractError as error:
        return error.violations


def load_valid(path: PathType) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, metadata) of a valid file; raises ContractError listing every violation otherwise."""
    arrays, metadata, violations = _inspect(path)
    if violations:
        raise ContractError(violations)
    return arrays, metadata
