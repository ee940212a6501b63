"""Build, once, a large book of accounts for the benchmarks, and cache it under var/bench/.

    .venv/bin/python bench/generate.py                       # 50,000 customers, 1,000,000 invoices, SQLite
    .venv/bin/python bench/generate.py --customers 2000 --invoices 40000   # a small one while developing
    .venv/bin/python bench/generate.py --postgres postgresql+psycopg://user@host/encours_bench

The schema comes from the migrations; rows go in with SQLAlchemy Core executemany in big
batches on SQLite (PRAGMA synchronous=OFF during the load), with COPY on PostgreSQL (triggers off
during the load, the running totals they keep computed once at the end). The book is deterministic (fixed
random seed). The file name carries the migration head and the sizes, so a new migration or
other sizes build a new book; a PostgreSQL database is reused when it holds a book of the same
sizes (drop it to rebuild).

What is in it: 3 companies (two EUR, one GBP); customers with one primary contact each; invoices
spread over customers, about 8 % credit notes, most invoices settled by a payment with its
allocation, some partly paid, a few disputed (with a dispute row). Customer BENCH-200 of the
first company has exactly 200 open invoices: the statement-page scenario uses it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, Table, event, func, select, text  # noqa: E402

from kernel.db import make_engine, migration_heads, upgrade  # noqa: E402
from ledger.models import Base  # noqa: E402

CACHE_DIR = ROOT / "var" / "bench"
BATCH = 20_000
SEED = 20261125
TODAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
STATEMENT_CUSTOMER = "BENCH-200"
STATEMENT_OPEN_INVOICES = 200
COMPANIES = [
    {"id": 1, "code": "BENCH-FR", "name": "Durand Industrie SAS", "base_currency": "EUR", "country": "FR",
     "timezone": "Europe/Paris", "brand_color": "#1d4f91", "link_lifetime_days": 30},
    {"id": 2, "code": "BENCH-FR2", "name": "Durand Services SAS", "base_currency": "EUR", "country": "FR",
     "timezone": "Europe/Paris", "brand_color": "#7a1f3d", "link_lifetime_days": 30},
    {"id": 3, "code": "BENCH-UK", "name": "Durand UK Ltd", "base_currency": "GBP", "country": "GB",
     "timezone": "Europe/London", "brand_color": "#0b6e4f", "link_lifetime_days": 30},
]


def sqlite_path(customers: int, invoices: int) -> Path:
    head = "-".join(sorted(migration_heads()))
    return CACHE_DIR / f"book-{head}-{customers}c-{invoices}i.sqlite3"


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _insert(connection: Connection, name: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(_table(name).insert(), rows)


def _column_defaults(name: str, given: set[str]) -> dict[str, Any]:
    """The Python-side defaults SQLAlchemy's INSERT would add for the columns a row leaves out (COPY adds none)."""
    defaults = {}
    for column in _table(name).columns:
        if column.name in given or column.default is None:
            continue
        default: Any = column.default
        defaults[column.name] = default.arg(None) if default.is_callable else default.arg
    return defaults


