"""The reconstruction's options: one validated, documented model from which the Dagster run config
(``defs/reconstruction/config.py``), the ``fly64`` command's flags and the LSQML call take their defaults.

Like pty-chi's ``api.options``: every field typed and described, choices as enums.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class NoiseModel(str, Enum):
    """LSQML's likelihood (member names equal their values: Dagster's run config shows the names)."""

    gaussian = "gaussian"
    poisson = "poisson"


DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class ReconstructionOptions(BaseModel):
    """pty-chi LSQML options of one reconstruction; the defaults are the study's (spec: 100 epochs, batch 96,
    Gaussian noise model, positions fixed, object and probe optimised)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    epochs: int = Field(default=100, ge=1, description="LSQML epochs (full passes over the patterns).")
    batch_size: int = Field(
        default=96, ge=1,
        description="Patterns per LSQML mini-batch (evened out: 98 patterns at 96 run as 49 + 49). Larger is "
        "faster per epoch on a GPU but changes convergence.",
    )
    noise_model: NoiseModel = Field(default=NoiseModel.gaussian, description="LSQML noise model.")
    device: str = Field(
        default="auto", pattern=DEVICE_PATTERN,
        description="auto (a CUDA GPU when present, else the CPU), cpu, cuda or cuda:<index>; asking for cuda "
        "on a machine without a GPU fails the reconstruction instead of falling back.",
    )
    optimize_object: bool = Field(default=True, description="Update the object (started from ones).")
    optimize_probe: bool = Field(default=True, description="Update the probe (started from the file's probeGuess).")
    optimize_positions: bool = Field(default=False, description="Refine the scan positions (the synthetic ones are exact).")
    random_seed: int | None = Field(
        default=0, description="Seed of pty-chi's random mini-batching, so a rerun reproduces the result (none: unseeded)."
    )

    def as_dict(self) -> dict:
        """Plain JSON values (the enum as its text), as recorded beside each reconstruction."""
        return self.model_dump(mode="json")
