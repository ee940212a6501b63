"""kernel.db's loop engines: on PostgreSQL the hottest short requests run their statements on the
event loop (psycopg's AsyncConnection), in autocommit for a read, in one transaction for a write;
none on SQLite."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Connection, text

from kernel import db
from kernel.db import LoopEngines, make_loop_engine, read_on_loop, write_on_loop
from tests.encours.test_concurrency import pg_fresh_url, sqlite_fresh_url  # noqa: F401 - fixtures


def test_sqlite_has_no_loop_engine(sqlite_fresh_url: str) -> None:  # noqa: F811
    assert make_loop_engine(sqlite_fresh_url) is None

    async def serve() -> None:
        engines = LoopEngines(sqlite_fresh_url)
        async with engines.serving():
            assert engines.current() is None

    asyncio.run(serve())


def _facts(connection: Connection, wanted: int) -> dict[str, Any]:
    driver = connection.connection.driver_connection
    return {"value": connection.execute(text("SELECT :n"), {"n": wanted}).scalar_one(),
            "autocommit": getattr(driver, "autocommit", None), "async_driver": type(driver).__name__}


@pytest.mark.postgres
def test_a_read_runs_on_the_loop_in_autocommit(pg_fresh_url: str) -> None:  # noqa: F811
    async def go() -> dict[str, Any]:
        engine = make_loop_engine(pg_fresh_url)
        assert engine is not None
        try:
            return await read_on_loop(engine, _facts, 7)
        finally:
            await engine.dispose()

    facts = asyncio.run(go())
    assert facts == {"value": 7, "autocommit": True, "async_driver": "AsyncConnection"}


def _insert(connection: Connection, value: int, fail: bool = False) -> None:
    connection.execute(text("INSERT INTO loop_test (v) VALUES (:v)"), {"v": value})
    if fail:
        raise RuntimeError("after the insert")


def _values(connection: Connection) -> list[int]:
    return list(connection.execute(text("SELECT v FROM loop_test ORDER BY v")).scalars())


@pytest.mark.postgres
def test_a_write_on_the_loop_commits_on_success_and_rolls_back_on_error(pg_fresh_url: str) -> None:  # noqa: F811
    async def go() -> list[int]:
        engine = make_loop_engine(pg_fresh_url)
        assert engine is not None
        try:
            await write_on_loop(engine, lambda c: c.execute(text("CREATE TABLE loop_test (v int)")))
            await write_on_loop(engine, _insert, 1)
            with pytest.raises(RuntimeError):
                await write_on_loop(engine, _insert, 2, fail=True)
            return await read_on_loop(engine, _values)
        finally:
            await engine.dispose()

    assert asyncio.run(go()) == [1]


@pytest.mark.postgres
def test_each_loop_has_its_own_engine_only_while_it_serves(pg_fresh_url: str) -> None:  # noqa: F811
    engines = LoopEngines(pg_fresh_url)

    async def serve() -> tuple[object, object]:
        assert engines.current() is None
        async with engines.serving():
            current = engines.current()
            assert current is not None
            pid = await read_on_loop(current, lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar_one())
        assert engines.current() is None
        return current, pid

    first, first_pid = asyncio.run(serve())
    second, second_pid = asyncio.run(serve())  # another loop (a second test client): another engine
    assert first is not second
    assert first_pid != second_pid or first_pid is None


@pytest.mark.postgres
def test_more_requests_at_once_than_connections_wait_for_one_instead_of_opening_more(
    pg_fresh_url: str,  # noqa: F811
) -> None:
    # Connections opened beyond the pool were closed again as they came back: each a new server
    # process for PostgreSQL to start. Here 3 × the pool's size read at once, on LOOP_POOL_SIZE.
    async def go() -> set[int]:
        engine = make_loop_engine(pg_fresh_url)
        assert engine is not None
        try:
            def pid(connection: Connection) -> int:
                return int(connection.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.05)")).scalar_one())

            first = await asyncio.gather(*(read_on_loop(engine, pid) for _ in range(3 * db.LOOP_POOL_SIZE)))
            again = await asyncio.gather(*(read_on_loop(engine, pid) for _ in range(3 * db.LOOP_POOL_SIZE)))
            assert set(again) == set(first)  # none closed when returned, none opened for the second round
            return set(first)
        finally:
            await engine.dispose()

    assert len(asyncio.run(go())) == db.LOOP_POOL_SIZE


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
