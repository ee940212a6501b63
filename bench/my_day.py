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
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starlette.testclient import TestClient  # noqa: E402

from admin.my_day_service import build_my_day  # noqa: E402
from bench.generate import NOW, ensure_book  # noqa: E402
from bench.harness import MANAGER, collector_email, ensure_world, signed_in, time_runs  # noqa: E402
from bench.run import SECRET, machine  # noqa: E402
from encours.app import create_app  # noqa: E402
from kernel.clock import clock  # noqa: E402
from kernel.db import unit_of_work  # noqa: E402
from kernel.settings import load_settings  # noqa: E402

TARGET_MS = 300.0
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
    world = ensure_world(url)
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
        figures = time_runs(run, args.repeat)
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
