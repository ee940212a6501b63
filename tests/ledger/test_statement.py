from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from ledger.allocation import allocate
from ledger.models import Invoice, InvoiceKind, Payment
from ledger.money import Money
from ledger.statement import available_discount, build_statement
from tests import factories

TODAY = date(2026, 11, 25)


def test_sections_per_currency_with_credits_disputes_and_overdue(session: Session) -> None:
    company = factories.company(session, base_currency="EUR")
    customer = factories.customer(session, company)
    late = factories.invoice(session, customer, total_minor=1000_00, due_date=date(2026, 11, 20))
    factories.invoice(session, customer, total_minor=500_00, due_date=date(2026, 12, 20))
    factories.invoice(session, customer, total_minor=300_00, due_date=date(2026, 11, 1), status="disputed")
    factories.invoice(session, customer, total_minor=200_00, kind=InvoiceKind.credit_note)
    factories.invoice(session, customer, total_minor=70_00, currency="USD", due_date=date(2026, 12, 1))
    factories.invoice(session, customer, total_minor=999_00, status="void")
    factories.invoice(session, customer, total_minor=50_00, open_minor=0, status="paid")
    payment = Payment(customer_id=customer.id, provider="manual", method="bank_transfer", amount_minor=1100_00,
                      currency="EUR", status="succeeded")
    session.add(payment)
    session.flush()
    allocate(session, late, Money(1000_00, "EUR"), payment=payment)

    statement = build_statement(session, customer, TODAY)
    assert [s.currency for s in statement.sections] == ["EUR", "USD"]
    eur, usd = statement.sections
    assert eur.invoices_open == Money(500_00, "EUR")
    assert eur.disputed == Money(300_00, "EUR")
    assert eur.unapplied_credit == Money(100_00, "EUR")
    assert eur.credits == Money(300_00, "EUR")
    assert eur.total_due == Money(200_00, "EUR")
    assert eur.overdue == Money(0, "EUR")
    assert usd.total_due == Money(70_00, "USD") and usd.overdue == Money(0, "USD")
    assert len(eur.lines) == 3  # open invoice, disputed invoice, credit note


def test_credit_balance_is_not_shown_as_due(session: Session) -> None:
    customer = factories.customer(session, factories.company(session))
    factories.invoice(session, customer, total_minor=100_00)
    factories.invoice(session, customer, total_minor=250_00, kind=InvoiceKind.credit_note)
    (eur,) = build_statement(session, customer, TODAY).sections
    assert eur.total_due == Money(0, "EUR") and eur.balance == Money(-150_00, "EUR")


def test_days_overdue_and_overdue_total(session: Session) -> None:
    customer = factories.customer(session, factories.company(session))
    factories.invoice(session, customer, total_minor=100_00, due_date=date(2026, 11, 24))
    factories.invoice(session, customer, total_minor=100_00, due_date=TODAY)
    (eur,) = build_statement(session, customer, TODAY).sections
    assert [line.days_overdue for line in eur.lines] == [1, 0]
    assert eur.overdue == Money(100_00, "EUR")


def test_discount_offered_until_its_date_only(session: Session) -> None:
    customer = factories.customer(session, factories.company(session))
    invoice = factories.invoice(session, customer, total_minor=1200_00, discount_bps=200,
                                discount_until=date(2026, 12, 12))
    offer = available_discount(invoice, TODAY)
    assert offer is not None and offer.amount == Money(24_00, "EUR") and offer.until == date(2026, 12, 12)
    assert available_discount(invoice, date(2026, 12, 12)) is not None
    assert available_discount(invoice, date(2026, 12, 13)) is None


def test_lines_are_plain_rows_with_the_invoices_values(session: Session) -> None:
    customer = factories.customer(session, factories.company(session))
    invoice = factories.invoice(session, customer, total_minor=1200_00, open_minor=700_00, number="F-9",
                                status="partially_paid", discount_bps=200, discount_until=date(2026, 12, 12))
    credit = factories.invoice(session, customer, total_minor=50_00, kind=InvoiceKind.credit_note)
    (eur,) = build_statement(session, customer, TODAY).sections
    row, note = (line.invoice for line in eur.lines)
    assert not isinstance(row, Invoice)  # read-only rows: nothing on a statement writes back
    assert (row.id, row.number, row.status, row.issue_date, row.due_date) == (
        invoice.id, "F-9", "partially_paid", invoice.issue_date, invoice.due_date)
    assert row.total == Money(1200_00, "EUR") and row.open == Money(700_00, "EUR") and not row.is_credit_note
    assert note.id == credit.id and note.is_credit_note and eur.lines[1].days_overdue == 0
    offer = available_discount(row, TODAY)
    assert offer is not None and offer.amount == Money(14_00, "EUR")  # 2 % of what is still open


def test_lines_in_currency_due_date_and_number_order(session: Session) -> None:
    """Read unordered and sorted in Python: by currency, due date, then number in code point order
    (SQLite's and a "C" collation's ORDER BY), whatever order they were written in."""
    customer = factories.customer(session, factories.company(session, base_currency="EUR"))
    written = [("F-b", "EUR", date(2026, 11, 2)), ("F-B", "EUR", date(2026, 11, 2)), ("F-10", "EUR", date(2026, 11, 2)),
               ("F-9", "EUR", date(2026, 11, 2)), ("F-é", "EUR", date(2026, 11, 2)), ("F-a", "EUR", date(2026, 10, 30)),
               ("G-1", "USD", date(2026, 10, 1)), ("A-1", "GBP", date(2026, 12, 1)), ("F-z", "EUR", date(2027, 1, 1))]
    for number, currency, due in written:
        factories.invoice(session, customer, total_minor=10_00, number=number, currency=currency, due_date=due)
    statement = build_statement(session, customer, TODAY)
    assert [(s.currency, [line.invoice.number for line in s.lines]) for s in statement.sections] == [
        ("EUR", ["F-a", "F-10", "F-9", "F-B", "F-b", "F-é", "F-z"]), ("GBP", ["A-1"]), ("USD", ["G-1"])]
