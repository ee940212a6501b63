"""On PostgreSQL the running totals (open_items_by_due, invoices_issued_by_day, payment_days,
customer_balances) are moved once per statement from its transition tables (migration
0026_pg_totals), but for an UPDATE of payments, moved by a row trigger only when a column the
totals read changes (0041_payment_moves): statements of many rows, of one row, and of rows that
change nothing leave them equal to a recount from the rows, on both engines."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import case, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from kernel.db import downgrade, make_engine, upgrade
from ledger.day_totals import drift, stored
from ledger.models import FAR_FUTURE, Allocation, CustomerBalance, Invoice, Payment
from tests import factories

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer

TODAY = date(2026, 11, 25)


def balance_drift(session: Session) -> list[str]:
    """customer_balances rows that differ from a recount of every customer's open invoices."""
    chased = (Invoice.kind == "invoice") & Invoice.status.in_(("open", "partially_paid"))
    as_of = session.scalar(text("SELECT as_of FROM balance_state WHERE id = 1"))
    overdue = chased & (Invoice.due_date < as_of) if as_of is not None else chased & False
    per_currency = select(Invoice.customer_id, func.sum(case((chased, Invoice.open_minor), else_=0)).label("s"),
                          func.sum(case((overdue, Invoice.open_minor), else_=0)).label("o"),
                          func.min(case((chased, Invoice.due_date))).label("d")) \
        .where(Invoice.open_minor > 0, Invoice.status != "void") \
        .group_by(Invoice.customer_id, Invoice.currency).subquery()
    counted = {customer_id: (int(s), int(o), d or FAR_FUTURE) for customer_id, s, o, d in session.execute(
        select(per_currency.c.customer_id, func.max(per_currency.c.s), func.max(per_currency.c.o),
               func.min(per_currency.c.d)).group_by(per_currency.c.customer_id))}
    problems = []
    for row in session.scalars(select(CustomerBalance)):
        kept = (row.outstanding_minor, row.overdue_minor, row.oldest_due)
        if kept != counted.get(row.customer_id, (0, 0, FAR_FUTURE)):
            problems.append(f"customer {row.customer_id}: stored {kept} != counted {counted.get(row.customer_id)}")
    return problems


def _check(session: Session) -> None:
    session.flush()
    session.expire_all()
    assert drift(session) == []
    assert balance_drift(session) == []


def _invoice_row(rng: random.Random, customer: Any, n: int) -> dict[str, Any]:
    issued = TODAY - timedelta(days=rng.randrange(0, 90))
    total = rng.randrange(1, 900) * 100
    return dict(company_id=customer.company_id, customer_id=customer.id, number=f"S{n:05d}", kind="invoice",
                status=rng.choice(("open", "open", "disputed")), issue_date=issued,
                due_date=issued + timedelta(days=rng.choice((0, 30))), currency=rng.choice(("EUR", "EUR", "USD")),
                total_minor=total, open_minor=total)


