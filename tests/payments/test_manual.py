"""Payments recorded by hand (cheque, LCR, cash, set-off, transfer seen elsewhere) and their cancellation."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from admin.staff_accounts import create_user
from dunning.planner import plan
from dunning.scenarios import ensure_default_scenario
from ledger.allocation import invariant_violations
from ledger.models import AuditEvent, Company, Customer, Invoice, Payment, PaymentDay, User
from ledger.money import Money
from ledger.statement import build_statement, unapplied_credit
from payments.checkout import settle_with_credit
from kernel.user_error import UserError
from payments.manual import KeyActor, record_manual_payment, reverse_manual_payment
from tests import factories

TODAY = date(2026, 11, 25)


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


@pytest.fixture
def manager(session: Session, company: Company) -> User:
    return create_user(session, email="manager@durand.test", role="manager", password="correct horse battery",
                       company_codes=[company.code])


def _book(session: Session, customer: Customer) -> dict[str, Any]:
    """Everything a payment by hand touches: invoices, credit, dashboard totals by method."""
    session.flush()
    session.expire_all()
    invoices = {i.number: (i.open_minor, i.status) for i in session.scalars(
        select(Invoice).where(Invoice.customer_id == customer.id).order_by(Invoice.id))}
    days = {(d.method, d.received_on): (d.collected_minor, d.settled_minor, d.settled_days_minor)
            for d in session.scalars(select(PaymentDay).where(PaymentDay.company_id == customer.company_id))
            if d.collected_minor or d.settled_minor}
    return {"invoices": invoices, "credit": unapplied_credit(session, customer.id), "days": days}


def test_a_cheque_settles_the_oldest_invoices_first(session: Session, customer: Customer, invoices: list[Invoice],
                                                     manager: User) -> None:
    payment = record_manual_payment(session, customer, eur(1500_00), TODAY, "cheque", " 0012 3456 ", None, manager)
    book = _book(session, customer)
    assert book["invoices"] == {"F-1": (0, "paid"), "F-2": (234_56, "partially_paid"), "F-3": (318_40, "open")}
    assert (payment.provider, payment.method, payment.status, payment.reference) == (
        "manual", "cheque", "succeeded", "0012 3456")
    assert book["credit"] == {}
    assert book["days"] == {("cheque", TODAY): (1500_00, 1500_00, 1234_56 * 55 + 265_44 * 55)}
    assert invariant_violations(session) == []
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "payment.recorded")).one()
    assert event.actor == "manager@durand.test" and event.customer_id == customer.id
    assert event.after == {"method": "cheque", "amount_minor": 1500_00, "currency": "EUR",
                           "received_on": "2026-11-25", "reference": "0012 3456",
                           "invoices": {"F-1": 1234_56, "F-2": 265_44}, "unapplied_minor": 0}


def test_chosen_invoices_and_amounts_and_the_rest_as_credit(session: Session, customer: Customer,
                                                             invoices: list[Invoice], manager: User) -> None:
    record_manual_payment(session, customer, eur(1000_00), date(2026, 11, 20), "set_off", "Avoir fournisseur 77",
                          [(invoices[2].id, eur(318_40)), (invoices[1].id, eur(100_00)), (invoices[0].id, eur(0))],
                          manager)
    book = _book(session, customer)
    assert book["invoices"] == {"F-1": (1234_56, "open"), "F-2": (400_00, "partially_paid"), "F-3": (0, "paid")}
    assert book["credit"] == {"EUR": eur(581_60)}
    section = build_statement(session, customer, TODAY).sections[0]
    assert section.unapplied_credit == eur(581_60)
    assert section.total_due == eur(1234_56 + 400_00 - 581_60)


def test_an_over_payment_is_kept_as_credit_and_reminders_stop(session: Session, company: Company,
                                                              customer: Customer, invoices: list[Invoice],
                                                              manager: User) -> None:
    ensure_default_scenario(session, company)
    later = date(2026, 12, 30)
    assert {m.customer_id for m in plan(session, later, company)} == {customer.id}
    record_manual_payment(session, customer, eur(2100_00), TODAY, "cash", "", None, manager)
    assert _book(session, customer)["credit"] == {"EUR": eur(2100_00 - 1234_56 - 500_00 - 318_40)}
    assert plan(session, later, company) == []


def test_cancelling_restores_the_ledger_exactly(session: Session, customer: Customer, invoices: list[Invoice],
                                               manager: User) -> None:
    earlier = record_manual_payment(session, customer, eur(100_00), TODAY, "bank_transfer", "VIR 1", None, manager)
    before = _book(session, customer)
    payment = record_manual_payment(session, customer, eur(1970_00), TODAY, "bill_of_exchange", "LCR 42",
                                    [(invoices[0].id, eur(1134_56)), (invoices[1].id, eur(500_00))], manager)
    # The customer spends the over-payment's credit on its last invoice through the portal.
    settle_with_credit(session, customer=customer, contact=customer.primary_contact,
                       selection={invoices[2].id: invoices[2].open_minor}, today=TODAY)
    assert _book(session, customer)["invoices"]["F-3"] == (0, "paid")

    reverse_manual_payment(session, payment, manager)
    assert _book(session, customer) == before
    assert payment.status == "cancelled" and earlier.status == "succeeded"
    assert invariant_violations(session) == []
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "payment.cancelled")).one()
    assert event.before == {"status": "succeeded", "invoices": {"F-1": 1134_56, "F-2": 500_00, "F-3": 318_40}}
    with pytest.raises(UserError, match="already cancelled"):
        reverse_manual_payment(session, payment, manager)


def test_the_same_form_posted_twice_records_once(session: Session, customer: Customer, invoices: list[Invoice],
                                                 manager: User) -> None:
    first = record_manual_payment(session, customer, eur(50_00), TODAY, "cash", "", None, manager, key="k-1")
    again = record_manual_payment(session, customer, eur(50_00), TODAY, "cash", "", None, manager, key="k-1")
    assert again.id == first.id
    assert session.scalar(select(func.count()).select_from(Payment).where(Payment.provider == "manual")) == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "bitcoin"}, "Choose how the payment was made."),
    ({"amount": eur(0)}, "more than zero"),
    ({"received_on": date(2026, 11, 26)}, "2026-11-26 is in the future"),
    ({"reference": ""}, "cheque or bill number"),
    ({"reference": "x" * 65}, "at most 64 characters"),
    ({"allocations": "F-1>open"}, "F-1 has only €1,234.56 open"),
    ({"allocations": "twice"}, "listed twice"),
    ({"allocations": "more than paid"}, "exceed the payment"),
    ({"allocations": "negative"}, "F-2: an amount cannot be negative"),
    ({"allocations": "other customer"}, "not an open invoice of this customer"),
    ({"allocations": "dollars"}, "is in USD"),
])
def test_bad_input_is_refused_and_nothing_is_recorded(session: Session, company: Company, customer: Customer,
                                                      invoices: list[Invoice], manager: User,
                                                      kwargs: dict[str, Any], message: str) -> None:
    f1, f2, _ = invoices
    stranger = factories.invoice(session, factories.customer(session, company), number="F-OTHER")
    dollars = factories.invoice(session, customer, currency="USD", number="F-USD")
    allocations = {
        "F-1>open": [(f1.id, eur(1234_57))], "twice": [(f1.id, eur(1_00)), (f1.id, eur(1_00))],
        "more than paid": [(f1.id, eur(1000_00)), (f2.id, eur(500_00))], "negative": [(f2.id, eur(-1_00))],
        "other customer": [(stranger.id, eur(1_00))], "dollars": [(dollars.id, eur(1_00))],
    }
    values: dict[str, Any] = {"amount": eur(1200_00), "received_on": TODAY, "method": "cheque",
                              "reference": "CHQ 1", "allocations": None, **kwargs}
    if isinstance(values["allocations"], str):
        values["allocations"] = allocations[values["allocations"]]
    before = _book(session, customer)
    with pytest.raises(UserError, match=message):
        record_manual_payment(session, customer, values["amount"], values["received_on"], values["method"],
                              values["reference"], values["allocations"], manager)
    assert _book(session, customer) == before
    assert session.scalar(select(func.count()).select_from(Payment)) == 0


def test_roles(session: Session, company: Company, customer: Customer, invoices: list[Invoice]) -> None:
    viewer = create_user(session, email="viewer@durand.test", role="viewer", password="correct horse battery",
                         company_codes=[company.code])
    collector = create_user(session, email="collector@durand.test", role="collector",
                            password="correct horse battery", company_codes=[company.code])
    stranger = create_user(session, email="other@else.test", role="manager", password="correct horse battery",
                           company_codes=[factories.company(session).code])
    for user in (viewer, collector, stranger):
        with pytest.raises(UserError, match="may not record"):
            record_manual_payment(session, customer, eur(10_00), TODAY, "cash", "", None, user)
    customer.collector_id = collector.id
    payment = record_manual_payment(session, customer, eur(10_00), TODAY, "cash", "", None, collector)
    with pytest.raises(UserError, match="may not record"):
        reverse_manual_payment(session, payment, viewer)
    reverse_manual_payment(session, payment, collector)
    assert payment.status == "cancelled"


def test_an_api_key_acts_for_its_own_company_only_and_is_the_audited_actor(
        session: Session, company: Company, customer: Customer, invoices: list[Invoice]) -> None:
    with pytest.raises(UserError, match="may not record"):
        record_manual_payment(session, customer, eur(10_00), TODAY, "cash", "", None,
                              KeyActor("other-erp", factories.company(session).id))
    erp = KeyActor("sage-x3", company.id)
    payment = record_manual_payment(session, customer, eur(10_00), TODAY, "cash", "", None, erp)
    reverse_manual_payment(session, payment, erp)
    actors = session.execute(select(AuditEvent.action, AuditEvent.actor_type, AuditEvent.actor)
                             .where(AuditEvent.entity_type == "payment").order_by(AuditEvent.id)).all()
    assert actors == [("payment.recorded", "api", "sage-x3"), ("payment.cancelled", "api", "sage-x3")]


def test_a_provider_payment_is_not_cancelled_here(session: Session, customer: Customer, manager: User) -> None:
    card = Payment(customer_id=customer.id, provider="stripe", provider_ref="pi_1", method="card",
                   amount_minor=10_00, currency="EUR", status="succeeded", received_on=TODAY)
    session.add(card)
    session.flush()
    with pytest.raises(UserError, match="recorded by hand"):
        reverse_manual_payment(session, card, manager)


def test_the_payment_form_names_every_bad_field_at_once() -> None:
    from kernel.user_error import UserErrors
    from payments.manual import ManualPaymentForm

    with pytest.raises(UserErrors) as raised:
        ManualPaymentForm.from_form([("currency", "EUR"), ("amount", "huit"), ("received_on", "hier"),
                                     ("method", "card"), ("alloc-12", "1O0")])
    assert [(e.field, e.render("fr")) for e in raised.value] == [
        ("amount", "Le montant reçu huit n'est pas un montant en EUR."),
        ("received_on", "La date de réception hier n'est pas une date."),
        ("method", "Choisissez comment le paiement a été fait."),
        ("allocations", "1O0 n'est pas un montant en EUR."),
    ]
    form = ManualPaymentForm.from_form([("currency", "eur"), ("amount", "1 234,50"), ("received_on", "2026-11-30"),
                                        ("method", "cheque"), ("reference", " 0042 "), ("alloc-12", "1000"),
                                        ("alloc-13", ""), ("csrf_token", "x")])
    assert (form.amount, form.method, form.reference, form.allocations) == (
        Money(1234_50, "EUR"), "cheque", "0042", [(12, Money(1000_00, "EUR"))])
