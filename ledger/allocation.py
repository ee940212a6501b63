"""Settling invoices: allocations from payments or credit notes, keeping the open amount true.

Invariant, for every invoice: total = open + Σ allocation.amount + Σ allocation.discount
+ settled outside Encours (what the ERP's open-items snapshot closed, ledger.open_items), open >= 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.db import insert_rows, update_rows, reserve_ids
from kernel.i18n import N_
from kernel.user_error import UserError
from ledger.day_totals import drift
from ledger.models import (
    Allocation,
    AuditEvent,
    Checkout,
    CheckoutLine,
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Payment,
    PaymentStatus,
)
from ledger.money import CurrencyError, Money

_CHUNK = 500  # ids per IN (...) list


def settled_status(invoice: Invoice) -> str:
    return status_of(invoice.status, invoice.open_minor, invoice.total_minor)


def status_of(status: str, open_minor: int, total_minor: int) -> str:
    """The status an invoice with these amounts has: disputed and void stay; else paid, partly or not."""
    if status in (InvoiceStatus.disputed.value, InvoiceStatus.void.value):
        return status
    if open_minor == 0:
        return InvoiceStatus.paid.value
    if open_minor < total_minor:
        return InvoiceStatus.partially_paid.value
    return InvoiceStatus.open.value


def allocate(
    session: Session,
    invoice: Invoice,
    amount: Money,
    discount: Money | None = None,
    *,
    payment: Payment | None = None,
    credit_note: Invoice | None = None,
) -> Allocation:
    """Apply `amount` (and a granted `discount`) of a payment or credit note to an invoice."""
    discount = discount or Money.zero(invoice.currency)
    if (payment is None) == (credit_note is None):
        raise UserError(N_("an allocation comes from exactly one payment or one credit note"))
    if invoice.kind != InvoiceKind.invoice.value:
        raise UserError(N_("%(number)s is a credit note, not an invoice"), number=invoice.number)
    for money in (amount, discount):
        if money.currency != invoice.currency:
            raise CurrencyError(N_("cannot settle a %(currency)s invoice with %(other)s"), currency=invoice.currency,
                                other=money.currency)
    if amount.minor < 0 or discount.minor < 0 or amount.minor + discount.minor == 0:
        raise UserError(N_("an allocation settles a positive amount"))
    if amount.minor + discount.minor > invoice.open_minor:
        raise UserError(N_("%(number)s: %(amount)s exceeds the open %(open)s"), number=invoice.number,
                        amount=amount + discount, open=invoice.open)
    if credit_note is not None:
        if credit_note.kind != InvoiceKind.credit_note.value:
            raise UserError(N_("%(number)s is not a credit note"), number=credit_note.number)
        if credit_note.currency != invoice.currency:
            raise CurrencyError(N_("cannot apply a %(other)s credit note to a %(currency)s invoice"),
                                other=credit_note.currency, currency=invoice.currency)
        if credit_note.customer_id != invoice.customer_id:
            raise UserError(N_("a credit note settles invoices of its own customer only"))
        if amount.minor > credit_note.open_minor:
            raise UserError(N_("%(number)s has only %(open)s left"), number=credit_note.number, open=credit_note.open)
        credit_note.open_minor -= amount.minor
        credit_note.status = settled_status(credit_note)
    if payment is not None and payment.currency != invoice.currency:
        raise CurrencyError(N_("cannot apply a %(other)s payment to a %(currency)s invoice"),
                            other=payment.currency, currency=invoice.currency)
    invoice.open_minor -= amount.minor + discount.minor
    invoice.status = settled_status(invoice)
    allocation = Allocation(
        invoice_id=invoice.id,
        payment_id=payment.id if payment else None,
        credit_note_id=credit_note.id if credit_note else None,
        currency=invoice.currency,
        amount_minor=amount.minor,
        discount_minor=discount.minor,
    )
    session.add(allocation)
    session.flush()
    return allocation


def invariant_violations(session: Session) -> list[str]:
    """Invoices whose stored open amount disagrees with their allocations, and dashboard running
    totals that disagree with the rows (should be none)."""
    settled = (
        select(
            Allocation.invoice_id,
            func.coalesce(func.sum(Allocation.amount_minor + Allocation.discount_minor), 0).label("settled"),
        )
        .group_by(Allocation.invoice_id)
        .subquery()
    )
    credited = (
        select(
            Allocation.credit_note_id,
            func.coalesce(func.sum(Allocation.amount_minor), 0).label("used"),
        )
        .where(Allocation.credit_note_id.is_not(None))
        .group_by(Allocation.credit_note_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Invoice.number,
            Invoice.kind,
            Invoice.total_minor,
            Invoice.open_minor,
            func.coalesce(settled.c.settled, 0) + Invoice.settled_outside_minor,
            func.coalesce(credited.c.used, 0) + Invoice.settled_outside_minor,
        )
        .outerjoin(settled, settled.c.invoice_id == Invoice.id)
        .outerjoin(credited, credited.c.credit_note_id == Invoice.id)
    ).all()
    problems = []
    for number, kind, total, open_, settled_sum, used in rows:
        consumed = settled_sum if kind == InvoiceKind.invoice.value else used
        if open_ < 0 or total != open_ + consumed:
            problems.append(f"{number}: total {total} != open {open_} + settled {consumed}")
    return problems + drift(session)


def unallocate(session: Session, payment: Payment) -> dict[int, int]:
    """Delete every allocation of `payment` and reopen what each settled (amount and discount):
    the invoices' open amounts as before the payment. What was reopened, by invoice id."""
    reopened: dict[int, int] = {}
    allocations = session.scalars(
        select(Allocation).where(Allocation.payment_id == payment.id).order_by(Allocation.invoice_id, Allocation.id)
    ).all()
    for allocation in allocations:
        invoice = session.scalar(select(Invoice).where(Invoice.id == allocation.invoice_id).with_for_update())
        assert invoice is not None
        back = allocation.amount_minor + allocation.discount_minor
        invoice.open_minor += back
        invoice.status = settled_status(invoice)
        reopened[invoice.id] = reopened.get(invoice.id, 0) + back
        session.delete(allocation)
    session.flush()
    return reopened


