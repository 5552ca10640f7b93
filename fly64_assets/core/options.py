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


class Regularization(str, Enum):
    """Total-variation (TV) regularization of the object (pty-chi ``object_options.total_variation``, a Chambolle
    TV step of weight w on the object after every epoch, or after each of the last ``tv_last_epochs``). ``auto``
    chooses the weight per dataset without the truth (``core/regularization.py``: held-out patterns) and applies it
    in the last 10 % of the epochs; ``tv_<w>`` fixes it (``tv_0_03`` is w = 0.03).
    A fixed weight is a set of members, not a float, so that the Dagster launchpad and the ``fly64`` flags
    both offer it as a choice; the grid is the one measured in docs/SCIENCE.md."""

    off = "off"
    auto = "auto"
    tv_0_003 = "tv_0_003"
    tv_0_01 = "tv_0_01"
    tv_0_03 = "tv_0_03"
    tv_0_1 = "tv_0_1"
    tv_0_3 = "tv_0_3"

    @property
    def tv_weight(self) -> float | None:
        """The fixed TV weight (0 for ``off``), or None for ``auto`` (chosen per dataset)."""
        if self is Regularization.auto:
            return None
        if self is Regularization.off:
            return 0.0
        return float(self.value.removeprefix("tv_").replace("_", "."))

    @classmethod
    def for_weight(cls, weight: float) -> Regularization:
        """The member of a fixed weight (0: ``off``); ValueError for a weight outside the grid."""
        for member in cls:
            if member is not cls.auto and member.tv_weight == weight:
                return member
        raise ValueError(f"no Regularization member for TV weight {weight}")


DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class ReconstructionOptions(BaseModel):
    """pty-chi LSQML options of one reconstruction; the defaults are the study's (spec: 100 epochs, batch 96,
    Gaussian noise model, positions fixed, object and probe optimised), plus the TV weight chosen per dataset
    (``regularization: auto``; over the 72 datasets measured never worse than none by more than 2.9 %, docs/SCIENCE.md)."""

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
    regularization: Regularization = Field(
        default=Regularization.auto,
        description="Total-variation regularization of the object: auto (the default: the weight chosen per "
        "dataset without the truth, by predicting held-out patterns; about 1.7x one reconstruction's time where a "
        "choice can be made, see docs/SCIENCE.md); off (the spec's plain LSQML); or a fixed weight tv_0_003 ... "
        "tv_0_3 (tv_0_1 is weight 0.1).",
    )
    tv_last_epochs: int | None = Field(
        default=None, ge=1,
        description="A fixed TV weight acts in the last N epochs only, after unregularized ones (none: every epoch). "
        "regularization auto sets it itself: its final reconstruction regularizes in the last 10 % of the epochs, "
        "the TV phase its candidates were scored with (docs/SCIENCE.md).",
    )
    holdout_percent: int = Field(
        default=10, ge=1, le=50,
        description="regularization auto: percentage of the patterns held out (seeded by random_seed) to score "
        "each candidate weight; the final reconstruction uses every pattern.",
    )

    def as_dict(self) -> dict:
        """Plain JSON values (the enum as its text), as recorded beside each reconstruction."""
        return self.model_dump(mode="json")
