"""The bench book is the same on SQLite (executemany, triggers on) and PostgreSQL (COPY, totals rebuilt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bench.generate import _load
from kernel.db import make_engine, upgrade
from ledger import day_totals
from ledger.models import Base
from tests.pgserver import PostgresServer

CUSTOMERS, INVOICES = 300, 4_000


def _facts(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            counts = {name: session.execute(select(func.count()).select_from(table)).scalar_one()
                      for name, table in Base.metadata.tables.items()}
            sums = session.execute(text(
                "SELECT SUM(total_minor), SUM(open_minor), SUM(id * (open_minor % 9973)), "
                "COUNT(DISTINCT number), SUM(CASE WHEN discount_bps IS NULL THEN 0 ELSE id END) "
                "FROM invoices")).one()
            by_status = sorted(session.execute(text(
                "SELECT status, kind, COUNT(*), SUM(open_minor) FROM invoices GROUP BY status, kind")).all())
            balances = session.execute(text(
                "SELECT customer_id, outstanding_minor, overdue_minor, oldest_due FROM customer_balances "
                "ORDER BY customer_id")).all()
            return {"counts": counts, "sums": tuple(sums), "by_status": by_status,
                    "balances": [tuple(str(v) for v in row) for row in balances],
                    "totals": day_totals.stored(session), "drift": day_totals.drift(session)}
    finally:
        engine.dispose()


def test_sqlite_and_postgresql_books_hold_the_same_rows_and_totals(
        tmp_path: Path, pg_server: PostgresServer) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'book.sqlite3'}"
    postgres_url = pg_server.create_database("bench_book_copy")
    for url in (sqlite_url, postgres_url):
        upgrade(url)
        _load(url, CUSTOMERS, INVOICES)

    on_sqlite, on_postgres = _facts(sqlite_url), _facts(postgres_url)

    assert on_postgres["counts"]["invoices"] == INVOICES
    assert on_postgres["counts"]["customer_balances"] == CUSTOMERS
    assert on_postgres["drift"] == [] and on_sqlite["drift"] == []
    assert on_postgres["totals"]["open_items_by_due"] and on_postgres["totals"]["payment_days"]
    for fact in ("counts", "sums", "by_status", "balances", "totals"):
        assert on_postgres[fact] == on_sqlite[fact], fact
