"""The customers list's sort keys (customer_balances) follow every invoice change, through the
database triggers of migration 0005 (outstanding as redefined by 0021_polish: open invoices neither
void nor disputed, credit notes not deducted), on SQLite and PostgreSQL; overdue moves with the days."""

from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from admin.customers_service import refresh_overdue
from kernel.clock import clock
from ledger.models import FAR_FUTURE, Customer, CustomerBalance, Invoice, InvoiceKind
from tests import factories


def stored(session: Session, customer: Customer) -> tuple[int, int, date]:
    session.expire_all()
    row = session.get_one(CustomerBalance, customer.id)
    return row.outstanding_minor, row.overdue_minor, row.oldest_due


def recomputed(session: Session, customer: Customer, as_of: date) -> tuple[int, int, date]:
    """The same figures summed from the invoices, as the list would without the table."""
    chased = (Invoice.kind == "invoice") & Invoice.status.in_(("open", "partially_paid"))
    per_currency = session.execute(
        select(func.sum(case((chased, Invoice.open_minor), else_=0)),
               func.sum(case((chased & (Invoice.due_date < as_of), Invoice.open_minor), else_=0)),
               func.min(case((chased, Invoice.due_date))))
        .where(Invoice.customer_id == customer.id, Invoice.open_minor > 0, Invoice.status != "void")
        .group_by(Invoice.currency)
    ).all()
    if not per_currency:
        return 0, 0, FAR_FUTURE
    return (max(int(r[0]) for r in per_currency), max(int(r[1]) for r in per_currency),
            min((r[2] for r in per_currency if r[2] is not None), default=FAR_FUTURE))


def test_a_new_customer_has_an_empty_row(session: Session) -> None:
    customer = factories.customer(session, factories.company(session))
    assert stored(session, customer) == (0, 0, FAR_FUTURE)


def test_every_invoice_change_is_followed(session: Session) -> None:
    today = date(2026, 11, 25)
    refresh_overdue(session, today)
    company = factories.company(session)
    customer = factories.customer(session, company)
    other = factories.customer(session, company)
    late = factories.invoice(session, customer, total_minor=1000_00, due_date=date(2026, 10, 31))
    factories.invoice(session, customer, total_minor=400_00, due_date=date(2026, 12, 31))
    usd = factories.invoice(session, customer, total_minor=3000_00, currency="USD", due_date=date(2026, 9, 1))
    credit = factories.invoice(session, customer, total_minor=150_00, kind=InvoiceKind.credit_note,
                               due_date=date(2026, 10, 1))
    session.flush()
    assert stored(session, customer) == recomputed(session, customer, today) == (3000_00, 3000_00, date(2026, 9, 1))
    usd.open_minor, usd.status = 0, "paid"  # settled: the EUR figures lead now
    session.flush()
    # The credit note is not deducted from the outstanding (shown apart, as on the dashboard).
    assert stored(session, customer) == recomputed(session, customer, today) == (1400_00, 1000_00, date(2026, 10, 31))
    late.open_minor, late.status = 600_00, "partially_paid"
    session.flush()
    assert stored(session, customer) == (1000_00, 600_00, date(2026, 10, 31))
    late.status = "disputed"  # still owed, no longer chased nor outstanding
    session.flush()
    assert stored(session, customer) == recomputed(session, customer, today) == (400_00, 0, date(2026, 12, 31))
    credit.status = "void"
    late.status = "partially_paid"  # the dispute is over
    late.customer_id = other.id  # moved to another customer: both rows follow
    session.flush()
    assert stored(session, customer) == recomputed(session, customer, today) == (400_00, 0, date(2026, 12, 31))
    assert stored(session, other) == recomputed(session, other, today) == (600_00, 600_00, date(2026, 10, 31))
    session.delete(session.get_one(Invoice, late.id))
    session.flush()
    assert stored(session, other) == (0, 0, FAR_FUTURE)


def test_overdue_moves_with_the_days(session: Session) -> None:
    company = factories.company(session)
    customer = factories.customer(session, company)
    factories.invoice(session, customer, total_minor=500_00, due_date=date(2026, 12, 1))
    refresh_overdue(session, date(2026, 11, 25))
    assert stored(session, customer) == (500_00, 0, date(2026, 12, 1))
    clock.set(datetime(2026, 12, 5, 10, 0, tzinfo=timezone.utc))
    refresh_overdue(session, date(2026, 12, 5))
    assert stored(session, customer) == recomputed(session, customer, date(2026, 12, 5)) == (
        500_00, 500_00, date(2026, 12, 1))
