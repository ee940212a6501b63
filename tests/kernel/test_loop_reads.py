"""kernel.loop_reads on PostgreSQL: reads on the event loop return what `driver_rows` and
`first_row` return, replace a connection the server closed, give up on a database that does not
answer within the timeout while the loop goes on, and close their connections."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import JSON, Column, DateTime, Engine, Integer, MetaData, String, Table, bindparam, func, select, text

from kernel import db
from kernel.loop_reads import LoopReads

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine_fresh(pg_fresh_url: str) -> Iterator[Engine]:
    engine = db.make_engine(pg_fresh_url)
    yield engine
    engine.dispose()


def _our_connections(engine: Engine) -> int:
    """Connections to the test's database other than the one asking."""
    with engine.connect() as connection:
        return int(connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )).scalar_one())


def test_reads_return_what_driver_rows_and_first_row_return(pg_engine_fresh: Engine) -> None:
    from ledger.models import UTCDateTime

    metadata = MetaData()
    table = Table("loop_reads_test", metadata, Column("id", Integer, primary_key=True), Column("kind", String(20)),
                  Column("at", UTCDateTime()), Column("plain_at", DateTime(timezone=True)), Column("doc", JSON))
    metadata.create_all(pg_engine_fresh)
    at = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    with pg_engine_fresh.begin() as connection:
        connection.execute(table.insert(), [
            {"kind": "a", "at": at, "plain_at": at, "doc": {"x": [1, "é"], "y": None}},
            {"kind": None, "at": None, "plain_at": None, "doc": None},
            {"kind": "b", "at": at.astimezone(timezone.utc), "plain_at": at, "doc": []},
        ])
    # Parameters converted by their columns' types (an aware datetime), a literal of the statement's own.
    query = (select(table.c.id, table.c.kind, table.c.at, table.c.plain_at, table.c.doc)
             .where(table.c.id >= bindparam("least"), table.c.kind.is_distinct_from("zzz"),
                    func.coalesce(table.c.at, bindparam("when", type_=table.c.at.type)) <= bindparam(
                        "when", type_=table.c.at.type))
             .order_by(table.c.id))
    cases: list[dict[str, Any]] = [{"least": 0, "when": at + timedelta(days=1)}, {"least": 2, "when": at},
                                   {"least": 9, "when": at}]
    reads = LoopReads(pg_engine_fresh)

    async def on_loop() -> list[tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]]:
        try:
            return [(await reads.rows(query, params), await reads.first(query, params)) for params in cases]
        finally:
            await reads.close()

    found = asyncio.run(on_loop())
    with pg_engine_fresh.connect() as connection:
        expected = [(db.driver_rows(connection, query, params), db.first_row(connection, query, params))
                    for params in cases]
    assert found == expected
    assert len(found[0][0]) == 3 and found[2] == ([], None)
    first = found[0][0][0]
    assert first[2] == at and first[2].utcoffset() is not None and first[4] == {"x": [1, "é"], "y": None}
    assert found[0][0][1][1:] == (None, None, None, None)  # NULLs, JSON null included


def test_a_connection_the_server_closed_is_replaced_and_the_read_runs_again(pg_engine_fresh: Engine) -> None:
    reads = LoopReads(pg_engine_fresh)
    backend = select(func.pg_backend_pid())

    async def on_loop() -> tuple[int, int, int]:
        try:
            [(before,)] = await reads.rows(backend, {})
            await asyncio.to_thread(_terminate, pg_engine_fresh, before)  # a restart, an idle timeout
            [(after,)] = await reads.rows(backend, {})
            return before, after, reads.open_connections()
        finally:
            await reads.close()

    before, after, kept = asyncio.run(on_loop())
    assert before != after and kept == 1


