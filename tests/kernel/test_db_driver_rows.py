"""kernel.db.driver_rows: hot statements compiled once and run on the driver's cursor, writing and
reading what SQLAlchemy's execute writes and reads, on both engines."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, bindparam, event, select
from sqlalchemy.dialects import postgresql, sqlite

from kernel import db


@pytest.fixture(params=["postgres", "sqlite"])
def any_fresh_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_fresh_url" if request.param == "postgres" else "sqlite_fresh_url"))


def test_driver_rows_writes_and_reads_what_execute_does(any_fresh_url: str) -> None:
    from ledger.models import UTCDateTime

    metadata = MetaData()
    table = Table("driver_rows_test", metadata, Column("id", Integer, primary_key=True),
                  Column("kind", String(20)), Column("at", UTCDateTime()), Column("plain_at", DateTime(timezone=True)),
                  Column("doc", JSON), Column("big", Integer))
    engine = db.make_engine(any_fresh_url)
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[engine.dialect.name]
    names = ("kind", "at", "plain_at", "doc", "big")
    statement = (insert(table).values({name: bindparam(name, type_=table.c[name].type) for name in names})
                 .on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id))
    at = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    rows: list[dict[str, Any]] = [
        {"kind": "a", "at": at, "plain_at": at, "doc": {"x": [1, "é"], "y": None}, "big": 2**31 - 1},
        {"kind": None, "at": None, "plain_at": None, "doc": None, "big": None},
        {"kind": "b", "at": at.astimezone(timezone.utc), "plain_at": at, "doc": [], "big": 0},
    ]
    try:
        metadata.create_all(engine)
        with engine.begin() as connection:
            for row in rows:
                by_driver = db.driver_rows(connection, statement, row)
                by_execute = connection.execute(statement, row).all()
                assert len(by_driver) == len(by_execute) == 1 and by_driver[0][0] + 1 == by_execute[0][0]
            # A conflict returns no row, as execute's.
            conflict = statement.values(id=bindparam("id"))
            assert db.driver_rows(connection, conflict, {**rows[0], "id": 1}) == []
            assert connection.execute(conflict, {**rows[0], "id": 1}).all() == []
        with engine.connect() as connection:
            stored = connection.execute(select(table).order_by(table.c.id)).all()
        # Each pair (driver, execute) wrote the same values, read back through SQLAlchemy's types.
        for first, second in zip(stored[0::2], stored[1::2]):
            assert first[1:] == second[1:]
        assert stored[0].at == at and stored[0].doc == {"x": [1, "é"], "y": None}

        # A read with a literal of its own (a default) and a named parameter; and what watches the
        # connection's statements sees it.
        query = select(table.c.id, table.c.kind).where(table.c.kind == "a", table.c.big >= bindparam("least"))
        seen: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
        with engine.connect() as connection:
            for least in (0, 2**31 - 1, -5):
                assert db.driver_rows(connection, query, {"least": least}) == \
                    [tuple(row) for row in connection.execute(query, {"least": least}).all()]
        assert len(seen) == 6
    finally:
        engine.dispose()
