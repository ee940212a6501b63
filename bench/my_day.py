"""Timing of "My day", a collector's worklist, on the bench book (not a test).

    .venv/bin/python bench/my_day.py                     # the full book (50,000 / 1,000,000)
    .venv/bin/python bench/my_day.py --small             # 2,000 customers / 40,000 invoices
    .venv/bin/python bench/my_day.py --repeat 50

Uses the cached book (`bench/generate.py` builds it when missing). The first time, it gives the
book ten collectors of BENCH-FR, each assigned a tenth of that company's customers (one UPDATE
per collector), and open tasks (notes with a next action, a third of them due) on every 25th of
them, plus a manager of BENCH-FR. Then, the clock at the book's "now": `GET /admin/my-day` as one
collector and as the manager picking that collector, in-process through the whole app (routing,
session, SQL, template), one request at a time; and `build_my_day` alone. Median and p95 of the
wall time, and of this process's CPU time (steadier on a shared machine). Target: p95 ≤ 300 ms,
the dashboard's. A readable table on stderr, JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, update  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from admin.my_day_service import build_my_day  # noqa: E402
from admin.staff_accounts import create_user  # noqa: E402
from bench.customers_list import PASSWORD, percentile, signed_in  # noqa: E402
from bench.generate import NOW, TODAY, ensure_book  # noqa: E402
from bench.run import SECRET, machine  # noqa: E402
from encours.app import create_app  # noqa: E402
from kernel.clock import clock  # noqa: E402
from kernel.db import make_engine, make_sessionmaker, unit_of_work  # noqa: E402
from kernel.settings import load_settings  # noqa: E402
from ledger.models import Company, Customer, CustomerNote, User  # noqa: E402

TARGET_MS = 300.0
COLLECTORS = 10
TASK_EVERY = 25
MANAGER = "bench-day-manager@encours.example"


def collector_email(n: int) -> str:
    return f"bench-collector-{n}@encours.example"


def _ensure_world(url: str) -> dict[str, Any]:
    """Collectors, their customers, tasks and a manager, added to the book once."""
    engine = make_engine(url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            company_id = session.scalar(select(Company.id).where(Company.code == "BENCH-FR"))
            for n in range(COLLECTORS):
                if session.scalar(select(User.id).where(User.email == collector_email(n))) is None:
                    create_user(session, email=collector_email(n), role="collector", password=PASSWORD,
                                company_codes=["BENCH-FR"])
            if session.scalar(select(User.id).where(User.email == MANAGER)) is None:
                create_user(session, email=MANAGER, role="manager", password=PASSWORD, company_codes=["BENCH-FR"])
            session.flush()
            ids = [session.scalar(select(User.id).where(User.email == collector_email(n))) for n in range(COLLECTORS)]
            customers = list(session.scalars(select(Customer.id).where(Customer.company_id == company_id)
                                             .order_by(Customer.id)))
            if not session.scalar(select(func.count()).select_from(Customer).where(Customer.collector_id == ids[0])):
                # Customer ids of the companies interleave: dealt out by rank within BENCH-FR.
                for n, user_id in enumerate(ids):
                    mine = customers[n::COLLECTORS]
                    for start in range(0, len(mine), 500):
                        session.execute(update(Customer).where(Customer.id.in_(mine[start:start + 500]))
                                        .values(collector_id=user_id))
            if not session.scalar(select(func.count()).select_from(CustomerNote)):
                notes = [{"customer_id": customer_id, "author_id": ids[0], "kind": "call",
                          "body": "Rappeler le service comptable", "created_at": NOW - timedelta(days=3),
                          "next_action_on": TODAY + timedelta(days=(i % 3) - 1)}
                         for i, customer_id in enumerate(customers[::TASK_EVERY])]
                session.execute(insert(CustomerNote), notes)
            mine = session.scalar(select(func.count()).select_from(Customer).where(Customer.collector_id == ids[0]))
            tasks = session.scalar(select(func.count()).select_from(CustomerNote).join(
                Customer, Customer.id == CustomerNote.customer_id).where(Customer.collector_id == ids[0],
                                                                       CustomerNote.done_at.is_(None)))
            return {"collector_id": ids[0], "company_id": company_id, "customers_of_collector": mine,
                    "open_tasks_of_collector": tasks}
    finally:
        engine.dispose()


def _time(run: Callable[[], Any], repeat: int) -> dict[str, float]:
    for _ in range(3):
        run()
    wall, cpu = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        run()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    return {"runs": repeat, "median_ms": round(statistics.median(wall), 1), "p95_ms": round(percentile(wall, 0.95), 1),
            "max_ms": round(max(wall), 1), "cpu_median_ms": round(statistics.median(cpu), 1),
            "cpu_p95_ms": round(percentile(cpu, 0.95), 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--small", action="store_true", help="2,000 customers / 40,000 invoices")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per variant (after 3 warm-ups)")
    args = parser.parse_args(argv)
    if args.small:
        args.customers, args.invoices = 2_000, 40_000
    host = machine()
    book = ensure_book(args.customers, args.invoices)
    url = book["url"]
    world = _ensure_world(url)
    clock.set(NOW)
    settings = load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": SECRET,
                              "ENCOURS_BASE_URL": "http://127.0.0.1"})
    app = create_app(settings)
    collector: TestClient = signed_in(app, collector_email(0))
    manager: TestClient = signed_in(app, MANAGER)
    sessions = app.state.sessions
    shown: dict[str, int] = {}

    def page(client: TestClient, path: str, label: str) -> Callable[[], None]:
        def run() -> None:
            response = client.get(path)
            assert response.status_code == 200, response.status_code
            shown[label] = response.text.count("data-customer=")
        return run

    def service() -> None:
        with unit_of_work(sessions) as session:
            day = build_my_day(session, world["collector_id"], [world["company_id"]])
            shown["build_my_day"] = day.total

    variants = (("GET /admin/my-day as the collector", page(collector, "/admin/my-day", "collector")),
                ("GET /admin/my-day?collector=… as a manager",
                 page(manager, f"/admin/my-day?collector={world['collector_id']}", "manager")),
                ("build_my_day (service alone)", service))
    results = []
    for label, run in variants:
        figures = _time(run, args.repeat)
        results.append({"variant": label, **figures, "target_ms": TARGET_MS, "met": figures["p95_ms"] <= TARGET_MS})
    collector.__exit__(None, None, None)
    manager.__exit__(None, None, None)
    report = {"scenario": "my_day", "book": {k: v for k, v in book.items() if k != "url"}, "world": world,
              "listed": shown, "machine": {**host, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
              "results": results}
    lines = [f"{'variant':<46} {'median':>9} {'p95':>9} {'max':>9} {'cpu med':>9} {'cpu p95':>9}  target", "-" * 104]
    for r in results:
        lines.append(f"{r['variant']:<46} {r['median_ms']:>7.1f}ms {r['p95_ms']:>7.1f}ms {r['max_ms']:>7.1f}ms "
                     f"{r['cpu_median_ms']:>7.1f}ms {r['cpu_p95_ms']:>7.1f}ms  "
                     f"≤{TARGET_MS:.0f} ms p95 {'met' if r['met'] else 'MISSED'}")
    lines.append(f"world: {world}; listed: {shown}")
    lines.append(f"load average at start {host['loadavg_at_start']}, at end {report['machine']['loadavg_at_end']}")
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
