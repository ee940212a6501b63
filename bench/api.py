"""Timing of the ERP API (issue 18; not a test).

    .venv/bin/python bench/api.py                          # SQLite: both scenarios
    .venv/bin/python bench/api.py --postgres-throwaway     # the same on a throwaway PostgreSQL server
    .venv/bin/python bench/api.py --postgres postgresql+psycopg://postgres@127.0.0.1:55432/me_book
                                                           # lists on that book (a copy of the shared
                                                           # book_0022_tpl), upsert on a scratch db beside it
    .venv/bin/python bench/api.py --small --only lists     # 2,000 customers / 40,000 invoices
    make bench-api                                         # both, on SQLite then on PostgreSQL

`upsert`: on a fresh, migrated database (a scratch SQLite file, or a new database on the
PostgreSQL server), a company and its API key made as `encours apikey create` makes them, 2,000
customers through `POST /api/v1/customers:bulk`, then 100,000 invoices through
`POST /api/v1/invoices:bulk`, 1,000 per request (created), then the same 100,000 again (the
ERP's next sync: all unchanged), then again with a new due date (all updated). Target: each
100,000 in at most 60 s.

`lists`: on the cached bench book (`bench/generate.py`: 50,000 customers, 1,000,000 invoices),
with an API key of BENCH-FR made once, each list endpoint and filter (first page, a deep cursor,
status, customer, due dates, updated since, customers, payments, events, a read by number),
one request at a time. Target: p95 ≤ 50 ms.

Requests go in-process through the whole ASGI app (routing, key check and rate limit, JSON
validation, SQL, serialisation) with Starlette's TestClient, one at a time: wall time, and this
process's CPU time (all its threads; on PostgreSQL the server's own CPU is read from /proc).
A readable table on stderr, one JSON document on stdout; record the figures in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from bench.generate import CACHE_DIR, NOW, STATEMENT_CUSTOMER, ensure_book  # noqa: E402
from bench.harness import BOOK_KEY, ensure_book_key, percentile  # noqa: E402
from bench.run import SECRET, machine  # noqa: E402
from encours.app import create_app  # noqa: E402
from kernel.clock import clock  # noqa: E402
from kernel.db import make_engine, make_sessionmaker, unit_of_work, upgrade  # noqa: E402
from kernel.settings import load_settings  # noqa: E402
from ledger.api_keys import create_key  # noqa: E402
from ledger.companies import create_company  # noqa: E402
from ledger.models import Invoice  # noqa: E402
from api.service import encode_cursor  # noqa: E402

UPSERT_TARGET_S = 60.0
LIST_TARGET_MS = 50.0
BATCH = 1_000
CUSTOMERS = 2_000
POSTGRES_CONFIG = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "shared_buffers": "256MB"}


def _settings(url: str) -> Any:
    return load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": SECRET,
                          "ENCOURS_BASE_URL": "http://127.0.0.1", "ENCOURS_API_RATE_PER_MINUTE": "100000000"})


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds used so far by each of these processes and its waited-for children."""
    found: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks  # utime stime cutime cstime
    return found


def _database_pids(url: str) -> list[int]:
    """The backends serving `url`'s database now, on a server of this machine that is not ours
    (the shared bench server): only them, not the other databases' backends."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))
                .scalars())
    finally:
        engine.dispose()


def _server_cpu_since(started: dict[int, float], pids: list[int]) -> float:
    """CPU the server's processes `pids` used since `started` (a process new since then from zero)."""
    return sum(cpu - started.get(pid, 0.0) for pid, cpu in _cpu_by_pid(pids).items())


def _postgres_pids(data_dir: Path | None) -> list[int]:
    """The processes of the PostgreSQL server in `data_dir` (its postmaster and the backends it
    forked), so that other servers on the machine are not counted; none for a server not ours."""
    if data_dir is None:
        return []
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == postmaster:
                pids.append(int(entry.name))
    return pids


# --- upsert ------------------------------------------------------------------------------------


def _invoice(number: int, customers: int, due: date) -> dict[str, Any]:
    return {"number": f"API-{number:07d}", "customer_ref": f"ERP-{number % customers:05d}",
            "issue_date": (due - timedelta(days=30)).isoformat(), "due_date": due.isoformat(),
            "currency": "EUR", "amount": f"{100 + number % 9_900}.{number % 100:02d}"}