@pytest.mark.parametrize("seed", range(3))
def test_bulk_and_single_row_statements_keep_every_total(session: Session, seed: int) -> None:
    rng = random.Random(seed)
    session.execute(text("UPDATE balance_state SET as_of = :today WHERE id = 1"), {"today": TODAY})
    company = factories.company(session)
    customers = [factories.customer(session, company) for _ in range(6)]
    # Invoices: one multi-row INSERT, then an executemany, then one row through the ORM.
    session.execute(insert(Invoice).values([_invoice_row(rng, rng.choice(customers), n) for n in range(40)]))
    session.execute(insert(Invoice), [_invoice_row(rng, rng.choice(customers), n) for n in range(40, 50)])
    factories.invoice(session, customers[0], total_minor=123_00, due_date=TODAY - timedelta(days=3))
    _check(session)
    invoices = session.execute(select(Invoice.id, Invoice.customer_id, Invoice.currency, Invoice.open_minor)
                               .where(Invoice.company_id == company.id, Invoice.status == "open")
                               .order_by(Invoice.id)).all()
    # Payments received on a few days, then their allocations: each in one statement of many rows.
    payments = [dict(customer_id=i.customer_id, provider="test", provider_ref=f"s{seed}-{i.id}",
                     method=rng.choice(("card", "bank_transfer")), amount_minor=i.open_minor + rng.choice((0, 500)),
                     currency=i.currency, status=rng.choice(("succeeded", "succeeded", "pending")),
                     received_on=TODAY - timedelta(days=rng.randrange(3))) for i in invoices[:20]]
    session.execute(insert(Payment).values(payments))
    paid = dict(session.execute(select(Payment.provider_ref, Payment.id).where(Payment.provider == "test")).all())
    allocations = [dict(invoice_id=i.id, payment_id=paid[f"s{seed}-{i.id}"], currency=i.currency,
                        amount_minor=i.open_minor) for i in invoices[:20]]
    session.execute(insert(Allocation).values(allocations))
    session.execute(update(Invoice).where(Invoice.id.in_([i.id for i in invoices[:20]]))
                    .values(open_minor=0, status="paid"))
    _check(session)
    assert stored(session)["payment_days"], "nothing was paid: the test tests nothing"
    # Updates of many rows: amounts, statuses, due dates, customers, issue dates; and of none.
    ids = [i.id for i in invoices[20:]]
    session.execute(update(Invoice).where(Invoice.id.in_(ids[::2])).values(open_minor=Invoice.open_minor - 100,
                                                                            status="partially_paid"))
    session.execute(update(Invoice).where(Invoice.id.in_(ids[1::2])).values(due_date=TODAY + timedelta(days=9)))
    session.execute(update(Invoice).where(Invoice.id.in_(ids[:5])).values(customer_id=customers[5].id))
    session.execute(update(Invoice).where(Invoice.company_id == company.id).values(issue_date=TODAY - timedelta(days=100)))
    session.execute(update(Invoice).where(Invoice.id == -1).values(open_minor=0))
    session.execute(update(Invoice).where(Invoice.company_id == company.id).values(discount_bps=5))  # counts nowhere
    session.execute(update(Payment).where(Payment.provider == "test", Payment.status == "pending")
                    .values(status="succeeded"))
    session.execute(update(Payment).where(Payment.provider == "test").values(received_on=TODAY + timedelta(days=1),
                                                                              method="card"))
    session.execute(update(Allocation).where(Allocation.payment_id.in_(list(paid.values())[::3]))
                    .values(amount_minor=Allocation.amount_minor - 1))
    _check(session)
    # One row at a time, through the ORM: a payment's amount and status, an invoice's customer.
    payment = session.get_one(Payment, paid[f"s{seed}-{invoices[0].id}"])
    payment.amount_minor += 1
    session.flush()
    payment.status = "refunded"
    invoice = session.get_one(Invoice, ids[1])
    invoice.customer_id = customers[1].id
    invoice.status = "void"
    _check(session)
    # Deletes: one allocation, then many allocations with their payments, then invoices.
    session.delete(session.scalars(select(Allocation).order_by(Allocation.id)).first())
    session.flush()
    gone = list(paid.values())[::2]
    session.execute(delete(Allocation).where(Allocation.payment_id.in_(gone)))
    session.execute(delete(Payment).where(Payment.id.in_(gone)))
    session.execute(delete(Allocation).where(Allocation.invoice_id.in_(ids[::3])))
    session.execute(delete(Invoice).where(Invoice.id.in_(ids[::3])))
    _check(session)


_TRIGGERS = text(
    "SELECT c.relname, t.tgname, (t.tgtype & 1) = 1 AS per_row, t.tgqual IS NOT NULL AS filtered FROM pg_trigger t "
    "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal "
    "AND c.relname IN ('invoices', 'payments', 'allocations', 'customers', 'bank_entries')")


