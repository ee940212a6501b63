"""The bank reconciliation queue and the dashboard's bank figures with 10,000 unmatched entries
(not a test). Issue 14: the queue page in ≤ 150 ms.

    .venv/bin/python bench/bank_queue.py [--small] [--entries N] [--repeat 30]
    .venv/bin/python bench/bank_queue.py --postgres URL          # a book in PostgreSQL (see generate.py)

On a copy of the cached book (a file copy on SQLite, `CREATE DATABASE … TEMPLATE` on PostgreSQL,
so the book itself never changes): BENCH-FR's account registered, then one camt.053 imported as
`encours import bank` does — N credits nobody owes (left unmatched: payer names, texts, amounts
of no invoice) and N/5 naming an invoice with another amount (suggested) — then, in-process
through the whole app, one request at a time, signed in as an admin and as a manager of
BENCH-FR: the queue's first page, an htmx page, deep pages, each state filter, a search by name
and by amount; then `bank_state` (the dashboard's bank figures) and `GET /admin`. Median and
p95 of wall and CPU time per request. A table on stderr, JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from bench.harness import STAFF, ensure_staff, signed_in, time_runs  # noqa: E402
from bench.generate import ensure_book  # noqa: E402
from bench.reconciliation import IBAN, book_copy, camt_entry  # noqa: E402
from bench.run import SECRET, machine  # noqa: E402
from kernel.clock import clock  # noqa: E402
from kernel.db import make_engine, make_sessionmaker, unit_of_work  # noqa: E402
from kernel.settings import load_settings  # noqa: E402
from ledger.models import BankAccount, Company, Customer, Invoice  # noqa: E402

TARGET_MS = 150.0
SEED = 1410


def queue_file(invoices: list[tuple[str, int, str]], unmatched: int) -> bytes:
    """`unmatched` credits nobody owes, and a fifth as many naming an invoice with another amount."""
    rng = random.Random(SEED)
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">'
             "<BkToCstmrStmt><GrpHdr><MsgId>QUEUE</MsgId><CreDtTm>2026-11-24T18:00:00</CreDtTm></GrpHdr>"
             "<Stmt><Id>QUEUE-2026-11-24</Id><CreDtTm>2026-11-24T18:00:00</CreDtTm>"
             f"<Acct><Id><IBAN>{IBAN}</IBAN></Id><Ccy>EUR</Ccy></Acct>\n"]
    for index in range(unmatched):
        parts.append(camt_entry(900_000 + index, rng.randint(1, 999_99) * 7 + 3, f"Payeur Inconnu {index:05d}",
                            f"virement divers {index}"))
    for index, (number, open_minor, name) in enumerate(rng.sample(invoices, min(len(invoices), unmatched // 5))):
        parts.append(camt_entry(950_000 + index, max(1, open_minor - rng.randint(1, 5000)), name, f"Fact {number} acompte"))
    parts.append("</Stmt></BkToCstmrStmt></Document>\n")
    return "".join(parts).encode()


def _timed(action: Callable[[], Any], repeat: int) -> dict[str, Any]:
    figures = time_runs(action, repeat)
    return {"requests": figures["runs"], **{name: figures[name] for name in
                                            ("median_ms", "p95_ms", "cpu_median_ms", "cpu_p95_ms")}}


def _load(url: str, unmatched: int) -> dict[str, Any]:
    from reconciliation.accounts import add_account
    from reconciliation.imports import import_statement_file

    sessions = make_sessionmaker(make_engine(url))
    with unit_of_work(sessions) as session:
        if session.scalar(select(BankAccount.id).where(BankAccount.iban == IBAN)) is None:
            add_account(session, "BENCH-FR", iban=IBAN)
        rows = session.execute(
            select(Invoice.number, Invoice.open_minor, Customer.name)
            .join(Customer, Customer.id == Invoice.customer_id).join(Company, Company.id == Invoice.company_id)
            .where(Company.code == "BENCH-FR", Invoice.kind == "invoice", Invoice.open_minor > 0,
                   Invoice.status.in_(("open", "partially_paid")), Invoice.currency == "EUR")
            .order_by(Invoice.id)).all()
    data = queue_file([tuple(row) for row in rows], unmatched)  # type: ignore[misc]
    settings = load_settings({"ENCOURS_SECRET_KEY": SECRET, "ENCOURS_DATABASE_URL": url})
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with unit_of_work(sessions) as session:
        [summary] = import_statement_file(session, data, "queue.xml", settings=settings).statements
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"import_seconds": round(time.perf_counter() - started, 2),
            "import_cpu_seconds": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
            "unmatched": summary.unmatched, "suggested": summary.suggested, "matched": summary.matched,
            "already_imported": summary.already_imported}


def measure(url: str, unmatched: int, repeat: int) -> dict[str, Any]:
    from admin.dashboard_service import bank_state

    ensure_staff(url)
    loaded = _load(url, unmatched)
    settings = load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": SECRET,
                              "ENCOURS_BASE_URL": "http://127.0.0.1"})
    from encours.app import create_app

    app = create_app(settings)
    clients = {"admin": signed_in(app, STAFF[0][0]), "manager": signed_in(app, STAFF[1][0])}
    open_pages = (loaded["unmatched"] + loaded["suggested"] + 49) // 50
    deep = max(1, open_pages * 3 // 4)
    variants: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
        ("admin", "open entries, page 1", {}, {}),
        ("admin", "open entries, page 2 (htmx fragment)", {"page": "2"}, {"HX-Request": "true"}),
        ("admin", f"open entries, page {deep}", {"page": str(deep)}, {}),
        ("admin", f"open entries, last page ({open_pages})", {"page": str(open_pages)}, {}),
        ("admin", f"open entries, page {deep} by the pager's link", {"page": str(deep), "link": "next"}, {}),
        ("admin", "open entries, last page by the pager's link", {"page": str(open_pages), "link": "next"}, {}),
        ("admin", "unmatched only, page 1", {"state": "unmatched"}, {}),
        ("admin", "suggested only, page 1", {"state": "suggested"}, {}),
        ("admin", "matched, page 1", {"state": "matched"}, {}),
        ("admin", "every state, page 100", {"state": "all", "page": "100"}, {}),
        ("admin", "search a payer name", {"q": "Payeur Inconnu 04242"}, {}),
        ("admin", "search an amount", {"q": "1234,56"}, {}),
        ("admin", "company BENCH-FR, page 1", {"company": "BENCH-FR"}, {}),
        ("manager", "manager of BENCH-FR, page 1", {}, {}),
        ("manager", f"manager of BENCH-FR, page {deep}", {"page": str(deep)}, {}),
        ("manager", f"manager of BENCH-FR, page {deep} by the pager's link", {"page": str(deep), "link": "next"}, {}),
        ("admin", "every state, page 100 by the pager's link", {"state": "all", "page": "100", "link": "next"}, {}),
    ]
    results = []
    for who, label, params, headers in variants:
        client = clients[who]
        if params.get("link"):  # the page a reader reaches with "Next page" from the page before
            before = {k: v for k, v in params.items() if k != "link"}
            before["page"] = str(int(before["page"]) - 1)
            found = re.search(r'rel="next" href="/admin/bank\?([^"]+)"', client.get("/admin/bank", params=before).text)
            if found is None:
                raise SystemExit(f"{label}: no next link")
            params = dict(pair.split("=", 1) for pair in found.group(1).replace("&amp;", "&").split("&"))
        response = client.get("/admin/bank", params=params, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"{label}: HTTP {response.status_code}")
        rows = response.text.count('class="bank-entry')
        links = {rel: re.search(rf'rel="{rel}" href="([^"]+)"', response.text) for rel in ("next", "prev")}

        def get(client: TestClient = client, params: dict[str, str] = params,
                headers: dict[str, str] = headers) -> None:
            assert client.get("/admin/bank", params=params, headers=headers).status_code == 200

        timing = _timed(get, repeat)
        results.append({"variant": label, "as": who, "params": params, "rows": rows,
                        "pager": {rel: bool(found) for rel, found in links.items()}, **timing,
                        "target_ms": TARGET_MS, "met": timing["p95_ms"] <= TARGET_MS})
    # The dashboard's bank figures: the service alone (every company, then one), and the page.
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        ids = list(session.scalars(select(Company.id).order_by(Company.id)))
        dashboard = {"bank_state_all_companies": _timed(lambda: bank_state(session, ids), repeat),
                     "bank_state_one_company": _timed(lambda: bank_state(session, ids[:1]), repeat)}
    engine.dispose()
    admin = clients["admin"]
    dashboard["page_all_companies"] = _timed(lambda: admin.get("/admin").raise_for_status(), max(5, repeat // 3))
    for client in clients.values():
        client.__exit__(None, None, None)
    return {"loaded": loaded, "open_pages": open_pages, "queue": results, "dashboard_bank": dashboard}


def table(report: dict[str, Any]) -> str:
    lines = [f"{'variant':<44} {'rows':>4} {'median':>9} {'p95':>9} {'cpu med':>9} {'cpu p95':>9}  target",
             "-" * 104]
    for r in report["queue"]:
        lines.append(f"{r['variant']:<44} {r['rows']:>4} {r['median_ms']:>7.1f}ms {r['p95_ms']:>7.1f}ms "
                     f"{r['cpu_median_ms']:>7.1f}ms {r['cpu_p95_ms']:>7.1f}ms  "
                     f"<={TARGET_MS:.0f} ms p95 {'met' if r['met'] else 'MISSED'}")
    for key, r in report["dashboard_bank"].items():
        lines.append(f"{key:<44} {'':>4} {r['median_ms']:>7.1f}ms {r['p95_ms']:>7.1f}ms "
                     f"{r['cpu_median_ms']:>7.1f}ms {r['cpu_p95_ms']:>7.1f}ms")
    lines.append(f"loaded: {report['loaded']}")
    lines.append(f"load average at start {report['machine']['loadavg_at_start']}, "
                 f"at end {report['machine']['loadavg_at_end']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="2,000 customers / 40,000 invoices")
    parser.add_argument("--entries", type=int, default=10_000, help="credits left unmatched")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per variant (after 3 warm-ups)")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL database holding (or to hold) the book")
    args = parser.parse_args(argv)
    customers, invoices = (2_000, 40_000) if args.small else (50_000, 1_000_000)
    host = machine()
    clock.set(datetime(2026, 11, 25, 18, 0, tzinfo=timezone.utc))
    book = ensure_book(customers, invoices, postgres=args.postgres)
    with book_copy(book["url"]) as url:
        report = measure(url, args.entries, args.repeat)
    report = {"scenario": "bank_queue", "database": "postgresql" if args.postgres else "sqlite",
              "book": {"customers": customers, "invoices": invoices},
              "machine": {**host, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}, **report}
    print(table(report), file=sys.stderr)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
