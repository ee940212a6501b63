"""kernel.loop_reads on PostgreSQL: questions asked on the event loop get their own row of one
statement asked for all of them, what `driver_rows` gives for each alone; the questions asked
together go together, and one asked alone goes at once; a failed statement fails each of its
questions with its error; a connection the server closed is replaced; a database that does not
answer fails the question within the timeout while the loop goes on; connections close."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import (JSON, BigInteger, ClauseElement, Column, ColumnElement, Date, DateTime, Engine, Integer, MetaData, String,
                        Table, and_, bindparam, column, exists, func, literal_column, select, table, text)

from sqlalchemy.dialects import postgresql

from kernel import db
from kernel.loop_reads import LOOP_IDLE_KEPT, LOOP_WRITES_IN_FLIGHT, BatchedRead, LoopReads, NotSent

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


def as_asked(statement: ClauseElement) -> str:
    """`statement`'s PostgreSQL SQL with each parameter a column of the questions' row source `q`:
    what a batched read built of its clauses says where it says a parameter."""
    sql = str(statement.compile(dialect=postgresql.dialect()))
    return re.sub(r"%\((\w+)\)s(?:::(?:TIMESTAMP WITH TIME ZONE|[A-Z]+))?", r"q.\1", sql)


# Which statement answered (a sequence read once per statement), and a value of the question's own.
_NUMBER = select(literal_column("nextval('loop_reads_statements')").label("number")).cte("statement")
_STATEMENT = BatchedRead(lambda q: select(q.c.n, _NUMBER.c.number, q.c.x, literal_column("1", Integer()) // q.c.x)
                         .select_from(q, _NUMBER), (("x", Integer()),))
_BACKEND = BatchedRead(lambda q: select(q.c.n, func.pg_backend_pid()), (("x", Integer()),))


def _sleep(seconds: float) -> BatchedRead:
    sleep = select(func.pg_sleep(literal_column(repr(seconds)))).subquery("sleep")
    return BatchedRead(lambda q: select(q.c.n, q.c.x).select_from(q, sleep), (("x", Integer()),))


def test_each_question_gets_what_its_statement_alone_gives(pg_engine_fresh: Engine) -> None:
    from ledger.models import UTCDateTime

    metadata = MetaData()
    table = Table("loop_reads_test", metadata, Column("id", Integer, primary_key=True), Column("kind", String(20)),
                  Column("at", UTCDateTime()), Column("doc", JSON))
    metadata.create_all(pg_engine_fresh)
    at = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    with pg_engine_fresh.begin() as connection:
        connection.execute(table.insert(), [
            {"id": 1, "kind": "a", "at": at, "doc": {"x": [1, "é"], "y": None}},
            {"id": 2, "kind": None, "at": None, "doc": None},
            {"id": 3, "kind": "b", "at": at.astimezone(timezone.utc), "doc": []},
        ])

    def found_by(id: Any, not_at: Any) -> ColumnElement[bool]:
        return and_(table.c.id == id, table.c.at.is_distinct_from(not_at))

    alone = (select(table.c.id, table.c.kind, table.c.at, table.c.doc)
             .where(found_by(bindparam("id"), bindparam("not_at", type_=UTCDateTime()))))
    together = BatchedRead(lambda q: select(q.c.n, table.c.id, table.c.kind, table.c.at, table.c.doc)
                           .select_from(q.outerjoin(table, found_by(q.c.id, q.c.not_at))),
                           (("id", Integer()), ("not_at", UTCDateTime())))
    questions: list[dict[str, Any]] = [{"id": k % 5, "not_at": None if k % 3 else at} for k in range(40)]
    reads = LoopReads(pg_engine_fresh)

    async def on_loop() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        try:
            return (await asyncio.gather(*(reads.ask(together, question) for question in questions)),
                    [await reads.ask(together, question) for question in questions[:15]])
        finally:
            await reads.close()

    found, one_by_one = asyncio.run(on_loop())
    with pg_engine_fresh.connect() as connection:
        expected = [db.first_row(connection, alone, question) or (None,) * 4 for question in questions]
    assert found == expected and one_by_one == expected[:15]
    assert found[1][2] == at and found[1][2].utcoffset() is not None and found[1][3] == {"x": [1, "é"], "y": None}
    assert found[12] == (2, None, None, None) and found[0] == found[6] == (None,) * 4  # none; the datetime compared


def test_a_questions_values_reach_the_statement_as_they_are(pg_engine_fresh: Engine) -> None:
    echo = BatchedRead(lambda q: select(q.c.n, q.c.s, q.c.i, q.c.at, q.c.day),
                       (("s", String()), ("i", BigInteger()), ("at", DateTime(timezone=True)), ("day", Date())))
    at = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    questions: list[dict[str, Any]] = [
        {"s": 'quote " backslash \\ new\nline tab\t é 😀 \u2028', "i": 2**40 + 1, "at": at, "day": at.date()},
        {"s": None, "i": None, "at": None, "day": None},
        {"s": "", "i": -(2**62), "at": at.astimezone(timezone.utc), "day": date(1, 1, 1)},
    ]
    reads = LoopReads(pg_engine_fresh)

    async def on_loop() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        try:  # together (one JSON parameter), then each alone (a parameter per value)
            return (await asyncio.gather(*(reads.ask(echo, question) for question in questions)),
                    [await reads.ask(echo, question) for question in questions])
        finally:
            await reads.close()

    found, alone = asyncio.run(on_loop())
    assert found == alone == [tuple(question.values()) for question in questions]
    assert found[0][2].microsecond == 123456


def _with_statement_counter(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE SEQUENCE loop_reads_statements"))


def test_questions_asked_together_go_in_one_statement_and_one_alone_goes_at_once(pg_engine_fresh: Engine) -> None:
    _with_statement_counter(pg_engine_fresh)
    reads = LoopReads(pg_engine_fresh)

    async def on_loop() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], tuple[Any, ...], float]:
        try:
            together = await asyncio.gather(*(reads.ask(_STATEMENT, {"x": x}) for x in range(1, 21)))
            # Asked while a statement of the same read is in flight: all in the next one.
            first = asyncio.ensure_future(reads.ask(_STATEMENT, {"x": 100}))
            await asyncio.sleep(0)
            await asyncio.sleep(0)  # the first statement is on its way
            behind = await asyncio.gather(first, *(reads.ask(_STATEMENT, {"x": x}) for x in range(101, 111)))
            started = time.monotonic()
            alone = await reads.ask(_STATEMENT, {"x": 7})
            return together, behind, alone, time.monotonic() - started
        finally:
            await reads.close()

    together, behind, alone, took = asyncio.run(on_loop())
    assert [row[1:] for row in together] == [(x, 1 // x) for x in range(1, 21)]  # each its own row
    assert {row[0] for row in together} == {1}
    assert behind[0][0] == 2 and {row[0] for row in behind[1:]} == {3}
    assert alone == (4, 7, 0) and took < 1


def test_a_failed_statement_fails_each_of_its_questions_with_its_error(pg_engine_fresh: Engine) -> None:
    _with_statement_counter(pg_engine_fresh)
    reads = LoopReads(pg_engine_fresh)

    async def on_loop() -> tuple[list[BaseException | tuple[Any, ...]], tuple[Any, ...]]:
        try:
            outcomes = await asyncio.gather(*(reads.ask(_STATEMENT, {"x": x}) for x in (3, 0, 5)),
                                            return_exceptions=True)
            return outcomes, await reads.ask(_STATEMENT, {"x": 2})  # the next statement, on a new connection
        finally:
            await reads.close()

    outcomes, after = asyncio.run(on_loop())
    assert all(isinstance(outcome, psycopg.errors.DivisionByZero) for outcome in outcomes)
    assert outcomes[0] is outcomes[1] is outcomes[2]
    assert after[1:] == (2, 0)


def test_after_a_burst_the_idle_kept_connections_stay_open(pg_engine_fresh: Engine) -> None:
    """A burst of writes and reads in flight at once opens a connection for each, all kept for the
    next statements; once none was taken for `idle_seconds` (or twice that), the loop keeps `LOOP_IDLE_KEPT` and
    the server sees the others close; the next burst opens again what it needs."""
    reads = LoopReads(pg_engine_fresh, idle_seconds=0.5)
    write, gated = text(f"SELECT pg_advisory_xact_lock_shared({_GATE})"), _gated()

    async def burst() -> int:
        # Every statement waits at the gate until the server has seen them all in flight: counted
        # at a fixed moment instead, a loaded machine had not opened them all yet (18 of 21).
        with _gate_held(pg_engine_fresh):
            work = [*(reads.write(write, {}) for _ in range(LOOP_WRITES_IN_FLIGHT)), reads.ask(gated, {"x": 1})]
            running = asyncio.gather(*work)
            # The gate's holder is one of the test's connections too.
            during = await asyncio.to_thread(_opened_up_to, pg_engine_fresh, LOOP_WRITES_IN_FLIGHT + 2) - 1
        await running
        return during

    async def on_loop() -> tuple[int, int, int, int, int, int]:
        try:
            during = await burst()
            right_after = reads.open_connections()
            await asyncio.sleep(1.3)  # two trims: those given back after the first came idle for one
            kept = reads.open_connections()
            seen = await asyncio.to_thread(_closed_down_to, pg_engine_fresh, kept)
            again = await burst()
            await asyncio.sleep(1.3)
            return during, right_after, kept, seen, again, reads.open_connections()
        finally:
            await reads.close()

    during, right_after, kept, seen, again, kept_again = asyncio.run(on_loop())
    assert during == right_after == again == LOOP_WRITES_IN_FLIGHT + 1
    assert kept == seen == kept_again == LOOP_IDLE_KEPT < LOOP_WRITES_IN_FLIGHT


_GATE = 4242  # the advisory lock a burst's statements wait for


def _gated() -> BatchedRead:
    """A read that waits at the gate (`_gate_held`)."""
    gate = select(func.pg_advisory_xact_lock_shared(literal_column(str(_GATE)))).subquery("gate")
    return BatchedRead(lambda q: select(q.c.n, q.c.x).select_from(q, gate), (("x", Integer()),))


@contextlib.contextmanager
def _gate_held(engine: Engine) -> Iterator[None]:
    """The gate closed (`_GATE` held exclusively by a connection of the test's) until the block ends."""
    with engine.connect() as holder:
        holder.execute(text(f"SELECT pg_advisory_lock({_GATE})"))
        try:
            yield
        finally:
            holder.execute(text(f"SELECT pg_advisory_unlock({_GATE})"))
            holder.invalidate()  # closed, not kept in the pool: the server counts the loop's alone


def _opened_up_to(engine: Engine, count: int) -> int:
    """Our connections the server sees, once it has seen `count` of them (or 10 s passed)."""
    deadline = time.monotonic() + 10
    while (seen := _our_connections(engine)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def test_connections_in_use_from_one_moment_to_the_next_are_kept(pg_engine_fresh: Engine) -> None:
    """Statements that keep coming take the idle connections in turn: none is closed, whatever
    `idle_seconds`, and none opened again."""
    reads = LoopReads(pg_engine_fresh, idle_seconds=0.2)
    write = text("SELECT pg_sleep(0.05)")

    async def on_loop() -> tuple[int, int]:
        try:
            await asyncio.gather(*(reads.write(write, {}) for _ in range(8)))
            backends = set()
            for _ in range(12):  # 8 at once every 0.05 s, for 0.6 s
                await asyncio.gather(*(reads.write(write, {}) for _ in range(8)))
                backends |= {row[0] for row in await asyncio.gather(
                    *(reads.write(text("SELECT pg_backend_pid()"), {}) for _ in range(8)))}
            return len(backends), reads.open_connections()
        finally:
            await reads.close()

    assert asyncio.run(on_loop()) == (8, 8)


def _closed_down_to(engine: Engine, count: int) -> int:
    """Our connections the server sees, once it has seen them close down to `count` (or 10 s passed)."""
    deadline = time.monotonic() + 10
    while (seen := _our_connections(engine)) > count and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def test_a_connection_the_server_closed_is_replaced_and_the_read_runs_again(pg_engine_fresh: Engine) -> None:
    reads = LoopReads(pg_engine_fresh)

    async def on_loop() -> tuple[int, int, int]:
        try:
            (before,) = await reads.ask(_BACKEND, {"x": 1})
            await asyncio.to_thread(_terminate, pg_engine_fresh, before)  # a restart, an idle timeout
            (after,) = await reads.ask(_BACKEND, {"x": 1})
            return before, after, reads.open_connections()
        finally:
            await reads.close()

    before, after, kept = asyncio.run(on_loop())
    assert before != after and kept == 1


def test_connections_are_opened_when_needed_kept_and_closed_by_close(pg_engine_fresh: Engine) -> None:
    reads = LoopReads(pg_engine_fresh)
    slow, other = _sleep(0.2), _sleep(0.1)

    async def on_loop() -> tuple[int, int, int, int]:
        opened_before = await asyncio.to_thread(_our_connections, pg_engine_fresh)
        # Two reads in flight at once, each a statement at a time: two connections.
        await asyncio.gather(*(reads.ask(slow, {"x": x}) for x in range(5)), *(reads.ask(other, {"x": x}) for x in range(5)))
        await asyncio.gather(*(reads.ask(slow, {"x": x}) for x in range(5)))
        kept = reads.open_connections()
        seen = await asyncio.to_thread(_our_connections, pg_engine_fresh)
        await reads.close()
        await asyncio.sleep(0)
        return opened_before, kept, seen, reads.open_connections()

    opened_before, kept, seen, after_close = asyncio.run(on_loop())
    assert (opened_before, kept, seen, after_close) == (0, 2, 2, 0)
    deadline = time.monotonic() + 10
    while _our_connections(pg_engine_fresh) and time.monotonic() < deadline:  # the server notices in its time
        time.sleep(0.05)
    assert _our_connections(pg_engine_fresh) == 0


def test_a_database_that_does_not_answer_fails_the_questions_within_the_timeout_and_the_loop_goes_on(
    silent_port: int
) -> None:
    engine = db.make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{silent_port}/nothing")
    reads = LoopReads(engine, timeout=0.5)

    async def on_loop() -> tuple[list[BaseException | tuple[Any, ...]], int, float]:
        ticks = 0

        async def ticking() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(ticking())
        started = time.monotonic()
        first = asyncio.ensure_future(reads.ask(_BACKEND, {"x": 1}))
        await asyncio.sleep(0.3)  # these wait behind the first statement, each bounded from when it was asked
        outcomes = await asyncio.gather(first, *(reads.ask(_BACKEND, {"x": x}) for x in range(3)),
                                        return_exceptions=True)
        took = time.monotonic() - started
        ticker.cancel()
        await reads.close()
        return outcomes, ticks, took

    try:
        outcomes, ticks, took = asyncio.run(on_loop())
    finally:
        engine.dispose()
    assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
    assert ticks >= 10  # the loop ran other work all along
    assert took < 1.5  # each given up at its timeout, not after psycopg's own waits nor the first's


def test_a_database_that_refuses_fails_the_read_with_the_drivers_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = db.make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing")
    reads = LoopReads(engine, timeout=5)

    async def on_loop() -> None:
        try:
            await reads.ask(_BACKEND, {"x": 1})
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


def test_a_question_whose_caller_goes_away_leaves_the_others_answered_and_the_connection_kept(
    pg_engine_fresh: Engine
) -> None:
    reads = LoopReads(pg_engine_fresh)
    slow = _sleep(0.3)

    async def on_loop() -> tuple[tuple[Any, ...], int]:
        caller = asyncio.create_task(reads.ask(slow, {"x": 1}))
        other = asyncio.create_task(reads.ask(slow, {"x": 2}))
        await asyncio.sleep(0.1)
        caller.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await caller
        answered = await other
        kept = reads.open_connections()
        await reads.close()
        return answered, kept

    assert asyncio.run(on_loop()) == ((2,), 1)


def test_a_statement_slower_than_the_timeout_fails_the_read_and_its_connection_is_dropped(
    pg_engine_fresh: Engine
) -> None:
    reads = LoopReads(pg_engine_fresh, timeout=0.3)

    async def on_loop() -> tuple[float, int, tuple[Any, ...]]:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await reads.ask(_sleep(30), {"x": 1})
        took = time.monotonic() - started
        await asyncio.sleep(0.5)  # psycopg has the server cancel the statement, then the connection goes
        dropped = reads.open_connections()
        after = await reads.ask(_sleep(0), {"x": 1})
        await reads.close()
        return took, dropped, after

    took, dropped, after = asyncio.run(on_loop())
    assert took < 2 and dropped == 0 and after == (1,)


def test_many_questions_probe_an_index_on_the_generic_plan(pg_engine_fresh: Engine) -> None:
    """The loop's connections run the generic plan: it must expect a few questions (the LIMIT by
    the batch's size), not json_to_recordset's 100, for which it hashed a whole table instead."""
    with pg_engine_fresh.begin() as connection:
        connection.execute(text("CREATE TABLE loop_reads_keys (kind varchar, key varchar, UNIQUE (kind, key))"))
        connection.execute(text("INSERT INTO loop_reads_keys SELECT 'k', 'key' || i FROM generate_series(1, 20000) AS i"))
        connection.execute(text("ANALYZE loop_reads_keys"))
    keys = table("loop_reads_keys", column("kind"), column("key"))
    read = BatchedRead(lambda q: select(q.c.n, exists().where(keys.c.kind == q.c.kind, keys.c.key == q.c.key)),
                       (("kind", String()), ("key", String())))
    sql, _ = db.driver_sql(read.many, pg_engine_fresh.dialect, {"questions": "", "count": 0})
    questions = json.dumps([{"kind": "k", "key": f"key{i}"} for i in range(16)])
    with psycopg.connect(pg_engine_fresh.url.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as connection:
        connection.execute("SET plan_cache_mode = force_generic_plan")
        connection.execute("PREPARE many (text, bigint) AS "
                           + sql.replace("%(questions)s", "$1").replace("%(count)s", "$2"))
        plan = "\n".join(row[0] for row in connection.execute(
            psycopg.sql.SQL("EXPLAIN ANALYZE EXECUTE many({}, 16)").format(psycopg.sql.Literal(questions))))
    assert "Index Cond: ((kind = (q.kind)::text) AND (key = (q.key)::text))" in plan, plan
    assert "loops=16" in plan and "rows=20000" not in plan, plan


def test_a_statement_with_a_value_of_its_own_is_refused() -> None:
    """A value of the statement's own would be a parameter beside the questions' (a plan per value
    where literals differ); it goes in as a literal column instead."""
    with pytest.raises(ValueError, match="only parameters"):
        BatchedRead(lambda q: select(q.c.n, q.c.x + 1), (("x", Integer()),))
    BatchedRead(lambda q: select(q.c.n, q.c.x + literal_column("1")), (("x", Integer()),))
def test_a_write_is_its_own_transaction_and_goes_on_a_new_connection_when_its_idle_one_was_closed(
    pg_engine_fresh: Engine
) -> None:
    """`LoopReads.write`: one statement in autocommit (seen by another connection at once); the idle
    connection it would take was closed by the server (a restart, an idle timeout) and the loop has
    seen it: nothing was sent, so the write goes once, on a new connection, instead of raising (the
    webhook it writes for was answered 500 until tail14)."""
    with pg_engine_fresh.begin() as connection:
        connection.execute(text("CREATE TABLE loop_writes (id serial PRIMARY KEY, note varchar UNIQUE)"))
    reads = LoopReads(pg_engine_fresh)
    insert = text("INSERT INTO loop_writes (note) VALUES (:note) ON CONFLICT (note) DO NOTHING RETURNING id")
    backend = text("SELECT pg_backend_pid()")

    async def on_loop() -> tuple[list[Any], list[Any], int, list[Any], int, int, list[Any]]:
        try:
            first = await reads.write(insert, {"note": "a"})
            again = await reads.write(insert, {"note": "a"})
            ((pid,),) = await reads.write(backend, {})
            await asyncio.to_thread(_terminate_and_wait, pg_engine_fresh, pid)
            await asyncio.sleep(0.1)  # the loop sees the socket close
            written = await reads.write(insert, {"note": "b"})
            kept = reads.open_connections()
            ((now,),) = await reads.write(backend, {})
            return first, again, pid, written, kept, now, await reads.write(insert, {"note": "c"})
        finally:
            await reads.close()

    first, again, pid, written, kept, now, after = asyncio.run(on_loop())
    assert len(first) == 1 and again == [] and len(written) == 1 and len(after) == 1
    assert kept == 1 and now != pid  # the closed one dropped, the new one kept
    with pg_engine_fresh.connect() as connection:
        assert connection.execute(text("SELECT note FROM loop_writes ORDER BY id")).scalars().all() == ["a", "b", "c"]


def _terminate_and_wait(engine: Engine, pid: int) -> None:
    """Terminate a backend and wait until the server no longer lists it (it has closed its socket)."""
    _terminate(engine, pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                  {"pid": pid}).scalar_one() == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} still listed")


def _terminate_when_running(engine: Engine, pattern: str) -> int:
    """Terminate the backend running a statement like `pattern`, once it runs (or 10 s passed): its pid."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            pid = connection.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state = 'active' AND query LIKE :pattern"), {"pattern": pattern}).scalar()
        if pid is not None:
            _terminate(engine, pid)
            return int(pid)
        time.sleep(0.02)
    raise AssertionError(f"no statement like {pattern} ran")


def test_a_connection_lost_mid_statement_runs_a_read_again_and_fails_a_write_sent_once(pg_engine_fresh: Engine) -> None:
    """The server ends the connection while a statement runs on it: a read is run again on a new
    connection, a write raises (its outcome unknown) and is not sent again."""
    with pg_engine_fresh.begin() as connection:
        connection.execute(text("CREATE TABLE loop_lost (note varchar)"))
    reads = LoopReads(pg_engine_fresh)
    slow = _sleep(0.4)
    insert = text("INSERT INTO loop_lost SELECT :note FROM pg_sleep(0.4)")

    async def on_loop() -> tuple[tuple[Any, ...], int, BaseException | None, int]:
        try:
            await reads.ask(_BACKEND, {"x": 1})  # a connection open and idle: the read's is a reused one
            asked = asyncio.ensure_future(reads.ask(slow, {"x": 7}))
            first = await asyncio.to_thread(_terminate_when_running, pg_engine_fresh, "%pg_sleep%")
            answered = await asyncio.wait_for(asked, 5)
            written = asyncio.ensure_future(reads.write(insert, {"note": "lost"}))
            await asyncio.to_thread(_terminate_when_running, pg_engine_fresh, "INSERT INTO loop_lost%")
            try:
                await written
                failure = None
            except psycopg.OperationalError as error:
                failure = error
            (after,) = await reads.ask(_BACKEND, {"x": 1})
            return answered, first, failure, after
        finally:
            await reads.close()

    answered, first, failure, after = asyncio.run(on_loop())
    assert answered == (7,) and failure is not None and after != first
    assert not isinstance(failure, NotSent)  # sent, then lost: its outcome unknown, never sent again
    time.sleep(0.6)  # had it been sent again, it would have written by now
    with pg_engine_fresh.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM loop_lost")).scalar_one() == 0


def test_a_statement_the_server_cannot_prepare_fails_its_questions_and_the_next_goes_on(pg_engine_fresh: Engine) -> None:
    missing = table("loop_reads_missing", column("x"))
    broken = BatchedRead(lambda q: select(q.c.n, exists().where(missing.c.x == q.c.x)), (("x", Integer()),))
    reads = LoopReads(pg_engine_fresh)

    async def on_loop() -> tuple[list[BaseException | tuple[Any, ...]], tuple[Any, ...]]:
        try:
            outcomes = await asyncio.gather(reads.ask(broken, {"x": 1}), reads.ask(broken, {"x": 2}),
                                            return_exceptions=True)
            return outcomes, await reads.ask(_BACKEND, {"x": 1})
        finally:
            await reads.close()

    outcomes, after = asyncio.run(on_loop())
    assert all(isinstance(outcome, psycopg.errors.UndefinedTable) for outcome in outcomes)
    assert isinstance(after[0], int)


def test_values_of_other_types_for_one_statement_and_a_value_larger_than_the_sockets_buffer(
    pg_engine_fresh: Engine
) -> None:
    """One statement given a small and a large integer (psycopg dumps them as int2 and int8: a
    statement prepared for each), and a value of megabytes (sent over many turns of the loop)."""
    reads = LoopReads(pg_engine_fresh)
    echo = text("SELECT CAST(:x AS bigint), length(CAST(:s AS text))")
    large = "é" * (4 << 20)

    async def on_loop() -> list[list[Any]]:
        try:
            return [await reads.write(echo, {"x": x, "s": s}) for x, s in ((1, "a"), (2**40, "b"), (3, large))]
        finally:
            await reads.close()

    assert asyncio.run(on_loop()) == [[(1, 1)], [(2**40, 1)], [(3, len(large))]]


def test_a_write_given_up_or_whose_caller_goes_away_is_cancelled_on_the_server(pg_engine_fresh: Engine) -> None:
    """A write past its timeout raises `TimeoutError` at the deadline, and one whose caller is
    cancelled stops there: the server is asked to cancel each statement (neither commits, no
    backend keeps running it), and the next write takes a connection that works."""
    with pg_engine_fresh.begin() as connection:
        connection.execute(text("CREATE TABLE loop_given_up (note varchar)"))
    reads = LoopReads(pg_engine_fresh, timeout=0.3)
    slow = text("INSERT INTO loop_given_up SELECT :note FROM pg_sleep(3)")

    async def on_loop() -> tuple[float, int, list[Any]]:
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await reads.write(slow, {"note": "timed out"})
            took = time.monotonic() - started
            caller = asyncio.create_task(reads.write(slow, {"note": "caller gone"}))
            await asyncio.sleep(0.1)
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            running = await asyncio.to_thread(_still_running, pg_engine_fresh, "INSERT INTO loop_given_up%")
            return took, running, await reads.write(text("SELECT CAST(:x AS integer)"), {"x": 5})
        finally:
            await reads.close()

    took, running, after = asyncio.run(on_loop())
    assert took < 1 and running == 0 and after == [(5,)]
    time.sleep(0.2)
    with pg_engine_fresh.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM loop_given_up")).scalar_one() == 0


def _still_running(engine: Engine, pattern: str) -> int:
    """Statements like `pattern` still running once none is (or 2 s passed)."""
    deadline = time.monotonic() + 2
    while True:
        with engine.connect() as connection:
            running = int(connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                "AND pid <> pg_backend_pid() AND query LIKE :pattern"), {"pattern": pattern}).scalar_one())
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)
