"""Ctrl-C for a command that executes Dagster runs in its own process (``fly64 run``, ``study``, ``report``): it
stops the command, in order, and nothing else sees it. No Dagster here.

A terminal sends SIGINT to every process of its foreground group: the command, and also the helpers Dagster
starts to mirror a run's output (``tail`` and an orphan watch, which prints a ``KeyboardInterrupt`` traceback)
and the worker processes of a local dask cluster. So inside ``ctrl_c_stops_the_command()`` SIGINT is blocked in
the main thread, which starts Dagster's helpers: they inherit the block and never see the signal. (The dask
workers do not inherit it, multiprocessing starts them with none: they ignore SIGINT themselves, in their preload,
``lib/dask_compute.dask_setup``.) The command ends them all itself: Dagster its helpers when the run ends, the
dispatch its dask cluster. Another thread takes the signal, and Python runs the handler installed at that moment
in the main thread, as always: Python's (``KeyboardInterrupt``), or, while a run executes, Dagster's (the step
executing stops with ``DagsterExecutionInterruptedError`` and the run ends FAILURE; a press between two steps
stops the next one, a press after the last one is dropped). Whatever that handler did, Python wrote the signal's
number to its wakeup fd first, so a caller that checks ``ctrl_c_pressed()`` when a run returns always knows.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading
from collections.abc import Iterator

EXIT_INTERRUPTED = 130
"""What a shell reports for a command stopped by Ctrl-C (128 + SIGINT)."""

_wakeup: socket.socket | None = None
"""Inside ``ctrl_c_stops_the_command()``: where Python writes the number of each signal it takes (its wakeup fd)."""
_pressed = False
_lock = threading.Lock()


class Stopped(Exception):
    """Ctrl-C stopped the command: ``where`` (e.g. "during the reconstructions") and what of its work is whole."""

    def __init__(self, where: str, whole: str) -> None:
        super().__init__(f"{where}: {whole}")
        self.where, self.whole = where, whole


def _read_wakeup_fd() -> None:
    """Under ``_lock``: the signals Python took since the last call; a SIGINT among them is a press."""
    global _pressed
    try:
        while signals := _wakeup.recv(64):  # one byte per signal, its number
            _pressed = _pressed or signal.SIGINT in signals
    except BlockingIOError:
        pass


def ctrl_c_pressed() -> bool:
    """Whether Ctrl-C was pressed inside ``ctrl_c_stops_the_command()`` so far."""
    with _lock:
        if _wakeup is not None:
            _read_wakeup_fd()
        return _pressed


@contextlib.contextmanager
def ctrl_c_stops_the_command() -> Iterator[None]:
    """Ctrl-C (SIGINT to the process group, or to this process alone) as described in the module's docstring. In
    the main thread only: elsewhere it changes nothing."""
    global _wakeup, _pressed
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    receiver, sender = socket.socketpair()
    receiver.setblocking(False)
    sender.setblocking(False)
    closing = threading.Event()

    def take_signals() -> None:
        """Takes SIGINT (the main thread does not), and wakes when Python has: waiting for the GIL then makes the
        main thread look at its pending signals soon, even in a long computation that never lets go of the GIL."""
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        while not closing.is_set():
            select.select([receiver], [], [])
            with _lock:
                _read_wakeup_fd()

    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background shell's SIG_IGN too
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    wakeup = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    _wakeup, _pressed = receiver, False
    taker = threading.Thread(target=take_signals, name="fly64-ctrl-c", daemon=True)
    taker.start()
    try:
        yield
    finally:
        closing.set()
        sender.send(b"\0")  # no signal's number: wakes the thread, which sees it is closing
        taker.join()
        signal.set_wakeup_fd(wakeup)
        _wakeup = None
        receiver.close()
        sender.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler)