def _copy(connection: Connection, name: str, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL: the same rows as `_insert`, through COPY (psycopg's `write_row`), many times faster."""
    if not rows:
        return
    defaults = _column_defaults(name, set(rows[0]))
    columns = [*rows[0], *defaults]
    filled = list(defaults.values())
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([*row.values(), *filled])


# What the triggers of migrations 0005/0021 (customer_balances) and 0010 (the dashboard's running totals)
# would have written row by row, computed once over the loaded book (as ledger.day_totals.recount counts).
_REBUILD_TOTALS = (
    "INSERT INTO customer_balances (customer_id, outstanding_minor, overdue_minor, oldest_due) "
    "SELECT id, 0, 0, DATE '9999-12-31' FROM customers ON CONFLICT DO NOTHING",
    "SELECT count(*) FROM (SELECT encours_refresh_customer_balance(id) FROM customers) AS refreshed",
    "INSERT INTO open_items_by_due (company_id, currency, kind, status, due_date, open_minor) "
    "SELECT company_id, currency, kind, status, due_date, SUM(open_minor) FROM invoices WHERE open_minor > 0 "
    "GROUP BY company_id, currency, kind, status, due_date",
    "INSERT INTO invoices_issued_by_day (company_id, currency, issue_date, total_minor) "
    "SELECT company_id, currency, issue_date, SUM(total_minor) FROM invoices "
    "WHERE kind = 'invoice' AND status <> 'void' GROUP BY company_id, currency, issue_date",
    "INSERT INTO payment_days (company_id, currency, method, received_on, collected_minor, settled_minor, "
    "settled_days_minor) "
    "SELECT c.company_id, p.currency, p.method, p.received_on, SUM(p.amount_minor), "
    "SUM(COALESCE(s.amount, 0)), SUM(COALESCE(s.days, 0)) "
    "FROM payments p JOIN customers c ON c.id = p.customer_id "
    "LEFT JOIN (SELECT a.payment_id, SUM(a.amount_minor) AS amount, "
    "                  SUM(a.amount_minor * (q.received_on - i.issue_date)) AS days "
    "           FROM allocations a JOIN invoices i ON i.id = a.invoice_id JOIN payments q ON q.id = a.payment_id "
    "           GROUP BY a.payment_id) AS s ON s.payment_id = p.id "
    "WHERE p.status = 'succeeded' AND p.received_on IS NOT NULL "
    "GROUP BY c.company_id, p.currency, p.method, p.received_on",
)


def _existing_book(connection: Connection) -> dict[str, int] | None:
    try:
        meta = connection.execute(text("SELECT count(*) FROM companies WHERE code = 'BENCH-FR'")).scalar()
    except Exception:
        return None
    if not meta:
        return None
    return {
        "customers": int(connection.execute(select(func.count()).select_from(_table("customers"))).scalar_one()),
        "invoices": int(connection.execute(select(func.count()).select_from(_table("invoices"))).scalar_one()),
    }


def _invoice_counts(customers: int, invoices: int, rng: random.Random) -> list[int]:
    """How many invoices (and credit notes) each customer has; customer 0 is BENCH-200."""
    first = STATEMENT_OPEN_INVOICES + 40  # its 200 open ones and some settled history
    rest = invoices - first
    weights = [rng.paretovariate(1.6) for _ in range(customers - 1)]
    total = sum(weights)
    counts = [max(1, int(rest * w / total)) for w in weights]
    # adjust to the exact total
    diff = rest - sum(counts)
    index = 0
    while diff != 0:
        i = index % len(counts)
        if diff > 0:
            counts[i] += 1
            diff -= 1
        elif counts[i] > 1:
            counts[i] -= 1
            diff += 1
        index += 1
    return [first, *counts]


def _rows(customers: int, invoices: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yields (table, batch of rows), parents before children."""
    rng = random.Random(SEED)
    yield "companies", [{**company, "created_at": NOW} for company in COMPANIES]
    counts = _invoice_counts(customers, invoices, rng)

    customer_rows: list[dict[str, Any]] = []
    contact_rows: list[dict[str, Any]] = []
    for n in range(customers):
        company = 1 if n == 0 else 1 + (n % 10 == 9) + (n % 10 == 8) * 2  # 80 % / 10 % / 10 %
        language = "en" if company == 3 or n % 7 == 0 else "fr"
        ref = STATEMENT_CUSTOMER if n == 0 else f"C{n:06d}"
        customer_rows.append({"id": n + 1, "company_id": company, "ref": ref, "name": f"Client {n:06d} SARL",
                              "language": language, "segment": ("pme", "eti", "public")[n % 3], "created_at": NOW})
        contact_rows.append({"id": n + 1, "customer_id": n + 1, "email": f"ap{n:06d}@client.example",
                             "language": language, "is_primary": True, "link_version": 1, "created_at": NOW})
        if len(customer_rows) >= BATCH:
            yield "customers", customer_rows
            yield "contacts", contact_rows
            customer_rows, contact_rows = [], []
    yield "customers", customer_rows
    yield "contacts", contact_rows

    invoice_id = payment_id = allocation_id = dispute_id = 0
    batch: dict[str, list[dict[str, Any]]] = {k: [] for k in
                                               ("invoices", "payments", "allocations", "disputes", "dispute_invoices")}
    for n, count in enumerate(counts):
        customer_id = n + 1
        company = customer_rows_company(n)
        currency = "GBP" if company == 3 else "EUR"
        for k in range(count):
            invoice_id += 1
            issue = TODAY - timedelta(days=rng.randint(0, 720))
            due = issue + timedelta(days=rng.choice((30, 45, 60)))
            total = rng.randint(50_00, 25_000_00)
            credit_note = n != 0 and rng.random() < 0.08
            if n == 0:
                state = "open" if k < STATEMENT_OPEN_INVOICES else "paid"
                if k < STATEMENT_OPEN_INVOICES:
                    issue = TODAY - timedelta(days=k * 2)
                    due = issue + timedelta(days=45)
            else:
                age = (TODAY - issue).days
                r = rng.random()
                if credit_note:
                    state = "open" if r < 0.3 else "paid"
                elif age > 120:
                    state = "paid" if r < 0.93 else ("partially_paid" if r < 0.97 else "open")
                else:
                    state = "paid" if r < 0.45 else ("partially_paid" if r < 0.55 else "open")
                if state == "open" and not credit_note and rng.random() < 0.01:
                    state = "disputed"
            open_minor = {"open": total, "disputed": total, "paid": 0}.get(state, total // 3)
            discount = {}
            if not credit_note and state == "open" and rng.random() < 0.2:
                discount = {"discount_bps": 200, "discount_until": issue + timedelta(days=10)}
            batch["invoices"].append({
                "id": invoice_id, "company_id": company, "customer_id": customer_id,
                "kind": "credit_note" if credit_note else "invoice",
                "number": f"{'AV' if credit_note else 'F'}-{company}-{invoice_id:08d}",
                "issue_date": issue, "due_date": issue if credit_note else due, "currency": currency,
                "total_minor": total, "open_minor": open_minor, "status": state,
                "discount_bps": None, "discount_until": None, **discount,
                "created_at": NOW, "updated_at": NOW,
            })
            settled = total - open_minor
            if settled and not credit_note:
                payment_id += 1
                allocation_id += 1
                method = ("card", "instant_transfer", "direct_debit", "bank_transfer")[payment_id % 4]
                provider = {"card": "stripe", "bank_transfer": "bank_transfer"}.get(method, "gocardless")
                batch["payments"].append({
                    "id": payment_id, "customer_id": customer_id, "provider": provider,
                    "provider_ref": f"bench_{payment_id}", "method": method, "amount_minor": settled,
                    "currency": currency, "status": "succeeded", "received_on": due,
                    "created_at": NOW, "updated_at": NOW,
                })
                batch["allocations"].append({
                    "id": allocation_id, "invoice_id": invoice_id, "payment_id": payment_id, "currency": currency,
                    "amount_minor": settled, "discount_minor": 0, "created_at": NOW,
                })
            if state == "disputed":
                dispute_id += 1
                batch["disputes"].append({"id": dispute_id, "customer_id": customer_id, "contact_id": customer_id,
                                          "kind": "dispute", "status": "open", "opened_at": NOW})
                batch["dispute_invoices"].append({"dispute_id": dispute_id, "invoice_id": invoice_id})
        if len(batch["invoices"]) >= BATCH:
            yield from ((name, rows) for name, rows in batch.items())
            batch = {k: [] for k in batch}
    yield from ((name, rows) for name, rows in batch.items())


def customer_rows_company(n: int) -> int:
    return 1 if n == 0 else 1 + (n % 10 == 9) + (n % 10 == 8) * 2


def _fast_load_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=OFF")
    dbapi_connection.execute("PRAGMA cache_size=-200000")


def _load(url: str, customers: int, invoices: int) -> dict[str, int]:
    engine = make_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:  # set as each connection opens: SQLite refuses it inside a transaction
        event.listen(engine, "connect", _fast_load_pragmas)
    written: dict[str, int] = {}
    started = time.monotonic()
    try:
        with engine.connect() as connection:
            if not sqlite:
                # Neither triggers nor foreign-key checks fire for this session's rows (they are written parents
                # first, and consistent); the running totals the triggers keep are rebuilt once at the end.
                connection.exec_driver_sql("SET session_replication_role = replica")
            for name, rows in _rows(customers, invoices):
                if sqlite or name == "companies":  # three rows, one a JSON column: COPY would need it encoded
                    _insert(connection, name, rows)
                else:
                    _copy(connection, name, rows)
                written[name] = written.get(name, 0) + len(rows)
                if name == "invoices":
                    connection.commit()
                    print(f"  {written['invoices']:>9,} invoices  {time.monotonic() - started:6.1f} s",
                          file=sys.stderr, flush=True)
            connection.commit()
            if not sqlite:  # identity sequences after explicit ids
                for name in ("companies", "customers", "contacts", "invoices", "payments", "allocations", "disputes"):
                    connection.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT coalesce(max(id), 1) FROM {name}))"))
                connection.exec_driver_sql("SET session_replication_role = DEFAULT")
                for statement in _REBUILD_TOTALS:
                    connection.exec_driver_sql(statement)
                connection.commit()
                print(f"  running totals rebuilt  {time.monotonic() - started:6.1f} s", file=sys.stderr, flush=True)
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    finally:
        engine.dispose()
    return written


def ensure_book(customers: int = 50_000, invoices: int = 1_000_000, postgres: str | None = None) -> dict[str, Any]:
    """The URL of a book of that size, building it when missing; with details of how it was got."""
    if postgres:
        url = postgres
        upgrade(url)
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                existing = _existing_book(connection)
        finally:
            engine.dispose()
        if existing is not None:
            if existing["customers"] != customers:
                raise SystemExit(f"{url} holds another book ({existing}); drop that database to rebuild")
            return {"url": url, "built": False, **existing}
    else:
        path = sqlite_path(customers, invoices)
        url = f"sqlite:///{path}"
        if path.exists():
            return {"url": url, "built": False, "customers": customers, "invoices": invoices}
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        for leftover in CACHE_DIR.glob(partial.name + "*"):
            leftover.unlink()
        url = f"sqlite:///{partial}"
    started = time.monotonic()
    print(f"Building a book of {customers:,} customers and {invoices:,} invoices in {url}", file=sys.stderr)
    if not postgres:
        upgrade(url)
    written = _load(url, customers, invoices)
    seconds = round(time.monotonic() - started, 1)
    if not postgres:
        engine = make_engine(url)
        with engine.connect() as connection:  # fold the WAL back in before renaming the file
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        partial.rename(path)
        url = f"sqlite:///{path}"
    print(f"Built in {seconds} s: {json.dumps(written)}", file=sys.stderr)
    return {"url": url, "built": True, "seconds": seconds, "rows": written,
            "customers": customers, "invoices": invoices}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--postgres", metavar="URL", help="also (or only) build the book in this PostgreSQL database")
    args = parser.parse_args(argv)
    if args.invoices < args.customers + STATEMENT_OPEN_INVOICES + 40:
        parser.error("need at least one invoice per customer, plus 240 for BENCH-200")
    result = ensure_book(args.customers, args.invoices, args.postgres)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
