"""Any sequence of starting, cancelling, expiring, failing and paying overlapping checkouts: no
invoice is paid twice, no dead checkout keeps credit reserved, the ledger invariant holds."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.settings import Settings
from kernel.user_error import UserError
from ledger.allocation import invariant_violations
from ledger.models import Allocation, Checkout, CheckoutLine, Customer, Invoice, InvoiceKind, Payment
from ledger.statement import unapplied_credit
from payments.bank_transfer import BankTransferProvider
from payments.checkout import (
    LIVE_STATUSES,
    available_credit,
    cancel_checkout,
    create_checkout,
    expire_transfers,
    reserved_credit,
)
from payments.settlement import apply_payment_status
from tests import factories

TODAY = date(2026, 11, 25)
START = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)

picks = st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("start"), picks, st.sampled_from(["card", "bank_transfer", "instant_transfer"])),
        st.tuples(st.just("cancel"), st.integers(0, 5)),
        st.tuples(st.just("expire"), st.integers(1, 15)),
        st.tuples(st.just("fail"), st.integers(0, 5)),
        st.tuples(st.just("processing"), st.integers(0, 5)),
        st.tuples(st.just("succeed"), st.integers(0, 5)),
        st.tuples(st.just("refund"), st.integers(0, 5)),
    ),
    min_size=1, max_size=14,
)


def _start(session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], chosen: list[int],
           method: str) -> Checkout | None:
    try:
        checkout = create_checkout(session, customer=customer, contact=None, method=method, today=TODAY,
                                   selection={invoices[i].id: None for i in chosen})
    except UserError:  # an invoice already in a payment in progress, or nothing left to charge
        return None
    if method == "bank_transfer":
        BankTransferProvider().start(session, checkout, settings, "")
    elif checkout.provider_ref is None:
        checkout.provider, checkout.provider_ref = "stripe", f"pi_{checkout.id}"  # as the provider's start does
    session.flush()
    return checkout


def _event(session: Session, settings: Settings, checkout: Checkout, status: str) -> None:
    provider = "bank_transfer" if checkout.method == "bank_transfer" else "stripe"
    apply_payment_status(session, checkout=checkout, provider=provider, provider_ref=f"ref_{checkout.id}",
                         method=checkout.method, status=status, amount_minor=checkout.amount_minor,
                         currency=checkout.currency, reason="card_declined" if status == "failed" else None,
                         settings=settings)


def _run(session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], step: Any,
         checkouts: list[Checkout]) -> None:
    match step:
        case ("start", chosen, method):
            checkout = _start(session, settings, customer, invoices, chosen, method)
            if checkout is not None and checkout not in checkouts:
                checkouts.append(checkout)
        case ("expire", days):
            clock.set(clock.now() + timedelta(days=days))
            expire_transfers(session, clock.now())
        case (action, index) if checkouts:
            checkout = checkouts[index % len(checkouts)]
            if action == "cancel":
                was = checkout.status
                try:
                    cancel_checkout(session, checkout, contact=None)
                except UserError:
                    assert was != "open", "an open checkout may always be cancelled"
                else:
                    assert was == "open", "only a checkout whose money has not started moving is cancelled"
            elif checkout.status in LIVE_STATUSES:
                # Providers report on live attempts: a cancelled or expired one was never confirmed.
                status = {"fail": "failed", "processing": "processing", "succeed": "succeeded"}.get(action)
                if status is not None:
                    _event(session, settings, checkout, status)
            elif action == "refund" and checkout.status == "succeeded":
                _event(session, settings, checkout, "refunded")
    session.flush()


def _check(session: Session, customer: Customer) -> None:
    session.expire_all()
    assert invariant_violations(session) == []
    # Never paid twice: an invoice is in at most one checkout whose payment stands.
    paid = session.execute(
        select(CheckoutLine.invoice_id, func.count(func.distinct(Payment.id)))
        .join(Payment, Payment.checkout_id == CheckoutLine.checkout_id)
        .where(Payment.status == "succeeded")
        .group_by(CheckoutLine.invoice_id)
    ).all()
    assert all(count <= 1 for _, count in paid), f"an invoice paid twice: {paid}"
    # At most one live (started) checkout per invoice.
    live = session.execute(
        select(CheckoutLine.invoice_id, func.count())
        .join(Checkout, Checkout.id == CheckoutLine.checkout_id)
        .where(Checkout.status.in_(LIVE_STATUSES))
        .group_by(CheckoutLine.invoice_id)
    ).all()
    assert all(count <= 1 for _, count in live), f"an invoice in two payments in progress: {live}"
    # Credit: reserved only by live checkouts, never more than there is, applied only for money that stands.
    for checkout in session.scalars(select(Checkout).where(Checkout.customer_id == customer.id)):
        applied = session.scalar(select(func.count()).select_from(Allocation)
                                 .where(Allocation.credit_for_checkout_id == checkout.id))
        if checkout.status != "succeeded":
            assert applied == 0, f"checkout {checkout.id} ({checkout.status}) still has its credit applied"
    reserved = reserved_credit(session, customer.id, "EUR")
    live_reserved = session.scalar(select(func.coalesce(func.sum(Checkout.credit_minor), 0)).where(
        Checkout.customer_id == customer.id, Checkout.status.in_(LIVE_STATUSES), Checkout.credit_applied.is_(False)))
    assert reserved == live_reserved
    notes = session.scalar(select(func.coalesce(func.sum(Invoice.open_minor), 0)).where(
        Invoice.customer_id == customer.id, Invoice.kind == InvoiceKind.credit_note.value))
    unapplied = unapplied_credit(session, customer.id).get("EUR")
    total_credit = int(notes) + (unapplied.minor if unapplied else 0)
    assert reserved <= total_credit, "more credit reserved than the customer has"
    assert available_credit(session, customer.id, "EUR") == total_credit - reserved
    # Money: what succeeded is allocated or shown as unapplied credit, never lost.
    succeeded = session.scalar(select(func.coalesce(func.sum(Payment.amount_minor), 0))
                               .where(Payment.customer_id == customer.id, Payment.status == "succeeded"))
    allocated = session.scalar(select(func.coalesce(func.sum(Allocation.amount_minor), 0))
                               .join(Payment, Payment.id == Allocation.payment_id)
                               .where(Payment.customer_id == customer.id))
    assert succeeded == allocated + (unapplied.minor if unapplied else 0)


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps, credit=st.sampled_from([0, 150_00, 5000_00]))
def test_any_journey_never_pays_twice_nor_keeps_credit_for_a_dead_checkout(
    session: Session, settings: Settings, plan: list[Any], credit: int
) -> None:
    clock.set(START)
    outer = session.begin_nested()
    try:
        company = factories.company(session)
        customer = factories.customer(session, company)
        invoices = [
            factories.invoice(session, customer, total_minor=1234_56, number="J-1", due_date=date(2026, 11, 1)),
            factories.invoice(session, customer, total_minor=500_00, number="J-2", due_date=date(2026, 12, 20),
                              discount_bps=200, discount_until=date(2026, 12, 12)),
            factories.invoice(session, customer, total_minor=318_40, number="J-3", due_date=date(2026, 12, 24)),
        ]
        if credit:
            factories.invoice(session, customer, total_minor=credit, number="J-AV", kind=InvoiceKind.credit_note)
        checkouts: list[Checkout] = []
        for step in plan:
            _run(session, settings, customer, invoices, step, checkouts)
            _check(session, customer)
    finally:
        outer.rollback()
        clock.set(START)
