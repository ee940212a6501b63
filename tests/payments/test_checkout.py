from __future__ import annotations

from datetime import date

import pytest

from kernel.user_error import UserError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.models import Checkout, CheckoutLine, Company, Customer, Invoice, InvoiceKind
from payments.checkout import (create_checkout, in_progress_by_invoice, parse_selection, quote, reservations,
                               statement_checkouts)
from tests import factories
from tests.payments.conftest import start

TODAY = date(2026, 11, 25)


def _create(session: Session, customer: Customer, selection: dict[int, int | None], method: str = "bank_transfer",
            today: date = TODAY) -> Checkout:
    return start(session, create_checkout(session, customer=customer, contact=customer.primary_contact,
                                          selection=selection, method=method, today=today))


def test_whole_invoices_lock_the_discount(session: Session, customer: Customer, invoices: list[Invoice]) -> None:
    overdue, discounted, _ = invoices
    checkout = _create(session, customer, {overdue.id: None, discounted.id: None})
    assert checkout.idempotency_key == f"checkout-{checkout.id}"
    assert checkout.status == "open" and checkout.currency == "EUR"
    assert [(line.invoice_id, line.amount_minor, line.discount_minor) for line in checkout.lines] == [
        (overdue.id, 1234_56, 0),
        (discounted.id, 500_00, 10_00),
    ]
    assert checkout.discount_minor == 10_00
    assert checkout.amount_minor == 1734_56 - 10_00


def test_no_discount_after_its_date(session: Session, customer: Customer, invoices: list[Invoice]) -> None:
    checkout = _create(session, customer, {invoices[1].id: None}, today=date(2026, 12, 13))
    assert checkout.discount_minor == 0 and checkout.amount_minor == 500_00
    checkout.status = "cancelled"  # one payment in progress at a time per invoice
    on_the_day = _create(session, customer, {invoices[1].id: None}, method="card", today=date(2026, 12, 12))
    assert on_the_day.discount_minor == 10_00


def test_partial_payments_need_the_company_to_allow_them(
    session: Session, company: Company, customer: Customer, invoices: list[Invoice]
) -> None:
    with pytest.raises(UserError, match="only be paid in full"):
        _create(session, customer, {invoices[1].id: 100_00})
    company.allow_partial_payments = True
    checkout = _create(session, customer, {invoices[1].id: 100_00})
    assert checkout.amount_minor == 100_00 and checkout.discount_minor == 0  # a part earns no discount


@pytest.mark.parametrize("amount, message", [(0, "more than zero"), (-5, "more than zero"),
                                             (500_01, "more than what")])
def test_amounts_must_be_within_the_open_amount(
    session: Session, company: Company, customer: Customer, invoices: list[Invoice], amount: int, message: str
) -> None:
    company.allow_partial_payments = True
    with pytest.raises(UserError, match=message):
        _create(session, customer, {invoices[1].id: amount})


def test_refuses_what_is_not_payable(session: Session, company: Company, customer: Customer) -> None:
    other = factories.customer(session, company)
    theirs = factories.invoice(session, other)
    paid = factories.invoice(session, customer, open_minor=0, status="paid")
    void = factories.invoice(session, customer, status="void")
    credit = factories.invoice(session, customer, kind=InvoiceKind.credit_note)
    dollars = factories.invoice(session, customer, currency="USD")
    euros = factories.invoice(session, customer)
    before = session.scalar(select(func.count()).select_from(Checkout))
    for selection, message in (
        ({theirs.id: None}, "unknown invoice"),
        ({paid.id: None}, "nothing left to pay"),
        ({void.id: None}, "nothing left to pay"),
        ({credit.id: None}, "credit note"),
        ({dollars.id: None, euros.id: None}, "one currency at a time"),
        ({}, "at least one invoice"),
    ):
        with pytest.raises(UserError, match=message):
            _create(session, customer, selection)
    with pytest.raises(UserError, match="nknown payment method"):
        _create(session, customer, {euros.id: None}, method="cash")
    assert session.scalar(select(func.count()).select_from(Checkout)) == before  # nothing half-applied


