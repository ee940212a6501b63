"""kernel.db.first_row: the hottest reads on PostgreSQL through the driver's cursor, giving what
SQLAlchemy's execute gives, on both engines."""

from __future__ import annotations

import pytest

from kernel import db


@pytest.fixture(params=["postgres", "sqlite"])
def any_fresh_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_fresh_url" if request.param == "postgres" else "sqlite_fresh_url"))


def test_first_row_gives_what_execute_gives(any_fresh_url: str) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, select

    metadata = MetaData()
    table = Table("first_row_test", metadata, Column("id", Integer, primary_key=True),
                  Column("at", DateTime(timezone=True)), Column("note", String(20)))
    engine = db.make_engine(any_fresh_url)
    at = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    try:
        metadata.create_all(engine)
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
    finally:
        engine.dispose()
