"""One writer at a time of a SQLite database file, within a process and between the processes of
`encours serve --workers N` (`one_writer`), for the writers that meet each other most: webhook
intake (payments.webhooks) and the portal's recorded link opens (portal.routes)."""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy.orm import Session, sessionmaker

# SQLite has one writer at a time. Writer threads that find the write lock taken wait in SQLite's
# busy handler, which polls with sleeps growing to 100 ms: under a burst of webhook deliveries most
# of the time went there (p99 of 5 s at 111 events/s with the CPU half idle). Queued on a lock of the
# process instead, the next writer starts as soon as the previous one commits. Between processes
# (`encours serve --workers 2`), the intake's writers also take an exclusive lock on a file beside
# the database, polled in steps of at most half a millisecond: with SQLite's busy handler alone,
# each one found the other process's writer in and slept 1 ms or more, for a write of 0.3 ms
# (bench/RESULTS.md, 2026-12-05 hooks8). The portal's recorded link opens take it too since
# session 12: meeting the webhooks' writers in SQLite's busy handler, 3.5-4 % of them waited over 10 ms
# and up to 110 ms (bench/RESULTS.md, 2026-12-06 probe12). Other writers (the back-office, the
# worker) still meet them in SQLite's busy handler. The wait is bounded like SQLite's busy timeout:
# a handler stuck on a provider's API must not hold every delivery forever.
_SQLITE_WRITER = threading.Lock()
WRITER_WAIT = 10.0  # seconds, kernel.db's busy_timeout
_WRITER_FILES: dict[str, int] = {}  # database file → its open writer-lock file, one per process
_POLL = (0.00005, 0.0001, 0.0002, 0.0005)


@contextmanager
def one_writer(session_factory: sessionmaker[Session]) -> Iterator[None]:
    """Inside: every other writer of the same SQLite database file that takes it, in this process
    and in the others, waits. It is taken before any connection is checked out (the other order
    deadlocked with the pool: bench/RESULTS.md, 2026-12-06 probe12). Nothing on other engines."""
    bind = session_factory.kw.get("bind")
    if bind is None or bind.dialect.name != "sqlite":
        yield
        return
    started = time.monotonic()
    if not _SQLITE_WRITER.acquire(timeout=WRITER_WAIT):
        raise TimeoutError(f"the database stayed busy with another writer for {WRITER_WAIT:.0f} s")
    try:
        lock_file = _writer_file(bind.engine.url.database)
        if lock_file is None:
            yield
            return
        _lock_file(lock_file, started)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    finally:
        _SQLITE_WRITER.release()


def _writer_file(database: str | None) -> int | None:
    """The writer-lock file of a SQLite database file, opened once (under `_SQLITE_WRITER`)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    found = _WRITER_FILES.get(database)
    if found is None:
        found = _WRITER_FILES[database] = os.open(f"{database}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
    return found


def _lock_file(lock_file: int, started: float) -> None:
    for step in itertools.count():
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() - started > WRITER_WAIT:
                raise TimeoutError(f"the database stayed busy with another process's writer for "
                                   f"{WRITER_WAIT:.0f} s") from None
            time.sleep(_POLL[min(step, len(_POLL) - 1)])
