"""The debtor's payment history and receipts: numbers given once and in order per company, each
invoice at its full amount with discounts and credit as their own negative lines."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from kernel.settings import Settings
from ledger.models import Checkout, Customer, InvoiceKind, Payment
from ledger.receipts import assign_receipt_number, customer_payment, payment_history
from payments.checkout import create_checkout
from payments.settlement import apply_payment_status
from tests import factories

TODAY = date(2026, 11, 25)


def _paid_by_card(session: Session, customer: Customer, selection: dict[int, int | None], ref: str,
                  settings: Settings) -> Payment:
    checkout = create_checkout(session, customer=customer, contact=customer.primary_contact, selection=selection,
                               method="card", today=TODAY)
    checkout.provider, checkout.provider_ref = "stripe", ref
    session.flush()
    return apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref=ref, method="card",
                                status="succeeded", amount_minor=checkout.amount_minor, currency="EUR",
                                settings=settings)


def test_receipt_numbers_follow_each_other_per_company_and_are_given_once(session: Session, settings: Settings) -> None:
    durand, other = factories.company(session, code="DURAND"), factories.company(session, code="AUTRE")
    martin, nordic = factories.customer(session, durand), factories.customer(session, other)
    first = _paid_by_card(session, martin, {factories.invoice(session, martin).id: None}, "pi_1", settings)
    elsewhere = _paid_by_card(session, nordic, {factories.invoice(session, nordic).id: None}, "pi_2", settings)
    second = _paid_by_card(session, martin, {factories.invoice(session, martin).id: None}, "pi_3", settings)
    assert (first.receipt_number, second.receipt_number) == ("DURAND-R000001", "DURAND-R000002")
    assert elsewhere.receipt_number == "AUTRE-R000001"
    # Asked again (the receipt page, a duplicate webhook): the same number, and the counter does not move.
    assert assign_receipt_number(session, first) == "DURAND-R000001"
    apply_payment_status(session, checkout=session.get_one(Checkout, first.checkout_id), provider="stripe",
                         provider_ref="pi_1", method="card", status="succeeded", amount_minor=first.amount_minor,
                         currency="EUR", settings=settings)
    session.refresh(durand)
    assert durand.receipts_issued == 2 and first.receipt_number == "DURAND-R000001"


def test_a_receipt_lists_each_invoice_whole_then_discount_and_credit_as_negative_lines(session: Session, settings: Settings) -> None:
    company = factories.company(session, code="DURAND")
    customer = factories.customer(session, company)
    early = factories.invoice(session, customer, total_minor=500_00, number="F-2", due_date=date(2026, 12, 20),
                              discount_bps=200, discount_until=date(2026, 12, 12))
    late = factories.invoice(session, customer, total_minor=1234_56, number="F-1", due_date=date(2026, 11, 1))
    factories.invoice(session, customer, total_minor=150_00, number="AV-1", kind=InvoiceKind.credit_note)
    payment = _paid_by_card(session, customer, {late.id: None, early.id: None}, "pi_9", settings)
    record = customer_payment(session, customer.id, payment.id)
    assert record is not None and record.has_receipt
    lines = [(line.label, line.number, line.amount.minor) for line in record.lines]
    # The credit note's 150,00 goes to the oldest invoice; the discount is 2 % of F-2, paid whole.
    assert lines == [("invoice", "F-1", 1234_56), ("invoice", "F-2", 500_00), ("discount", "F-2", -10_00),
                     ("credit", None, -150_00)]
    assert record.total.minor == payment.amount_minor == 1234_56 + 500_00 - 10_00 - 150_00
    assert record.invoices == ["F-1", "F-2"]


def test_the_history_lists_every_payment_of_the_customer_only_and_says_what_was_refunded(session: Session, settings: Settings) -> None:
    company = factories.company(session)
    customer, stranger = factories.customer(session, company), factories.customer(session, company)
    kept = _paid_by_card(session, customer, {factories.invoice(session, customer, total_minor=300_00).id: None}, "pi_a", settings)
    refunded = _paid_by_card(session, customer, {factories.invoice(session, customer, total_minor=80_00).id: None},
                             "pi_b", settings)
    theirs = _paid_by_card(session, stranger, {factories.invoice(session, stranger).id: None}, "pi_c", settings)
    apply_payment_status(session, checkout=session.get_one(Checkout, refunded.checkout_id), provider="stripe",
                         provider_ref="pi_b", method="card", status="refunded", amount_minor=80_00, currency="EUR",
                         settings=settings)
    history = payment_history(session, customer)
    assert {record.payment.id for record in history} == {kept.id, refunded.id}
    by_id = {record.payment.id: record for record in history}
    assert by_id[refunded.id].refunded.minor == 80_00 and by_id[refunded.id].paid.minor == 80_00
    assert by_id[kept.id].refunded.minor == 0 and by_id[kept.id].has_receipt
    assert customer_payment(session, customer.id, theirs.id) is None  # another customer's reads as none


def test_money_beyond_the_invoices_is_a_line_of_its_own(session: Session, settings: Settings) -> None:
    company = factories.company(session)
    customer = factories.customer(session, company)
    invoice = factories.invoice(session, customer, total_minor=100_00)
    checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                               selection={invoice.id: None}, method="card", today=TODAY)
    checkout.provider, checkout.provider_ref = "stripe", "pi_over"
    session.flush()
    payment = apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref="pi_over",
                                   method="card", status="succeeded", amount_minor=120_00, currency="EUR",
                                   settings=settings)
    record = customer_payment(session, customer.id, payment.id)
    assert record is not None
    assert [(line.label, line.amount.minor) for line in record.lines] == [("invoice", 100_00),
                                                                           ("left_as_credit", 20_00)]
    assert record.total.minor == 120_00
