"""Fixed-window failure counters kept in the database, so every server process shares them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from encours.clock import clock
from ledger.models import Throttle


def is_blocked(session: Session, key: str, limit: int, window_seconds: int) -> bool:
    row = session.get(Throttle, key)
    if row is None:
        return False
    if clock.now() - row.window_start >= timedelta(seconds=window_seconds):
        return False
    return row.count >= limit


def record_failure(session: Session, key: str, window_seconds: int) -> int:
    """Count one failure; returns the count in the current window."""
    now = clock.now()
    row = session.get(Throttle, key, with_for_update=True)
    if row is None:
        row = Throttle(key=key, window_start=now, count=0)
        session.add(row)
    elif now - row.window_start >= timedelta(seconds=window_seconds):
        row.window_start = now
        row.count = 0
    row.count += 1
    session.flush()
    return row.count
