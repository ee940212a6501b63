from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from kernel.user_error import UserError
from ledger.allocation import allocate, invariant_violations
from ledger.models import InvoiceKind, Payment
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
