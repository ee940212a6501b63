"""Dashboard timing on the cached book (not a test): median and p95 over a few runs.

    .venv/bin/python bench/dashboard.py                 # the full book (50,000 customers, 1,000,000 invoices)
    .venv/bin/python bench/dashboard.py --small --runs 5
    .venv/bin/python bench/run.py --only dashboard      # the same, as a scenario of the suite

Measured in-process, so the figures are the dashboard's own work and not the HTTP stack's:
- `service`: `build_dashboard` (every SQL aggregate and the folding into figures) for an admin
  (all three companies) and for one company;
- `page`: `GET /admin` through the whole ASGI app (session, scoping, queries, template, SVG),
  signed in as a staff admin of the book (created once, `bench-admin@example.com`).
Each run reports wall-clock time and the process's CPU time: on a shared, loaded machine the
wall-clock time mostly measures the run queue, the CPU time much less so. The clock is set to the
book's "now" so the windows (30/90 days, this week) fall where the generator put the data.
Prints one JSON document on stdout and a readable table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench.generate import NOW, ensure_book  # noqa: E402
from bench.harness import ADMIN_EMAIL, ADMIN_PASSWORD, ensure_admin, start_the_day  # noqa: E402
from kernel.clock import clock  # noqa: E402
from kernel.db import make_engine, make_sessionmaker  # noqa: E402

TARGET_MS = 300


def _stats(samples: list[tuple[float, float]]) -> dict[str, Any]:
    wall = sorted(w for w, _ in samples)
    cpu = sorted(c for _, c in samples)

    def p95(values: list[float]) -> float:
        return values[min(len(values) - 1, max(0, round(0.95 * len(values)) - 1))]

    return {"runs": len(samples), "wall_median_ms": round(statistics.median(wall), 1),
            "wall_p95_ms": round(p95(wall), 1), "cpu_median_ms": round(statistics.median(cpu), 1),
            "cpu_p95_ms": round(p95(cpu), 1), "wall_ms": [round(w, 1) for w in wall]}


def _timed(action: Callable[[], Any], runs: int, warmup: int = 1) -> dict[str, Any]:
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        samples.append(((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000))
    return _stats(samples)




def measure(url: str, runs: int = 7) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from admin.dashboard_service import Scope, build_dashboard
    from encours.app import create_app
    from kernel.settings import load_settings
    from ledger.models import Company

    ensure_admin(url)
    clock.set(NOW)
    start_the_day(url)
    results: dict[str, Any] = {"loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            ids = tuple(session.scalars(select(Company.id).order_by(Company.id)))
            first = ids[:1]

            def service(scope_ids: tuple[int, ...]) -> Callable[[], Any]:
                def run() -> Any:
                    session.expunge_all()
                    return build_dashboard(session, Scope(scope_ids))
                return run

            results["service_all_companies"] = _timed(service(ids), runs)
            results["service_one_company"] = _timed(service(first), runs)
    finally:
        engine.dispose()

    settings = load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": "bench-secret-key-0123456789abcdef",
                              "ENCOURS_BASE_URL": "http://testserver"})
    app_engine = make_engine(url)
    try:
        app = create_app(settings, sessions=make_sessionmaker(app_engine))
        with TestClient(app, base_url="http://testserver") as client:
            login = client.get("/admin/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
            assert token, "no CSRF token on the login page"
            response = client.post("/admin/login", data={"csrf_token": token.group(1), "email": ADMIN_EMAIL,
                                                          "password": ADMIN_PASSWORD}, follow_redirects=False)
            assert response.status_code == 303, response.status_code
            page = client.get("/admin")
            assert page.status_code == 200 and "dashboard-body" in page.text, page.status_code
            results["page_bytes"] = len(page.content)

            def get(path: str) -> Callable[[], Any]:
                def run() -> Any:
                    assert client.get(path).status_code == 200
                return run

            results["page_all_companies"] = _timed(get("/admin"), runs)
            results["page_one_company"] = _timed(get("/admin?company=BENCH-FR"), runs)
    finally:
        app_engine.dispose()
        clock.reset()
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def table(results: dict[str, Any]) -> str:
    lines = [f"{'dashboard':<28} {'runs':>4} {'wall median':>12} {'wall p95':>10} {'CPU median':>11} {'CPU p95':>9}"
             f"  target {TARGET_MS} ms", "-" * 96]
    for key in ("service_all_companies", "service_one_company", "page_all_companies", "page_one_company"):
        r = results[key]
        verdict = "met" if r["wall_p95_ms"] <= TARGET_MS else ("met by CPU" if r["cpu_p95_ms"] <= TARGET_MS else "MISSED")
        lines.append(f"{key:<28} {r['runs']:>4} {r['wall_median_ms']:>9.1f} ms {r['wall_p95_ms']:>7.1f} ms "
                     f"{r['cpu_median_ms']:>8.1f} ms {r['cpu_p95_ms']:>6.1f} ms  {verdict}")
    lines.append(f"load average {results['loadavg_at_start']} → {results['loadavg_at_end']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--small", action="store_true", help="2,000 customers / 40,000 invoices")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    if args.small:
        args.customers, args.invoices = 2_000, 40_000
    book = ensure_book(args.customers, args.invoices)
    results = measure(book["url"], args.runs)
    print(table(results), file=sys.stderr)
    print(json.dumps({"book": {k: v for k, v in book.items() if k != "rows"}, "target_ms": TARGET_MS, **results},
                     indent=2, default=str))


if __name__ == "__main__":
    main()