# The one row trigger: it fires only for a payment whose totals' columns changed (its WHEN).
ROW_TRIGGERS = ["tr_payments_totals_update"]


def test_postgresql_moves_the_totals_once_per_statement(pg_session: Session) -> None:
    """No row trigger is left on the tables the totals follow but the payments' UPDATE one, which a
    WHEN condition keeps from firing for an update that moves none of them: the others fire once
    per statement."""
    rows = pg_session.execute(_TRIGGERS).all()
    assert {name for _table, name, _per_row, _filtered in rows} >= {
        "tr_invoices_totals_insert", "tr_invoices_totals_update", "tr_invoices_totals_delete",
        "tr_payments_totals_insert", "tr_payments_totals_update", "tr_payments_totals_delete",
        "tr_allocations_totals_insert", "tr_allocations_totals_update", "tr_allocations_totals_delete",
        "tr_customers_totals_insert", "tr_bank_entries_days_insert"}
    assert [name for _table, name, per_row, filtered in rows if per_row and filtered] == ROW_TRIGGERS
    assert [name for _table, name, per_row, _filtered in rows if per_row] == ROW_TRIGGERS


def test_an_update_of_a_payment_that_moves_no_total_fires_no_trigger(pg_session: Session) -> None:
    """A new decline reason, a card, the same status again: payment_days is not written (its row
    stays where it was), while a status that moves writes it."""
    customer = factories.customer(pg_session, factories.company(pg_session))
    paid = insert(Payment).values(customer_id=customer.id, provider="test", provider_ref="p-1", method="card",
                                  amount_minor=12_00, currency="EUR", status="succeeded", received_on=TODAY)
    payment_id = pg_session.execute(paid.returning(Payment.id)).scalar_one()
    day = text("SELECT ctid::text FROM payment_days WHERE received_on = :day")
    written = pg_session.scalar(day, {"day": TODAY})
    assert written is not None
    pg_session.execute(update(Payment).where(Payment.id == payment_id).values(
        status="succeeded", failure_reason="Your card was declined.", card_brand="visa", card_last4="4242"))
    assert pg_session.scalar(day, {"day": TODAY}) == written
    pg_session.execute(update(Payment).where(Payment.id == payment_id).values(status="refunded"))
    assert pg_session.scalar(day, {"day": TODAY}) != written
    assert drift(pg_session) == []


def test_downgrade_restores_the_row_triggers(pg_server: "PostgresServer") -> None:
    url = pg_server.create_database("totals_downgrade")
    upgrade(url)
    # One step below 0026_pg_totals, the last migration: the models (used below) match that schema.
    downgrade(url, "0032_invoice_pdf")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(_TRIGGERS).all()
        per_row = {name for _table, name, per_row, _filtered in rows if per_row}
        assert per_row == {"tr_invoices_open_insert", "tr_invoices_open_delete", "tr_invoices_open_update",
                           "tr_invoices_issued_insert", "tr_invoices_issued_delete", "tr_invoices_issued_update",
                           "tr_invoices_reissued", "tr_payments_days_insert", "tr_payments_days_delete",
                           "tr_payments_days_update", "tr_allocations_days_insert", "tr_allocations_days_delete",
                           "tr_allocations_days_update", "tr_invoices_balance", "tr_customers_balance"}
        with Session(engine) as session:  # and they keep the totals
            customer = factories.customer(session, factories.company(session))
            factories.invoice(session, customer, total_minor=50_00)
            session.flush()
            assert drift(session) == [] and balance_drift(session) == []
            assert stored(session)["open_items_by_due"]
            session.rollback()
        upgrade(url)
        with engine.connect() as connection:
            assert [name for _table, name, per_row, _filtered in connection.execute(_TRIGGERS) if per_row] \
                == ROW_TRIGGERS
    finally:
        engine.dispose()
