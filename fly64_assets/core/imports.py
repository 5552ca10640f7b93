"""Libraries imported once per process and set aside from the garbage collector (no Dagster here)."""

from __future__ import annotations

import functools
import gc
import importlib


@functools.cache
def import_for_good(*modules: str) -> None:
    """Import ``modules`` (once per process) with the cyclic garbage collector paused, then move every object it
    tracks into its permanent generation (``gc.freeze``).

    Modules live as long as their process, and each of Python's full collections walks every object the collector
    tracks: with Dagster, torch and pty-chi (which brings torchvision, scikit-learn, sympy and pandas) some 700,000,
    about 0.2 s a collection on this 2-core CPU. A one-partition ``fly64 run`` spent 1.9 s in them and 1.4 s more in
    those at exit. Frozen, they are skipped; the few objects that were garbage at that moment stay. (The ``fly64``
    command and the code location freeze what they have loaded the same way.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