def upsert(url: str, invoices: int, postgres: bool, data_dir: Path | None = None) -> dict[str, Any]:
    engine = make_engine(url)
    with unit_of_work(make_sessionmaker(engine)) as session:
        create_company(session, code="BENCH-API", name="Bench API SAS", currency="EUR")
        _, key = create_key(session, "BENCH-API", "bench-erp")
    engine.dispose()
    app = create_app(_settings(url))
    auth = {"Authorization": f"Bearer {key}"}
    passes: list[dict[str, Any]] = []
    with TestClient(app, base_url="http://testserver") as client:
        for start in range(0, CUSTOMERS, BATCH):
            items = [{"ref": f"ERP-{n:05d}", "name": f"Client ERP {n:05d}", "email": f"ap{n:05d}@erp.example",
                      "language": "fr"} for n in range(start, min(CUSTOMERS, start + BATCH))]
            response = client.post("/api/v1/customers:bulk", json={"items": items}, headers=auth)
            if response.status_code != 200:
                raise SystemExit(f"customers:bulk: HTTP {response.status_code} {response.text[:500]}")
        due = date(2026, 12, 31)
        for label, due_date, expect in (("create", due, "created"), ("re-send unchanged", due, "unchanged"),
                                        ("update due date", due + timedelta(days=15), "updated")):
            bodies = [json.dumps({"items": [_invoice(n, CUSTOMERS, due_date)
                                            for n in range(start, min(invoices, start + BATCH))]})
                      for start in range(0, invoices, BATCH)]
            def server_pids() -> list[int]:
                if not postgres:
                    return []
                return _postgres_pids(data_dir) if data_dir is not None else _database_pids(url)

            server_cpu_started = _cpu_by_pid(server_pids())
            timings: list[float] = []
            counted = 0
            started, cpu_started = time.perf_counter(), time.process_time()
            for body in bodies:
                one = time.perf_counter()
                response = client.post("/api/v1/invoices:bulk", content=body,
                                       headers={**auth, "Content-Type": "application/json"})
                timings.append((time.perf_counter() - one) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"invoices:bulk ({label}): HTTP {response.status_code} {response.text[:500]}")
                counted += response.json()[expect]
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            passes.append({
                "pass": label, "invoices": invoices, "requests": len(bodies), expect: counted,
                "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                "database_server_cpu_s": round(_server_cpu_since(server_cpu_started, server_pids()), 1)
                if postgres else None,
                "request_median_ms": round(statistics.median(timings), 1),
                "request_p95_ms": round(percentile(timings, 0.95), 1),
                "invoices_per_s": round(invoices / wall), "target_s": UPSERT_TARGET_S, "met": wall <= UPSERT_TARGET_S,
            })
            print(f"bench api: upsert {label}: {wall:.1f} s", file=sys.stderr, flush=True)
    return {"scenario": "upsert", "results": passes}


# --- lists -------------------------------------------------------------------------------------



