"""The hottest one-statement reads on PostgreSQL, run on the event loop through psycopg's async
connections and asked together: no hop to the thread pool, no SQLAlchemy pool checkout, the loop
never blocked, and one statement for every caller waiting (bench/RESULTS.md, 2026-12-05 batch10).

A `BatchedRead` is a Core statement that answers many questions at once: it reads them from a
row source `q` (a typed column per value of a question, and `n`, its number from 1) and returns one
row per question, numbered in its first column. Built from `q` by a function, it is made of the same
clauses as the single-row statement it batches, correlated to `q`'s columns where that one has
parameters. Many questions go as one JSON parameter (an object per question, datetimes in ISO 8601)
read by `json_to_recordset`; a question alone goes as one parameter per value, `q` then a single
row: a batch of one costs what the single-row statement costs. `LoopReads.ask` queues a question;
when no statement of that read is in flight on this event loop, one goes at the next turn of the
loop with every question queued by then, and the questions that arrive while it runs go together
in the next. A question asked alone goes at once: nothing waits to fill a batch.

Each event loop has its connections (one per statement in flight), opened when first needed and
closed by `close` (the app's lifespan); beyond `idle_kept` idle ones, a connection no statement
took for `idle_seconds` is closed. A question the database leaves unanswered fails with
`TimeoutError` `timeout` seconds after it was asked while the loop goes on serving others; one the
database refuses fails with the driver's error, and so do all the questions of that statement. A
connection the server closed since its last use (a restart, an idle timeout) is replaced and the
statement run again, once.

`LoopReads.write` runs one statement that writes on the same connections, alone and in
autocommit (its own transaction), and never runs it again once sent: a write whose outcome is
unknown raises, and its caller answers so that the work is sent again (bench/RESULTS.md, 2026-12-06
pghook11). A write not sent yet, because its idle connection was found closed by the server, goes
on a new connection instead, as a read does.

A statement goes through libpq itself (psycopg's `pgconn`), not psycopg's cursors: prepared once
per connection, its parameters dumped and its rows loaded by psycopg's own adapters (the
connection's), the connection's socket watched by the loop from its opening to its closing. The
cursor's machinery cost two thirds of a read's app CPU (bench/RESULTS.md, 2026-12-06 lean13).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import BigInteger, ClauseElement, Dialect, Engine, Select, Subquery, column, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.type_api import TypeEngine

from kernel.db import driver_sql

LOOP_READ_TIMEOUT_SECONDS = 10.0
# Writes in flight at once on one loop (`LoopReads.write`), each on a connection of its own: as
# many as the app's pool and thread pool let through the thread pool's path (kernel.db, encours.app).
LOOP_WRITES_IN_FLIGHT = 20
# Idle connections one loop keeps however long they stay idle, reads and writes alike. Beyond them,
# those left idle for `LOOP_IDLE_SECONDS` are closed, so a burst's connections do not stay open; not
# at once on their return: at the bench's webhook load a process has 1 to 21 in use from one moment
# to the next (bench/RESULTS.md, 2026-12-06 tidy12).
LOOP_IDLE_KEPT = 4
LOOP_IDLE_SECONDS = 10.0
# Statements prepared on one connection at most; any other runs unprepared. The loop's statements
# are a handful, each compiled once (kernel.db.driver_sql): a bound, not a cache that turns over.
LOOP_PREPARED_KEPT = 64
# How long a connection given up on mid-statement waits for the server to cancel it before closing.
LOOP_CANCEL_SECONDS = 5.0

Row = tuple[Any, ...]


class NotSent(psycopg.OperationalError):
    """The connection was lost before the statement went to the server: it cannot have run."""


# What a batched read's names, types and parameters are checked with (the statement itself is
# compiled with the engine's dialect, once: kernel.db.driver_sql).
_POSTGRESQL: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
_Connection = psycopg.AsyncConnection[Row]
_Result = pq.abc.PGresult


@dataclass(frozen=True, eq=False)
class BatchedRead:
    """A statement answering many questions at once (see the module's docstring): `build` makes it
    from the row source `q`, its first column `q.c.n`; `columns` a question's values (name, type), in
    `q` in that order. The statement takes no values of its own: the questions are its only
    parameters, so it is one plan whatever they hold."""

    build: Callable[[Subquery], Select[Any]]
    columns: tuple[tuple[str, TypeEngine[Any]], ...]
    names: tuple[str, ...] = field(init=False)
    many: Select[Any] = field(init=False)
    one: Select[Any] = field(init=False)

    def __post_init__(self) -> None:
        dialect = _POSTGRESQL
        names = tuple(name for name, _ in self.columns)
        quoted = [dialect.identifier_preparer.quote(name) for name in names]
        kinds = [dialect.type_compiler_instance.process(kind) for _, kind in self.columns]
        listed = ", ".join(quoted)
        typed = ", ".join(f"{name} {kind}" for name, kind in zip(quoted, kinds))
        # The LIMIT by a parameter makes the generic plan expect 10 questions, not json_to_recordset's
        # 100: with 100 it hashed a whole table for an EXISTS instead of probing its index per question.
        many = self.build(self._source(
            f"SELECT * FROM ROWS FROM (json_to_recordset(CAST(:questions AS json)) AS ({typed})) "
            f"WITH ORDINALITY AS q ({listed}, n) LIMIT CAST(:count AS bigint)"))
        one = self.build(self._source(
            "SELECT " + "".join(f"CAST(:{name} AS {kind}) AS {quote}, "
                                for name, kind, quote in zip(names, kinds, quoted)) + "1 AS n"))
        for statement, parameters in ((many, {"questions", "count"}), (one, set(names))):
            if set(statement.compile(dialect=dialect).binds) != parameters:
                raise ValueError("a batched read's only parameters are its questions': a value of its own "
                                 "goes in as a literal column, a value per question as a column of q")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "many", many)
        object.__setattr__(self, "one", one)

    def _source(self, sql: str) -> Subquery:
        """The row source `q` selected by `sql`: the questions' columns, then `n`."""
        columns = [column(name, kind) for name, kind in self.columns]
        return text(sql).columns(*columns, column("n", BigInteger())).subquery("q")


class _Link:
    """One loop connection driven through libpq (psycopg's `pgconn`) one statement at a time: its
    socket watched by the loop while it is open, each statement prepared on it once. A connection
    the server closed (a restart, an idle timeout) is seen when the loop next runs, and its next
    statement raises `NotSent`."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.pgconn = connection.pgconn
        self.pgconn.nonblocking = 1
        self.socket = self.pgconn.socket
        self.loop = asyncio.get_running_loop()
        # Dumps parameters and loads rows with the connection's adapters, what its cursors use.
        self.transformer = Transformer(connection)
        self.prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.answer: asyncio.Future[_Result] | None = None  # the statement in flight's
        self.results: list[_Result] = []
        self.lost: psycopg.OperationalError | None = None
        self.loop.add_reader(self.socket, self._readable)

    async def run(self, sql: str, arguments: Any) -> list[Row]:
        """`sql` (psycopg's placeholders) run with `arguments`: its rows, or none. Raises the
        server's error, `NotSent` when the connection was lost before the statement was sent (its
        preparation included), and `psycopg.OperationalError` when it was lost after."""
        query, names = _numbered(sql)
        values = arguments if names is None else [arguments[name] for name in names]
        transformer = self.transformer
        parameters = transformer.dump_sequence(values, [PyFormat.AUTO] * len(values))
        types = transformer.types or ()
        formats = transformer.formats
        if self.lost is not None:
            raise NotSent(str(self.lost)) from self.lost
        key = (query, types)
        name = self.prepared.get(key)
        if name is None and len(self.prepared) < LOOP_PREPARED_KEPT:
            name = b"loop_%d" % len(self.prepared)
            self.pgconn.send_prepare(name, query, param_types=types)
            try:
                self._outcome(await self._answered())
            except psycopg.OperationalError as error:
                if self.lost is None:
                    raise
                raise NotSent(str(error)) from error  # lost while preparing: the statement never went
            self.prepared[key] = name
        if name is None:
            self.pgconn.send_query_params(query, parameters, param_types=types, param_formats=formats)
        else:
            self.pgconn.send_query_prepared(name, parameters, param_formats=formats)
        result = self._outcome(await self._answered())
        if result.status != pq.ExecStatus.TUPLES_OK:
            return []
        transformer.set_pgresult(result)
        return transformer.load_rows(0, result.ntuples, tuple)

    def close(self) -> Coroutine[Any, Any, None]:
        """No longer watched nor used from now; the coroutine closes it, the statement in flight
        (its caller gone) cancelled on the server first."""
        in_flight = self.answer is not None and self.lost is None
        if self.lost is None:
            self.loop.remove_reader(self.socket)
            self.lost = psycopg.OperationalError("the connection is closed")
        self.answer = None
        return self._closed(in_flight)

    async def _closed(self, in_flight: bool) -> None:
        if in_flight:
            try:
                await self.connection.cancel_safe(timeout=LOOP_CANCEL_SECONDS)
            except psycopg.Error:
                pass  # closed below anyway: the server ends the statement when it next writes
        await self.connection.close()

    async def _answered(self) -> _Result:
        """The last result of the statement just sent, once the server has said it is done."""
        while self.pgconn.flush():  # a statement larger than the socket's buffer
            writable: asyncio.Future[None] = self.loop.create_future()
            self.loop.add_writer(self.socket, _done, writable)
            try:
                await writable
            finally:
                self.loop.remove_writer(self.socket)
        self.answer = self.loop.create_future()
        return await self.answer

    def _outcome(self, result: _Result) -> _Result:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=self.connection.info.encoding)
        return result

    def _readable(self) -> None:
        pgconn = self.pgconn
        try:
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    break
                self.results.append(result)
            else:
                return  # more to come
        except psycopg.OperationalError as error:
            self._lose(error)
            return
        if pgconn.status == pq.ConnStatus.BAD:
            self._lose(psycopg.OperationalError("the server closed the connection"))
            return
        answer, results = self.answer, self.results
        if answer is None or not results:  # idle: a notice, a parameter's new value
            self.results = []
            return
        self.answer, self.results = None, []
        if not answer.done():
            answer.set_result(results[-1])

    def _lose(self, error: psycopg.OperationalError) -> None:
        self.loop.remove_reader(self.socket)
        self.lost = error
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)


@functools.lru_cache(maxsize=256)
def _numbered(sql: str) -> tuple[bytes, tuple[str, ...] | None]:
    """`sql` with psycopg's placeholders, `%(name)s` or `%s`, in PostgreSQL's `$1`…: and the names
    in their numbers' order (a name said twice one number), None for positional ones."""
    names: list[str] = []

    def numbered(placeholder: re.Match[str]) -> str:
        if placeholder[0] == "%%":
            return "%"
        if placeholder[1] is None:
            names.append("")
            return f"${len(names)}"
        if placeholder[1] not in names:
            names.append(placeholder[1])
        return f"${names.index(placeholder[1]) + 1}"

    query = re.sub(r"%%|%\((\w+)\)s|%s", numbered, sql).encode()
    if "" in names and len(set(names)) > 1:
        raise ValueError("a statement's placeholders are all named or all positional")
    return query, None if "" in names else tuple(names)


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(eq=False)
class _Queue:
    """The questions of one read waiting on one loop, since the oldest was asked (loop time)."""

    waiting: list[tuple[Mapping[str, Any], asyncio.Future[Row]]] = field(default_factory=list)
    since: float = 0.0
    running: bool = False


@dataclass(eq=False)
class _Batch:
    """The questions one statement answers, and its deadline."""

    answers: list[tuple[Mapping[str, Any], asyncio.Future[Row]]]
    timer: asyncio.TimerHandle | None = None
    over: bool = False  # answered, failed or given up on


@dataclass(eq=False)
class _Loop:
    """One event loop's connections and queues."""

    idle: list[_Link] = field(default_factory=list)
    queues: dict[BatchedRead, _Queue] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # statements running, given up on or not
    write_turns: asyncio.Semaphore | None = None  # made on the loop it serves, at its first write
    closed: bool = False
    # While more than `idle_kept` are idle: the next trim, and the fewest idle since the last one
    # (the connections below it in `idle` were taken by no statement meanwhile).
    trim: asyncio.TimerHandle | None = None
    fewest_idle: int = 0


class LoopReads:
    """Reads on the running event loop from `engine`'s PostgreSQL database (its URL and the
    driver settings SQLAlchemy's dialect gives its own connections: the same type adapters)."""

    def __init__(self, engine: Engine, *, timeout: float = LOOP_READ_TIMEOUT_SECONDS,
                 idle_kept: int = LOOP_IDLE_KEPT, idle_seconds: float = LOOP_IDLE_SECONDS) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"reads on the event loop need PostgreSQL, not {engine.dialect.name}")
        self.dialect = engine.dialect
        args, self.connect_params = engine.dialect.create_connect_args(engine.url)
        if args:
            raise ValueError("connection arguments beyond keywords are not supported")
        self.timeout = timeout
        self.idle_kept = idle_kept
        self.idle_seconds = idle_seconds
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    async def ask(self, read: BatchedRead, question: Mapping[str, Any]) -> Row:
        """`read`'s row for `question` (a value for each of its names, the row without its number),
        asked in one statement with the other questions of this loop waiting for the same read."""
        loop = asyncio.get_running_loop()
        state = self._state(loop)
        queue = state.queues.get(read)
        if queue is None:
            queue = state.queues[read] = _Queue()
        answer: asyncio.Future[Row] = loop.create_future()
        if not queue.waiting:
            queue.since = loop.time()
        queue.waiting.append((question, answer))
        if not queue.running:
            queue.running = True
            self._send(state, read, queue)
        return await answer

    async def write(self, statement: ClauseElement, params: Mapping[str, Any]) -> list[Row]:
        """Run ONE statement that writes on one of the running loop's connections, in autocommit:
        the statement is its own transaction, committed when it answers, with no BEGIN or COMMIT
        round trip; its rows. Never batched with another caller's (each is its own transaction),
        at most `LOOP_WRITES_IN_FLIGHT` at once per loop (the others wait their turn).

        Sent once, never again: unlike a read, a write that fails or stays unanswered `timeout`
        seconds after it was asked (its wait for a turn included) raises — `TimeoutError`, the
        driver's error — with its outcome unknown (it may yet commit). The caller must then answer
        so that whoever sent the work sends it again (a webhook: 5xx), and the statement must be
        safe to run again (a webhook event's INSERT ... ON CONFLICT DO NOTHING: stored already,
        the second delivery is a duplicate). A caller cancelled cancels its write likewise.

        Run in the caller's task, no task of its own: its connection, given up on, is closed
        while the caller goes on (the server asked to cancel the statement first)."""
        state = self._state(asyncio.get_running_loop())
        sql, arguments = driver_sql(statement, self.dialect, params)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._write(state, sql, arguments)
        except TimeoutError:
            raise TimeoutError(f"database write took more than {self.timeout:g} s: its outcome is unknown") from None

    async def _write(self, state: _Loop, sql: str, arguments: Any) -> list[Row]:
        if state.write_turns is None:
            state.write_turns = asyncio.Semaphore(LOOP_WRITES_IN_FLIGHT)
        async with state.write_turns:
            idle = _idle_one(state)
            connection = idle if idle is not None else await self._connect()
            try:
                rows = await connection.run(sql, arguments)
            except NotSent:
                await connection.close()
                if idle is None:
                    raise
                # Closed by the server while idle (a restart, an idle timeout): nothing was sent, so
                # the write goes once, on a new connection.
                connection = await self._connect()
                rows = await self._write_on(state, connection, sql, arguments)
            except BaseException:
                _close_later(state, connection)  # in an unknown state: never used again
                raise
        await self._give_back(state, connection)
        return rows

    async def _write_on(self, state: _Loop, connection: _Link, sql: str, arguments: Any) -> list[Row]:
        try:
            return await connection.run(sql, arguments)
        except BaseException:
            _close_later(state, connection)
            raise

    async def close(self) -> None:
        """Close the running loop's connections (those in use as their statement ends)."""
        with self._lock:
            state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is None:
            return
        state.closed = True
        if state.trim is not None:
            state.trim.cancel()
        idle, state.idle = state.idle, []
        for connection in idle:
            await connection.close()

    def open_connections(self) -> int:
        """Connections idle in the running loop's set (tests)."""
        state = self._loops.get(asyncio.get_running_loop())
        return 0 if state is None else len(state.idle)

    def _state(self, loop: asyncio.AbstractEventLoop) -> _Loop:
        state = self._loops.get(loop)
        if state is None:
            with self._lock:
                state = self._loops.get(loop)
                if state is None:
                    state = self._loops[loop] = _Loop()
        return state

    def _send(self, state: _Loop, read: BatchedRead, queue: _Queue) -> None:
        """Every waiting question of `read` in one statement, in a task of its own given up at the
        oldest question's deadline whatever it is doing (a cancelled query makes psycopg ask the
        server to cancel it and wait, up to 10 s more); `_next` sends those asked meanwhile. The
        task takes the questions when it starts, at the loop's next turn: those asked in this turn
        too, with no turn of the loop spent waiting for them."""
        loop = asyncio.get_running_loop()
        batch = _Batch([])
        work = loop.create_task(self._rows(state, read, queue, batch))
        state.tasks.add(work)  # the loop keeps only a weak reference
        batch.timer = loop.call_at(queue.since + self.timeout, self._give_up, state, read, queue, batch, work)
        work.add_done_callback(functools.partial(self._settle, state, read, queue, batch))

    def _settle(self, state: _Loop, read: BatchedRead, queue: _Queue, batch: _Batch, work: asyncio.Task[list[Row]]
                ) -> None:
        state.tasks.discard(work)
        if batch.over:  # given up on already: its outcome consumed, nothing more
            if not work.cancelled():
                work.exception()
            return
        batch.over = True
        if batch.timer is not None:
            batch.timer.cancel()
        try:
            if work.cancelled():
                raise RuntimeError("the database read was cancelled")
            _answer(batch.answers, work.result())  # its error, if it failed
        except Exception as error:  # to each question, never left waiting
            _fail(batch.answers, error)
        self._next(state, read, queue)

    def _give_up(self, state: _Loop, read: BatchedRead, queue: _Queue, batch: _Batch, work: asyncio.Task[list[Row]]
                 ) -> None:
        if batch.over:
            return
        batch.over = True
        if not batch.answers:  # its task never started (the timer runs after it, so never in fact)
            batch.answers, queue.waiting = queue.waiting, []
        work.cancel()
        _fail(batch.answers, TimeoutError(f"database read took more than {self.timeout:g} s"))
        self._next(state, read, queue)

    def _next(self, state: _Loop, read: BatchedRead, queue: _Queue) -> None:
        if queue.waiting:  # asked while the last statement ran: the next goes now
            self._send(state, read, queue)
        else:
            queue.running = False

    async def _rows(self, state: _Loop, read: BatchedRead, queue: _Queue, batch: _Batch) -> list[Row]:
        batch.answers, queue.waiting = queue.waiting, []
        if len(batch.answers) == 1:
            sql, arguments = driver_sql(read.one, self.dialect, batch.answers[0][0])
        else:
            # One JSON parameter rather than an array per name: psycopg worked out each array's
            # element type on every call.
            sql, arguments = driver_sql(read.many, self.dialect, {"questions": json.dumps(
                [{name: question[name] for name in read.names} for question, _ in batch.answers],
                default=_json_value, separators=(",", ":")), "count": len(batch.answers)})
        idle = _idle_one(state)
        reused = idle is not None
        connection = idle if idle is not None else await self._connect()
        try:
            rows = await connection.run(sql, arguments)
        except psycopg.OperationalError:
            await connection.close()
            if not reused:
                raise
            # Closed by the server since its last use: the next connection is a new one.
            connection = await self._connect()
            try:
                rows = await connection.run(sql, arguments)
            except BaseException:
                await connection.close()
                raise
        except BaseException:
            await connection.close()  # in an unknown state: never used again
            raise
        await self._give_back(state, connection)
        return rows

    async def _give_back(self, state: _Loop, connection: _Link) -> None:
        """A connection whose statement ended well back to the loop's idle set (closed once the loop's
        connections are: `close` ran while it was in use)."""
        if state.closed:
            await connection.close()
            return
        state.idle.append(connection)
        if len(state.idle) > self.idle_kept and state.trim is None:
            self._trim_later(state)

    def _trim_later(self, state: _Loop) -> None:
        state.fewest_idle = len(state.idle)
        state.trim = asyncio.get_running_loop().call_later(self.idle_seconds, self._trim, state)

    def _trim(self, state: _Loop) -> None:
        """Close the idle connections beyond `idle_kept` that no statement took since the last trim
        (the first in `idle`: a statement takes the last)."""
        state.trim = None
        surplus = min(state.fewest_idle, len(state.idle) - self.idle_kept)
        if surplus > 0:
            unused, state.idle[:surplus] = state.idle[:surplus], []
            closing = asyncio.get_running_loop().create_task(_close_all(unused))
            state.tasks.add(closing)  # the loop keeps only a weak reference
            closing.add_done_callback(state.tasks.discard)
        if len(state.idle) > self.idle_kept:
            self._trim_later(state)

    async def _connect(self) -> _Link:
        connection: _Connection = await psycopg.AsyncConnection.connect(autocommit=True, **self.connect_params)
        try:
            # Always the generic plan, made once per connection: a batched read's parameter hides how
            # many questions it holds, and the custom plan PostgreSQL would otherwise keep choosing
            # for a batch of one costs more to make (0.6 ms) than the statement to run.
            await connection.execute("SET plan_cache_mode = force_generic_plan")
        except BaseException:
            await connection.close()
            raise
        return _Link(connection)  # psycopg's own waits are over: the socket is the loop's from now


