"""Timing of the back-office customers list on the bench book (not a test).

    .venv/bin/python bench/customers_list.py                     # the full book (50,000 / 1,000,000)
    .venv/bin/python bench/customers_list.py --small             # 2,000 customers / 40,000 invoices
    .venv/bin/python bench/customers_list.py --repeat 50

Uses the cached book (`bench/generate.py` builds it when missing), adds two staff accounts to
it once (an admin, a manager of BENCH-FR), then requests each variant of `/admin/customers`
(sorts, filters, search, a deep page, an htmx page) in-process through the whole app (routing,
session, SQL, template), one request at a time, and reports the median and p95 of the wall time
per request against the 100 ms target of issue 6. A readable table on stderr, JSON on stdout.
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

from bench.generate import ensure_book  # noqa: E402
from bench.harness import STAFF, ensure_staff, signed_in, time_runs  # noqa: E402
from bench.run import SECRET, machine  # noqa: E402
from encours.app import create_app  # noqa: E402
from kernel.clock import clock  # noqa: E402
from kernel.settings import load_settings  # noqa: E402

TARGET_MS = 100.0
VARIANTS: tuple[tuple[str, str, dict[str, str], dict[str, str]], ...] = (
    ("admin", "by name, page 1", {}, {}),
    ("admin", "by name, page 200", {"page": "200"}, {}),
    ("admin", "by name, page 2 (htmx fragment)", {"page": "2"}, {"HX-Request": "true"}),
    ("admin", "largest outstanding first", {"sort": "outstanding"}, {}),
    ("admin", "largest overdue first", {"sort": "overdue"}, {}),
    ("admin", "oldest overdue first", {"sort": "oldest"}, {}),
    ("admin", "overdue only", {"overdue": "1"}, {}),
    ("admin", "disputed only", {"disputed": "1"}, {}),
    ("admin", "search a name", {"q": "Client 012345"}, {}),
    ("admin", "search an email", {"q": "ap004242@"}, {}),
    ("admin", "segment + overdue, by overdue", {"segment": "eti", "overdue": "1", "sort": "overdue"}, {}),
    ("manager", "manager of BENCH-FR, by name", {}, {}),
    ("manager", "manager, overdue only, by outstanding", {"overdue": "1", "sort": "outstanding"}, {}),
)


def _request(client: TestClient, label: str, params: dict[str, str], headers: dict[str, str],
             shown: list[str]) -> Callable[[], None]:
    """One GET of the variant; the page it answered kept in `shown` (its rows are counted)."""
    def run() -> None:
        response = client.get("/admin/customers", params=params, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"{label}: HTTP {response.status_code}")
        shown[:] = [response.text]
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--small", action="store_true", help="2,000 customers / 40,000 invoices")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per variant (after 3 warm-ups)")
    args = parser.parse_args(argv)
    if args.small:
        args.customers, args.invoices = 2_000, 40_000
    host = machine()
    book = ensure_book(args.customers, args.invoices)
    url = book["url"]
    ensure_staff(url)
    clock.set(clock.now())  # one "today" for the whole run
    settings = load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": SECRET,
                              "ENCOURS_BASE_URL": "http://127.0.0.1"})
    app = create_app(settings)
    clients = {"admin": signed_in(app, STAFF[0][0]), "manager": signed_in(app, STAFF[1][0])}
    results = []
    for who, label, params, headers in VARIANTS:
        shown: list[str] = []
        figures = time_runs(_request(clients[who], label, params, headers, shown), args.repeat)
        rows = shown[-1].count('<th scope="row">')
        results.append({"variant": label, "as": who, "params": params, "rows": rows, "requests": figures["runs"],
                        "median_ms": figures["median_ms"], "p95_ms": figures["p95_ms"], "max_ms": figures["max_ms"],
                        "cpu_median_ms": figures["cpu_median_ms"], "cpu_p95_ms": figures["cpu_p95_ms"],
                        "target_ms": TARGET_MS, "met": figures["p95_ms"] < TARGET_MS})
    for client in clients.values():
        client.__exit__(None, None, None)
    report = {"scenario": "customers_list", "book": {k: v for k, v in book.items() if k != "url"},
              "database": url.split("///")[-1], "machine": {**host, "loadavg_at_end": [round(x, 2) for x in
                                                                                         os.getloadavg()]},
              "results": results}
    lines = [f"{'variant':<42} {'rows':>4} {'median':>9} {'p95':>9} {'max':>9} {'cpu med':>9} {'cpu p95':>9}  target",
             "-" * 106]
    for r in results:
        lines.append(f"{r['variant']:<42} {r['rows']:>4} {r['median_ms']:>7.1f}ms {r['p95_ms']:>7.1f}ms "
                     f"{r['max_ms']:>7.1f}ms {r['cpu_median_ms']:>7.1f}ms {r['cpu_p95_ms']:>7.1f}ms  "
                     f"<{TARGET_MS:.0f} ms p95 {'met' if r['met'] else 'MISSED'}")
    lines.append(f"load average at start {host['loadavg_at_start']}, at end {report['machine']['loadavg_at_end']}")
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