def _variants(url: str) -> list[tuple[str, str, dict[str, str]]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            low, high = connection.execute(select(func.min(Invoice.id), func.max(Invoice.id))
                                           .where(Invoice.company_id == 1)).one()
            number = connection.execute(select(Invoice.number).where(Invoice.id == (low + high) // 2)).scalar_one()
    finally:
        engine.dispose()
    recent = (NOW - timedelta(days=2)).isoformat()
    return [
        ("invoices, first page (100)", "/api/v1/invoices", {}),
        ("invoices, first page (500)", "/api/v1/invoices", {"limit": "500"}),
        ("invoices, a deep cursor (middle of the book)", "/api/v1/invoices", {"cursor": encode_cursor((low + high) // 2)}),
        ("invoices, status open", "/api/v1/invoices", {"status": "open"}),
        ("invoices, status disputed", "/api/v1/invoices", {"status": "disputed"}),
        ("invoices, one customer (BENCH-200)", "/api/v1/invoices", {"customer": STATEMENT_CUSTOMER}),
        ("invoices, due in a week", "/api/v1/invoices", {"due_from": "2026-12-01", "due_to": "2026-12-07"}),
        ("invoices, updated since 2 days", "/api/v1/invoices", {"updated_since": recent}),
        ("invoice by number", f"/api/v1/invoices/{number}", {}),
        ("customers, first page", "/api/v1/customers", {}),
        ("customers, a deep cursor", "/api/v1/customers", {"cursor": encode_cursor(12_000)}),
        ("customer by reference", f"/api/v1/customers/{STATEMENT_CUSTOMER}", {}),
        ("payments, first page", "/api/v1/payments", {}),
        ("payments since 2 days", "/api/v1/payments", {"since": recent}),
        ("events, first page", "/api/v1/events", {}),
    ]


def lists(url: str, repeat: int) -> dict[str, Any]:
    ensure_book_key(url)
    clock.set(NOW)  # the book's "now"
    app = create_app(_settings(url))
    auth = {"Authorization": f"Bearer {BOOK_KEY}"}
    results = []
    with TestClient(app, base_url="http://testserver") as client:
        for label, path, params in _variants(url):
            for _ in range(3):
                warm = client.get(path, params=params, headers=auth)
                if warm.status_code != 200:
                    raise SystemExit(f"{label}: HTTP {warm.status_code} {warm.text[:300]}")
            timings, cpu = [], []
            for _ in range(repeat):
                started, cpu_started = time.perf_counter(), time.process_time()
                response = client.get(path, params=params, headers=auth)
                timings.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)
                assert response.status_code == 200
            body = response.json()
            rows = len(body["items"]) if "items" in body else 1
            p95 = percentile(timings, 0.95)
            results.append({"variant": label, "rows": rows, "requests": repeat,
                            "median_ms": round(statistics.median(timings), 1), "p95_ms": round(p95, 1),
                            "max_ms": round(max(timings), 1), "cpu_median_ms": round(statistics.median(cpu), 1),
                            "cpu_p95_ms": round(percentile(cpu, 0.95), 1), "target_ms": LIST_TARGET_MS,
                            "met": p95 <= LIST_TARGET_MS})
    clock.reset()
    return {"scenario": "lists", "results": results}


# --- report ------------------------------------------------------------------------------------


def _table(reports: list[dict[str, Any]]) -> str:
    lines = []
    for report in reports:
        if report["scenario"] == "upsert":
            lines.append(f"upsert ({report['database']}) {'pass':<20} {'wall':>8} {'cpu':>8} {'db cpu':>8} "
                         f"{'req p95':>9}  target")
            for r in report["results"]:
                db_cpu = f"{r['database_server_cpu_s']:>7.1f}s" if r["database_server_cpu_s"] is not None else "       -"
                lines.append(f"{'':<18}{r['pass']:<20} {r['wall_s']:>7.1f}s {r['cpu_s']:>7.1f}s {db_cpu} "
                             f"{r['request_p95_ms']:>7.1f}ms  ≤{UPSERT_TARGET_S:.0f} s {'met' if r['met'] else 'MISSED'}")
        else:
            lines.append(f"lists ({report['database']}) {'variant':<46} {'rows':>4} {'median':>9} {'p95':>9} "
                         f"{'cpu p95':>9}  target")
            for r in report["results"]:
                lines.append(f"{'':<17}{r['variant']:<46} {r['rows']:>4} {r['median_ms']:>7.1f}ms "
                             f"{r['p95_ms']:>7.1f}ms {r['cpu_p95_ms']:>7.1f}ms  ≤{LIST_TARGET_MS:.0f} ms p95 "
                             f"{'met' if r['met'] else 'MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50_000, help="the book's customers (lists)")
    parser.add_argument("--invoices", type=int, default=1_000_000, help="the book's invoices (lists)")
    parser.add_argument("--upsert", type=int, default=100_000, help="invoices sent through the bulk endpoint")
    parser.add_argument("--small", action="store_true", help="a 2,000 / 40,000 book and 10,000 invoices upserted")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per list variant (after 3 warm-ups)")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server's URL: the book (built there if "
                                                          "missing) and a scratch database beside it")
    parser.add_argument("--postgres-throwaway", action="store_true",
                        help="start a throwaway PostgreSQL server (fsync on) and use it; deleted afterwards")
    parser.add_argument("--only", action="append", choices=("upsert", "lists"))
    args = parser.parse_args(argv)
    if args.small:
        args.customers, args.invoices, args.upsert = 2_000, 40_000, 10_000
    scenarios = args.only or ["upsert", "lists"]
    host = machine()
    reports: list[dict[str, Any]] = []
    throwaway = None
    cleanups: list[Callable[[], None]] = []
    try:
        if args.postgres_throwaway:
            from tests.pgserver import PostgresServer

            throwaway = PostgresServer(extra_config=POSTGRES_CONFIG)
            args.postgres = throwaway.start("encours_bench")
        database = "postgresql" if args.postgres else "sqlite"
        if "upsert" in scenarios:
            if args.postgres:
                scratch = _postgres_scratch(args.postgres)
                cleanups.append(lambda: _drop_database(args.postgres, scratch))
            else:
                CACHE_DIR.mkdir(parents=True, exist_ok=True)
                folder = Path(tempfile.mkdtemp(prefix="encours-bench-api-", dir=CACHE_DIR))
                cleanups.append(lambda: shutil.rmtree(folder, ignore_errors=True))
                scratch = f"sqlite:///{folder / 'upsert.sqlite3'}"
            upgrade(scratch)
            data_dir = throwaway.data_dir if throwaway is not None else None
            reports.append({**upsert(scratch, args.upsert, bool(args.postgres), data_dir), "database": database})
        if "lists" in scenarios:
            book = ensure_book(args.customers, args.invoices, args.postgres)
            reports.append({**lists(book["url"], args.repeat), "database": database,
                            "book": {"customers": args.customers, "invoices": args.invoices}})
    finally:
        for cleanup in cleanups:
            cleanup()
        if throwaway is not None:
            throwaway.stop()
    print(_table(reports), file=sys.stderr)
    print(f"load average at start {host['loadavg_at_start']}, at end {[round(x, 2) for x in os.getloadavg()]}",
          file=sys.stderr)
    print(json.dumps({"machine": {**host, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
                      "reports": reports}, indent=2, default=str))


def _postgres_scratch(url: str) -> str:
    """A new, empty database on the server of `url`, for the upsert scenario."""
    from sqlalchemy.engine import make_url

    name = f"encours_bench_api_{os.getpid()}"
    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str, scratch: str) -> None:
    """Drop the scratch database `scratch` from the server of `url` (it may be shared)."""
    from sqlalchemy.engine import make_url

    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{make_url(scratch).database}" WITH (FORCE)')
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
