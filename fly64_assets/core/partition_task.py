"""One partition as one task: what a worker process runs, and what it sends back. No Dagster here.

``run_partition`` reconstructs and/or scores one partition (``core.partition``) and never raises for the
partition's own problems: a skip, a DATA-001 rejection, any failure (with its traceback) and the notes worth the
run log all come back as plain data in a ``PartitionOutcome``, which pickles across processes and machines
(exceptions with custom constructors do not). The one exception it lets out is ``Cancelled``, raised from the
epoch callback when the run that asked for the partition is gone or terminated: the reconstruction then stops
within one epoch and writes nothing (every output is written whole at the end, or not at all).

Each outcome also says where and when it ran (host, process, device, UTC start and end), so a run can show how
many reconstructions ran at once.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from fly64_assets.core.contract import Violation
from fly64_assets.core.design import Dataset
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.regularization import CandidateMap, in_turn
from fly64_assets.core.partition import (
    InputRejected,
    PartitionFailed,
    Reconstructed,
    Scored,
    Skipped,
    StudyFolders,
    partition_loader,
    reconstruct_partition,
    score_partition,
    utc_now,
    worker_identity,
)


class Cancelled(Exception):
    """The run that asked for this partition is gone or was terminated: stop, write nothing."""


@dataclass(frozen=True)
class PartitionRequest:
    """Everything a worker needs for one partition (no handle on the run: it may be on another machine)."""

    dataset: Dataset
    folders: StudyFolders
    options: ReconstructionOptions
    reconstruct: bool
    """Reconstruct (and save) the partition; False: only score its saved reconstruction."""
    score: bool
    convergence_every: int
    cpu_threads: int | None
    """Torch threads for a CPU reconstruction (None: torch's default)."""
    run_id: str | None = None
    """The Dagster run that asked for the partition (recorded in its provenance)."""

    @property
    def key(self) -> str:
        return self.dataset.partition_key


@dataclass(frozen=True)
class Rejection:
    """The partition's input breaks DATA-001."""

    input_path: str
    message: str
    violations: list[Violation]


@dataclass
class PartitionOutcome:
    key: str
    skipped: Skipped | None = None
    reconstructed: Reconstructed | None = None
    scored: Scored | None = None
    rejection: Rejection | None = None
    failure: str | None = None
    """Why the partition failed, in a line or a few (None: it did not)."""
    traceback: str | None = None
    """For an unexpected failure: where it happened (for the run's event log, not the terminal)."""
    notes: list[tuple[str, str]] = field(default_factory=list)
    """(level, message) pairs worth the run's log: a stale partial file removed, the regularization chosen."""
    placement: dict = field(default_factory=dict)
    """host, pid, batch_job (``worker_identity``), device, started_utc, ended_utc."""

    @property
    def failed(self) -> bool:
        return self.failure is not None


class _Notes:
    """A step log that keeps the lines for the outcome (the worker has no Dagster log to write to)."""

    def __init__(self, notes: list[tuple[str, str]]) -> None:
        self._notes = notes

    def info(self, msg: str) -> None:
        self._notes.append(("info", msg))

    def warning(self, msg: str) -> None:
        self._notes.append(("warning", msg))


def never() -> bool:
    """The ``should_stop`` of a partition nobody can terminate."""
    return False


@dataclass(frozen=True)
class StopAtEpoch:
    """An epoch callback that raises ``Cancelled`` when ``should_stop()`` says so; picklable when ``should_stop`` is
    (the candidates of a choice may run as tasks elsewhere and must stop too)."""

    key: str
    should_stop: Callable[[], bool]

    def __call__(self, epoch: int, loss: float) -> None:  # noqa: ARG002 - the epoch callback's signature
        if self.should_stop():
            raise Cancelled(f"{self.key}: its run is gone or was terminated (stopped after epoch {epoch})")


def run_partition(
    request: PartitionRequest,
    on_epoch: Callable[[int, float], None],
    should_stop: Callable[[], bool] = never,
    map_candidates: CandidateMap = in_turn,
) -> PartitionOutcome:
    """Reconstruct and/or score ``request``'s partition; ``on_epoch(epoch, loss)`` for each epoch of the final
    reconstruction. ``should_stop`` is asked every epoch (the choice's too, with ``auto``); when it says yes,
    ``Cancelled`` is raised. ``map_candidates`` says where the candidates of an ``auto`` choice run."""
    outcome = PartitionOutcome(request.key)
    outcome.placement = {
        **worker_identity(), "device": request.options.device, "started_utc": utc_now(), "ended_utc": None,
    }
    stop_at_epoch = StopAtEpoch(request.key, should_stop)

    def report_epoch(epoch: int, loss: float) -> None:
        stop_at_epoch(epoch, loss)
        on_epoch(epoch, loss)

    load = partition_loader()
    try:
        if request.reconstruct:
            done = reconstruct_partition(
                request.dataset, request.folders, request.options, convergence_every=request.convergence_every,
                cpu_threads=request.cpu_threads, on_epoch=report_epoch, step_log=_Notes(outcome.notes), load=load,
                on_choice_epoch=stop_at_epoch, map_candidates=map_candidates, run_id=request.run_id,
            )
            if isinstance(done, Skipped):
                outcome.skipped = done
            else:
                outcome.reconstructed = done
                outcome.placement["device"] = done.record["device"]
        if request.score and outcome.skipped is None:
            scored = score_partition(request.dataset, request.folders, load, request.run_id)
            outcome.skipped = scored if isinstance(scored, Skipped) else None
            outcome.scored = scored if isinstance(scored, Scored) else None
    except Cancelled:
        raise
    except InputRejected as error:
        outcome.rejection = Rejection(str(error.input_path), str(error.contract_error), list(error.violations))
        outcome.failure = str(error)
    except PartitionFailed as error:
        outcome.failure = str(error)
    except Exception as error:  # noqa: BLE001 - one partition's failure must not stop the others
        outcome.failure = f"{type(error).__name__}: {error}"
        outcome.traceback = traceback.format_exc()
    outcome.placement["ended_utc"] = utc_now()
    return outcome


def peak_concurrency(placements: list[dict]) -> int:
    """The most partitions that ran at the same moment, from their UTC start and end times."""
    moments = []
    for placement in placements:
        if placement.get("started_utc") and placement.get("ended_utc"):
            moments += [(placement["started_utc"], 1), (placement["ended_utc"], -1)]
    running = peak = 0
    for _, change in sorted(moments, key=lambda moment: (moment[0], moment[1])):  # an end before a start at a tie
        running += change
        peak = max(peak, running)
    return peak
