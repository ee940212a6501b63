"""Random checkouts and provider events, duplicated and reordered: the ledger stays right."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.settings import Settings
from kernel.user_error import UserError
from ledger.allocation import invariant_violations
from ledger.models import Allocation, Checkout, Customer, Invoice, InvoiceKind, Payment
from ledger.statement import unapplied_credit
from payments.checkout import create_checkout
from payments.settlement import apply_payment_status
from tests import factories

TODAY = date(2026, 11, 25)
STATUSES = ["pending", "processing", "succeeded", "failed", "late_failure", "refunded", "charged_back"]

selections = st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True), min_size=1, max_size=3)
events = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), st.sampled_from(STATUSES)), min_size=1, max_size=10)


def _deliver(session: Session, settings: Settings, checkouts: list[Checkout], delivered: list[Any]) -> None:
    for index, attempt, status in delivered:
        checkout = checkouts[index % len(checkouts)]
        apply_payment_status(session, checkout=checkout, provider="stripe",
                             provider_ref=f"pi_{checkout.id}_{attempt}", method="card", status=status,
                             amount_minor=checkout.amount_minor, currency=checkout.currency, settings=settings)
        session.flush()


def _check_and_snapshot(session: Session, customer: Customer) -> tuple[Any, ...]:
    session.expire_all()
    assert invariant_violations(session) == []
    succeeded = session.scalar(select(func.coalesce(func.sum(Payment.amount_minor), 0))
                               .where(Payment.customer_id == customer.id, Payment.status == "succeeded"))
    allocated = session.scalar(select(func.coalesce(func.sum(Allocation.amount_minor), 0))
                               .join(Payment, Payment.id == Allocation.payment_id)
                               .where(Payment.customer_id == customer.id))
    unapplied = session.scalar(select(func.count()).select_from(Allocation)
                               .join(Payment, Payment.id == Allocation.payment_id)
                               .where(Payment.customer_id == customer.id, Payment.status != "succeeded"))
    assert unapplied == 0, "an undone payment still settles an invoice"
    credit = unapplied_credit(session, customer.id)
    assert succeeded == allocated + sum(money.minor for money in credit.values()), "money disappeared"
    invoices = session.scalars(select(Invoice).where(Invoice.customer_id == customer.id).order_by(Invoice.number))
    payments = session.execute(select(Payment.provider_ref, Payment.status)
                               .where(Payment.customer_id == customer.id).order_by(Payment.provider_ref)).all()
    return (
        tuple((invoice.number, invoice.open_minor, invoice.status) for invoice in invoices),
        tuple(tuple(row) for row in payments),
        tuple(sorted((code, money.minor) for code, money in credit.items())),
    )


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=selections, sent=events, credit=st.sampled_from([0, 150_00, 5000_00]), data=st.data())
def test_any_delivery_order_gives_the_same_right_ledger(
    session: Session, settings: Settings, chosen: list[list[int]], sent: list[Any], credit: int,
    data: st.DataObject
) -> None:
    outer = session.begin_nested()
    try:
        company = factories.company(session)
        customer = factories.customer(session, company)
        invoices = [
            factories.invoice(session, customer, total_minor=1234_56, number="P-1", due_date=date(2026, 11, 1)),
            factories.invoice(session, customer, total_minor=500_00, number="P-2", due_date=date(2026, 12, 20),
                              discount_bps=200, discount_until=date(2026, 12, 12)),
            factories.invoice(session, customer, total_minor=318_40, number="P-3", due_date=date(2026, 12, 24)),
        ]
        if credit:  # deducted from the first checkouts, until it runs out
            factories.invoice(session, customer, total_minor=credit, number="P-AV", kind=InvoiceKind.credit_note)
        checkouts = []
        for picks in chosen:
            try:
                checkout = create_checkout(session, customer=customer, contact=None, method="card",
                                           today=TODAY, selection={invoices[i].id: None for i in picks})
            except UserError:  # nothing left to charge, or an invoice another checkout is paying
                continue
            checkout.provider_ref = f"pi_{checkout.id}"  # started at the provider: it locks its invoices
            checkouts.append(checkout)
        if not checkouts:
            return
        duplicated = sent + data.draw(st.lists(st.sampled_from(sent), max_size=4), label="duplicates")
        reordered = data.draw(st.permutations(duplicated), label="delivery order")

        first = session.begin_nested()
        _deliver(session, settings, checkouts, sent)
        in_order = _check_and_snapshot(session, customer)
        first.rollback()

        second = session.begin_nested()
        _deliver(session, settings, checkouts, reordered)
        shuffled = _check_and_snapshot(session, customer)
        second.rollback()

        assert shuffled == in_order
    finally:
        outer.rollback()


# GoCardless: payment event actions, through the provider's own apply with what GoCardless would
# have said of each payment (its amount; for the first attempt, that the checkout's billing request
# made it). The second attempt's payment was made by nothing of ours: it must change nothing.
GC_ACTIONS = ["created", "submitted", "confirmed", "paid_out", "failed", "late_failure", "charged_back", "cancelled"]
gc_events = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), st.sampled_from(GC_ACTIONS)),
                     min_size=1, max_size=10)


def _deliver_gocardless(session: Session, settings: Settings, checkouts: list[Checkout], delivered: list[Any]) -> None:
    from payments.base import NotOurs
    from payments.gocardless import PaymentFacts, apply_event

    for index, attempt, action in delivered:
        checkout = checkouts[index % len(checkouts)]
        checkout.provider, checkout.provider_ref = "gocardless", f"BRQ{checkout.id}"
        facts = PaymentFacts(checkout_id=checkout.id, amount_minor=checkout.amount_minor, currency=checkout.currency,
                             made_by=checkout.provider_ref if attempt == 0 else None)
        try:
            with session.begin_nested():  # as the intake: an event not ours leaves nothing behind
                apply_event(session, {
                    "id": f"EV{checkout.id}{attempt}{action}", "resource_type": "payments", "action": action,
                    "links": {"payment": f"PM{checkout.id}X{attempt}"}, "details": {"cause": action},
                }, settings, facts)
        except NotOurs:
            assert attempt == 1
        session.flush()


@hypothesis_settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=selections, sent=gc_events, data=st.data())
def test_any_gocardless_delivery_order_gives_the_same_right_ledger(
    session: Session, settings: Settings, chosen: list[list[int]], sent: list[Any], data: st.DataObject
) -> None:
    outer = session.begin_nested()
    try:
        company = factories.company(session)
        customer = factories.customer(session, company)
        invoices = [
            factories.invoice(session, customer, total_minor=1234_56, number="G-1", due_date=date(2026, 11, 1)),
            factories.invoice(session, customer, total_minor=500_00, number="G-2", due_date=date(2026, 12, 20),
                              discount_bps=200, discount_until=date(2026, 12, 12)),
            factories.invoice(session, customer, total_minor=318_40, number="G-3", due_date=date(2026, 12, 24)),
        ]
        checkouts = []
        for picks in chosen:
            try:
                checkout = create_checkout(session, customer=customer, contact=None, method="instant_transfer",
                                           today=TODAY, selection={invoices[i].id: None for i in picks})
            except UserError:  # an invoice another checkout is paying: one payment at a time
                continue
            checkout.provider_ref = f"BRQ{checkout.id}"  # started at the provider: it locks its invoices
            checkouts.append(checkout)
        duplicated = sent + data.draw(st.lists(st.sampled_from(sent), max_size=4), label="duplicates")
        reordered = data.draw(st.permutations(duplicated), label="delivery order")

        first = session.begin_nested()
        _deliver_gocardless(session, settings, checkouts, sent)
        in_order = _check_and_snapshot(session, customer)
        first.rollback()

        second = session.begin_nested()
        _deliver_gocardless(session, settings, checkouts, reordered)
        shuffled = _check_and_snapshot(session, customer)
        second.rollback()

        assert shuffled == in_order
    finally:
        outer.rollback()
