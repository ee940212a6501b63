"""kernel.db on PostgreSQL: the pool keeps its connections, pings only idle ones, reads and
one-statement writes run without BEGIN/COMMIT round trips; on SQLite, as before."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest
from psycopg import pq
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from kernel import db
from kernel.db import make_engine, make_sessionmaker, read_connection, statement_connection, unit_of_work


@pytest.fixture
def pg_engine_fresh(pg_fresh_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_fresh_url)
    yield engine
    engine.dispose()


def _backend_pids(engine: Engine, count: int) -> set[int]:
    """The server processes of `count` connections checked out at once, then all returned."""
    connections = [engine.connect() for _ in range(count)]
    try:
        return {int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in connections}
    finally:
        for connection in connections:
            connection.close()


def _terminate(engine: Engine, pid: int) -> None:
    """End that server process from a connection of another pool."""
    other = create_engine(engine.url, poolclass=NullPool)
    try:
        with other.begin() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        other.dispose()


@pytest.mark.postgres
def test_connections_used_at_once_are_kept_for_the_next_requests(pg_engine_fresh: Engine) -> None:
    # As many at once as a server's requests may use: none is closed when returned, none reopened.
    first = _backend_pids(pg_engine_fresh, db.SERVER_POOL_SIZE)
    assert len(first) == db.SERVER_POOL_SIZE
    assert _backend_pids(pg_engine_fresh, db.SERVER_POOL_SIZE) == first


@pytest.mark.postgres
def test_a_connection_that_died_while_idle_is_replaced_without_an_error(
    pg_engine_fresh: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    [pid] = _backend_pids(pg_engine_fresh, 1)
    _terminate(pg_engine_fresh, pid)  # the server restarted, or an idle timeout struck
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # it has been idle long enough
    with pg_engine_fresh.connect() as connection:
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


@pytest.mark.postgres
def test_a_connection_in_steady_use_is_not_pinged(pg_engine_fresh: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The price of no ping per checkout: a connection that died between two close requests fails
    # the one request that finds it, and the pool then discards every connection of that age.
    [pid] = _backend_pids(pg_engine_fresh, 1)
    _terminate(pg_engine_fresh, pid)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    with pytest.raises(OperationalError), pg_engine_fresh.connect() as connection:
        connection.execute(text("SELECT 1"))
    with pg_engine_fresh.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


@pytest.mark.postgres
def test_reads_run_outside_any_transaction_and_see_what_was_committed_meanwhile(pg_engine_fresh: Engine) -> None:
    with pg_engine_fresh.begin() as connection:
        connection.execute(text("CREATE TABLE seen (n integer)"))
    reads = make_sessionmaker(pg_engine_fresh, write=False)
    with reads() as session:
        assert session.execute(text("SELECT count(*) FROM seen")).scalar_one() == 0
        driver = session.connection().connection.driver_connection
        assert driver is not None and driver.info.transaction_status == pq.TransactionStatus.IDLE
        with unit_of_work(make_sessionmaker(pg_engine_fresh)) as writer:
            writer.execute(text("INSERT INTO seen VALUES (1)"))
        # READ COMMITTED, as inside a transaction: each statement sees the latest commits.
        assert session.execute(text("SELECT count(*) FROM seen")).scalar_one() == 1
    with read_connection(reads) as connection:
        assert connection.execute(text("SELECT count(*) FROM seen")).scalar_one() == 1
        assert connection.connection.driver_connection.info.transaction_status == pq.TransactionStatus.IDLE
    # The write sessions still run in transactions: a rolled-back write leaves nothing.
    with pytest.raises(RuntimeError), unit_of_work(make_sessionmaker(pg_engine_fresh)) as writer:
        writer.execute(text("INSERT INTO seen VALUES (2)"))
        raise RuntimeError("undo")
    with reads() as session:
        assert session.execute(text("SELECT count(*) FROM seen")).scalar_one() == 1


@pytest.mark.postgres
def test_a_statement_connection_commits_its_statement_as_it_returns(pg_engine_fresh: Engine) -> None:
    with pg_engine_fresh.begin() as connection:
        connection.execute(text("CREATE TABLE kept (n integer PRIMARY KEY)"))
    factory = make_sessionmaker(pg_engine_fresh)
    seen_by_other: list[int] = []
    with statement_connection(factory) as connection:
        connection.execute(text("INSERT INTO kept VALUES (1) ON CONFLICT DO NOTHING"))
        assert connection.connection.driver_connection.info.transaction_status == pq.TransactionStatus.IDLE

        def other() -> None:  # another connection sees it before this one is even returned
            with pg_engine_fresh.connect() as reader:
                seen_by_other.append(int(reader.execute(text("SELECT count(*) FROM kept")).scalar_one()))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen_by_other == [1]
    # The pooled connection goes back to transactions for the next user.
    with pg_engine_fresh.connect() as connection:
        connection.execute(text("INSERT INTO kept VALUES (2)"))
        assert connection.connection.driver_connection.info.transaction_status == pq.TransactionStatus.INTRANS
        connection.rollback()
    with pg_engine_fresh.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM kept")).scalar_one() == 1


def test_on_sqlite_a_statement_connection_is_a_write_transaction(sqlite_fresh_url: str) -> None:
    engine = make_engine(sqlite_fresh_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE kept (n integer PRIMARY KEY)"))
        with pytest.raises(RuntimeError), statement_connection(make_sessionmaker(engine)) as connection:
            connection.execute(text("INSERT INTO kept VALUES (1)"))
            assert connection.in_transaction()
            raise RuntimeError("undo")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM kept")).scalar_one() == 0
    finally:
        engine.dispose()
