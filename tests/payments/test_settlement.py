from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.settings import Settings
from ledger.allocation import invariant_violations
from ledger.models import Allocation, Checkout, Customer, Invoice, OutboxMessage, Payment
from ledger.statement import unapplied_credit
from payments.bank_transfer import BankTransferProvider
from payments.checkout import cancel_checkout, create_checkout
from payments.settlement import SettlementError, apply_payment_status, record_bank_transfer

TODAY = date(2026, 11, 25)


def _checkout(session: Session, customer: Customer, invoices: list[Invoice], method: str = "card") -> Checkout:
    return create_checkout(session, customer=customer, contact=customer.primary_contact,
                           selection={invoice.id: None for invoice in invoices}, method=method, today=TODAY)


def _event(session: Session, settings: Settings, checkout: Checkout, status: str, ref: str = "pi_1",
           amount: int | None = None, **extra: object) -> Payment:
    return apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref=ref, method="card",
                                status=status, amount_minor=amount or checkout.amount_minor,
                                currency=checkout.currency, settings=settings, **extra)


def _emails(session: Session, kind: str) -> list[OutboxMessage]:
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.kind == kind)))


def test_success_settles_the_invoices_with_the_locked_discount(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    overdue, discounted, _ = invoices
    checkout = _checkout(session, customer, [overdue, discounted])
    assert _event(session, settings, checkout, "processing").status == "processing"
    assert checkout.status == "processing" and overdue.open_minor == 1234_56
    payment = _event(session, settings, checkout, "succeeded")
    assert payment.status == "succeeded" and payment.received_on == TODAY
    assert checkout.status == "succeeded"
    assert (overdue.open_minor, overdue.status) == (0, "paid")
    assert (discounted.open_minor, discounted.status) == (0, "paid")
    allocations = session.scalars(select(Allocation).where(Allocation.payment_id == payment.id)).all()
    assert sorted((a.amount_minor, a.discount_minor) for a in allocations) == [(490_00, 10_00), (1234_56, 0)]
    assert invariant_violations(session) == []
    assert unapplied_credit(session, customer.id) == {}
    [receipt] = _emails(session, "receipt")
    assert receipt.to_address == customer.primary_contact.email
    assert "Paiement reçu" in receipt.subject or "Payment received" in receipt.subject


def test_duplicates_and_late_events_change_nothing(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    checkout = _checkout(session, customer, invoices[:1])
    _event(session, settings, checkout, "succeeded")
    _event(session, settings, checkout, "succeeded")
    payment = _event(session, settings, checkout, "processing")  # older, arriving late
    _event(session, settings, checkout, "pending")
    assert payment.status == "succeeded" and checkout.status == "succeeded"
    assert len(session.scalars(select(Allocation).where(Allocation.payment_id == payment.id)).all()) == 1
    assert len(_emails(session, "receipt")) == 1
    assert invariant_violations(session) == []


def test_failure_before_success_is_final(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    checkout = _checkout(session, customer, invoices[:1])
    _event(session, settings, checkout, "processing")
    payment = _event(session, settings, checkout, "failed", reason="insufficient_funds")
    assert payment.status == "failed" and payment.failure_reason == "insufficient_funds"
    assert checkout.status == "failed"
    _event(session, settings, checkout, "succeeded")  # failed is final
    assert payment.status == "failed" and invoices[0].open_minor == 1234_56
    [notice] = _emails(session, "payment_failed")
    assert "/p/" in notice.body_text and "insufficient_funds" in notice.body_text


@pytest.mark.parametrize("undo", ["failed", "late_failure", "refunded", "charged_back"])
def test_undoing_a_success_reopens_the_invoices(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], undo: str
) -> None:
    overdue, discounted, _ = invoices
    checkout = _checkout(session, customer, [overdue, discounted])
    payment = _event(session, settings, checkout, "succeeded")
    _event(session, settings, checkout, undo, reason="bank said no")
    assert payment.status == ("failed" if undo == "late_failure" else undo)
    assert payment.failure_reason == "bank said no"
    assert session.scalars(select(Allocation).where(Allocation.payment_id == payment.id)).all() == []
    assert (overdue.open_minor, overdue.status) == (1234_56, "open")
    assert (discounted.open_minor, discounted.status) == (500_00, "open")
    assert checkout.status in ("failed", "cancelled")
    assert unapplied_credit(session, customer.id) == {}
    assert len(_emails(session, "payment_failed")) == 1
    _event(session, settings, checkout, "succeeded")  # a late success never re-applies it
    assert overdue.open_minor == 1234_56
    assert invariant_violations(session) == []


def test_out_of_order_undo_before_success(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    checkout = _checkout(session, customer, invoices[:1])
    _event(session, settings, checkout, "refunded")
    payment = _event(session, settings, checkout, "succeeded")
    assert payment.status == "refunded" and invoices[0].open_minor == 1234_56
    assert invariant_violations(session) == []


def test_an_invoice_paid_twice_leaves_unapplied_credit(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    overdue, discounted, _ = invoices
    by_card = _checkout(session, customer, [overdue, discounted])
    # The debtor chose to pay by transfer instead, then the card was confirmed in another tab after all.
    cancel_checkout(session, by_card, contact=None)
    by_transfer = _checkout(session, customer, [discounted], method="bank_transfer")
    _event(session, settings, by_card, "succeeded")
    BankTransferProvider().start(session, by_transfer, settings, "http://testserver")
    transfer = record_bank_transfer(session, by_transfer, by_transfer.amount_minor, TODAY, settings=settings)
    assert transfer.status == "succeeded"
    assert session.scalars(select(Allocation).where(Allocation.payment_id == transfer.id)).all() == []
    assert unapplied_credit(session, customer.id)["EUR"].minor == 490_00
    # Recording the same statement line again changes nothing.
    assert record_bank_transfer(session, by_transfer, by_transfer.amount_minor, TODAY, settings=settings).id == transfer.id
    assert unapplied_credit(session, customer.id)["EUR"].minor == 490_00
    assert invariant_violations(session) == []


def test_the_discount_needs_the_invoice_still_fully_open(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    discounted = invoices[1]
    customer.company.allow_partial_payments = True
    whole = _checkout(session, customer, [discounted])  # 490,00 € with 10,00 € discount
    cancel_checkout(session, whole, contact=None)  # its card is confirmed later all the same
    part = create_checkout(session, customer=customer, contact=None, selection={discounted.id: 100_00},
                           method="card", today=TODAY)
    _event(session, settings, part, "succeeded", ref="pi_part")
    payment = _event(session, settings, whole, "succeeded", ref="pi_whole")
    [allocation] = session.scalars(select(Allocation).where(Allocation.payment_id == payment.id)).all()
    assert (allocation.amount_minor, allocation.discount_minor) == (400_00, 0)
    assert discounted.open_minor == 0
    assert unapplied_credit(session, customer.id)["EUR"].minor == 90_00
    assert invariant_violations(session) == []


def test_a_short_bank_transfer_settles_in_line_order(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    overdue, discounted, _ = invoices
    checkout = _checkout(session, customer, [overdue, discounted], method="bank_transfer")
    record_bank_transfer(session, checkout, 1300_00, TODAY, settings=settings)
    assert overdue.open_minor == 0
    assert (discounted.open_minor, discounted.status) == (434_56, "partially_paid")  # no discount on a part
    assert invariant_violations(session) == []


def test_wrong_inputs_are_refused(session: Session, settings: Settings, customer: Customer,
                                  invoices: list[Invoice]) -> None:
    checkout = _checkout(session, customer, invoices[:1])
    with pytest.raises(SettlementError, match="unknown payment status"):
        _event(session, settings, checkout, "paid")
    with pytest.raises(SettlementError, match="cannot pay"):
        apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref="pi_x", method="card",
                             status="succeeded", amount_minor=10, currency="USD", settings=settings)
    other = _checkout(session, customer, invoices[1:2])
    _event(session, settings, checkout, "processing", ref="pi_same")
    with pytest.raises(SettlementError, match="another checkout"):
        _event(session, settings, other, "succeeded", ref="pi_same")
    with pytest.raises(SettlementError, match="bank transfer"):
        record_bank_transfer(session, checkout, 100, TODAY, settings=settings)


def test_received_on_is_the_companys_day(session: Session, settings: Settings, customer: Customer,
                                         invoices: list[Invoice]) -> None:
    checkout = _checkout(session, customer, invoices[:1])
    late_evening = datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc)  # already the 26th in Paris
    assert _event(session, settings, checkout, "succeeded", occurred_at=late_evening).received_on == date(2026, 11, 26)


def test_a_reversal_hands_the_invoice_to_the_other_payment(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    overdue, discounted, _ = invoices
    first = _checkout(session, customer, [overdue, discounted])
    cancel_checkout(session, first, contact=None)  # its card is confirmed later all the same
    second = _checkout(session, customer, [discounted], method="bank_transfer")
    _event(session, settings, first, "succeeded", ref="pi_first")
    record_bank_transfer(session, second, second.amount_minor, TODAY, settings=settings)
    assert unapplied_credit(session, customer.id)["EUR"].minor == 490_00
    _event(session, settings, first, "charged_back", ref="pi_first")
    # The transfer's money now pays the discounted invoice; only the overdue one reopens.
    assert (discounted.open_minor, discounted.status) == (0, "paid")
    assert (overdue.open_minor, overdue.status) == (1234_56, "open")
    assert unapplied_credit(session, customer.id) == {}
    assert invariant_violations(session) == []


def test_a_declined_attempt_keeps_the_checkout_open_with_its_reason(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    checkout = _checkout(session, customer, invoices[:1])
    _event(session, settings, checkout, "pending", reason="card_declined")
    payment = _event(session, settings, checkout, "pending", reason="insufficient_funds")
    assert checkout.status == "open" and payment.failure_reason == "insufficient_funds"
    _event(session, settings, checkout, "succeeded")
    assert checkout.status == "succeeded" and payment.failure_reason is None
    assert invoices[0].status == "paid"


def test_an_update_applies_only_to_what_the_checkout_created(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    from payments.base import NotOurs, PaymentUpdate
    from payments.settlement import apply_update

    checkout = _checkout(session, customer, invoices[:1])
    checkout.provider, checkout.provider_ref = "stripe", "pi_ours"
    ours = PaymentUpdate(checkout_id=checkout.id, provider="stripe", provider_ref="pi_ours", method="card",
                         status="succeeded", amount_minor=checkout.amount_minor, currency="EUR")
    for wrong in (
        {"checkout_id": 987654},  # no such checkout
        {"provider": "gocardless"},  # not the provider the checkout started with
        {"provider_ref": "pi_someone_else"},  # not the payment it made
        {"amount_minor": checkout.amount_minor - 1},  # not the amount asked for
        {"currency": "USD"},
    ):
        with pytest.raises(NotOurs):
            apply_update(session, replace(ours, **wrong), settings)  # type: ignore[arg-type]
    assert session.scalars(select(Payment)).all() == [] and invoices[0].open_minor == 1234_56
    assert apply_update(session, ours, settings).status == "succeeded"
    assert invoices[0].status == "paid"
    # A second payment, even by the right provider and for the right amount, is not the checkout's.
    with pytest.raises(NotOurs):
        apply_update(session, replace(ours, provider_ref="pi_second"), settings)
    assert len(session.scalars(select(Payment)).all()) == 1


def test_a_provider_update_reads_its_payment_once_and_locked(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    from sqlalchemy import event

    from payments.base import PaymentUpdate
    from payments.settlement import apply_update

    checkout = _checkout(session, customer, invoices[:1])
    checkout.provider, checkout.provider_ref = "stripe", "pi_ours"
    declined = PaymentUpdate(checkout_id=checkout.id, provider="stripe", provider_ref="pi_ours", method="card",
                             status="pending", amount_minor=checkout.amount_minor, currency="EUR", reason="declined")
    apply_update(session, declined, settings)
    session.flush()
    reads: list[str] = []

    def note(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM payments" in statement:
            reads.append(statement)

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", note)
    try:
        # Another declined attempt (the latest reason kept), then the success that settles.
        apply_update(session, replace(declined, reason="insufficient funds"), settings)
        payment = apply_update(session, replace(declined, status="succeeded", reason=None), settings)
    finally:
        event.remove(connection, "before_cursor_execute", note)
    assert payment.status == "succeeded" and invoices[0].status == "paid"
    payment_reads = [read for read in reads if "WHERE payments.provider = " in read]
    assert len(payment_reads) == 2  # one per update, where each was read twice before
    if session.get_bind().dialect.name == "postgresql":
        assert all("FOR UPDATE" in read for read in payment_reads)


# The receipt email of `test_the_receipt_email_is_byte_for_byte_as_before`, as the settlement rendered
# it before its writes were reordered (base 2be1e9a): sha256 of subject, text and HTML
# (the link's token aside).
RECEIPT_DIGESTS = {"fr": "196354ce4135753146782c8948432a1ec4883b836ad2300e9b9e81ff47d8080f",
                   "en": "65aa56d61ede909db77800664e1ea78039bd5279fbcfb1a361ae1e0179aaabc1"}


@pytest.mark.parametrize("language", ["fr", "en"])
def test_the_receipt_email_is_byte_for_byte_as_before(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], language: str
) -> None:
    """A card success writes the payment's new state last (`_write_last`), after the receipt is
    rendered: what the debtor receives is unchanged, every line of the template included (an
    invoice, a discount, the credit deducted), in both languages."""
    import hashlib
    import re

    from ledger.models import InvoiceKind
    from tests import factories

    overdue, discounted, _ = invoices
    customer.primary_contact.language = language
    factories.invoice(session, customer, total_minor=102_00, number="AV-1", kind=InvoiceKind.credit_note)
    checkout = _checkout(session, customer, [overdue, discounted])
    _event(session, settings, checkout, "succeeded")
    [receipt] = _emails(session, "receipt")
    email = "\x00".join((receipt.subject, receipt.body_text, receipt.body_html or ""))
    # The link's token is signed with the time: its place is checked, not its value.
    assert email.count(f"{settings.base_url}/p/") == 2
    email = re.sub(r"/p/[\w.-]+", "/p/TOKEN", email)
    assert hashlib.sha256(email.encode()).hexdigest() == RECEIPT_DIGESTS[language], email
