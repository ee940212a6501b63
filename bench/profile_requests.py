"""What one request costs in database work (not a test, not a benchmark of speed):

    .venv/bin/python bench/profile_requests.py [--postgres URL | --sqlite PATH] [--requests 200]

Runs the app in-process (httpx's ASGI transport, one request at a time) on a bench book and,
per kind of request (the magic link again, first opens, new and duplicate webhook events, new
events that change their payment, the statement page; card successes with `--only
webhook_success`), counts the SQL statements SQLAlchemy
sends (and the ORM flushes that wrote anything), and on PostgreSQL the round trips to the server (every Sync or simple Query message of the wire protocol, read from libpq's trace:
BEGIN, COMMIT, ROLLBACK and pings included), and the process CPU per request (client included:
compare kinds and versions, not engines), and on PostgreSQL the CPU of the server processes
serving this process's connections (read from /proc: the server must run on this machine). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import pstats
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from sqlalchemy.pool import Pool  # noqa: E402

from bench import run  # noqa: E402
from bench.harness import (WEBHOOK_INTENT, declined_event,  # noqa: E402
                           webhook_checkout)
from bench.cpu import cpu_seconds  # noqa: E402
from bench.generate import sqlite_path  # noqa: E402
from links import tokens  # noqa: E402

TRACE = Path(tempfile.mkdtemp(prefix="encours-trace-")) / "libpq.trace"
statements: collections.Counter[str] = collections.Counter()
# --timings: each statement's text -> [count, seconds from before to after cursor execute, rows, one parameter set]
TIMINGS: dict[str, list[Any]] = {}
PROFILE = False
BACKENDS: set[int] = set()  # PostgreSQL server processes of our connections (the server runs on this machine)


FLUSHES = collections.Counter[str]()  # the ORM flushes that had something to write, per request kind


def _count_flush(session: Any, context: Any, instances: Any) -> None:
    FLUSHES["flushes"] += 1


def _count_statement(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
    statements[statement.split(None, 1)[0].upper()] += 1
    if TIMING:
        conn.info["started"] = time.perf_counter()


def _time_statement(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
    entry = TIMINGS.setdefault(statement, [0, 0.0, 0, parameters])
    entry[0] += 1
    entry[1] += time.perf_counter() - conn.info.pop("started")
    entry[2] += max(cursor.rowcount, 0)


TIMING = False


def _trace(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection = getattr(dbapi_connection, "driver_connection", dbapi_connection)  # an asyncio engine's
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:
        return
    from psycopg import pq

    BACKENDS.add(int(dbapi_connection.info.backend_pid))
    handle = open(TRACE, "a")  # noqa: SIM115 - kept open for the connection's life
    record.info["trace"] = handle
    pgconn.trace(handle.fileno())
    pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)


def _round_trips() -> collections.Counter[str]:
    """Frontend Sync and simple Query messages in the trace so far (one round trip each): the
    simple queries by their text (BEGIN, COMMIT, ROLLBACK, ";" a ping), the rest as "statement"."""
    counts: collections.Counter[str] = collections.Counter()
    if not TRACE.exists():
        return counts
    for line in TRACE.read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0] != "F":
            continue
        if parts[2] == "Query":
            counts["\t".join(parts[3:]).strip().strip('"') or "?"] += 1
        elif parts[2] == "Sync":
            counts["statement"] += 1
    return counts


def _measure(client: httpx.AsyncClient, requests: list[dict[str, Any]], expect: int) -> dict[str, Any]:
    async def go() -> None:
        for request in requests:
            response = await client.request(**request)
            assert response.status_code == expect, (response.status_code, response.text[:300])

    TRACE.write_text("")
    statements.clear()
    FLUSHES.clear()
    TIMINGS.clear()
    profiler = cProfile.Profile() if PROFILE else None
    started = time.process_time()
    server_before = cpu_seconds(sorted(BACKENDS))
    if profiler:
        profiler.enable()
    asyncio.get_event_loop().run_until_complete(go())
    cpu = time.process_time() - started
    server = cpu_seconds(sorted(BACKENDS)) - server_before
    if profiler:
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats(os.environ.get("SORT", "cumulative"))
        stats.print_stats(40)
        if os.environ.get("CALLEES"):
            stats.print_callees(os.environ["CALLEES"])
    n = len(requests)
    trips = _round_trips()
    return {"requests": n, "cpu_ms_per_request": round(1000 * cpu / n, 3),
            "postgres_cpu_ms_per_request": round(1000 * server / n, 3) if BACKENDS else None,
            "statements_per_request": round(sum(statements.values()) / n, 2),
            "orm_flushes_per_request": round(FLUSHES["flushes"] / n, 2),
            "statements": {k: round(v / n, 2) for k, v in statements.most_common()},
            "round_trips_per_request": round(sum(trips.values()) / n, 2) if trips else None,
            "round_trips": {k: round(v / n, 2) for k, v in trips.most_common()},
            **({"statement_timings": [
                {"statement": " ".join(text.split()), "per_request": round(count / n, 2),
                 "wall_ms_each": round(1000 * seconds / count, 3), "rows_each": round(rows / count, 1),
                 "parameters": repr(parameters)}
                for text, (count, seconds, rows, parameters) in TIMINGS.items()]} if TIMING else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--sqlite", metavar="PATH", default=str(sqlite_path(50_000, 1_000_000)))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--only", metavar="KIND", help="measure only this kind (e.g. webhook_new; under py-spy)")
    parser.add_argument("--cprofile", metavar="KIND", help="print cProfile's top functions for this kind on stderr")
    parser.add_argument("--timings", action="store_true",
                        help="each statement's text, parameters, rows (the driver's rowcount: none from SQLite's "
                             "sqlite3 for a SELECT) and wall time from cursor execute to its end")
    args = parser.parse_args()
    global TIMING
    TIMING = args.timings
    url = args.postgres or f"sqlite:///{args.sqlite}"
    event.listen(Engine, "before_cursor_execute", _count_statement)
    if TIMING:
        event.listen(Engine, "after_cursor_execute", _time_statement)
    event.listen(Pool, "connect", _trace)
    event.listen(Session, "before_flush", _count_flush)

    from encours.app import create_app
    from kernel.settings import load_settings

    ctx = run.Context(url=url, duration=1, connections=1, threads=1, workers=1)
    env = run._stripe_env(ctx)
    os.environ.update(env)
    app = create_app(load_settings(env))
    contact = run._statement_contact(url)
    n = args.requests
    others = run._contacts(url, 20_000)[-n:] if not args.only else []
    checkout = webhook_checkout(url)
    run_id = os.urandom(4).hex()

    def webhook(event_id: str, payment: tuple[int, int, str] = checkout, intent: str = WEBHOOK_INTENT,
                message: str = "Your card was declined.") -> dict[str, Any]:
        payload = declined_event(payment, event_id, message, intent=intent)
        return {"method": "POST", "url": "/webhooks/stripe", "content": payload,
                "headers": {"Stripe-Signature": run.stripe_signature(payload), "Content-Type": "application/json"}}

    def changing(prefix: str, count: int) -> list[dict[str, Any]]:
        """Events that change their payment, as `bench/run.py`'s: a new decline reason each, over its payments."""
        payments = [(webhook_checkout(url, f"{WEBHOOK_INTENT}_{k}"), f"{WEBHOOK_INTENT}_{k}")
                    for k in range(run.CHANGING_PAYMENTS)]
        return [webhook(f"{prefix}{i}", *payments[i % len(payments)],
                        message=run.DECLINE_REASONS[i // len(payments) % 2]) for i in range(count)]

    agent = {"User-Agent": f"profile/{time.time_ns()}"}
    same = {"method": "GET", "url": f"/p/{tokens.make_token(run.SECRET, contact)}", "headers": agent}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    results: dict[str, Any] = {"url": url.split("@")[-1]}
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000)),
                               base_url="http://127.0.0.1", follow_redirects=False)
    # As a server runs the app: inside its lifespan.
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    try:
        global PROFILE
        if args.only == "webhook_change":
            _measure(client, changing(f"evt_prof_change_warm_{run_id}_", 64), 200)
            PROFILE = args.cprofile == "webhook_change"
            results["webhook_change"] = _measure(client, changing(f"evt_prof_change_{run_id}_", n), 200)
            return
        if args.only == "webhook_success":
            # Card successes, as `bench/run.py`'s: a new card checkout each, prepared beforehand;
            # the first ones warm the process (templates, caches) and are not counted.
            warm = 10
            successes = [{"method": method, "url": path, "content": body.encode(),
                          "headers": {"Stripe-Signature": signature, "Content-Type": "application/json"}}
                         for method, path, signature, body in run.success_requests(url, f"prof_success_{run_id}",
                                                                                  warm + n)]
            _measure(client, successes[:warm], 200)
            PROFILE = args.cprofile == "webhook_success"
            results["webhook_success"] = _measure(client, successes[warm:], 200)
            return
        if args.only == "statement_page":
            # The cookie the first page sets (with its CSRF token), as a browser and `bench/run.py` send it.
            cookie = loop.run_until_complete(client.get(same["url"])).headers["set-cookie"].split(";", 1)[0]
            first = loop.run_until_complete(client.get("/portal", headers={"Cookie": cookie}))
            page = {"method": "GET", "url": "/portal", "headers": {"Cookie": run.kept_cookie(first, cookie)}}
            _measure(client, [page] * 20, 200)
            PROFILE = args.cprofile == "statement_page"
            results["statement_page"] = _measure(client, [page] * n, 200)
            return
        if args.only in ("webhook_new", "webhook_duplicate"):
            _measure(client, [webhook(f"evt_prof_warm_{run_id}_{i}") for i in range(20)], 200)
            PROFILE = args.cprofile == "webhook_new"
            new = [webhook(f"evt_prof_{run_id}_{i}") for i in range(n)]
            results["webhook_new"] = _measure(client, new, 200)
            PROFILE = args.cprofile == "webhook_duplicate"
            results["webhook_duplicate"] = _measure(client, [new[0]] * n, 200)
            return
        _measure(client, [same] * 20, 303)  # warm-up: pool, prepared statements, caches
        PROFILE = args.cprofile == "magic_link_same"
        results["magic_link_same"] = _measure(client, [same] * n, 303)
        PROFILE = args.cprofile == "magic_link_first_open"
        results["magic_link_first_open"] = _measure(
            client, [{"method": "GET", "url": f"/p/{tokens.make_token(run.SECRET, c)}", "headers": agent}
                     for c in others], 303)
        _measure(client, [webhook(f"evt_prof_warm_{run_id}_{i}") for i in range(20)], 200)
        new = [webhook(f"evt_prof_{run_id}_{i}") for i in range(n)]
        PROFILE = args.cprofile == "webhook_new"
        results["webhook_new"] = _measure(client, new, 200)
        PROFILE = False
        results["webhook_duplicate"] = _measure(client, [new[0]] * n, 200)
        _measure(client, changing(f"evt_prof_change_warm_{run_id}_", 64), 200)
        PROFILE = args.cprofile == "webhook_change"
        results["webhook_change"] = _measure(client, changing(f"evt_prof_change_{run_id}_", n), 200)
        PROFILE = False
        cookie = loop.run_until_complete(client.get(same["url"])).headers["set-cookie"].split(";", 1)[0]
        results["statement_page"] = _measure(client, [{"method": "GET", "url": "/portal",
                                                       "headers": {"Cookie": cookie}}] * max(20, n // 10), 200)
        results["healthz"] = _measure(client, [{"method": "GET", "url": "/healthz"}] * n, 200)
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
