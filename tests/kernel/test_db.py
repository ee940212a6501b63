"""Engines from `kernel.db.make_engine`: on PostgreSQL, rows given together to one INSERT reach the
server as multi-row statements, so statement triggers (the running totals) fire once per batch."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event, insert, select, text
from sqlalchemy.orm import Session

from ledger.models import AuditEvent


def test_many_rows_go_in_one_insert_on_postgresql(pg_engine: Engine, pg_session: Session) -> None:
    seen: list[tuple[str, bool]] = []

    def count(_conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any, executemany: bool) -> None:
        if statement.startswith("INSERT INTO audit_events"):
            seen.append((statement, executemany))

    event.listen(pg_engine, "before_cursor_execute", count)
    try:
        pg_session.execute(insert(AuditEvent), [
            dict(actor_type="system", actor="test", action="test.row", entity_type="test", entity_id=n,
                 before=None, after=None) for n in range(2_500)])
    finally:
        event.remove(pg_engine, "before_cursor_execute", count)
    assert len(seen) == 3  # pages of 1,000 rows
    assert all(statement.count("), (") >= 499 for statement, _executemany in seen)  # rows in one VALUES list
    assert pg_session.scalar(select(text("count(*)")).select_from(AuditEvent).where(
        AuditEvent.action == "test.row")) == 2_500
