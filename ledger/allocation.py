"""Settling invoices: allocations from payments or credit notes, keeping the open amount true.

Invariant, for every invoice: total = open + Σ allocation.amount + Σ allocation.discount
+ settled outside Encours (what the ERP's open-items snapshot closed, ledger.open_items), open >= 0.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.i18n import N_
from kernel.user_error import UserError
from ledger.day_totals import drift
from ledger.models import Allocation, Invoice, InvoiceKind, InvoiceStatus, Payment
from ledger.money import CurrencyError, Money


def settled_status(invoice: Invoice) -> str:
    if invoice.status in (InvoiceStatus.disputed.value, InvoiceStatus.void.value):
        return invoice.status
    if invoice.open_minor == 0:
        return InvoiceStatus.paid.value
    if invoice.open_minor < invoice.total_minor:
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