def _idle_one(state: _Loop) -> _Link | None:
    """The idle connection given back last (those given back first stay idle: the first trimmed), or None."""
    if not state.idle:
        return None
    connection = state.idle.pop()
    state.fewest_idle = min(state.fewest_idle, len(state.idle))
    return connection


def _close_later(state: _Loop, connection: _Link) -> None:
    """Close `connection` in a task of its own, the caller going on (a write given up on)."""
    closing = asyncio.get_running_loop().create_task(connection.close())
    state.tasks.add(closing)  # the loop keeps only a weak reference
    closing.add_done_callback(state.tasks.discard)


async def _close_all(connections: list[_Link]) -> None:
    for connection in connections:
        await connection.close()


def _json_value(value: Any) -> str:
    if isinstance(value, date):  # datetimes too: the offset kept, the microseconds too
        return value.isoformat()
    raise TypeError(f"a question's value must be JSON or a date, not {type(value).__name__}")


def _answer(batch: list[tuple[Mapping[str, Any], asyncio.Future[Row]]], rows: list[Row]) -> None:
    for row in rows:
        answer = batch[row[0] - 1][1]
        if not answer.done():  # its caller may have gone away
            answer.set_result(row[1:])
    _fail(batch, LookupError("the batched read gave no row for this question"))


def _fail(batch: list[tuple[Mapping[str, Any], asyncio.Future[Row]]], error: BaseException) -> None:
    for _, answer in batch:
        if not answer.done():
            answer.set_exception(error)
