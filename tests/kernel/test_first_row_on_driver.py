"""kernel.db.first_row on SQLite runs on the driver's cursor as on PostgreSQL: no SQLAlchemy
execution (no BEGIN, no result set-up), what watches the connection's statements still sees it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, event, select

from kernel import db
from ledger.models import Contact


def test_first_row_on_sqlite_sends_only_its_statement(sqlite_fresh_url: str) -> None:
    engine = db.make_engine(sqlite_fresh_url)
    seen: list[str] = []
    began: list[Any] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "begin", lambda conn: began.append(conn))
    query = select(Contact.__table__.c.id).where(Contact.__table__.c.id == bindparam("id"))
    try:
        with engine.connect() as connection:
            assert db.first_row(connection, query, {"id": 1}) is None
            assert not connection.in_transaction()  # execute() would have begun one
        assert len(seen) == 1 and seen[0].startswith("SELECT contacts.id") and began == []
    finally:
        engine.dispose()
