"""The study's two JSON reports, ``reconstruction_manifest.json`` and ``skip_summary.json``.

Their fields are those of the old study script (users' scripts read them); this module only builds the
documents from plain facts, so the Dagster assets and the ``fly64`` command produce identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fly64_assets.core.contract import ContractError, read_metadata
from fly64_assets.core.design import ALL_DATASETS, MIN_ACCEPTANCE, PHASE_D_VIEWS, SPLITS, VIEWS, Dataset, spacing_threshold
from fly64_assets.core.provenance import provenance

SELECTION_FACTS = ("selection_strategy", "acceptance_rate", "spacing_threshold", "n_accepted", "n_rejected")
"""Phase D ``_metadata`` keys that every execution result carries (None for the baseline view)."""

RECONSTRUCTED = "succeeded"
SKIPPED = "skipped"
FAILED = "failed"
PLANNED = "planned"
NOT_RUN = "not_run"
"""Present input, selected, but no reconstruction recorded (never materialized, or a failed run's upstream)."""

LOG_NAME = "ptychi.log"
RECONSTRUCTION_RECORD = "reconstruction.json"
QUALITY_RECORD = "quality.json"
"""Each reconstructed dataset's folder holds these records (small JSON documents: paths, facts, metrics);
the manifest and the report are built from them. A skipped dataset has no folder."""


def read_record(folder: Path, name: str) -> dict | None:
    """The record ``name`` in a dataset's folder, or None when it was never written."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def missing_reason(dataset: Dataset, path: Path) -> str:
    """Why a dataset has no input: a thinned view that Phase D did not write, or a missing Phase C file."""
    if dataset.is_phase_d:
        return (
            f"{dataset.view} view not written by Phase D ({path} absent): rejected by the spacing guard "
            f"(keeps positions >= {spacing_threshold(dataset.view):g} px apart; a view keeping under "
            f"{MIN_ACCEPTANCE:.0%} of the positions is not written)"
        )
    return f"Phase C file missing: {path} absent"


def selection_facts(input_path: Path) -> dict:
    """The Phase D selection facts from a file's ``_metadata`` (all None when absent or unreadable)."""
    try:
        metadata = read_metadata(input_path)
    except ContractError:
        metadata = {}
    return {key: metadata.get(key) for key in SELECTION_FACTS}


@dataclass
class StudyPlan:
    """Which datasets were asked for and which of them have no input file."""

    selected: list[Dataset]
    missing: dict[Dataset, str] = field(default_factory=dict)
    filters: dict[str, list] = field(default_factory=dict)

    @property
    def runnable(self) -> list[Dataset]:
        return [dataset for dataset in self.selected if dataset not in self.missing]


def plan_study(selected: list[Dataset], input_path_of, filters: dict[str, list] | None = None) -> StudyPlan:
    """Look up each selected dataset's input file; ``input_path_of(dataset)`` gives its path."""
    missing = {dataset: missing_reason(dataset, input_path_of(dataset)) for dataset in selected if not input_path_of(dataset).exists()}
    return StudyPlan(selected=list(selected), missing=missing, filters=filters or {})


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _execution_result(dataset: Dataset, outcome: dict | None, input_path: Path, artifact_root: Path, dry_run: bool) -> dict:
    if outcome is None:
        status = PLANNED if dry_run else NOT_RUN
        outcome = {}
    else:
        status = outcome["status"]
    returncode = {RECONSTRUCTED: 0, FAILED: 1}.get(status)
    return {
        **dataset.as_record(),
        "status": status,
        "returncode": returncode,
        "log_path": str(dataset.artifact_dir(artifact_root) / LOG_NAME),
        "input_path": str(input_path),
        **selection_facts(input_path),
        **{key: outcome.get(key) for key in ("reconstruction_path", "wall_time_s", "device", "n_patterns", "final_loss", "error")},
        "provenance": outcome.get("provenance"),
    }


def build_manifest(
    plan: StudyPlan,
    outcomes: dict[Dataset, dict],
    input_path_of,
    artifact_root: Path,
    dry_run: bool = False,
    run_id: str | None = None,
) -> dict:
    """``reconstruction_manifest.json``: the planned jobs, what each execution did (with what made it), and what
    was missing; ``provenance`` says what wrote the manifest itself (in the Dagster run ``run_id``).

    ``outcomes`` maps a dataset to its recorded result (``status`` plus facts such as ``wall_time_s``).
    """
    return {
        "timestamp": _timestamp(),
        "provenance": provenance(run_id=run_id),
        "dry_run": dry_run,
        "filters": plan.filters,
        "jobs": [dataset.as_record() for dataset in plan.selected],
        "total_jobs": len(ALL_DATASETS),
        "filtered_jobs": len(plan.selected),
        "execution_results": [
            _execution_result(dataset, outcomes.get(dataset), input_path_of(dataset), Path(artifact_root), dry_run)
            for dataset in plan.runnable
        ],
        "missing_jobs": [{**dataset.as_record(), "reason": reason} for dataset, reason in plan.missing.items()],
    }


def build_skip_summary(manifest: dict) -> dict:
    """``skip_summary.json`` from a manifest: every dataset not reconstructed by design, with its reason.

    Jobs outside the filters count as skipped (as in the old script), and so do selected jobs whose
    input is missing; ``missing_phase_d_count`` counts the missing Phase D files among the selected.
    """
    selected = {Dataset(**entry) for entry in manifest["jobs"]}
    described = ", ".join(f"{name}={values}" for name, values in manifest["filters"].items() if values)
    skipped = [{**dataset.as_record(), "reason": f"excluded by the filters {described}"} for dataset in ALL_DATASETS if dataset not in selected]
    skipped += manifest["missing_jobs"]
    return {
        "timestamp": _timestamp(),
        "skipped_count": len(skipped),
        "skipped_jobs": sorted(skipped, key=lambda entry: (entry["dose"], VIEWS.index(entry["view"]), SPLITS.index(entry["split"]))),
        "missing_phase_d_count": sum(1 for entry in manifest["missing_jobs"] if entry["view"] in PHASE_D_VIEWS),
    }
