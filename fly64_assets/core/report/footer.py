"""The report's last section: what made its numbers. The software and devices of the reconstructions it shows,
the Dagster runs that made them, and what wrote the report itself (``core.provenance`` records, read back from
each dataset's ``reconstruction.json`` and ``quality.json``)."""

from __future__ import annotations

from collections import Counter

from fly64_assets.core.provenance import describe

PROVENANCE_TITLE = "Provenance"


def _counted(counts: Counter) -> list[str]:
    return [f"{value} ({count} job{'s' if count != 1 else ''})" for value, count in sorted(counts.items())]


def provenance_markdown(reconstructions: list[dict], scores: list[dict], report: dict) -> str:
    """Markdown lines: each distinct software set and device model among ``reconstructions`` (records that hold
    a ``provenance``; older ones are counted as unrecorded), the Dagster runs of the reconstructions and scores,
    and ``report``, the report's own provenance."""
    recorded = [record["provenance"] for record in reconstructions if record.get("provenance")]
    software = Counter(describe(made_by) for made_by in recorded)
    devices = Counter(f"{made_by['device']}: {made_by['device_model']}" for made_by in recorded)
    runs = sorted({made_by["dagster_run_id"] for made_by in recorded if made_by.get("dagster_run_id")})
    score_runs = sorted({record["provenance"]["dagster_run_id"] for record in scores
                         if (record.get("provenance") or {}).get("dagster_run_id")})
    lines = [f"- reconstructions made by: {entry}" for entry in _counted(software)]
    lines += [f"- reconstruction device: {entry}" for entry in _counted(devices)]
    if len(recorded) < len(reconstructions):
        lines.append(f"- {len(reconstructions) - len(recorded)} reconstruction(s) made before provenance was recorded")
    lines.append(f"- Dagster runs of the reconstructions: {', '.join(runs) or 'none recorded'}")
    lines.append(f"- Dagster runs of the scores: {', '.join(score_runs) or 'none recorded'}")
    lines.append(f"- this report: {describe(report)}, on {report['machine']['host']}, Dagster run "
                 f"{report.get('dagster_run_id') or 'none'}")
    return "\n".join(lines) + "\n"