# --- many payments at once -------------------------------------------------------------------------


@dataclass(frozen=True)
class NewAllocation:
    invoice_id: int
    amount_minor: int
    discount_minor: int = 0


@dataclass(frozen=True)
class NewPayment:
    """A succeeded payment to create and allocate: `allocations` in order, the rest of `amount_minor`
    the customer's unapplied credit. `audit_after` adds to what its audit row says."""

    customer_id: int
    company_id: int  # whose customer pays: invoices of another company are refused
    provider: str
    provider_ref: str
    method: str
    amount_minor: int
    currency: str
    received_on: date
    allocations: tuple[NewAllocation, ...] = ()
    audit_after: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    payment_ids: tuple[int, ...]
    completed_checkouts: tuple[int, ...]  # open bank-transfer checkouts this group finished paying


@dataclass(frozen=True)
class Refused:
    reason: str


@dataclass
class _InvoiceState:
    id: int
    number: str
    kind: str
    currency: str
    customer_id: int
    company_id: int
    total_minor: int
    open_minor: int
    status: str
    paid_by: int | None = None  # index of the group that brought it to zero
    changed: bool = False


def allocate_many(session: Session, groups: Sequence[Sequence[NewPayment]], *, actor_type: str = "system",
                  actor: str | None = None) -> list[Applied | Refused]:
    """Create and allocate many succeeded payments in a few statements per batch, by the rules of
    `allocate` applied in order (each group sees what earlier groups left open). A group is all or
    nothing: one allocation that does not fit refuses the group, and nothing of it is written.

    Invoices are locked in id order and updated once each with their final open amount and status
    (status only follows the open amount: paid, partly paid; disputed and void stay); the
    database triggers keep the running totals as for single allocations. Open bank-transfer
    checkouts whose invoices are now all paid are completed, credited to the group that paid the
    last of them; each payment is audited as `payment.succeeded`."""
    session.flush()
    invoices = _lock_invoices(session, sorted({a.invoice_id for group in groups for p in group
                                               for a in p.allocations}))
    companies = _companies_of(session, sorted({p.customer_id for group in groups for p in group}))
    outcomes: list[Applied | Refused | None] = []
    for index, group in enumerate(groups):
        problem = _check_group(group, invoices, companies)
        if problem is not None:
            outcomes.append(Refused(problem))
            continue
        for payment in group:
            for allocation in payment.allocations:
                state = invoices[allocation.invoice_id]
                state.changed = True
                state.open_minor -= allocation.amount_minor + allocation.discount_minor
                state.status = status_of(state.status, state.open_minor, state.total_minor)
                if state.open_minor == 0:
                    state.paid_by = index
        outcomes.append(None)
    accepted = [(index, group) for index, group in enumerate(groups) if outcomes[index] is None]
    payments = [payment for _index, group in accepted for payment in group]
    # Every read before the first bulk write, so that the writes can go on in the background
    # (`kernel.db.background_writes`) without being waited for.
    completed = _complete_checkouts(session, invoices)
    ids = _insert_payments(session, payments)
    paid = iter(ids)
    payment_ids = {index: tuple(next(paid) for _payment in group) for index, group in accepted}
    rows = [dict(invoice_id=allocation.invoice_id, payment_id=payment_id, credit_note_id=None,
                 currency=payment.currency, amount_minor=allocation.amount_minor,
                 discount_minor=allocation.discount_minor)
            for index, group in accepted for payment, payment_id in zip(group, payment_ids[index])
            for allocation in payment.allocations]
    if rows:
        insert_rows(session, cast(Table, Allocation.__table__), rows)
    touched = [state for state in invoices.values() if state.changed]
    if touched:
        update_rows(session, cast(Table, Invoice.__table__), ("id",),
                    [dict(id=s.id, open_minor=s.open_minor, status=s.status) for s in touched])
        stale = {state.id for state in touched}
        for held in list(session.identity_map.values()):  # what the session holds of them is out of date
            if isinstance(held, Invoice) and held.id in stale:
                session.expire(held)
    now = clock.now()
    audits = [dict(actor_type=actor_type, actor=actor, action="payment.succeeded", entity_type="payment",
                   entity_id=payment_id, customer_id=payment.customer_id, company_id=payment.company_id,
                   before={"status": None},
                   after={"status": PaymentStatus.succeeded.value, "amount_minor": payment.amount_minor,
                          "method": payment.method, **payment.audit_after},
                   created_at=now)
              for index, group in accepted for payment, payment_id in zip(group, payment_ids[index])]
    if audits:
        insert_rows(session, cast(Table, AuditEvent.__table__), audits)
    return [outcome if outcome is not None else Applied(payment_ids[index], tuple(completed.get(index, ())))
            for index, outcome in enumerate(outcomes)]