def test_a_disputed_invoice_may_be_paid(session: Session, customer: Customer) -> None:
    disputed = factories.invoice(session, customer, status="disputed")
    assert _create(session, customer, {disputed.id: None}).amount_minor == disputed.open_minor


def test_double_click_returns_the_same_checkout(session: Session, customer: Customer, invoices: list[Invoice]) -> None:
    first = _create(session, customer, {invoices[0].id: None, invoices[1].id: None})
    again = _create(session, customer, {invoices[1].id: None, invoices[0].id: None})
    assert again.id == first.id
    # Another method or a part of the selection is a second payment of the same invoices: refused.
    with pytest.raises(UserError, match="already has a payment in progress"):
        _create(session, customer, {invoices[0].id: None, invoices[1].id: None}, method="card")
    with pytest.raises(UserError, match="already has a payment in progress"):
        _create(session, customer, {invoices[0].id: None})
    assert _create(session, customer, {invoices[2].id: None}).id != first.id  # other invoices are free
    first.status = "failed"
    assert _create(session, customer, {invoices[0].id: None, invoices[1].id: None}).id != first.id


def test_parse_selection_reads_typed_and_minor_amounts(session: Session, customer: Customer,
                                                       invoices: list[Invoice]) -> None:
    ids = [str(invoice.id) for invoice in invoices]
    selection = parse_selection(session, customer, ids, {f"amount-{invoices[0].id}": "1 000,50",
                                                         f"minor-{invoices[1].id}": "25000"})
    assert selection == {invoices[0].id: 1000_50, invoices[1].id: 250_00, invoices[2].id: None}
    with pytest.raises(UserError, match="not an amount"):
        parse_selection(session, customer, ids[:1], {f"amount-{invoices[0].id}": "abc"})
    with pytest.raises(UserError, match="unknown invoice"):
        parse_selection(session, customer, ["x"], {})


def test_quote_writes_nothing(session: Session, customer: Customer, invoices: list[Invoice]) -> None:
    priced = quote(session, customer, {invoice.id: None for invoice in invoices}, TODAY)
    assert priced.subtotal.minor == 2052_96 and priced.discount.minor == 10_00 and priced.charged.minor == 2042_96
    assert session.scalar(select(func.count()).select_from(Checkout)) == 0



def test_statement_checkouts_read_once_as_the_three_reads(session: Session, customer: Customer,
                                                          invoices: list[Invoice]) -> None:
    """The statement page's one read of the live checkouts tells what in_progress_by_invoice and
    reservations tell: drafts lock nothing, started ones lock their invoices (the newest of two
    wins), reserved credit shows until applied, settled checkouts show nowhere."""
    def three_reads() -> tuple[object, object]:
        return in_progress_by_invoice(session, customer), reservations(session, customer)

    assert statement_checkouts(session, customer) == three_reads() == ({}, {})
    overdue, discounted, later = invoices
    draft = create_checkout(session, customer=customer, contact=customer.primary_contact,  # never started
                            selection={overdue.id: None}, method="card", today=TODAY)
    settled = _create(session, customer, {discounted.id: None}, method="card")
    settled.status, settled.credit_minor = "succeeded", 2_00
    transfer = _create(session, customer, {overdue.id: None, discounted.id: None})
    transfer.credit_minor, transfer.credit_applied = 3_00, True
    card = _create(session, customer, {later.id: None}, method="card")
    card.status, card.credit_minor = "processing", 12_00
    session.add(CheckoutLine(checkout_id=transfer.id, invoice_id=later.id, amount_minor=later.open_minor))
    draft.status, draft.credit_minor = "open", 5_00  # superseded by `settled`; a live draft again
    session.flush()
    in_progress, reserved = statement_checkouts(session, customer)
    assert (in_progress, reserved) == three_reads()
    assert {invoice: view.checkout_id for invoice, view in in_progress.items()} == {
        overdue.id: transfer.id, discounted.id: transfer.id, later.id: card.id}
    assert [view.checkout_id for view in reserved["EUR"]] == [card.id, draft.id]
