"""App CPU of one loop read (kernel.loop_reads) on PostgreSQL, in-process: `time.process_time` over
`--questions` questions asked one after another (a batch of one each, as a duplicate delivery asks
it at the bench's load) or `--together` at a time, best of `--repeats`; beside it the same statement
through psycopg's `AsyncConnection.execute` alone and the asyncio floor (a task and a future per
question, no database). Not a test: figures for bench/RESULTS.md.

    .venv/bin/python bench/loop_reads_cost.py postgresql+psycopg://postgres@127.0.0.1:55432/me_book
    git show BASE:kernel/loop_reads.py > /tmp/base_loop_reads.py   # then --base /tmp/base_loop_reads.py:
    # that module's LoopReads timed in turn with this tree's, in the same process
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from sqlalchemy import text

from kernel import db
from kernel.db import driver_sql
from kernel.loop_reads import LoopReads
from payments.webhooks import stored_and_payment_asked


def _question(k: int) -> dict[str, Any]:
    # Not stored: the read a new event asks; a stored one costs the same statement.
    return {"provider": "stripe", "event_id": f"evt_cost_{k}", "payment_provider": None, "provider_ref": None}


async def _timed(name: str, questions: int, together: int, repeats: int,
                 ask: Callable[[int], Awaitable[Any]]) -> None:
    best = float("inf")
    for _ in range(repeats):
        start, wall = time.process_time(), time.perf_counter()
        for k in range(0, questions, together):
            await asyncio.gather(*(ask(k + i) for i in range(together)))
        best = min(best, time.process_time() - start)
        elapsed = time.perf_counter() - wall
    print(f"{name:<44} {best / questions * 1e6:8.1f} µs app CPU a question "
          f"({questions} questions, {together} at a time, last {elapsed / questions * 1e6:.0f} µs wall)")


def _each(name: str, piece: Callable[[int], Any], times: int = 20_000) -> None:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for k in range(times):
            piece(k)
        best = min(best, time.process_time() - start)
    print(f"{name:<44} {best / times * 1e6:8.2f} µs app CPU")


async def _parts(engine: Any, read: Any) -> None:
    """The Python a loop read runs besides the round trip, piece by piece (kernel.loop_reads._Link)."""
    from psycopg.adapt import PyFormat

    from kernel.loop_reads import _numbered
    reads = LoopReads(engine)
    link = await reads._connect()
    sql, arguments = driver_sql(read.one, engine.dialect, _question(0))
    await link.run(sql, arguments)
    _, names = _numbered(sql)
    assert names is not None
    transformer = link.transformer
    _each("driver_sql (compiled once: the parameters)", lambda k: driver_sql(read.one, engine.dialect, _question(k)))
    _each("placeholders numbered (cached), values ordered", lambda k: [arguments[n] for n in _numbered(sql)[1] or ()])
    _each("parameters dumped (psycopg's C Transformer)",
          lambda k: transformer.dump_sequence([arguments[n] for n in names], [PyFormat.AUTO] * len(names)))
    rows = link.transformer.dump_sequence([arguments[n] for n in names], [PyFormat.AUTO] * len(names))
    link.pgconn.send_query_prepared(b"loop_0", rows, param_formats=transformer.formats)
    link.answer = asyncio.get_running_loop().create_future()
    result = await link.answer
    _each(f"a row of {result.nfields} columns loaded", lambda k: (
        transformer.set_pgresult(result), transformer.load_rows(0, result.ntuples, tuple)))
    loop = asyncio.get_running_loop()

    async def nothing() -> None:
        return None
    for name, step, times in (("a task created and awaited", lambda: loop.create_task(nothing()), 5000),
                              ("a turn of the loop (sleep(0))", lambda: asyncio.sleep(0), 5000),
                              ("a loop connection's run, whole", lambda: link.run(sql, arguments), 3000)):
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for _ in range(times):
                await step()
            best = min(best, time.process_time() - start)
        print(f"{name:<44} {best / times * 1e6:8.2f} µs app CPU")
    await link.close()
    await reads.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--questions", type=int, default=5000)
    parser.add_argument("--together", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base", help="another kernel/loop_reads.py, its LoopReads timed in turn with this one's")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every kind, alternated")
    parser.add_argument("--parts", action="store_true", help="only the Python pieces of one read, each alone")
    args = parser.parse_args()
    engine = db.make_engine(args.url)
    read = stored_and_payment_asked()
    if args.parts:
        await _parts(engine, read)
        engine.dispose()
        return
    reads = LoopReads(engine)
    await reads.ask(read, _question(0))
    base_reads = None
    if args.base:
        spec = importlib.util.spec_from_file_location("base_loop_reads", args.base)
        assert spec is not None and spec.loader is not None
        base = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(base)
        base_reads = base.LoopReads(engine)
        await base_reads.ask(read, _question(0))

    loop = asyncio.get_running_loop()

    async def floor(k: int) -> Any:
        answer: asyncio.Future[Any] = loop.create_future()

        async def work() -> None:
            answer.set_result(k)
        loop.create_task(work())
        return await answer

    sql, arguments = driver_sql(read.one, engine.dialect, _question(0))
    _, params = engine.dialect.create_connect_args(engine.url)
    connection = await psycopg.AsyncConnection.connect(autocommit=True, **params)
    await connection.execute("SET plan_cache_mode = force_generic_plan")

    async def bare(k: int) -> Any:
        cursor = await connection.execute(sql, driver_sql(read.one, engine.dialect, _question(k))[1])
        return await cursor.fetchall()

    async def asked(k: int) -> Any:
        return await reads.ask(read, _question(k))

    link = await reads._connect()

    async def linked(k: int) -> Any:
        return await link.run(sql, driver_sql(read.one, engine.dialect, _question(k))[1])

    async def base_asked(k: int) -> Any:
        assert base_reads is not None
        return await base_reads.ask(read, _question(k))

    # A write's machinery (its turn, its task, its deadline) around a statement that writes nothing.
    nothing = text("SELECT CAST(:k AS integer)")

    async def written(k: int) -> Any:
        return await reads.write(nothing, {"k": k})

    async def base_written(k: int) -> Any:
        assert base_reads is not None
        return await base_reads.write(nothing, {"k": k})

    kinds = [("asyncio floor (task + future)", floor), ("psycopg AsyncConnection.execute + fetchall", bare),
             ("a loop connection's run (kernel.loop_reads._Link)", linked), ("LoopReads.ask", asked)]
    if args.together > 1:  # one statement at a time on one connection: only LoopReads batches them
        kinds = [kind for kind in kinds if kind[1] not in (bare, linked)]
    if base_reads is not None:
        kinds.append(("LoopReads.ask of --base", base_asked))
    kinds.append(("LoopReads.write (SELECT)", written))
    if base_reads is not None:
        kinds.append(("LoopReads.write (SELECT) of --base", base_written))
    for _ in range(args.rounds):
        for name, ask in kinds:
            await _timed(name, args.questions, args.together, args.repeats, ask)
    await connection.close()
    await link.close()
    await reads.close()
    if base_reads is not None:
        await base_reads.close()
    engine.dispose()


if __name__ == "__main__":
    import uvloop
    uvloop.run(main())
