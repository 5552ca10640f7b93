"""Run config of the manifest: which datasets the study was asked for (the old script's filters)."""

from dagster import Config
from pydantic import Field


class StudyFilter(Config):
    """Restrict the manifest to some datasets (empty: all); those outside count as skipped, as in the old script."""

    dose: list[int] = Field(default=[], description="Doses to include, e.g. [1000].")
    view: list[str] = Field(default=[], description="Views to include: baseline, dense, sparse.")
    split: list[str] = Field(default=[], description="Splits to include: train, test.")

    def as_dict(self) -> dict[str, list]:
        return {"dose": list(self.dose), "view": list(self.view), "split": list(self.split)}
