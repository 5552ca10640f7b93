"""Progress a person can watch while ``fly64 run`` / ``make study`` works: partitions done of the total, the
current partition's epoch and loss, elapsed and remaining time.

On a terminal it is a ``rich`` progress display (rich ships with Dagster: no extra dependency); when the output
is not a terminal (a CI log, a file) it is plain lines, one per finished partition. The reconstruction step
reports to ``current_progress()``: what ``reporting_to`` set around a run executed in this process (``fly64
run``), else ``StudyProgress``, which reports nothing (a run launched from the UI, the daemon or a test has its
run log and metadata instead). A context variable rather than a Dagster resource, so that every other way of
running the assets (``materialize``, ``materialize_to_memory``, the CLI) needs nothing more. No Dagster here.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TextIO


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


class StudyProgress:
    """The reports a study makes as it goes; this base reports nothing."""

    def study_started(self, total_partitions: int) -> None:
        """``total_partitions`` will be reported finished (skips included)."""

    def partition_started(self, key: str, epochs: int) -> None:
        """A reconstruction of ``epochs`` epochs begins."""

    def epoch(self, key: str, epoch: int, loss: float) -> None:
        """The reconstruction of ``key`` finished ``epoch`` with ``loss``."""

    def partition_finished(self, key: str, outcome: str) -> None:
        """``key`` is done: ``outcome`` says how (reconstructed, skipped and why, failed)."""

    def message(self, text: str) -> None:
        """A line for the person watching (a run's summary, an error)."""

    def close(self) -> None:
        """The study is over: leave the final state on screen."""


class PlainProgress(StudyProgress):
    """Plain lines for a log: one per finished partition, with the counts and the times (the time left from
    the mean time per finished partition)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.total, self.done, self.started = 0, 0, time.monotonic()
        self.last_loss: dict[str, tuple[int, float]] = {}

    def study_started(self, total_partitions: int) -> None:
        self.total, self.done, self.started = total_partitions, 0, time.monotonic()

    def epoch(self, key: str, epoch: int, loss: float) -> None:
        self.last_loss[key] = (epoch, loss)

    def partition_finished(self, key: str, outcome: str) -> None:
        self.done += 1
        epoch_loss = self.last_loss.pop(key, None)
        detail = f", {epoch_loss[0]} epochs, final loss {epoch_loss[1]:.4g}" if epoch_loss else ""
        elapsed = time.monotonic() - self.started
        left = f", about {_clock(elapsed / self.done * (self.total - self.done))} left" if self.done < self.total else ""
        self.message(f"[{self.done}/{self.total}] {key}: {outcome}{detail} (elapsed {_clock(elapsed)}{left})")

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class TerminalProgress(StudyProgress):
    """Two ``rich`` bars: the study's partitions, and the current partition's epochs with its loss."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(file=stream)
        self.display = Progress(
            TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=self.console,
        )
        self.study = self.display.add_task("partitions", total=None, loss="")
        self.current, self.current_epochs = None, 1
        self.done = 0
        self.display.start()

    def study_started(self, total_partitions: int) -> None:
        self.done = 0
        self.display.reset(self.study, total=total_partitions, completed=0)

    def partition_started(self, key: str, epochs: int) -> None:
        if self.current is not None:
            self.display.remove_task(self.current)
        self.current, self.current_epochs = self.display.add_task(key, total=epochs, loss=""), max(1, epochs)

    def epoch(self, key: str, epoch: int, loss: float) -> None:
        if self.current is not None:
            self.display.update(self.current, completed=epoch, loss=f"loss {loss:.4g}")
            self.display.update(self.study, completed=self.done + epoch / self.current_epochs)  # a smoother time-left estimate

    def partition_finished(self, key: str, outcome: str) -> None:
        self.done += 1
        self.display.update(self.study, completed=self.done)
        self.message(f"{key}: {outcome}")

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)  # our text as it is: "[1/2]" is not markup

    def close(self) -> None:
        self.display.stop()


def progress_for(stream: TextIO = sys.stdout) -> StudyProgress:
    """Bars on a terminal, plain lines otherwise."""
    return TerminalProgress(stream) if stream.isatty() else PlainProgress(stream)


_CURRENT: ContextVar[StudyProgress] = ContextVar("fly64_study_progress", default=StudyProgress())


def current_progress() -> StudyProgress:
    """Where a step executing in this process reports (silent unless ``reporting_to`` set one)."""
    return _CURRENT.get()


@contextlib.contextmanager
def reporting_to(progress: StudyProgress) -> Iterator[None]:
    """Make ``progress`` receive the reports of the steps executed in this process meanwhile."""
    token = _CURRENT.set(progress)
    try:
        yield
    finally:
        _CURRENT.reset(token)
