"""Asset values stored as JSON files: readable by people and never unpickled."""

from __future__ import annotations

import json
from typing import Any

from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext, UPathIOManager
from pydantic import Field

from fly64_assets.core.artifacts import write_json


class _JsonFilesystemIOManager(UPathIOManager):
    extension = ".json"

    def dump_to_path(self, context: OutputContext, obj: Any, path) -> None:
        write_json(path, obj)

    def load_from_path(self, context: InputContext, path) -> Any:
        with path.open("r") as handle:
            return json.load(handle)


class JsonIOManager(ConfigurableIOManagerFactory):
    """Stores each asset (partition) value as ``<base_dir>/<asset>/<partition>.json``, written atomically.

    The study's values are small records (paths, statuses, metrics); the arrays live in the NPZ files
    the assets write themselves. On a cluster, put ``base_dir`` on the shared filesystem.
    """

    base_dir: str = Field(description="Folder for the JSON asset values (shared by every process of a run).")

    def create_io_manager(self, context) -> _JsonFilesystemIOManager:
        from upath import UPath

        return _JsonFilesystemIOManager(base_path=UPath(self.base_dir))
