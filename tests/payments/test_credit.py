"""The customer's credit (open credit notes, money not yet applied) is deducted from what a
checkout charges: reserved while the checkout lives, applied to the invoices once its payment
succeeds, released when it fails, is cancelled or expires; the rest is paid in cash."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from kernel.user_error import UserError
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from kernel.settings import Settings
from ledger.allocation import invariant_violations
from ledger.models import Allocation, Checkout, Customer, Invoice, InvoiceKind, Payment
from ledger.statement import build_statement
from payments.checkout import (
    available_credit,
    cancel_checkout,
    create_checkout,
    quote,
    reserved_credit,
    settle_with_credit,
)
from payments.settlement import apply_payment_status
from tests import factories
from tests.payments.conftest import start

TODAY = date(2026, 11, 25)


def _credit_note(session: Session, customer: Customer, minor: int, number: str = "AV-1") -> Invoice:
    return factories.invoice(session, customer, total_minor=minor, number=number, kind=InvoiceKind.credit_note,
                             due_date=date(2026, 10, 15))


def _checkout(session: Session, customer: Customer, invoices: list[Invoice], method: str = "card") -> Checkout:
    return start(session, create_checkout(session, customer=customer, contact=customer.primary_contact,
                                          selection={invoice.id: None for invoice in invoices}, method=method,
                                          today=TODAY))


def _pay(session: Session, settings: Settings, checkout: Checkout, status: str, ref: str = "pi_1") -> Payment:
    return apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref=ref, method="card",
                                status=status, amount_minor=checkout.amount_minor, currency=checkout.currency,
                                settings=settings)


def _paid_twice(session: Session, settings: Settings, customer: Customer, invoice: Invoice) -> None:
    """The same invoice paid twice (a card confirmed in another tab after the debtor chose to pay
    by transfer instead): the second payment stays unapplied, credit for the next checkout."""
    one = _checkout(session, customer, [invoice])
    cancel_checkout(session, one, contact=customer.primary_contact)
    two = _checkout(session, customer, [invoice], method="bank_transfer")
    _pay(session, settings, one, "succeeded", ref="pi_one")
    apply_payment_status(session, checkout=two, provider="bank_transfer", provider_ref="tr_two",
                         method="bank_transfer", status="succeeded", amount_minor=invoice.total_minor,
                         currency="EUR", settings=settings)


def test_a_credit_note_is_deducted_from_what_is_charged(
    session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    overdue, discounted, later = invoices
    _credit_note(session, customer, 102_00)
    priced = quote(session, customer, {i.id: None for i in invoices}, TODAY)
    assert priced.subtotal.minor == 1234_56 + 500_00 + 318_40
    assert priced.discount.minor == 10_00 and priced.credit.minor == 102_00
    assert priced.charged.minor == 2052_96 - 10_00 - 102_00
    # The oldest due invoice takes the credit: its discount-free line, not the discounted one.
    assert [line.credited.minor for line in priced.lines] == [102_00, 0, 0]
    # What the statement says is due, minus the discount earned, is what is charged.
    section = build_statement(session, customer, TODAY).sections[0]
    assert priced.charged == section.total_due - priced.discount
    assert session.query(Allocation).count() == 0  # a quote writes nothing


def test_credit_earns_no_discount_only_cash_does(session: Session, customer: Customer,
                                                 invoices: list[Invoice]) -> None:
    _, discounted, _ = invoices
    _credit_note(session, customer, 100_00)
    line = quote(session, customer, {discounted.id: None}, TODAY).lines[0]
    # 2 % of the 400,00 € paid in cash, not of the 500,00 € invoice.
    assert (line.credited.minor, line.discount.minor, line.charged.minor) == (100_00, 8_00, 392_00)


def test_the_checkout_reserves_the_credit_note_and_applies_it_when_the_payment_succeeds(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    overdue, discounted, _ = invoices
    note = _credit_note(session, customer, 102_00)
    checkout = _checkout(session, customer, [overdue, discounted])
    assert (checkout.credit_minor, checkout.amount_minor) == (102_00, 1734_56 - 10_00 - 102_00)
    # Reserved, not consumed: nothing moved yet, the statement still shows the credit note.
    assert (note.open_minor, note.status) == (102_00, "open")
    assert (overdue.open_minor, overdue.status) == (1234_56, "open")
    assert reserved_credit(session, customer.id, "EUR") == 102_00
    assert available_credit(session, customer.id, "EUR") == 0
    assert session.query(Allocation).count() == 0
    assert [(line.amount_minor, line.discount_minor, line.credit_minor) for line in checkout.lines] == [
        (1132_56, 0, 102_00), (500_00, 10_00, 0)]
    _pay(session, settings, checkout, "processing")
    assert note.open_minor == 102_00  # processing is no money yet
    payment = _pay(session, settings, checkout, "succeeded")
    assert (note.open_minor, note.status) == (0, "paid")
    assert (overdue.open_minor, overdue.status) == (0, "paid")
    assert (discounted.open_minor, discounted.status) == (0, "paid")  # the discount still earned
    rows = session.execute(select(Allocation.invoice_id, Allocation.payment_id, Allocation.credit_note_id,
                                  Allocation.amount_minor, Allocation.discount_minor)).all()
    assert sorted(rows, key=lambda r: (r[0], r[3])) == sorted([
        (overdue.id, None, note.id, 102_00, 0),
        (overdue.id, payment.id, None, 1132_56, 0),
        (discounted.id, payment.id, None, 490_00, 10_00),
    ], key=lambda r: (r[0], r[3]))
    assert invariant_violations(session) == []
    assert reserved_credit(session, customer.id, "EUR") == 0
    _pay(session, settings, checkout, "succeeded")  # a duplicate applies nothing twice
    assert session.query(Allocation).count() == 3


def test_reserved_credit_is_never_spent_twice_and_is_released_when_the_payment_fails(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    overdue, discounted, later = invoices
    note = _credit_note(session, customer, 100_00)
    first = _checkout(session, customer, [overdue])
    assert first.credit_minor == 100_00 and available_credit(session, customer.id, "EUR") == 0
    second = _checkout(session, customer, [later], method="bank_transfer")
    assert second.credit_minor == 0 and second.amount_minor == 318_40
    _pay(session, settings, first, "failed")
    # Nothing was paid: the invoice is whole again for a new payment, the credit free.
    assert overdue.open_minor == 1234_56 and note.open_minor == 100_00
    assert available_credit(session, customer.id, "EUR") == 100_00
    again = _checkout(session, customer, [overdue], method="bank_transfer")
    assert (again.credit_minor, again.amount_minor) == (100_00, 1134_56)
    assert invariant_violations(session) == []


def test_a_cancelled_checkout_releases_its_credit_and_its_invoices(
    session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    overdue = invoices[0]
    _credit_note(session, customer, 100_00)
    first = _checkout(session, customer, [overdue], method="bank_transfer")
    with pytest.raises(UserError, match="already has a payment in progress"):
        _checkout(session, customer, [overdue], method="card")
    cancel_checkout(session, first, contact=customer.primary_contact)
    assert (first.status, first.failure_code) == ("cancelled", "debtor_cancelled")
    assert available_credit(session, customer.id, "EUR") == 100_00
    card = _checkout(session, customer, [overdue], method="card")
    assert card.credit_minor == 100_00


def test_a_second_click_returns_the_same_checkout_after_its_credit_was_reserved(
    session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    _credit_note(session, customer, 50_00)
    first = _checkout(session, customer, [invoices[0]])
    assert _checkout(session, customer, [invoices[0]]).id == first.id
    assert session.query(Checkout).count() == 1 and invoices[0].open_minor == 1234_56


def test_unapplied_money_is_credit_too(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    overdue, discounted, later = invoices
    _paid_twice(session, settings, customer, later)
    assert available_credit(session, customer.id, "EUR") == 318_40
    checkout = _checkout(session, customer, [overdue])
    assert checkout.credit_minor == 318_40 and checkout.amount_minor == 1234_56 - 318_40
    assert available_credit(session, customer.id, "EUR") == 0
    _pay(session, settings, checkout, "succeeded", ref="pi_three")
    assert overdue.open_minor == 0
    assert available_credit(session, customer.id, "EUR") == 0
    assert invariant_violations(session) == []


def test_credit_covering_everything_settles_without_a_charge(
    session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    _, discounted, _ = invoices
    note = _credit_note(session, customer, 600_00)
    with pytest.raises(UserError, match="nothing to charge"):
        _checkout(session, customer, [discounted])
    priced = settle_with_credit(session, customer=customer, contact=customer.primary_contact,
                                selection={discounted.id: None}, today=TODAY)
    assert priced.charged.minor == 0 and priced.credit.minor == 500_00 and priced.discount.minor == 0
    assert (discounted.open_minor, discounted.status) == (0, "paid")
    assert note.open_minor == 600_00 - 500_00
    allocation = session.scalar(select(Allocation).where(Allocation.invoice_id == discounted.id))
    assert allocation is not None and (allocation.amount_minor, allocation.discount_minor) == (500_00, 0)
    assert invariant_violations(session) == []
    with pytest.raises(UserError):
        settle_with_credit(session, customer=customer, contact=None, selection={invoices[0].id: None}, today=TODAY)


def test_credit_in_another_currency_is_not_deducted(
    session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    factories.invoice(session, customer, total_minor=50_00, currency="GBP", number="AV-GBP",
                      kind=InvoiceKind.credit_note)
    assert quote(session, customer, {invoices[0].id: None}, TODAY).credit.minor == 0


def test_the_receipt_lists_each_invoice_in_full_with_discount_and_credit_as_their_own_lines(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    from ledger.models import OutboxMessage

    overdue, discounted, _ = invoices
    _credit_note(session, customer, 102_00)
    checkout = _checkout(session, customer, [overdue, discounted])
    _pay(session, settings, checkout, "succeeded")
    receipt = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "receipt")).one()
    text = receipt.body_text.replace("\u202f", " ").replace("\u00a0", " ")
    assert "- Facture F-1: 1 234,56 €" in text
    assert "- Facture F-2: 500,00 €" in text
    assert "- Escompte pour paiement anticipé sur la facture F-2: -10,00 €" in text
    assert "- Votre crédit déduit (avoirs, paiements non encore imputés) (F-1): -102,00 €" in text
    assert receipt.body_html and "1 234,56" in receipt.body_html.replace("\u202f", " ").replace("\u00a0", " ")


def _plan(session: Session, statement: str, parameters: Any) -> str:
    """The plan of one recorded statement, as text, on either engine."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
        return "\n".join(str(row[-1]) for row in rows)
    rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
    return "\n".join(str(row[0]) for row in rows)


def test_a_card_success_reads_only_the_allocations_of_the_customers_payments(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    """Applying reserved credit sums what was allocated from each of the customer's payments: by the
    payment's index, never by grouping every allocation of the book (800,000 rows on the bench book:
    ~50 ms of each card success, bench/RESULTS.md, succ9)."""
    overdue, discounted, later = invoices
    _paid_twice(session, settings, customer, later)
    checkout = _checkout(session, customer, [overdue])
    assert checkout.credit_minor == 318_40
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "FROM payments" in statement and "sum(allocations.amount_minor)" in statement:
            seen.append((statement, parameters))

    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        _pay(session, settings, checkout, "succeeded", ref="pi_three")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert overdue.open_minor == 0 and invariant_violations(session) == []
    assert seen, "the reserved credit's sources were not read"
    for statement, parameters in seen:
        plan = _plan(session, statement, parameters)
        if session.get_bind().dialect.name == "sqlite":
            assert "MATERIALIZE" not in plan, plan
            assert "SEARCH allocations USING COVERING INDEX ix_allocations_payment_invoice (payment_id=?)" in plan, plan
        else:
            assert "Group Key: allocations.payment_id" not in plan, plan
            assert "SubPlan" in plan and "payments.id" in plan, plan
