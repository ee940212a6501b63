from __future__ import annotations

from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kernel.user_error import UserError
from ledger.allocation import Applied, NewAllocation, NewPayment, allocate, allocate_many, invariant_violations
from ledger.models import Allocation, AuditEvent, Checkout, CheckoutLine, InvoiceKind, Payment
from ledger.money import CurrencyError, Money
from tests import factories


def _payment(session: Session, customer_id: int, minor: int, currency: str = "EUR") -> Payment:
    payment = Payment(
        customer_id=customer_id, provider="manual", method="bank_transfer", amount_minor=minor,
        currency=currency, status="succeeded",
    )
    session.add(payment)
    session.flush()
    return payment


def test_partial_then_full_payment_moves_status(session: Session) -> None:
    customer = factories.customer(session, factories.company(session))
    invoice = factories.invoice(session, customer, total_minor=1000_00)
    payment = _payment(session, customer.id, 1000_00)
    allocate(session, invoice, Money(400_00, "EUR"), payment=payment)
    assert (invoice.open_minor, invoice.status) == (600_00, "partially_paid")
    allocate(session, invoice, Money(588_00, "EUR"), Money(12_00, "EUR"), payment=payment)
    assert (invoice.open_minor, invoice.status) == (0, "paid")
    assert invariant_violations(session) == []


def test_over_allocation_and_wrong_currency_are_refused(session: Session) -> None:
    customer = factories.customer(session, factories.company(session))
    invoice = factories.invoice(session, customer, total_minor=100_00)
    payment = _payment(session, customer.id, 500_00)
    with pytest.raises(UserError, match="exceeds the open") as raised:
        allocate(session, invoice, Money(100_01, "EUR"), payment=payment)
    assert raised.value.render("fr") == "%s : 100,01\u00a0€ dépasse le solde ouvert de 100,00\u00a0€" % invoice.number
    with pytest.raises(CurrencyError):
        allocate(session, invoice, Money(10_00, "GBP"), payment=payment)
    assert invoice.open_minor == 100_00


def test_credit_note_settles_invoice_of_same_customer_only(session: Session) -> None:
    company = factories.company(session)
    customer, other = factories.customer(session, company), factories.customer(session, company)
    invoice = factories.invoice(session, customer, total_minor=300_00)
    credit = factories.invoice(session, customer, total_minor=100_00, kind=InvoiceKind.credit_note)
    foreign_credit = factories.invoice(session, other, total_minor=100_00, kind=InvoiceKind.credit_note)
    with pytest.raises(UserError, match="a credit note settles invoices of its own customer only"):
        allocate(session, invoice, Money(50_00, "EUR"), credit_note=foreign_credit)
    allocate(session, invoice, Money(100_00, "EUR"), credit_note=credit)
    assert (invoice.open_minor, credit.open_minor, credit.status) == (200_00, 0, "paid")
    assert invariant_violations(session) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    totals=st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=6),
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 10**9), st.integers(0, 10**6), st.booleans()),
        max_size=25,
    ),
)
def test_invariant_holds_over_generated_allocations(
    session_factory: sessionmaker[Session], totals: list[int], steps: list[tuple[int, int, int, bool]]
) -> None:
    with session_factory() as session:
        nested = session.begin_nested()
        customer = factories.customer(session, factories.company(session))
        invoices = [factories.invoice(session, customer, total_minor=t, currency="JPY") for t in totals]
        credit = factories.invoice(session, customer, total_minor=10**9, currency="JPY", kind=InvoiceKind.credit_note)
        payment = _payment(session, customer.id, 10**12, "JPY")
        for index, amount, discount, from_credit in steps:
            invoice = invoices[index % len(invoices)]
            source = {"credit_note": credit} if from_credit else {"payment": payment}
            try:
                allocate(session, invoice, Money(amount, "JPY"), Money(discount, "JPY"), **source)
            except UserError as refused:
                assert not isinstance(refused, CurrencyError)
            assert invoice.open_minor >= 0
        assert invariant_violations(session) == []
        nested.rollback()


# --- allocate_many: the same rules, many payments in a few statements ----------------------------

def _new(customer_id: int, company_id: int, ref: str, minor: int, *allocations: NewAllocation,
         currency: str = "EUR") -> NewPayment:
    return NewPayment(customer_id=customer_id, company_id=company_id, provider="manual", provider_ref=ref,
                      method="bank_transfer", amount_minor=minor, currency=currency, received_on=date(2026, 11, 25),
                      allocations=allocations, audit_after={"note": ref})


