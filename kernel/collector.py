"""Python's cyclic garbage collector held off during a batch job.

A job that builds hundreds of thousands of objects it keeps to its end (a bank file's entries, the
company's open invoices, the rows to write) sets off full collections that scan every one of them,
again each time the heap has grown by a quarter: 3.9 s of a 50,000-credit import's CPU
(bench/RESULTS.md, 2026-12-05 bank8). Their memory is freed by reference counting as usual; only
cycles wait for the collector, which runs again once the last job has finished.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_jobs = 0
_was_enabled = False


@contextmanager
def collection_paused() -> Iterator[None]:
    """No automatic collection while any such block runs, in any thread; the collector is left as
    it was found (off stays off)."""
    global _jobs, _was_enabled
    with _lock:
        if _jobs == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _jobs += 1
    try:
        yield
    finally:
        with _lock:
            _jobs -= 1
            if _jobs == 0 and _was_enabled:
                gc.enable()
