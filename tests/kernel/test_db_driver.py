"""kernel.db's hot statements on the driver's cursor — `driver_rows` (compiled once, writing and
reading) and `first_row` (the hottest reads) — give what SQLAlchemy's execute gives, on both
engines, each test on a table of its own in a database of its own."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import (JSON, Column, DateTime, Engine, Integer, MetaData, String, Table, bindparam, event,
                        select)
from sqlalchemy.dialects import postgresql, sqlite

from kernel import db
from ledger.models import UTCDateTime
from tests.pgserver import PostgresServer

AT = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database of its own (no migrations: each test makes its table)."""
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database(f"driver_{uuid.uuid4().hex[:16]}")
    else:
        url = f"sqlite:///{tmp_path / 'driver.sqlite3'}"
    made = db.make_engine(url)
    yield made
    made.dispose()


def _table(engine: Engine, *columns: Column[Any]) -> Table:
    table = Table("driver_test", MetaData(), Column("id", Integer, primary_key=True), *columns)
    table.metadata.create_all(engine)
    return table


def test_driver_rows_writes_and_reads_what_execute_does(engine: Engine) -> None:
    table = _table(engine, Column("kind", String(20)), Column("at", UTCDateTime()),
                   Column("plain_at", DateTime(timezone=True)), Column("doc", JSON), Column("big", Integer))
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[engine.dialect.name]
    names = ("kind", "at", "plain_at", "doc", "big")
    statement = (insert(table).values({name: bindparam(name, type_=table.c[name].type) for name in names})
                 .on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id))
    rows: list[dict[str, Any]] = [
        {"kind": "a", "at": AT, "plain_at": AT, "doc": {"x": [1, "é"], "y": None}, "big": 2**31 - 1},
        {"kind": None, "at": None, "plain_at": None, "doc": None, "big": None},
        {"kind": "b", "at": AT.astimezone(timezone.utc), "plain_at": AT, "doc": [], "big": 0},
    ]
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
    assert stored[0].at == AT and stored[0].doc == {"x": [1, "é"], "y": None}

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


def test_first_row_gives_what_execute_gives(engine: Engine) -> None:
    table = _table(engine, Column("at", DateTime(timezone=True)), Column("note", String(20)))
    at = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"id": 1, "at": at, "note": "a"}, {"id": 2, "at": at, "note": None}])
    query = select(table.c.id, table.c.note).where(
        table.c.at >= bindparam("since", type_=table.c.at.type),
        table.c.note.is_not_distinct_from(bindparam("note", type_=table.c.note.type))).order_by(table.c.id)
    with engine.connect() as connection:
        for since, note in [(at - timedelta(hours=1), "a"), (at - timedelta(hours=1), None),
                            (at + timedelta(seconds=1), "a"), (at.astimezone(timezone(timedelta(hours=2))), None)]:
            params = {"since": since, "note": note}
            expected = connection.execute(query, params).first()
            assert db.first_row(connection, query, params) == (tuple(expected) if expected else None)
        assert db.first_row(connection, query, {"since": at, "note": "a"}) == (1, "a")
        assert db.first_row(connection, query, {"since": at, "note": "z"}) is None
