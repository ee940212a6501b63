"""Invoices an import creates, and its per-customer audit rows, are written with
`kernel.db.insert_rows` (a COPY on PostgreSQL) instead of an executemany INSERT as until
2026-12-05: the same imports, applied both ways from the same start, leave the same invoices
(every column), the same audit rows (every column), the same webhook deliveries, the same running
totals and customer balances. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import Table, insert, select, text
from sqlalchemy.orm import Session

from ledger.allocation import allocate
from ledger.csv_import import import_csv, import_records
from ledger.day_totals import drift
from ledger.models import CustomerBalance, Invoice, Payment
from ledger.money import Money
from ledger.webhook_endpoints import add_endpoint
from tests import factories
from tests.ledger.both_ways import DUE, HEADER, ISSUE, both_ways, line



def _plain_insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """The previous behaviour, kept here to compare with: one executemany INSERT."""
    if rows:
        session.execute(insert(table), list(rows))


# What both_ways replaces, and the customers' balances compared besides what it always compares.
PATCHED: dict[str, Any] = {"replaced": "insert_rows", "reference": _plain_insert_rows,
                           "extra": [CustomerBalance.__table__]}

def _file() -> bytes:
    """New invoices of three customers (overdue, due later, with and without terms, credit notes),
    and lines that update or repeat what the book holds."""
    lines = [line(f"N-{n:03d}", f"C{n % 3 + 1}", ISSUE + timedelta(days=n % 5), DUE + timedelta(days=n % 40),
                   f"{100 + n}.{n:02d}") for n in range(1, 61)]
    lines.append(line("N-100", "C1", ISSUE, DUE, "80.00", "2", "2026-10-20"))
    lines += [line(f"NAV-{n}", "C2", ISSUE, ISSUE, f"{10 * n}.00", kind="credit_note") for n in (1, 2)]
    lines.append(line("OLD-1", "C1", ISSUE, DUE + timedelta(days=3), "120.00"))  # updated
    lines.append(line("OLD-2", "C2", ISSUE, DUE, "50.00"))  # unchanged
    return (HEADER + "".join(lines)).encode()


def _book(session: Session) -> None:
    acme = factories.company(session, code="ACME", default_discount_bps=150, default_discount_days=10)
    customers = {ref: factories.customer(session, acme, ref=ref) for ref in ("C1", "C2", "C3")}
    add_endpoint(session, "ACME", "http://127.0.0.1/erp", ["*"], allow_private=True)
    import_csv(session, "invoices", (HEADER + line("OLD-1", "C1", ISSUE, DUE, "120.00")
                                     + line("OLD-2", "C2", ISSUE, DUE, "50.00")).encode())
    session.flush()
    old = session.scalars(select(Invoice).where(Invoice.number == "OLD-1")).one()
    payment = Payment(customer_id=customers["C1"].id, provider="manual", provider_ref="CHQ-1", method="cheque",
                      amount_minor=2000, currency="EUR", status="succeeded", received_on=date(2026, 11, 1))
    session.add(payment)
    session.flush()
    allocate(session, old, Money(2000, "EUR"), payment=payment)
    session.flush()


def test_a_file_creating_invoices_leaves_the_same_book_as_an_executemany_insert(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    _book(session)
    (old_report, old), (new_report, new) = both_ways(
        session, monkeypatch, lambda: import_csv(session, "invoices", _file(), actor="admin@acme.test"), **PATCHED)
    assert (new_report.created, new_report.updated, new_report.unchanged) == (63, 1, 1)
    assert new_report == old_report
    assert new == old
    names = [c.name for c in Invoice.__table__.columns if c.name != "id"]
    after = {row["number"]: row for row in (dict(zip(names, values)) for values in new["invoices"])}
    # the company's default terms, an explicit discount, a credit note without terms
    assert (after["N-001"]["discount_bps"], after["N-001"]["discount_until"]) == (150, date(2026, 10, 12))
    assert (after["N-100"]["discount_bps"], after["N-100"]["discount_until"]) == (200, date(2026, 10, 20))
    assert (after["NAV-1"]["discount_bps"], after["NAV-1"]["kind"]) == (None, "credit_note")
    assert (after["N-001"]["status"], after["N-001"]["open_minor"], after["N-001"]["settled_outside_minor"]) == (
        "open", 10101, 0)
    imported = [a for a in new["audit"] if a[2] == "import.invoices" and a[1] == "admin@acme.test"]
    assert len(imported) == 4  # the company's, and one per customer touched


def test_the_api_bulk_records_create_the_same_way(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    _book(session)
    records = [dict(zip(HEADER.strip().split(","), raw.split(","))) for raw in _file().decode().splitlines()[1:]]
    (_, old), (report, new) = both_ways(session, monkeypatch, lambda: import_records(
        session, "invoices", records, company_code="ACME", actor_type="api", actor="sap-sync"), **PATCHED)
    assert report.created == 63
    assert new == old
    written = [a for a in new["audit"] if a[0] == "api"]
    assert len(written) == 5 and all(a[1] == "sap-sync" for a in written)  # the company, 3 customers, 1 update


def test_on_postgresql_the_new_invoices_fire_the_running_totals_triggers_once(pg_session: Session) -> None:
    """The statement triggers of migration 0026_pg_totals run once per statement: an executemany is
    one statement per invoice there, a COPY one for the whole import."""
    session = pg_session
    _book(session)
    session.execute(text("CREATE TEMP TABLE invoice_statements (fired integer) ON COMMIT DROP"))
    session.execute(text("CREATE FUNCTION pg_temp.count_statement() RETURNS trigger AS $$ BEGIN "
                         "INSERT INTO invoice_statements VALUES (1); RETURN NULL; END $$ LANGUAGE plpgsql"))
    session.execute(text("CREATE TRIGGER tr_count_statement AFTER INSERT ON invoices "
                         "FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.count_statement()"))
    report = import_csv(session, "invoices", _file())
    assert report.created == 63
    assert session.scalar(text("SELECT count(*) FROM invoice_statements")) == 1
    assert drift(session) == []
