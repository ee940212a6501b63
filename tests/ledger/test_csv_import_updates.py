"""Invoices an import updates are written in batched statements (`_update_invoices`), not one ORM
object at a time as until 2026-12-05: the same imports, applied both ways from the same start,
leave the same invoices (every column), the same audit rows (every column), the same webhook
deliveries and the same running totals. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ledger import audit, csv_import
from ledger.allocation import allocate, settled_status
from ledger.csv_import import import_csv, import_records
from ledger.models import Invoice, Payment
from ledger.money import Money
from ledger.webhook_endpoints import add_endpoint
from tests import factories
from tests.ledger.both_ways import DUE, HEADER, ISSUE, both_ways, line

@pytest.fixture
def session_factory(both_databases_session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return both_databases_session_factory


def _reference_update_invoices(session: Session, updates: list[tuple[Any, Any]], actor: tuple[str, str]) -> None:
    """The previous behaviour, kept here to compare with: each invoice loaded as an ORM object, its
    attributes set, its audit row recorded through `audit.record`, the unit of work flushing it."""
    invoices = {invoice.id: invoice for invoice in session.scalars(
        select(Invoice).where(Invoice.id.in_([existing.id for existing, _ in updates])))}
    for existing, p in updates:
        invoice = invoices[existing.id]
        state = csv_import._invoice_state(existing.terms())
        settled = invoice.total_minor - invoice.open_minor
        invoice.issue_date = p.issue_date
        invoice.due_date = p.due_date
        invoice.total_minor = p.total_minor
        invoice.open_minor = p.total_minor - settled
        invoice.discount_bps = p.discount_bps
        invoice.discount_until = p.discount_until
        invoice.status = settled_status(invoice)
        before, after = csv_import._changes(state, csv_import._invoice_state({
            "issue_date": invoice.issue_date, "due_date": invoice.due_date, "total_minor": invoice.total_minor,
            "open_minor": invoice.open_minor, "status": invoice.status, "discount_bps": invoice.discount_bps,
            "discount_until": invoice.discount_until}))
        audit.record(session, actor_type=actor[0], actor=actor[1], action="invoice.updated", entity_type="invoice",
                     entity_id=invoice.id, customer_id=invoice.customer_id, company_id=invoice.company_id,
                     before=before, after=after)
    session.flush()


def _first_file() -> bytes:
    lines = [line(f"F-{n:03d}", "C1" if n % 2 else "C2", ISSUE, DUE, f"{100 + n}.{n:02d}") for n in range(1, 41)]
    lines.append(line("F-050", "C1", ISSUE, DUE, "80.00", "2", "2026-10-20"))
    lines += [line(f"AV-{n}", "C2", ISSUE, ISSUE, f"{10 * n}.00", kind="credit_note") for n in (1, 2)]
    return (HEADER + "".join(lines)).encode()


def _second_file() -> bytes:
    """What the ERP sends next: every kind of change, unchanged lines, and new ones among them."""
    lines = []
    for n in range(1, 41):
        customer, amount = ("C1" if n % 2 else "C2"), f"{100 + n}.{n:02d}"
        due, issue, percent, until = DUE, ISSUE, "", ""
        match n % 8:
            case 0:
                due = DUE + timedelta(days=15)
            case 1:
                amount = f"{150 + n}.00"
            case 2:
                amount = f"{90 + n}.00"  # below the total; above what is settled
            case 3:
                issue = ISSUE - timedelta(days=3)
            case 4:
                percent, until = "1.5", "2026-10-15"
            case 5:
                due, amount = DUE + timedelta(days=30), f"{101 + n}.00"
            case 6:
                pass  # unchanged
            case 7:
                amount = "40.00"  # exactly what is settled on the part-paid ones: paid
        lines.append(line(f"F-{n:03d}", customer, issue, due, amount, percent, until))
    lines.append(line("F-050", "C1", ISSUE, DUE + timedelta(days=1), "80.00"))  # discount dropped
    lines.append(line("AV-1", "C2", ISSUE, ISSUE, "15.00", kind="credit_note"))
    lines.append(line("AV-2", "C2", ISSUE, ISSUE, "20.00", kind="credit_note"))
    lines += [line(f"F-{n:03d}", "C2", ISSUE, DUE, "55.00") for n in range(60, 64)]
    return (HEADER + "".join(lines)).encode()


def _book(session: Session) -> None:
    acme = factories.company(session, code="ACME")
    for ref in ("C1", "C2"):
        factories.customer(session, acme, ref=ref)
    add_endpoint(session, "ACME", "http://127.0.0.1/erp", ["*"], allow_private=True)
    import_csv(session, "invoices", _first_file())
    session.flush()
    invoices = {i.number: i for i in session.scalars(select(Invoice))}
    customer = invoices["F-001"].customer
    payment = Payment(customer_id=customer.id, provider="manual", provider_ref="CHQ-1", method="cheque",
                      amount_minor=20000, currency="EUR", status="succeeded", received_on=date(2026, 11, 1))
    session.add(payment)
    session.flush()
    for number in ("F-007", "F-015", "F-017", "F-009", "F-033"):  # part paid: 40.00 of each
        allocate(session, invoices[number], Money(4000, "EUR"), payment=payment)
    invoices["F-021"].status = "disputed"
    invoices["F-029"].status = "void"
    session.flush()


def test_a_file_updating_invoices_leaves_the_same_book_as_updating_them_one_by_one(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    _book(session)
    (old_report, old), (new_report, new) = both_ways(
        session, monkeypatch, lambda: import_csv(session, "invoices", _second_file(), actor="admin@acme.test"),
        replaced="_update_invoices", reference=_reference_update_invoices)
    assert (new_report.created, new_report.updated, new_report.unchanged) == (4, 37, 6)
    assert new_report == old_report
    assert new["invoices"] == old["invoices"]
    assert new["audit"] == old["audit"]
    assert new["deliveries"] == old["deliveries"]
    assert new["running_totals"] == old["running_totals"]
    assert len([a for a in new["audit"] if a[2] == "invoice.updated"]) == 37
    names = [c.name for c in Invoice.__table__.columns if c.name != "id"]
    after = {row["number"]: row for row in (dict(zip(names, values)) for values in new["invoices"])}
    assert [after[n]["status"] for n in ("F-007", "F-015", "F-009", "F-021", "F-029")] == [
        "paid", "paid", "partially_paid", "disputed", "void"]  # 40.00 asked where 40.00 was settled: paid
    assert (after["F-009"]["total_minor"], after["F-009"]["open_minor"]) == (15900, 11900)


def test_the_api_bulk_records_update_the_same_way_with_the_keys_name_in_the_audit(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    _book(session)
    records = [dict(zip(HEADER.strip().split(","), raw.split(","))) for raw in
               _second_file().decode().splitlines()[1:]]
    (_, old), (_, new) = both_ways(session, monkeypatch, lambda: import_records(
        session, "invoices", records, company_code="ACME", actor_type="api", actor="sap-sync"),
        replaced="_update_invoices", reference=_reference_update_invoices)
    assert new == old
    updated = [a for a in new["audit"] if a[2] == "invoice.updated"]
    assert updated and all(a[0:2] == ("api", "sap-sync") for a in updated)


def test_an_invoice_the_session_already_holds_reads_the_updated_values(session: Session) -> None:
    _book(session)
    held = session.scalars(select(Invoice).where(Invoice.number == "F-008")).one()
    assert held.due_date == DUE
    report = import_csv(session, "invoices", (HEADER + line("F-008", "C2", ISSUE, DUE + timedelta(days=15),
                                                               "108.08")).encode())
    assert report.updated == 1
    assert held.due_date == DUE + timedelta(days=15)
    assert held.open_minor == 10808 and held.status == "open"
