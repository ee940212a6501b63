"""The dashboard's running totals, kept by triggers, agree with the rows after any sequence of
changes (SQLite and PostgreSQL), and the dashboard reads the same figures from them as from
the invoices and payments themselves."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from admin import dashboard_service
from admin.customers_service import refresh_overdue
from admin.dashboard_service import Scope, build_dashboard
from ledger.allocation import allocate, invariant_violations, settled_status
from ledger.day_totals import drift, stored
from ledger.models import Allocation, FxRate, Invoice, InvoiceKind, Payment, PaymentDay
from ledger.money import Money
from tests import factories

METHODS = ("card", "instant_transfer", "direct_debit", "bank_transfer")
STATUSES = ("pending", "processing", "succeeded", "failed", "refunded", "charged_back")


def _day(rng: random.Random) -> date:
    return date(2026, 11, 25) - timedelta(days=rng.randrange(-40, 200))


def _shuffle_the_ledger(session: Session, seed: int) -> None:
    """Random invoices, payments and allocations, then random changes of every column the
    totals depend on, through the ORM as the application writes them (an invoice's status
    always follows its open amount, as `settled_status` keeps it)."""
    rng = random.Random(seed)
    companies = [factories.company(session, base_currency="EUR"), factories.company(session, base_currency="GBP")]
    customers = [factories.customer(session, rng.choice(companies)) for _ in range(12)]
    invoices: list[Invoice] = []
    payments: list[Payment] = []
    for _ in range(30):
        customer = rng.choice(customers)
        issued = _day(rng)
        invoices.append(factories.invoice(
            session, customer, rng.randrange(1, 5000) * 100, currency=rng.choice(("EUR", "USD")),
            issue_date=issued, due_date=issued + timedelta(days=rng.choice((0, 30, 45))),
            kind=InvoiceKind.credit_note if rng.random() < 0.15 else InvoiceKind.invoice,
            status=rng.choice(("open", "open", "open", "disputed", "void"))))
    for step in range(60):
        action = rng.randrange(7)
        if action == 0:  # a payment, maybe succeeded, allocated to open invoices of its customer and currency
            invoice = rng.choice([i for i in invoices if i.kind == "invoice"])
            status = "succeeded" if rng.random() < 0.6 else rng.choice(STATUSES)
            payment = Payment(customer_id=invoice.customer_id, provider="test", provider_ref=f"p{seed}-{step}",
                              method=rng.choice(METHODS), amount_minor=rng.randrange(1, 3000) * 100,
                              currency=invoice.currency, status=status,
                              received_on=_day(rng) if status == "succeeded" or rng.random() < 0.3 else None)
            session.add(payment)
            session.flush()
            payments.append(payment)
            if invoice.open_minor > 0 and invoice.status != "void":
                allocate(session, invoice, Money(min(invoice.open_minor, payment.amount_minor), invoice.currency),
                         payment=payment)
        elif action == 1 and payments:  # status moves both ways (a reversal, a late success)
            payment = rng.choice(payments)
            payment.status = "succeeded" if rng.random() < 0.4 else rng.choice(STATUSES)
            if payment.received_on is None and rng.random() < 0.7:
                payment.received_on = _day(rng)
        elif action == 2 and payments:  # the day, method or amount of a payment corrected
            payment = rng.choice(payments)
            payment.received_on = _day(rng)
            payment.method = rng.choice(METHODS)
            payment.amount_minor += 100
        elif action == 3:  # an import moves an invoice's dates, status or total
            invoice = rng.choice(invoices)
            invoice.issue_date = _day(rng)
            invoice.due_date = invoice.issue_date + timedelta(days=rng.choice((0, 15, 60)))
            invoice.status = rng.choice(("open", "disputed", "void", invoice.status))
            invoice.total_minor += 100
            invoice.open_minor += 100
            invoice.status = settled_status(invoice)
        elif action == 4:  # an allocation undone (a refund reopens the invoice)
            allocation = session.scalars(select(Allocation).order_by(Allocation.id)).first()
            if allocation is not None:
                invoice = session.get(Invoice, allocation.invoice_id)
                invoice.open_minor += allocation.amount_minor + allocation.discount_minor
                invoice.status = settled_status(invoice)
                session.delete(allocation)
        elif action == 5:  # an allocation reduced by a correction (a bulk UPDATE, not the ORM)
            allocation = session.scalars(select(Allocation).where(Allocation.amount_minor > 1)
                                         .order_by(Allocation.id.desc())).first()
            if allocation is not None:
                invoice = session.get(Invoice, allocation.invoice_id)
                invoice.open_minor += 1
                invoice.status = settled_status(invoice)
                session.execute(update(Allocation).where(Allocation.id == allocation.id)
                                .values(amount_minor=Allocation.amount_minor - 1))
                session.expire(allocation)
        elif action == 6 and len(payments) > 3:  # a payment deleted with its allocations
            payment = payments.pop(rng.randrange(len(payments)))
            for allocation in session.scalars(select(Allocation).where(Allocation.payment_id == payment.id)):
                invoice = session.get(Invoice, allocation.invoice_id)
                invoice.open_minor += allocation.amount_minor
                invoice.status = settled_status(invoice)
            session.execute(delete(Allocation).where(Allocation.payment_id == payment.id))
            session.delete(payment)
        session.flush()
    session.add(FxRate(base="EUR", quote="USD", rate="1.1", valid_on=date(2026, 1, 1)))
    session.add(FxRate(base="GBP", quote="USD", rate="1.3", valid_on=date(2026, 1, 1)))
    session.flush()


@pytest.mark.parametrize("seed", range(4))
def test_running_totals_follow_every_change(session: Session, seed: int) -> None:
    _shuffle_the_ledger(session, seed)
    assert stored(session)["payment_days"], "the sequence paid nothing: it tests nothing"
    assert invariant_violations(session) == []


def test_a_total_out_of_step_is_reported(session: Session) -> None:
    _shuffle_the_ledger(session, 7)
    row = session.scalars(select(PaymentDay).where(PaymentDay.collected_minor > 0)).first()
    row.collected_minor += 1
    session.flush()
    [problem] = drift(session)
    assert problem.startswith("payment_days ") and "stored" in problem
    assert problem in invariant_violations(session)


@pytest.mark.parametrize("seed, candidates, top", [(0, 40, 10), (1, 3, 2), (2, 1, 1), (3, 6, 3)])
def test_the_dashboard_reads_the_same_figures_from_the_totals_as_from_the_rows(
        session: Session, monkeypatch: pytest.MonkeyPatch, seed: int, candidates: int, top: int) -> None:
    """Including the top overdue customers proven from the customers list's sort keys, with few
    candidates read (the bound decides) and with all of them."""
    monkeypatch.setattr(dashboard_service, "TOP_CANDIDATES", candidates)
    monkeypatch.setattr(dashboard_service, "TOP_CUSTOMERS", top)
    _shuffle_the_ledger(session, seed)
    refresh_overdue(session, date(2026, 11, 25))
    ids = tuple(session.scalars(select(Invoice.company_id).distinct()))
    cash_seen = False
    for scope in (Scope(ids), Scope(ids[:1]), Scope(ids, currency="USD")):
        from_totals = build_dashboard(session, scope)
        from_rows = build_dashboard(session, scope, use_aggregates=False)
        for a, b in zip(from_totals.companies, from_rows.companies):
            assert a.top_overdue == b.top_overdue
        assert from_totals == from_rows
        cash_seen |= any(company.cash_90_total.parts for company in from_totals.companies)
    assert cash_seen, "no cash in the 90 days: the comparison proves little"
