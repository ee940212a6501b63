"""The SQL of the hot and heavy code paths, and PostgreSQL's plan for each statement (not a test).

    .venv/bin/python bench/plans.py --setup --postgres URL          # once per book: staff, API key, collectors...
    flock /work/bench.lock nice -n -10 .venv/bin/python bench/plans.py --postgres URL [--only dashboard] > plans.json
    .venv/bin/python bench/plans.py --compare plans-1m.json plans-5m.json    # markdown, for CAPACITY.md

Each operation runs through the real code (the whole ASGI app in-process for pages, links, webhooks
and the API; the service functions for the planner and the nightly jobs, rolled back), with a
`before_cursor_execute` hook recording every statement and its parameters. Then each distinct
statement is run again under `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` in a transaction that is
rolled back: its execution time on the server, the buffers it touched (hit in shared_buffers /
read from the OS), the rows it returned and the scans it did (a sequential scan names its table).
Before that each operation runs for `--seconds` (3 runs at least) for its CPU per run: this process's (the app, all
threads) and the database server's (the backends of this database, read from /proc), apart.
Run it on books of two sizes (bench/CAPACITY.md compares 1,000,000 and 5,000,000 invoices) to see
which statements grow with the book. Prints a readable table on stderr and JSON on stdout.

`--setup` adds what bench/dashboard.py, bench/customers_list.py, bench/my_day.py, bench/api.py and
the webhook scenario of bench/run.py add to a book (staff, collectors and tasks, an API key, a
checkout for webhook events): run it once per book, outside the benchmark lock (it writes).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, event, func, select, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from bench.generate import NOW, STATEMENT_CUSTOMER  # noqa: E402
from bench.harness import compared, markdown_table, reports_parser  # noqa: E402
from kernel.clock import clock  # noqa: E402
from kernel.db import make_engine, make_sessionmaker, upgrade  # noqa: E402

TODAY = date(2026, 11, 25)
SKIP = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|SET |SHOW |SELECT pg_)", re.I)


@dataclass
class Statement:
    sql: str
    parameters: Any
    executions: int = 0
    client_ms: float = 0.0


@dataclass
class Recorder:
    """Every statement an operation sent, in order of first use, with its client-side time."""

    current: dict[str, Statement] | None = None
    started: list[float] = field(default_factory=list)

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        self.started.append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        elapsed = (time.perf_counter() - self.started.pop()) * 1000
        if self.current is None or SKIP.match(statement):
            return
        if executemany and isinstance(parameters, (list, tuple)) and parameters:
            parameters = parameters[0]
        entry = self.current.setdefault(statement, Statement(statement, parameters))
        entry.executions += 1
        entry.client_ms += elapsed

    def record(self, action: Callable[[], Any]) -> tuple[dict[str, Statement], float]:
        self.current = {}
        started = time.perf_counter()
        try:
            action()
        finally:
            captured, self.current = self.current, None
        return captured, (time.perf_counter() - started) * 1000


def _walk(node: dict[str, Any], scans: list[str]) -> None:
    kind = node["Node Type"]
    if "Scan" in kind:
        target = node.get("Index Name") or node.get("Relation Name") or ""
        rows = int(node.get("Actual Rows", node.get("Plan Rows", 0)) * node.get("Actual Loops", 1))
        removed = int(node.get("Rows Removed by Filter", 0) * node.get("Actual Loops", 1))
        scans.append(f"{kind} {target} ({rows:,} rows{f', {removed:,} filtered out' if removed else ''})")
    for child in node.get("Plans", []):
        _walk(child, scans)


def explain(engine: Engine, statement: Statement, analyze: bool = True) -> dict[str, Any]:
    """The statement's plan, executed and rolled back (without `analyze`: planned only, estimated rows)."""
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    with engine.connect() as connection:
        try:
            raw = connection.exec_driver_sql(f"EXPLAIN ({options}) {statement.sql}",
                                             statement.parameters or {}).scalar_one()
        except Exception as error:  # a statement that needs state the operation had (rare): said, not hidden
            connection.rollback()
            return {"error": str(error).splitlines()[0][:200]}
        connection.rollback()
    plan = (raw if isinstance(raw, list) else json.loads(raw))[0]
    top = plan["Plan"]
    scans: list[str] = []
    _walk(top, scans)
    if not analyze:
        return {"cost": top["Total Cost"], "rows": int(top["Plan Rows"]), "scans": scans}
    return {"execution_ms": round(plan["Execution Time"], 3), "planning_ms": round(plan["Planning Time"], 3),
            "rows": int(top.get("Actual Rows", 0)), "shared_hit": int(top.get("Shared Hit Blocks", 0)),
            "shared_read": int(top.get("Shared Read Blocks", 0)), "temp_written": int(top.get("Temp Written Blocks", 0)),
            "jit_ms": round(plan.get("JIT", {}).get("Timing", {}).get("Total", 0.0), 1), "scans": scans}


