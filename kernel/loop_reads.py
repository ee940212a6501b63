"""The hottest one-statement reads on PostgreSQL, run on the event loop through psycopg's async
connections: no hop to the thread pool, no SQLAlchemy pool checkout, and the loop never blocked
(bench/RESULTS.md, 2026-12-05 loop9).

Each event loop has a few connections of its own, opened when first needed and closed by
`close` (the app's lifespan). A read waits for a free one, runs the statement `kernel.db.driver_sql`
compiles (the same SQL and converted parameters as `driver_rows`), in autocommit, and gives the
connection back. A database that does not answer fails the read with `TimeoutError` after
`timeout` seconds while the loop goes on serving others; one that refuses fails it with the
driver's error. A connection the server closed since its last use (a restart, an idle timeout)
is replaced and the read run again, once: a read may run twice.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import psycopg
from sqlalchemy import ClauseElement, Engine

from kernel.db import driver_sql

# Per event loop: enough for the reads one process has in flight at once (each is one round trip
# of a fraction of a millisecond); a read finding all of them busy waits for one.
LOOP_CONNECTIONS = 4
LOOP_READ_TIMEOUT_SECONDS = 10.0

T = TypeVar("T")
_Connection = psycopg.AsyncConnection[tuple[Any, ...]]
_Cursor = psycopg.AsyncCursor[tuple[Any, ...]]


class _Connections:
    """One event loop's connections."""

    def __init__(self, size: int) -> None:
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(size)
        self.closed = False
        self.abandoned: set[asyncio.Task[Any]] = set()  # reads given up on (timeout), still winding down


class LoopReads:
    """Reads on the running event loop from `engine`'s PostgreSQL database (its URL and the
    driver settings SQLAlchemy's dialect gives its own connections: the same type adapters)."""

    def __init__(self, engine: Engine, *, connections: int = LOOP_CONNECTIONS,
                 timeout: float = LOOP_READ_TIMEOUT_SECONDS) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"reads on the event loop need PostgreSQL, not {engine.dialect.name}")
        self.dialect = engine.dialect
        args, self.connect_params = engine.dialect.create_connect_args(engine.url)
        if args:
            raise ValueError("connection arguments beyond keywords are not supported")
        self.connections = connections
        self.timeout = timeout
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connections] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    async def rows(self, statement: ClauseElement, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """`kernel.db.driver_rows(connection, statement, params)`, on the event loop."""
        return await self._run(statement, params, _all_rows)

    async def first(self, statement: ClauseElement, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """`kernel.db.first_row(connection, statement, params)`, on the event loop."""
        return await self._run(statement, params, _first_row)

    async def close(self) -> None:
        """Close the running loop's connections (those in use as they come back)."""
        with self._lock:
            pool = self._loops.pop(asyncio.get_running_loop(), None)
        if pool is None:
            return
        pool.closed = True
        idle, pool.idle = pool.idle, []
        for connection in idle:
            await connection.close()

    def open_connections(self) -> int:
        """Connections idle in the running loop's set (tests)."""
        pool = self._loops.get(asyncio.get_running_loop())
        return 0 if pool is None else len(pool.idle)

    def _pool(self) -> _Connections:
        loop = asyncio.get_running_loop()
        pool = self._loops.get(loop)
        if pool is None:
            with self._lock:
                pool = self._loops.get(loop)
                if pool is None:
                    pool = self._loops[loop] = _Connections(self.connections)
        return pool

    async def _run(self, statement: ClauseElement, params: Mapping[str, Any],
                   read: Callable[[_Cursor], Awaitable[T]]) -> T:
        sql, arguments = driver_sql(statement, self.dialect, params)
        pool = self._pool()
        loop = asyncio.get_running_loop()
        # In a task of its own, awaited through `done`, so that giving up on it takes no longer than
        # the timeout (a cancelled query makes psycopg ask the server to cancel it and wait, up to
        # 10 s more), and a caller that goes away leaves the connection in a known state. A timer
        # and a future: asyncio.timeout and shield cost more (bench/RESULTS.md, 2026-12-05 loop9).
        work = loop.create_task(self._read(pool, sql, arguments, read))
        done: asyncio.Future[None] = loop.create_future()
        work.add_done_callback(functools.partial(_settle, done))
        timer = loop.call_later(self.timeout, _settle, done)
        try:
            await done
        except BaseException:  # the caller was cancelled: the read ends on its own
            _let_go(pool, work)
            raise
        finally:
            timer.cancel()
        if not work.done():
            work.cancel()
            _let_go(pool, work)
            raise TimeoutError(f"database read took more than {self.timeout:g} s")
        return work.result()

    async def _read(self, pool: _Connections, sql: str, arguments: Any, read: Callable[[_Cursor], Awaitable[T]]) -> T:
        async with pool.slots:
            reused = bool(pool.idle)
            connection = pool.idle.pop() if reused else await self._connect()
            try:
                result = await _execute(connection, sql, arguments, read)
            except psycopg.OperationalError:
                await connection.close()
                if not reused:
                    raise
                # Closed by the server since its last use: the next connection is a new one.
                connection = await self._connect()
                try:
                    result = await _execute(connection, sql, arguments, read)
                except BaseException:
                    await connection.close()
                    raise
            except BaseException:
                await connection.close()  # in an unknown state: never used again
                raise
            if pool.closed:
                await connection.close()
            else:
                pool.idle.append(connection)
            return result

    async def _connect(self) -> _Connection:
        connection: _Connection = await psycopg.AsyncConnection.connect(autocommit=True, **self.connect_params)
        return connection


def _settle(done: asyncio.Future[None], *_: Any) -> None:
    if not done.done():
        done.set_result(None)


def _let_go(pool: _Connections, work: asyncio.Task[Any]) -> None:
    """A read nobody waits for any more: kept referenced until it ends, its outcome consumed."""
    pool.abandoned.add(work)
    work.add_done_callback(_forget(pool))


def _forget(pool: _Connections) -> Callable[[asyncio.Task[Any]], None]:
    def forget(work: asyncio.Task[Any]) -> None:
        pool.abandoned.discard(work)
        if not work.cancelled():
            work.exception()

    return forget


async def _execute(connection: _Connection, sql: str, arguments: Any, read: Callable[[_Cursor], Awaitable[T]]) -> T:
    # The cursor holds nothing on the server (a client-side cursor): no close to wait for.
    return await read(await connection.execute(sql, arguments))


async def _all_rows(cursor: _Cursor) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await cursor.fetchall()] if cursor.description is not None else []


async def _first_row(cursor: _Cursor) -> tuple[Any, ...] | None:
    row = await cursor.fetchone()
    return tuple(row) if row is not None else None
