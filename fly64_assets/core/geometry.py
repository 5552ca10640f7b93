"""The experiment geometry of a reconstruction: photon energy, detector distance and pixel sizes.

DATA-001 files carry no physical units (positions are in ``objectGuess`` pixels), but a ptychodus product is in
metres and electron-volts. Each value is taken, first found wins, from:

1. ``metadata``: the partition's Phase C/D ``_metadata`` JSON, under one of the keys in ``METADATA_KEYS``
   (``photon_energy_eV``; ``detector_distance_m`` or ptychodus's ``detector_object_distance_m``;
   ``detector_pixel_size_m``; ``object_pixel_size_m``). Per file, so it describes that file's experiment.
2. ``environment``: the study's settings ``FLY64_PHOTON_ENERGY_EV``, ``FLY64_DETECTOR_DISTANCE_M`` and
   ``FLY64_DETECTOR_PIXEL_SIZE_M``.
3. ``default``: ``DEFAULTS``, an assumed fly64-like hard-X-ray far-field setup (8.8 keV, 2 m to an Eiger-like
   detector of 75 µm pixels). These are assumptions, not measurements: the synthetic study has no physical units,
   and for real data the settings above should be given.

The object pixel size is the far-field sampling ``wavelength × distance / (N × detector pixel)`` for N×N
patterns (``source`` ``derived``), unless the metadata gives ``object_pixel_size_m`` itself; then the detector
pixel size is not needed and not reported. A value that is present but not a finite positive number is an
error, never silently replaced by the next source: a wrong scale would mislabel every product.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METADATA_KEYS: dict[str, tuple[str, ...]] = {
    "photon_energy_eV": ("photon_energy_eV",),
    "detector_distance_m": ("detector_distance_m", "detector_object_distance_m"),
    "detector_pixel_size_m": ("detector_pixel_size_m",),
    "object_pixel_size_m": ("object_pixel_size_m",),
}
"""Field -> the ``_metadata`` keys accepted for it, in order of preference."""

ENVIRONMENT_VARIABLES: dict[str, str] = {
    "photon_energy_eV": "FLY64_PHOTON_ENERGY_EV",
    "detector_distance_m": "FLY64_DETECTOR_DISTANCE_M",
    "detector_pixel_size_m": "FLY64_DETECTOR_PIXEL_SIZE_M",
}

DEFAULTS: dict[str, float] = {
    "photon_energy_eV": 8800.0,
    "detector_distance_m": 2.0,
    "detector_pixel_size_m": 75e-6,
}


class GeometryError(ValueError):
    """A geometry setting is present but unusable (not a finite positive number)."""


@dataclass(frozen=True)
class Geometry:
    """The resolved geometry, with where each value came from."""

    photon_energy_eV: float
    detector_distance_m: float
    object_pixel_size_m: float
    detector_pixel_size_m: float | None
    """None when the metadata gave the object pixel size directly."""
    sources: dict[str, str]
    """Field -> ``metadata``, ``environment``, ``default`` or (object pixel size) ``derived``."""

    @property
    def wavelength_m(self) -> float:
        return wavelength_m(self.photon_energy_eV)

    def as_record(self) -> dict[str, Any]:
        """Plain JSON values, for the partition's record and its Dagster metadata."""
        return {
            "photon_energy_eV": self.photon_energy_eV,
            "detector_distance_m": self.detector_distance_m,
            "detector_pixel_size_m": self.detector_pixel_size_m,
            "object_pixel_size_m": self.object_pixel_size_m,
            "sources": dict(self.sources),
        }

    def describe(self) -> str:
        """One line per value with its source, for a product's comments."""
        lines = [
            f"photon energy {self.photon_energy_eV:g} eV ({self.sources['photon_energy_eV']})",
            f"detector distance {self.detector_distance_m:g} m ({self.sources['detector_distance_m']})",
        ]
        if self.detector_pixel_size_m is not None:
            lines.append(f"detector pixel {self.detector_pixel_size_m:g} m ({self.sources['detector_pixel_size_m']})")
        source = self.sources["object_pixel_size_m"]
        if source == "derived":
            source = "derived: wavelength x distance / (N x detector pixel)"
        lines.append(f"object pixel {self.object_pixel_size_m:g} m ({source})")
        return "\n".join(lines)


def wavelength_m(photon_energy_eV: float) -> float:
    """Photon wavelength for an energy in eV (h c / E, exact SI constants). scipy is imported here: the code
    location imports this module, and scipy costs it 80 ms."""
    from scipy.constants import c, e, h

    return h * c / (photon_energy_eV * e)


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise GeometryError(f"{where} is {value!r}: expected a finite positive number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GeometryError(f"{where} is {value!r}: expected a finite positive number") from None
    if not (math.isfinite(number) and number > 0):
        raise GeometryError(f"{where} is {value!r}: expected a finite positive number")
    return number


def _from_metadata(metadata: Mapping[str, Any], field: str) -> float | None:
    for key in METADATA_KEYS[field]:
        if metadata.get(key) is not None:
            return _positive(metadata[key], f"_metadata {key}")
    return None


def _setting(metadata: Mapping[str, Any], environ: Mapping[str, str], field: str) -> tuple[float, str]:
    """(value, source) of a field that has an environment variable and a default."""
    value = _from_metadata(metadata, field)
    if value is not None:
        return value, "metadata"
    variable = ENVIRONMENT_VARIABLES[field]
    if environ.get(variable, "").strip():
        return _positive(environ[variable], f"environment variable {variable}"), "environment"
    return DEFAULTS[field], "default"


def resolve_geometry(
    metadata: Mapping[str, Any], pattern_size: int, environ: Mapping[str, str] | None = None
) -> Geometry:
    """The geometry of a reconstruction from ``pattern_size``×``pattern_size`` patterns (see the module docstring).

    ``environ`` defaults to this process's environment. Raises GeometryError for an unusable value.
    """
    environ = os.environ if environ is None else environ
    energy, energy_source = _setting(metadata, environ, "photon_energy_eV")
    distance, distance_source = _setting(metadata, environ, "detector_distance_m")
    sources = {"photon_energy_eV": energy_source, "detector_distance_m": distance_source}
    object_pixel = _from_metadata(metadata, "object_pixel_size_m")
    detector_pixel = None
    if object_pixel is not None:
        sources["object_pixel_size_m"] = "metadata"
    else:
        detector_pixel, sources["detector_pixel_size_m"] = _setting(metadata, environ, "detector_pixel_size_m")
        object_pixel = wavelength_m(energy) * distance / (pattern_size * detector_pixel)
        sources["object_pixel_size_m"] = "derived"
    return Geometry(energy, distance, object_pixel, detector_pixel, sources)
