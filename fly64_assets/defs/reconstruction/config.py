"""The reconstruction's run config: ``ReconstructionOptions``'s fields, documented in the launchpad.

Three deployment-wide defaults can be changed without run config (e.g. a quick-look instance, or CI):
``FLY64_EPOCHS``, ``FLY64_DEVICE`` and ``FLY64_REGULARIZATION``, read when the code location loads.
"""

import os
from typing import Annotated

from dagster import Config
from pydantic import Field, create_model

from fly64_assets.core.options import ReconstructionOptions, Regularization

DEPLOYMENT_DEFAULTS = {
    "epochs": ("FLY64_EPOCHS", int),
    "device": ("FLY64_DEVICE", str),
    "regularization": ("FLY64_REGULARIZATION", Regularization),
}


def _config_fields() -> dict:
    """Each option as a Config field with the option's type, bounds and description; the default taken from
    the deployment's environment where it sets one (checked again by ``options()``)."""
    fields = {}
    for name, info in ReconstructionOptions.model_fields.items():
        default = info.default
        if name in DEPLOYMENT_DEFAULTS:
            variable, parse = DEPLOYMENT_DEFAULTS[name]
            default = parse(os.environ.get(variable, default))
        annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        fields[name] = (annotation, Field(default=default, description=info.description))
    return fields


_ReconstructionConfigBase = create_model("_ReconstructionConfigBase", __base__=Config, **_config_fields())


class ReconstructionConfig(_ReconstructionConfigBase):
    """pty-chi LSQML options for every partition of this run (defaults: the study's)."""

    log_every: int = Field(default=10, ge=1, description="Write the loss to the run log every this many epochs.")
    convergence_every: int = Field(
        default=10,
        ge=0,
        description="Score the object against the truth (objectGuess) every this many epochs and after the last, with "
        "the final score's registration, into the reconstruction record's convergence curve (the report draws it). "
        "0 switches it off (real data, whose objectGuess is no truth).",
    )

    share_cores: bool = Field(
        default=True,
        description="A CPU reconstruction uses the machine's cores divided by the gpu pool's limit, so that the "
        "runs the pool lets reconstruct at once do not oversubscribe the cores. False: every core (a run that "
        "is alone on its machine, as the fly64 command's single run is).",
    )

    cpu_threads: int | None = Field(
        default=None, ge=1,
        description="Torch threads for a CPU reconstruction, overriding share_cores and a local cluster's share: "
        "the threads a record says its reconstruction used, so that a repeat adds its floating-point sums in the "
        "same order (fly64 repeat sets it).",
    )

    def options(self) -> ReconstructionOptions:
        return ReconstructionOptions(**self.model_dump(exclude={"log_every", "convergence_every", "share_cores", "cpu_threads"}))