def _backend_cpu(engine: Engine) -> float:
    """CPU seconds used so far by the server processes serving this database (ours alone: each book is a
    database of its own), read from /proc: the server must run on this machine."""
    with engine.connect() as connection:
        pids = connection.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()").scalars().all()
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def cpu_per_run(engine: Engine, action: Callable[[], Any], seconds: float, most: int) -> dict[str, float]:
    """The app's CPU (this process, all threads) and the server's (this database's backends, counted in
    clock ticks: hence runs for `seconds` at least, 3 to `most` runs) per run, in ms."""
    server, app, wall = _backend_cpu(engine), time.process_time(), time.perf_counter()
    repeat = 0
    while repeat < 3 or (repeat < most and time.perf_counter() - wall < seconds):
        action()
        repeat += 1
    wall, app = time.perf_counter() - wall, time.process_time() - app
    server = _backend_cpu(engine) - server
    return {"repeat": repeat, "wall_ms": round(wall / repeat * 1000, 2), "app_cpu_ms": round(app / repeat * 1000, 2),
            "db_cpu_ms": round(server / repeat * 1000, 2)}


# --- setup (writes: once per book, outside the lock) ---------------------------------------------


def setup(url: str) -> None:
    from bench import harness

    upgrade(url)
    harness.ensure_admin(url)
    harness.ensure_staff(url)
    harness.ensure_world(url)
    harness.ensure_book_key(url)
    harness.webhook_checkout(url)
    clock.set(NOW)
    try:  # the overdue sort keys moved to the book's today, as `encours worker` does each night
        harness.start_the_day(url)
    finally:
        clock.reset()
    from dunning.scenarios import ensure_default_scenario
    from kernel.db import unit_of_work
    from ledger.models import Company

    engine = make_engine(url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:  # as planner.run_company does
            for company in session.scalars(select(Company)):
                ensure_default_scenario(session, company)
    finally:
        engine.dispose()
    print(f"set up {url}", file=sys.stderr)


# --- the operations ---------------------------------------------------------------------------


def operations(url: str, engine: Engine) -> list[tuple[str, Callable[[], Any]]]:
    from admin.customers_service import list_day, refresh_overdue
    from bench import harness, run
    from dunning.planner import plan_company
    from encours.app import create_app
    from kernel.settings import load_settings
    from ledger.models import BalanceState, Company, Contact, Customer
    from ledger.personal_data import Retention, purge
    from links import tokens

    settings = load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": run.SECRET,
                              "ENCOURS_BASE_URL": "http://testserver", "ENCOURS_LINK_THROTTLE_MAX": "1000000",
                              "STRIPE_SECRET_KEY": "sk_test_bench", "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
                              "STRIPE_WEBHOOK_SECRET": run.WEBHOOK_SECRET, "STRIPE_API_BASE": "http://127.0.0.1:9"})
    app = create_app(settings, sessions=make_sessionmaker(engine))
    with Session(engine) as session:
        contact = session.scalars(select(Contact).join(Customer).where(Customer.ref == STATEMENT_CUSTOMER,
                                                                        Contact.is_primary)).one()
        # A contact opening its link for the first time in this run: a new one per run.
        # Contacts opening their link for the first time in this run (the warm-up takes one): new ones each run.
        count = session.scalar(select(func.count()).select_from(Contact)) or 1
        first = (int(time.time()) * 305) % max(1, count - 305)
        fresh_tokens = [tokens.make_token(run.SECRET, fresh) for fresh in session.scalars(
            select(Contact).order_by(Contact.id).offset(first).limit(305))]
        token = tokens.make_token(run.SECRET, contact)
    checkout = harness.webhook_checkout(url)
    portal = TestClient(app, base_url="http://testserver")
    staff = harness.signed_in(app, harness.STAFF[0][0])
    collector = harness.signed_in(app, harness.collector_email(0))
    webhooks = TestClient(app, base_url="http://testserver")
    auth = {"Authorization": f"Bearer {harness.BOOK_KEY}"}
    duplicate = harness.declined_event(checkout, f"evt_plans_{uuid.uuid4().hex}")

    def get(client: TestClient, path: str, expected: int = 200, **kw: Any) -> Callable[[], Any]:
        def action() -> None:
            response = client.get(path, follow_redirects=False, **kw)
            assert response.status_code == expected, (path, response.status_code, response.text[:300])
        return action

    # The API allows 600 requests a minute per key, counted on the clock, which stays at the book's "now":
    # each API operation gets a minute of its own (after the minutes earlier runs of the day took).
    minutes = iter(range(((int(time.time()) // 60) % 1440) * 8, 10**9))

    def api_get(path: str) -> Callable[[], Any]:
        request, minute = get(portal, path, headers=auth), next(minutes)

        def action() -> None:
            clock.set(NOW + timedelta(minutes=minute))
            try:
                request()
            finally:
                clock.set(NOW)
        return action

    def first_open() -> None:
        response = portal.get(f"/p/{fresh_tokens.pop()}", follow_redirects=False)
        assert response.status_code == 303, response.status_code

    def webhook(body: bytes | None = None) -> Callable[[], Any]:
        def action() -> None:
            payload = body or harness.declined_event(checkout, f"evt_plans_{uuid.uuid4().hex}")
            response = webhooks.post("/webhooks/stripe", content=payload,
                                     headers={"Stripe-Signature": run.stripe_signature(payload),
                                              "Content-Type": "application/json"})
            assert response.status_code == 200, (response.status_code, response.text[:300])
        return action

    def rolled_back(work: Callable[[Session], Any]) -> Callable[[], Any]:
        def action() -> None:
            with Session(engine) as session:
                work(session)
                session.rollback()
        return action

    def overnight(session: Session) -> None:
        """The keys were moved to today by `--setup`: moved from yesterday again, as each night."""
        session.execute(update(BalanceState).where(BalanceState.id == 1).values(as_of=TODAY - timedelta(days=1)))
        refresh_overdue(session, list_day(session))

    def planner(session: Session) -> None:
        company = session.scalars(select(Company).where(Company.code == "BENCH-FR")).one()
        plan_company(session, company, TODAY)

    webhook(duplicate)()  # stored once before the run, so the timed delivery is a duplicate
    return [
        ("magic link, first open", first_open),
        ("magic link, BENCH-200's link", get(portal, f"/p/{token}", 303)),
        ("magic link, same link again", get(portal, f"/p/{token}", 303)),
        ("statement page (200 open items)", get(portal, "/portal")),
        ("webhook, new event", webhook()),
        ("webhook, duplicate delivery", webhook(duplicate)),
        ("dashboard, 3 companies", get(staff, "/admin")),
        ("dashboard, BENCH-FR", get(staff, "/admin?company=BENCH-FR")),
        ("customers, by name, page 1", get(staff, "/admin/customers")),
        ("customers, by name, page 200", get(staff, "/admin/customers?page=200")),
        ("customers, largest outstanding", get(staff, "/admin/customers?sort=outstanding")),
        ("customers, oldest overdue", get(staff, "/admin/customers?sort=oldest")),
        ("customers, overdue only", get(staff, "/admin/customers?overdue=1")),
        ("customers, search a name", get(staff, "/admin/customers?q=Client+012345")),
        ("My day, a collector", get(collector, "/admin/my-day")),
        ("bank queue (no entries in the book)", get(staff, "/admin/bank")),
        ("API invoices, first page", api_get("/api/v1/invoices")),
        ("API invoices, status open", api_get("/api/v1/invoices?status=open")),
        ("API invoices, due in a week", api_get("/api/v1/invoices?due_from=2026-12-01&due_to=2026-12-07")),
        ("API invoices, one customer", api_get(f"/api/v1/invoices?customer={STATEMENT_CUSTOMER}")),
        ("API payments, first page", api_get("/api/v1/payments")),
        ("API customers, first page", api_get("/api/v1/customers")),
        ("API events, first page", api_get("/api/v1/events")),
        ("reminder planner, BENCH-FR (plan_company)", rolled_back(planner)),
        ("nightly refresh_overdue", rolled_back(overnight)),
        ("nightly purge", rolled_back(lambda s: purge(s, Retention()))),
    ]


def compare(small: dict[str, Any], large: dict[str, Any]) -> str:
    """A markdown table: each operation's statements, server execution time (sum of EXPLAIN ANALYZE) and the
    database's CPU per run in both books, their ratio, and the costliest statement of the larger book."""
    before = {o["operation"]: o for o in small["operations"]}
    rows = []
    for operation in large["operations"]:
        first = before.get(operation["operation"])
        if first is None or "error" in first or "error" in operation:
            continue
        worst = max(operation["detail"], key=lambda s: s.get("execution_ms", 0), default=None)
        ratio = operation["server_ms"] / first["server_ms"] if first["server_ms"] else float("nan")
        where = "; ".join(worst.get("scans", [])[:2]) if worst else ""
        rows.append([operation["operation"], str(operation["statements"]), f"{first['server_ms']:,.1f}",
                     f"{operation['server_ms']:,.1f}", f"{ratio:.1f}", f"{first['cpu'].get('db_cpu_ms', 0):,.1f}",
                     f"{operation['cpu'].get('db_cpu_ms', 0):,.1f}",
                     f"{worst.get('execution_ms', 0) if worst else 0:,.1f}: {where}"])
    return markdown_table(["operation", "statements", f"exec ms at {small['invoices']:,}", f"at {large['invoices']:,}",
                           "ratio", f"db CPU ms at {small['invoices']:,}", f"at {large['invoices']:,}",
                           f"costliest statement at {large['invoices']:,}: exec ms, its scans"], rows, left=(0, 7))


def main(argv: list[str] | None = None) -> None:
    parser = reports_parser(__doc__, "two reports of this script: a markdown table of both books and their ratio")
    parser.add_argument("--setup", action="store_true", help="add staff, API key, collectors, a checkout; then stop")
    parser.add_argument("--only", action="append", help="operations whose name contains this (repeatable)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="run each operation this long for its CPU per run, app and database apart (0: not)")
    parser.add_argument("--plan-only", action="store_true",
                        help="plain EXPLAIN (estimates, nothing timed: no need for the benchmark lock); implies "
                             "--seconds 0")
    parser.add_argument("--min-ms", type=float, default=0.5, help="list statements slower than this")
    args = parser.parse_args(argv)
    if compared(parser, args, compare):
        return
    if args.setup:
        setup(args.postgres)
        return
    if args.plan_only:
        args.seconds = 0
    engine = make_engine(args.postgres)
    recorder = Recorder()
    recorder.attach(engine)
    clock.set(NOW)
    report: dict[str, Any] = {"url": args.postgres.rsplit("@", 1)[-1], "loadavg_at_start": os.getloadavg(),
                              "operations": []}
    try:
        with engine.connect() as connection:
            report["invoices"] = connection.exec_driver_sql("SELECT count(*) FROM invoices").scalar_one()
        for name, action in operations(args.postgres, engine):
            if args.only and not any(part in name for part in args.only):
                continue
            try:
                action()  # warm: the first request of a client pays for imports and caches
                captured, wall_ms = recorder.record(action)
            except Exception as error:  # reported, and the other operations still measured
                report["operations"].append({"operation": name, "error": repr(error)[:300]})
                print(f"{name}: FAILED {error!r:.300}", file=sys.stderr, flush=True)
                continue
            # First opens use up the contacts made for them; the API allows 600 requests a minute per key.
            most = 300 if "first open" in name else 50 if name.startswith("API") else 10_000
            try:
                cpu = cpu_per_run(engine, action, args.seconds, most) if args.seconds else {}
            except Exception as error:
                cpu = {"error": repr(error)[:300]}
            statements = []
            for statement in captured.values():
                plan = explain(engine, statement, analyze=not args.plan_only)
                statements.append({"sql": " ".join(statement.sql.split())[:300], "executions": statement.executions,
                                   "client_ms": round(statement.client_ms, 2), **plan})
            server_ms = sum(s.get("execution_ms", 0) * s["executions"] for s in statements)
            report["operations"].append({"operation": name, "wall_ms": round(wall_ms, 1),
                                         "statements": sum(s["executions"] for s in statements),
                                         "server_ms": round(server_ms, 2), "cpu": cpu, "detail": statements})
            print(f"{name:<45} {wall_ms:9.1f} ms wall {len(captured):3d} stmts {server_ms:9.2f} ms server"
                  + (f"  | x{cpu['repeat']}: app {cpu['app_cpu_ms']:8.2f} ms CPU, db {cpu['db_cpu_ms']:8.2f} ms CPU"
                     if "repeat" in cpu else f"  | {cpu['error']}" if "error" in cpu else ""),
                  file=sys.stderr, flush=True)
            for s in sorted(statements, key=lambda s: -s.get("execution_ms", 0)):
                if s.get("execution_ms", 0) >= args.min_ms or "error" in s:
                    print(f"    {s.get('execution_ms', '?'):>9} ms  hit {s.get('shared_hit', 0):>7} "
                          f"read {s.get('shared_read', 0):>6}  {s['sql'][:110]}", file=sys.stderr)
                    for scan in s.get("scans", [])[:4]:
                        print(f"{'':>18}{scan}", file=sys.stderr)
                    if "error" in s:
                        print(f"{'':>18}{s['error']}", file=sys.stderr)
    finally:
        clock.reset()
        engine.dispose()
    report["loadavg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