def test_connections_are_opened_when_needed_kept_and_closed_by_close(pg_engine_fresh: Engine) -> None:
    reads = LoopReads(pg_engine_fresh, connections=3)
    sleep = select(func.pg_sleep(0.2))

    async def on_loop() -> tuple[int, int, int, int]:
        opened_before = await asyncio.to_thread(_our_connections, pg_engine_fresh)
        await asyncio.gather(*(reads.rows(sleep, {}) for _ in range(5)))  # at most 3 at once
        kept = reads.open_connections()
        seen = await asyncio.to_thread(_our_connections, pg_engine_fresh)
        await reads.close()
        await asyncio.sleep(0)
        return opened_before, kept, seen, reads.open_connections()

    opened_before, kept, seen, after_close = asyncio.run(on_loop())
    assert (opened_before, kept, seen, after_close) == (0, 3, 3, 0)
    deadline = time.monotonic() + 10
    while _our_connections(pg_engine_fresh) and time.monotonic() < deadline:  # the server notices in its time
        time.sleep(0.05)
    assert _our_connections(pg_engine_fresh) == 0


def test_a_database_that_does_not_answer_fails_the_read_within_the_timeout_and_the_loop_goes_on(
    silent_port: int
) -> None:
    engine = db.make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{silent_port}/nothing")
    reads = LoopReads(engine, timeout=0.5)

    async def on_loop() -> tuple[BaseException | None, int, float]:
        ticks = 0

        async def ticking() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(ticking())
        started = time.monotonic()
        failure: BaseException | None = None
        try:
            await reads.rows(select(func.now()), {})
        except TimeoutError as error:
            failure = error
        took = time.monotonic() - started
        ticker.cancel()
        await reads.close()
        return failure, ticks, took

    try:
        failure, ticks, took = asyncio.run(on_loop())
    finally:
        engine.dispose()
    assert isinstance(failure, TimeoutError)
    assert ticks >= 10  # the loop ran other work all along
    assert took < 5  # given up at the timeout, not after psycopg's own waits


def test_a_database_that_refuses_fails_the_read_with_the_drivers_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = db.make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing")
    reads = LoopReads(engine, timeout=5)

    async def on_loop() -> None:
        try:
            await reads.rows(select(func.now()), {})
        finally:
            await reads.close()

    try:
        with pytest.raises(psycopg.OperationalError):
            asyncio.run(on_loop())
    finally:
        engine.dispose()


def test_only_postgresql(sqlite_fresh_url: str) -> None:
    engine = db.make_engine(sqlite_fresh_url)
    try:
        with pytest.raises(ValueError, match="PostgreSQL"):
            LoopReads(engine)
    finally:
        engine.dispose()


def _terminate(engine: Engine, pid: int) -> None:
    with psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_read_whose_caller_goes_away_ends_on_its_own_and_keeps_its_connection(pg_engine_fresh: Engine) -> None:
    reads = LoopReads(pg_engine_fresh)

    async def on_loop() -> int:
        caller = asyncio.create_task(reads.rows(select(func.pg_sleep(0.3)), {}))
        await asyncio.sleep(0.1)
        caller.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.6)
        kept = reads.open_connections()
        await reads.close()
        return kept

    assert asyncio.run(on_loop()) == 1


def test_a_statement_slower_than_the_timeout_fails_the_read_and_its_connection_is_dropped(
    pg_engine_fresh: Engine
) -> None:
    reads = LoopReads(pg_engine_fresh, timeout=0.3)

    async def on_loop() -> tuple[float, int, list[tuple[Any, ...]]]:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await reads.rows(select(func.pg_sleep(30)), {})
        took = time.monotonic() - started
        await asyncio.sleep(0.5)  # psycopg has the server cancel the statement, then the connection goes
        dropped = reads.open_connections()
        after = await reads.rows(select(func.now() > func.now() - text("interval '1 second'")), {})
        await reads.close()
        return took, dropped, after

    took, dropped, after = asyncio.run(on_loop())
    assert took < 2 and dropped == 0 and after == [(True,)]
