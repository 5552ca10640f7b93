"""The study's two JSON reports, ``reconstruction_manifest.json`` and ``skip_summary.json``.

Their fields are those of the old study script (users' scripts read them); this module only builds the
documents from plain facts, so the Dagster assets and the ``fly64`` command produce identical files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fly64_assets.contract import ContractError, read_metadata
from fly64_assets.study import ALL_JOBS, MIN_ACCEPTANCE, PHASE_D_VIEWS, SPLITS, VIEWS, Job, spacing_threshold

SELECTION_FACTS = ("selection_strategy", "acceptance_rate", "spacing_threshold", "n_accepted", "n_rejected")
"""Phase D ``_metadata`` keys that every execution result carries (None for the baseline view)."""

RECONSTRUCTED = "succeeded"
SKIPPED = "skipped"
FAILED = "failed"
PLANNED = "planned"
NOT_RUN = "not_run"
"""Present input, selected, but no reconstruction recorded (never materialized, or a failed run's upstream)."""

LOG_NAME = "ptychi.log"


def missing_reason(job: Job, path: Path) -> str:
    """Why a job has no input: a thinned view that Phase D did not write, or a missing Phase C file."""
    if job.is_phase_d:
        return (
            f"{job.view} view not written by Phase D ({path} absent): rejected by the spacing guard "
            f"(keeps positions >= {spacing_threshold(job.view):g} px apart; a view keeping under "
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
    """Which jobs were asked for and which of them have no input file."""

    selected: list[Job]
    missing: dict[Job, str] = field(default_factory=dict)
    filters: dict[str, list] = field(default_factory=dict)

    @property
    def runnable(self) -> list[Job]:
        return [job for job in self.selected if job not in self.missing]


def plan_study(selected: list[Job], input_path_of, filters: dict[str, list] | None = None) -> StudyPlan:
    """Look up each selected job's input file; ``input_path_of(job)`` gives its path."""
    missing = {job: missing_reason(job, input_path_of(job)) for job in selected if not input_path_of(job).exists()}
    return StudyPlan(selected=list(selected), missing=missing, filters=filters or {})


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _execution_result(job: Job, outcome: dict | None, input_path: Path, artifact_root: Path, dry_run: bool) -> dict:
    if outcome is None:
        status = PLANNED if dry_run else NOT_RUN
        outcome = {}
    else:
        status = outcome["status"]
    returncode = {RECONSTRUCTED: 0, FAILED: 1}.get(status)
    return {
        **job.as_record(),
        "status": status,
        "returncode": returncode,
        "log_path": str(job.artifact_dir(artifact_root) / LOG_NAME),
        "input_path": str(input_path),
        **selection_facts(input_path),
        **{key: outcome.get(key) for key in ("reconstruction_path", "wall_time_s", "device", "n_patterns", "final_loss", "error")},
    }


def build_manifest(
    plan: StudyPlan,
    outcomes: dict[Job, dict],
    input_path_of,
    artifact_root: Path,
    dry_run: bool = False,
) -> dict:
    """``reconstruction_manifest.json``: the planned jobs, what each execution did, and what was missing.

    ``outcomes`` maps a job to its recorded result (``status`` plus facts such as ``wall_time_s``).
    """
    return {
        "timestamp": _timestamp(),
        "dry_run": dry_run,
        "filters": plan.filters,
        "jobs": [job.as_record() for job in plan.selected],
        "total_jobs": len(ALL_JOBS),
        "filtered_jobs": len(plan.selected),
        "execution_results": [
            _execution_result(job, outcomes.get(job), input_path_of(job), Path(artifact_root), dry_run)
            for job in plan.runnable
        ],
        "missing_jobs": [{**job.as_record(), "reason": reason} for job, reason in plan.missing.items()],
    }


def build_skip_summary(manifest: dict) -> dict:
    """``skip_summary.json`` from a manifest: every job not reconstructed by design, with its reason.

    Jobs outside the filters count as skipped (as in the old script), and so do selected jobs whose
    input is missing; ``missing_phase_d_count`` counts the missing Phase D files among the selected.
    """
    selected = {Job(**entry) for entry in manifest["jobs"]}
    described = ", ".join(f"{name}={values}" for name, values in manifest["filters"].items() if values)
    skipped = [{**job.as_record(), "reason": f"excluded by the filters {described}"} for job in ALL_JOBS if job not in selected]
    skipped += manifest["missing_jobs"]
    return {
        "timestamp": _timestamp(),
        "skipped_count": len(skipped),
        "skipped_jobs": sorted(skipped, key=lambda entry: (entry["dose"], VIEWS.index(entry["view"]), SPLITS.index(entry["split"]))),
        "missing_phase_d_count": sum(1 for entry in manifest["missing_jobs"] if entry["view"] in PHASE_D_VIEWS),
    }