def _lock_invoices(session: Session, ids: list[int]) -> dict[int, _InvoiceState]:
    found: dict[int, _InvoiceState] = {}
    for start in range(0, len(ids), _CHUNK):
        for row in session.execute(
                select(Invoice.id, Invoice.number, Invoice.kind, Invoice.currency, Invoice.customer_id, Invoice.company_id,
                       Invoice.total_minor, Invoice.open_minor, Invoice.status)
                .where(Invoice.id.in_(ids[start:start + _CHUNK])).order_by(Invoice.id).with_for_update()):
            found[row.id] = _InvoiceState(*row)
    return found


def _companies_of(session: Session, customer_ids: list[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    for start in range(0, len(customer_ids), _CHUNK):
        found.update((customer_id, company_id) for customer_id, company_id in session.execute(
            select(Customer.id, Customer.company_id).where(Customer.id.in_(customer_ids[start:start + _CHUNK]))))
    return found


def _check_group(group: Sequence[NewPayment], invoices: dict[int, _InvoiceState],
                 companies: dict[int, int]) -> str | None:
    """Why the group cannot be applied on the invoices as they stand now, or None."""
    taking: dict[int, int] = {}
    for payment in group:
        if companies.get(payment.customer_id) != payment.company_id:
            return "a payment settles invoices of its own company's customers only"
        if payment.amount_minor <= 0:
            return "a payment brings a positive amount"
        if sum(a.amount_minor for a in payment.allocations) > payment.amount_minor:
            return f"the allocations exceed the payment's {Money(payment.amount_minor, payment.currency)}"
        for allocation in payment.allocations:
            state = invoices.get(allocation.invoice_id)
            if state is None:
                return f"no invoice {allocation.invoice_id}"
            number = state.number
            if state.kind != InvoiceKind.invoice.value:
                return f"{number} is a credit note, not an invoice"
            if state.currency != payment.currency:
                return f"cannot apply a {payment.currency} payment to a {state.currency} invoice"
            if state.customer_id != payment.customer_id or state.company_id != payment.company_id:
                return f"{number} is not an invoice of this customer"
            if allocation.amount_minor < 0 or allocation.discount_minor < 0 \
                    or allocation.amount_minor + allocation.discount_minor == 0:
                return "an allocation settles a positive amount"
            wanted = taking.get(state.id, 0) + allocation.amount_minor + allocation.discount_minor
            if wanted > state.open_minor:
                return (f"{number}: {Money(wanted, state.currency)} exceeds the open "
                        f"{Money(state.open_minor, state.currency)}")
            taking[state.id] = wanted
    return None


def _insert_payments(session: Session, payments: list[NewPayment]) -> list[int]:
    """The rows in bulk on ids reserved for them (`kernel.db.reserve_ids`), in the same order."""
    table = cast(Table, Payment.__table__)
    ids = reserve_ids(session, table, len(payments))
    for start in range(0, len(payments), _CHUNK * 4):
        insert_rows(session, table, [
            dict(id=payment_id, customer_id=p.customer_id, provider=p.provider, provider_ref=p.provider_ref,
                 method=p.method, amount_minor=p.amount_minor, currency=p.currency,
                 status=PaymentStatus.succeeded.value, received_on=p.received_on)
            for payment_id, p in zip(ids[start:start + _CHUNK * 4], payments[start:start + _CHUNK * 4])])
    return ids


def _complete_checkouts(session: Session, invoices: dict[int, _InvoiceState]) -> dict[int, list[int]]:
    """Open bank-transfer checkouts of the paid invoices whose invoices are now all paid: done, and
    by group index (the group that paid the last of them), which completed which. Run before the
    invoices are written: their open amounts are taken from `invoices` (the others' are as stored)."""
    paid = sorted(state.id for state in invoices.values() if state.paid_by is not None)
    candidates: set[int] = set()
    for start in range(0, len(paid), _CHUNK):
        candidates.update(session.scalars(
            select(Checkout.id).join(CheckoutLine, CheckoutLine.checkout_id == Checkout.id)
            .where(CheckoutLine.invoice_id.in_(paid[start:start + _CHUNK]), Checkout.method == "bank_transfer",
                   Checkout.status == "open")))
    if not candidates:
        return {}
    ordered = sorted(candidates)
    lines: dict[int, list[tuple[int, int]]] = {}
    for start in range(0, len(ordered), _CHUNK):
        for checkout_id, invoice_id, open_minor in session.execute(
                select(CheckoutLine.checkout_id, CheckoutLine.invoice_id, Invoice.open_minor)
                .join(Invoice, Invoice.id == CheckoutLine.invoice_id)
                .where(CheckoutLine.checkout_id.in_(ordered[start:start + _CHUNK]))):
            state = invoices.get(invoice_id)
            lines.setdefault(checkout_id, []).append((invoice_id, open_minor if state is None else state.open_minor))
    by_group: dict[int, list[int]] = {}
    done: list[int] = []
    for checkout_id in ordered:
        if all(open_minor == 0 for _invoice_id, open_minor in lines.get(checkout_id, [])):
            payers = [invoices[i].paid_by for i, _open in lines[checkout_id] if i in invoices]
            last = max((group for group in payers if group is not None), default=-1)
            by_group.setdefault(last, []).append(checkout_id)
            done.append(checkout_id)
    for start in range(0, len(done), _CHUNK):
        session.execute(update(Checkout).where(Checkout.id.in_(done[start:start + _CHUNK]))
                        .values(status="succeeded").execution_options(synchronize_session="fetch"))
    return by_group
