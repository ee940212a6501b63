"""The dashboard's running totals (`OpenItemsByDue`, `InvoicesIssuedByDay`, `PaymentDay`,
`BankEntryDay`) against a recount from the invoices, payments, allocations and bank entries themselves.

The totals are moved by database triggers (migrations 0010_dashboard_days, 0019_bank_perf); `drift` is how the
ledger's invariant check proves they still agree with the rows after any sequence of changes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from ledger.models import (
    FAR_FUTURE,
    Allocation,
    BankEntry,
    BankEntryDay,
    Customer,
    Invoice,
    InvoiceKind,
    InvoicesIssuedByDay,
    InvoiceStatus,
    OpenItemsByDue,
    Payment,
    PaymentDay,
    PaymentStatus,
)


def days_between(session: Session, later: Any, earlier: Any) -> Any:
    """Whole days from `earlier` to `later` (two DATE columns), in each dialect's own way (as the
    triggers of migration 0010 count them)."""
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.julianday(later) - func.julianday(earlier), Integer)
    return cast(later - earlier, Integer)


def _rows(session: Session, query: Any, keys: int) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """{key: sums} without the all-zero rows (a stored total that fell back to zero stays as a row)."""
    found = {}
    for row in session.execute(query):
        sums = tuple(int(value or 0) for value in row[keys:])
        if any(sums):
            found[tuple(str(value) for value in row[:keys])] = sums
    return found


def bank_kind(credit_debit: str, reversal: bool, state: str, matched_by: str | None) -> str | None:
    """What became of a bank credit, as `BankEntryDay` counts it (None: not counted)."""
    if credit_debit != "CRDT" or reversal:
        return None
    if state == "matched":
        return "by_hand" if matched_by == "person" else "automatic"
    return {"ignored": "set_aside", "unmatched": "unmatched", "suggested": "unmatched"}.get(state)


def _bank_days(session: Session) -> dict[tuple[Any, ...], tuple[int, ...]]:
    sums: dict[tuple[Any, ...], list[int]] = {}
    e = BankEntry
    for company_id, currency, credit_debit, reversal, state, matched_by, booked, valued, amount in session.execute(
            select(e.company_id, e.currency, e.credit_debit, e.reversal, e.state, e.matched_by, e.booking_date,
                   e.value_date, e.amount_minor)):
        kind = bank_kind(credit_debit, reversal, state, matched_by)
        if kind is not None:
            total = sums.setdefault(tuple(str(v) for v in (company_id, currency, kind, booked or valued or FAR_FUTURE)),
                                    [0, 0])
            total[0] += amount
            total[1] += 1
    return {key: (amount, count) for key, (amount, count) in sums.items() if amount or count}


def recount(session: Session) -> dict[str, dict[tuple[Any, ...], tuple[int, ...]]]:
    open_key = (Invoice.company_id, Invoice.currency, Invoice.kind, Invoice.status, Invoice.due_date)
    issued_key = (Invoice.company_id, Invoice.currency, Invoice.issue_date)
    settled = (select(Allocation.payment_id, func.sum(Allocation.amount_minor).label("amount"),
                      func.sum(Allocation.amount_minor * days_between(session, Payment.received_on, Invoice.issue_date))
                      .label("days"))
               .join(Invoice, Invoice.id == Allocation.invoice_id).join(Payment, Payment.id == Allocation.payment_id)
               .group_by(Allocation.payment_id).subquery())
    pay_key = (Customer.company_id, Payment.currency, Payment.method, Payment.received_on)
    return {
        "open_items_by_due": _rows(session, select(*open_key, func.sum(Invoice.open_minor))
                                   .where(Invoice.open_minor > 0).group_by(*open_key), 5),
        "invoices_issued_by_day": _rows(session, select(*issued_key, func.sum(Invoice.total_minor))
                                        .where(Invoice.kind == InvoiceKind.invoice.value,
                                               Invoice.status != InvoiceStatus.void.value)
                                        .group_by(*issued_key), 3),
        "payment_days": _rows(session, select(*pay_key, func.sum(Payment.amount_minor),
                                              func.sum(func.coalesce(settled.c.amount, 0)),
                                              func.sum(func.coalesce(settled.c.days, 0)))
                              .join(Customer, Customer.id == Payment.customer_id)
                              .outerjoin(settled, settled.c.payment_id == Payment.id)
                              .where(Payment.status == PaymentStatus.succeeded.value,
                                     Payment.received_on.is_not(None))
                              .group_by(*pay_key), 4),
        "bank_entry_days": _bank_days(session),
    }


def stored(session: Session) -> dict[str, dict[tuple[Any, ...], tuple[int, ...]]]:
    o, i, p = OpenItemsByDue, InvoicesIssuedByDay, PaymentDay
    return {
        "open_items_by_due": _rows(session, select(o.company_id, o.currency, o.kind, o.status, o.due_date,
                                                   o.open_minor), 5),
        "invoices_issued_by_day": _rows(session, select(i.company_id, i.currency, i.issue_date, i.total_minor), 3),
        "payment_days": _rows(session, select(p.company_id, p.currency, p.method, p.received_on, p.collected_minor,
                                              p.settled_minor, p.settled_days_minor), 4),
        "bank_entry_days": _rows(session, select(BankEntryDay.company_id, BankEntryDay.currency, BankEntryDay.kind,
                                                 BankEntryDay.day, BankEntryDay.amount_minor, BankEntryDay.entries),
                                 4),
    }


def drift(session: Session) -> list[str]:
    """Each running total that differs from the recount, named with its key (should be none)."""
    problems = []
    kept, counted = stored(session), recount(session)
    for table, rows in counted.items():
        for key in sorted(set(rows) | set(kept[table])):
            if rows.get(key) != kept[table].get(key):
                problems.append(f"{table} {'/'.join(key)}: stored {kept[table].get(key)} != counted {rows.get(key)}")
    return problems