def test_allocate_many_applies_groups_in_order_and_refuses_a_group_whole(session: Session) -> None:
    company, elsewhere = factories.company(session), factories.company(session)
    customer, stranger = factories.customer(session, company), factories.customer(session, elsewhere)
    first = factories.invoice(session, customer, total_minor=100_00)
    second = factories.invoice(session, customer, total_minor=50_00)
    theirs = factories.invoice(session, stranger, total_minor=70_00)
    credit = factories.invoice(session, customer, total_minor=10_00, kind=InvoiceKind.credit_note)
    session.flush()

    outcomes = allocate_many(session, [
        [_new(customer.id, company.id, "A", 60_00, NewAllocation(first.id, 60_00))],
        # 40 left on the first: 41 is refused, and with it the whole group (the second invoice too).
        [_new(customer.id, company.id, "B", 91_00, NewAllocation(second.id, 50_00), NewAllocation(first.id, 41_00))],
        [_new(customer.id, company.id, "C", 45_00, NewAllocation(first.id, 39_00, 1_00))],  # with a discount
        [_new(customer.id, company.id, "D", 5_00, NewAllocation(theirs.id, 5_00))],  # another customer's invoice
        [_new(stranger.id, company.id, "E", 5_00, NewAllocation(theirs.id, 5_00))],  # another company's customer
        [_new(customer.id, company.id, "F", 5_00, NewAllocation(credit.id, 5_00))],  # not an invoice
        [_new(customer.id, company.id, "G", 5_00, NewAllocation(second.id, 5_00), currency="GBP")],
        [_new(customer.id, company.id, "H", 80_00, NewAllocation(second.id, 50_00))],  # 30 left as credit
    ])

    assert [type(o).__name__ for o in outcomes] == ["Applied", "Refused", "Applied", "Refused", "Refused",
                                                    "Refused", "Refused", "Applied"]
    assert "exceeds the open" in outcomes[1].reason  # type: ignore[union-attr]
    session.expire_all()
    assert (first.open_minor, first.status) == (0, "paid")
    assert (second.open_minor, second.status) == (0, "paid")
    assert (theirs.open_minor, theirs.status) == (70_00, "open")
    payments = session.scalars(select(Payment).where(Payment.provider == "manual").order_by(Payment.id)).all()
    assert [(p.provider_ref, p.amount_minor, p.status) for p in payments] == [
        ("A", 60_00, "succeeded"), ("C", 45_00, "succeeded"), ("H", 80_00, "succeeded")]
    assert [p.id for p in payments] == [o.payment_ids[0] for o in outcomes if isinstance(o, Applied)]
    assert session.scalars(select(Allocation.discount_minor).where(Allocation.payment_id == payments[1].id)).all() \
        == [1_00]
    audits = session.scalars(select(AuditEvent).where(AuditEvent.action == "payment.succeeded")
                             .order_by(AuditEvent.id)).all()
    assert [(a.entity_id, a.company_id, a.after["note"]) for a in audits] == [  # type: ignore[index]
        (p.id, company.id, p.provider_ref) for p in payments]
    assert invariant_violations(session) == []  # open amounts and the dashboard's running totals


def test_allocate_many_completes_a_transfer_checkout_with_the_group_that_pays_its_last_invoice(
        session: Session) -> None:
    company = factories.company(session)
    customer = factories.customer(session, company)
    first = factories.invoice(session, customer, total_minor=100_00)
    second = factories.invoice(session, customer, total_minor=50_00)
    checkout = Checkout(customer_id=customer.id, contact_id=None, method="bank_transfer", currency="EUR",
                        amount_minor=150_00, idempotency_key="bulk-checkout", status="open")
    checkout.lines = [CheckoutLine(invoice_id=first.id, amount_minor=100_00),
                      CheckoutLine(invoice_id=second.id, amount_minor=50_00)]
    session.add(checkout)
    session.flush()

    outcomes = allocate_many(session, [
        [_new(customer.id, company.id, "P1", 50_00, NewAllocation(second.id, 50_00))],
        [_new(customer.id, company.id, "P2", 60_00, NewAllocation(first.id, 60_00))],
        [_new(customer.id, company.id, "P3", 40_00, NewAllocation(first.id, 40_00))],
    ])

    assert [o.completed_checkouts for o in outcomes] == [(), (), (checkout.id,)]  # type: ignore[union-attr]
    session.refresh(checkout)
    assert checkout.status == "succeeded"
    assert invariant_violations(session) == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_allocate_many_never_over_allocates_nor_crosses_companies(
        session_factory: sessionmaker[Session], data: st.DataObject) -> None:
    with session_factory() as session:
        nested = session.begin_nested()
        companies = [factories.company(session), factories.company(session)]
        customers = [factories.customer(session, company) for company in companies for _ in range(2)]
        invoices = [factories.invoice(session, customer, total_minor=data.draw(st.integers(1, 10_000)))
                    for customer in customers for _ in range(2)]
        session.flush()
        groups = []
        for index in range(data.draw(st.integers(1, 8))):
            group = []
            for part in range(data.draw(st.integers(1, 2))):
                customer = data.draw(st.sampled_from(customers))
                chosen = data.draw(st.lists(st.sampled_from(invoices), max_size=3))
                allocations = tuple(NewAllocation(i.id, data.draw(st.integers(0, 6_000)), data.draw(st.integers(0, 50)))
                                    for i in chosen)
                amount = sum(a.amount_minor for a in allocations) + data.draw(st.integers(0, 100))
                group.append(_new(customer.id, data.draw(st.sampled_from(companies)).id, f"R{index}-{part}",
                                  max(1, amount), *allocations))
            groups.append(group)
        owner = {i.id: (i.customer_id, i.company_id) for i in invoices}

        outcomes = allocate_many(session, groups)

        session.expire_all()
        written = session.scalars(select(Payment).where(Payment.provider == "manual")).all()
        applied = [g for g, o in zip(groups, outcomes) if isinstance(o, Applied)]
        assert sorted(p.provider_ref or "" for p in written) == sorted(p.provider_ref for g in applied for p in g)
        for group in applied:
            for payment in group:
                assert sum(a.amount_minor for a in payment.allocations) <= payment.amount_minor
                assert all(owner[a.invoice_id] == (payment.customer_id, payment.company_id)
                           for a in payment.allocations)
        assert all(i.open_minor >= 0 for i in invoices)
        assert invariant_violations(session) == []
        nested.rollback()
