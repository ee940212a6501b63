"""Partial payments and disputed parts, in any order: an invoice is never allocated more than its
total, the ledger invariant holds, and the part under dispute is never taken by a payment started
after the dispute (it stays open, set aside)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.settings import Settings
from ledger import disputes
from ledger.allocation import invariant_violations
from ledger.models import Allocation, Checkout, CheckoutLine, Customer, Dispute, Invoice, InvoiceKind
from ledger.storage import FileStorage
from kernel.user_error import UserError
from payments.checkout import LIVE_STATUSES, create_checkout, quote
from payments.settlement import apply_payment_status
from tests import factories

TODAY = date(2026, 11, 25)
TOTALS = (1234_56, 500_00, 318_40)

steps = st.lists(
    st.one_of(
        st.tuples(st.just("dispute"), st.integers(0, 2), st.integers(1, 1300_00)),
        st.tuples(st.just("pay"), st.integers(0, 2), st.one_of(st.none(), st.integers(-10, 1300_00))),
        st.tuples(st.just("succeed"), st.integers(0, 5)),
        st.tuples(st.just("fail"), st.integers(0, 5)),
    ),
    min_size=1, max_size=12,
)


def _check(session: Session, customer: Customer, invoices: list[Invoice], tainted: set[int]) -> None:
    session.expire_all()
    assert invariant_violations(session) == []
    for invoice in invoices:
        settled = session.scalar(select(func.coalesce(func.sum(Allocation.amount_minor + Allocation.discount_minor), 0))
                                 .where(Allocation.invoice_id == invoice.id))
        assert settled <= invoice.total_minor and 0 <= invoice.open_minor <= invoice.total_minor
        assert invoice.open_minor + settled == invoice.total_minor
    parts = disputes.disputed_parts(session, customer_id=customer.id)
    for invoice in invoices:
        if invoice.id in parts and invoice.id not in tainted:
            dispute = session.scalar(select(Dispute).join(Dispute.invoices).where(
                Invoice.id == invoice.id, Dispute.status == "open"))
            assert dispute is not None and dispute.disputed_minor is not None
            assert invoice.open_minor >= dispute.disputed_minor, "a payment took the disputed part"


def _run(session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], step: Any,
         checkouts: list[Checkout], tainted: set[int], storage: FileStorage) -> None:
    match step:
        case ("dispute", index, part):
            invoice = invoices[index]
            live = session.scalar(select(func.count()).select_from(CheckoutLine).join(Checkout).where(
                Checkout.status.in_(LIVE_STATUSES), CheckoutLine.invoice_id == invoice.id))
            try:
                with session.begin_nested():
                    disputes.open_case(session, customer=customer, contact=None, invoice_ids=[invoice.id],
                                       message="Montant erroné", storage=storage, reason_code="wrong_amount",
                                       disputed_minor=part)
            except UserError:
                assert part > invoice.open_minor or disputes.open_cases_for(session, [invoice.id])
            else:
                if live:  # a payment started before the dispute may still take all of it
                    tainted.add(invoice.id)
        case ("pay", index, amount):
            invoice = invoices[index]
            part = disputes.disputed_parts(session, invoice_ids=[invoice.id]).get(invoice.id, 0)
            try:
                checkout = create_checkout(session, customer=customer, contact=None, method="card", today=TODAY,
                                           selection={invoice.id: amount})
            except UserError:
                return
            line = checkout.lines[0]
            asked = line.amount_minor + line.credit_minor
            assert 0 < asked <= invoice.open_minor - part, "more than the undisputed rest was asked"
            if checkout.provider_ref is None:
                checkout.provider, checkout.provider_ref = "stripe", f"pi_{checkout.id}"
            if checkout not in checkouts:
                checkouts.append(checkout)
        case (action, index) if checkouts:
            checkout = checkouts[index % len(checkouts)]
            if checkout.status in LIVE_STATUSES:
                apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref=f"ref_{checkout.id}",
                                     method="card", status="succeeded" if action == "succeed" else "failed",
                                     amount_minor=checkout.amount_minor, currency="EUR", settings=settings)
    session.flush()


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps, credit=st.sampled_from([0, 150_00]))
def test_partial_payments_and_disputed_parts_never_over_allocate_an_invoice(
    session: Session, settings: Settings, tmp_path: Path, plan: list[Any], credit: int
) -> None:
    outer = session.begin_nested()
    try:
        company = factories.company(session, allow_partial_payments=True)
        customer = factories.customer(session, company)
        invoices = [factories.invoice(session, customer, total_minor=total, number=f"P-{n}",
                                      due_date=date(2026, 11, 1)) for n, total in enumerate(TOTALS)]
        if credit:
            factories.invoice(session, customer, total_minor=credit, number="P-AV", kind=InvoiceKind.credit_note)
        checkouts: list[Checkout] = []
        tainted: set[int] = set()
        for step in plan:
            _run(session, settings, customer, invoices, step, checkouts, tainted, FileStorage(tmp_path))
            _check(session, customer, invoices, tainted)
    finally:
        outer.rollback()


def test_the_undisputed_rest_is_what_a_whole_payment_asks(session: Session, tmp_path: Path) -> None:
    company = factories.company(session)  # no partial payments: the rest is paid whole
    customer = factories.customer(session, company)
    invoice = factories.invoice(session, customer, total_minor=1000_00, due_date=date(2026, 11, 1))
    disputes.open_case(session, customer=customer, contact=None, invoice_ids=[invoice.id], message="Erreur",
                       storage=FileStorage(tmp_path), reason_code="wrong_amount", disputed_minor=250_00)
    assert invoice.status == "open"  # not wholly disputed: still due, still chased
    priced = quote(session, customer, {invoice.id: None}, TODAY)
    assert priced.charged.minor == 750_00
    try:
        quote(session, customer, {invoice.id: 800_00}, TODAY)
    except UserError as error:
        assert error.render("fr") == ("Facture {n} : 250,00\u00a0€ sont en litige, vous pouvez donc payer au plus "
                                          "750,00\u00a0€ tant que le litige n’est pas réglé.").format(n=invoice.number)
    else:
        raise AssertionError("paying into the disputed part was accepted")
