"""What the debtor chose to pay: validated, discounts locked, never created twice."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from encours.clock import clock
from encours.i18n import N_
from ledger import audit
from ledger.allocation import allocate
from ledger.models import (
    Allocation,
    Checkout,
    CheckoutLine,
    Contact,
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Payment,
)
from ledger.money import AmountError, Money
from ledger.statement import available_discount, unapplied_credit
from payments.base import METHODS

# A checkout still waiting for its money: a second identical one returns it instead.
LIVE_STATUSES = ("open", "processing")
# How long an open checkout (a card form left open, a transfer awaited) holds the credit it deducted.
CREDIT_HOLD_DAYS = 7

UNKNOWN_INVOICE = N_("The selection names an unknown invoice.")
NOT_AN_AMOUNT = N_("Invoice %(number)s: “%(text)s” is not an amount.")
MIXED_CURRENCIES = N_("These invoices are in different currencies: please pay one currency at a time.")


class CheckoutError(ValueError):
    """The selection cannot be paid as it is; the message names the problem.

    `message` is an English msgid with %(name)s placeholders filled from `values`, so the
    portal can show it in the debtor's language (`translated`).
    """

    def __init__(self, message: str, **values: object) -> None:
        super().__init__(message % values if values else message)
        self.message = message
        self.values = values

    def translated(self, language: str) -> str:
        from encours import i18n

        return i18n.gettext(language, self.message, **self.values)


@dataclass(frozen=True)
class QuoteLine:
    invoice: Invoice
    amount: Money  # the part of the open amount this line settles (discount and credit included)
    discount: Money  # locked early-payment discount
    credit: Money | None = None  # settled by the customer's credit notes or unapplied money

    @property
    def credited(self) -> Money:
        return self.credit if self.credit is not None else Money.zero(self.amount.currency)

    @property
    def charged(self) -> Money:
        return self.amount - self.discount - self.credited

    @property
    def is_whole(self) -> bool:
        return self.amount.minor == self.invoice.open_minor


@dataclass(frozen=True)
class Quote:
    currency: str
    lines: list[QuoteLine]

    @property
    def subtotal(self) -> Money:
        return Money(sum(line.amount.minor for line in self.lines), self.currency)

    @property
    def discount(self) -> Money:
        return Money(sum(line.discount.minor for line in self.lines), self.currency)

    @property
    def credit(self) -> Money:
        return Money(sum(line.credited.minor for line in self.lines), self.currency)

    @property
    def charged(self) -> Money:
        return self.subtotal - self.discount - self.credit

    @property
    def discounted_lines(self) -> list[QuoteLine]:
        return [line for line in self.lines if line.discount.minor]


def parse_selection(
    session: Session, customer: Customer, invoice_ids: list[str], amounts: Mapping[str, str]
) -> dict[int, int | None]:
    """The portal form's fields as a selection: invoice id -> minor units (None: the whole open amount).

    `amounts` maps an invoice id to what the debtor typed ("1 234,56"), or to minor units when
    the key starts with "minor-" (hidden fields of the review page).
    """
    selection: dict[int, int | None] = {}
    for raw in invoice_ids:
        try:
            invoice_id = int(raw)
        except ValueError:
            raise CheckoutError(UNKNOWN_INVOICE) from None
        invoice = _own_invoice(session, customer, invoice_id)
        minor = amounts.get(f"minor-{invoice_id}", "").strip()
        typed = amounts.get(f"amount-{invoice_id}", "").strip()
        if minor:
            try:
                selection[invoice_id] = int(minor)
            except ValueError:
                raise CheckoutError(NOT_AN_AMOUNT, number=invoice.number, text=minor) from None
        elif typed:
            try:
                selection[invoice_id] = Money.parse(typed, invoice.currency).minor
            except AmountError:
                raise CheckoutError(NOT_AN_AMOUNT, number=invoice.number, text=typed) from None
        else:
            selection[invoice_id] = None
    return selection


def _own_invoice(session: Session, customer: Customer, invoice_id: int) -> Invoice:
    invoice = session.scalar(select(Invoice).where(Invoice.id == invoice_id, Invoice.customer_id == customer.id))
    if invoice is None:
        # Another customer's invoice reads exactly like one that does not exist.
        raise CheckoutError(UNKNOWN_INVOICE)
    return invoice


def quote(session: Session, customer: Customer, selection: Mapping[int, int | None], today: date) -> Quote:
    """Validate a selection and price it, writing nothing."""
    if not selection:
        raise CheckoutError("Choose at least one invoice to pay.")
    company = customer.company
    lines: list[QuoteLine] = []
    currencies: set[str] = set()
    for invoice_id, requested in selection.items():
        invoice = _own_invoice(session, customer, invoice_id)
        if invoice.kind != InvoiceKind.invoice.value:
            raise CheckoutError("%(number)s is a credit note: it is deducted, not paid.", number=invoice.number)
        if invoice.status in (InvoiceStatus.paid.value, InvoiceStatus.void.value) or invoice.open_minor <= 0:
            raise CheckoutError("Invoice %(number)s has nothing left to pay.", number=invoice.number)
        currencies.add(invoice.currency)
        amount = invoice.open_minor if requested is None else requested
        if amount <= 0:
            raise CheckoutError("Invoice %(number)s: the amount must be more than zero.", number=invoice.number)
        if amount > invoice.open_minor:
            raise CheckoutError("Invoice %(number)s: the amount is more than what is still open.",
                                number=invoice.number)
        if amount < invoice.open_minor and not company.allow_partial_payments:
            raise CheckoutError("Invoice %(number)s can only be paid in full.", number=invoice.number)
        discount = Money.zero(invoice.currency)
        if amount == invoice.open_minor:
            offer = available_discount(invoice, today)
            if offer is not None:
                discount = offer.amount
        lines.append(QuoteLine(invoice, Money(amount, invoice.currency), discount))
    if len(currencies) > 1:
        raise CheckoutError(MIXED_CURRENCIES)
    lines.sort(key=lambda line: (line.invoice.due_date, line.invoice.number))
    currency = currencies.pop()
    return Quote(currency=currency, lines=_with_credit(lines, available_credit(session, customer.id, currency)))


def _with_credit(lines: list[QuoteLine], credit_minor: int) -> list[QuoteLine]:
    """Spread the customer's credit over the lines in order (oldest due first)."""
    spread = []
    for line in lines:
        used = min(credit_minor, (line.amount - line.discount).minor)
        credit_minor -= used
        spread.append(replace(line, credit=Money(used, line.amount.currency)))
    return spread


def available_credit(session: Session, customer_id: int, currency: str) -> int:
    """What the customer may deduct from a payment in `currency`, in minor units: its open credit
    notes and unapplied money, less what live checkouts already hold (so two tabs never spend
    the same credit twice). A checkout left open for CREDIT_HOLD_DAYS lets its credit go."""
    credit_notes = session.scalar(
        select(func.coalesce(func.sum(Invoice.open_minor), 0)).where(
            Invoice.customer_id == customer_id,
            Invoice.currency == currency,
            Invoice.kind == InvoiceKind.credit_note.value,
            Invoice.open_minor > 0,
            Invoice.status.not_in((InvoiceStatus.void.value, InvoiceStatus.disputed.value)),
        )
    )
    unapplied = unapplied_credit(session, customer_id).get(currency)
    held = session.scalar(
        select(func.coalesce(func.sum(Checkout.credit_minor), 0)).where(
            Checkout.customer_id == customer_id,
            Checkout.currency == currency,
            Checkout.credit_applied.is_(False),
            (Checkout.status == "processing")
            | ((Checkout.status == "open") & (Checkout.created_at >= clock.now() - timedelta(days=CREDIT_HOLD_DAYS))),
        )
    )
    return max(0, int(credit_notes or 0) + (unapplied.minor if unapplied else 0) - int(held or 0))


def create_checkout(
    session: Session,
    *,
    customer: Customer,
    contact: Contact | None,
    selection: Mapping[int, int | None],
    method: str,
    today: date,
) -> Checkout:
    """A checkout for `selection`, or the open one already made of the same lines and method
    (a double click, a second tab). Raises CheckoutError before writing anything."""
    if method not in METHODS:
        raise CheckoutError("Unknown payment method.")
    # On PostgreSQL two tabs of one customer queue here rather than both creating a checkout
    # (or both deducting the same credit).
    session.execute(select(Customer.id).where(Customer.id == customer.id).with_for_update())
    priced = quote(session, customer, selection, today)
    existing = _same_live_checkout(session, customer.id, method, priced)
    if existing is not None:
        return existing
    if priced.charged.minor <= 0:
        raise CheckoutError("There is nothing to charge.")  # settle_with_credit() is for that
    checkout = Checkout(
        customer_id=customer.id,
        contact_id=contact.id if contact else None,
        method=method,
        currency=priced.currency,
        amount_minor=priced.charged.minor,
        discount_minor=priced.discount.minor,
        credit_minor=priced.credit.minor,
        status="open",
        idempotency_key=f"pending-{uuid.uuid4().hex}",
    )
    session.add(checkout)
    session.flush()
    checkout.idempotency_key = f"checkout-{checkout.id}"
    for line in priced.lines:
        session.add(
            CheckoutLine(
                checkout_id=checkout.id,
                invoice_id=line.invoice.id,
                amount_minor=line.amount.minor,
                discount_minor=line.discount.minor,
                credit_minor=line.credited.minor,
            )
        )
    session.flush()
    session.refresh(checkout, ["lines"])
    return checkout


def settle_with_credit(
    session: Session, *, customer: Customer, contact: Contact | None, selection: Mapping[int, int | None], today: date
) -> Quote:
    """Settle a selection the customer's credit covers entirely: nothing to charge, no provider."""
    session.execute(select(Customer.id).where(Customer.id == customer.id).with_for_update())
    priced = quote(session, customer, selection, today)
    if priced.charged.minor > 0 or priced.credit.minor <= 0:
        raise CheckoutError("Your credit does not cover this selection.")
    for line in priced.lines:
        apply_credit(session, line.invoice, line.credited.minor, line.discount.minor)
    audit.record(
        session,
        actor_type="contact" if contact else "system",
        actor=contact.email if contact else "portal",
        action="credit.applied",
        entity_type="customer",
        entity_id=customer.id,
        customer_id=customer.id,
        after={"invoices": [line.invoice.number for line in priced.lines], "credit_minor": priced.credit.minor,
               "discount_minor": priced.discount.minor, "currency": priced.currency},
    )
    return priced


def apply_credit(session: Session, invoice: Invoice, amount_minor: int, discount_minor: int = 0,
                 *, exclude_payment_id: int | None = None) -> int:
    """Settle up to `amount_minor` of `invoice` from the customer's credit — open credit notes
    first (oldest first), then money of succeeded payments not yet applied — with `discount_minor`
    granted on the last part. Returns what was applied: less when the credit has gone meanwhile."""
    amount_minor = min(amount_minor, invoice.open_minor - discount_minor)
    applied = 0
    for source in _credit_sources(session, invoice, exclude_payment_id):
        if applied >= amount_minor:
            break
        take = min(amount_minor - applied, source[1])
        if take <= 0:
            continue
        last = applied + take >= amount_minor
        discount = Money(discount_minor if last else 0, invoice.currency)
        if isinstance(source[0], Payment):
            allocate(session, invoice, Money(take, invoice.currency), discount, payment=source[0])
        else:
            allocate(session, invoice, Money(take, invoice.currency), discount, credit_note=source[0])
        applied += take
    return applied


def _credit_sources(session: Session, invoice: Invoice, exclude_payment_id: int | None) -> list[tuple[Any, int]]:
    notes = session.scalars(
        select(Invoice)
        .where(
            Invoice.customer_id == invoice.customer_id,
            Invoice.currency == invoice.currency,
            Invoice.kind == InvoiceKind.credit_note.value,
            Invoice.open_minor > 0,
            Invoice.status.not_in((InvoiceStatus.void.value, InvoiceStatus.disputed.value)),
        )
        .order_by(Invoice.issue_date, Invoice.id)
        .with_for_update()
    ).all()
    sources: list[tuple[Any, int]] = [(note, note.open_minor) for note in notes]
    allocated = (
        select(Allocation.payment_id, func.sum(Allocation.amount_minor).label("used"))
        .where(Allocation.payment_id.is_not(None))
        .group_by(Allocation.payment_id)
        .subquery()
    )
    payments = session.execute(
        select(Payment, func.coalesce(allocated.c.used, 0))
        .outerjoin(allocated, allocated.c.payment_id == Payment.id)
        .where(
            Payment.customer_id == invoice.customer_id,
            Payment.currency == invoice.currency,
            Payment.status == "succeeded",
            Payment.id != (exclude_payment_id or -1),
        )
        .order_by(Payment.id)
    ).all()
    sources += [(payment, payment.amount_minor - int(used)) for payment, used in payments
                if payment.amount_minor - int(used) > 0]
    return sources


def _same_live_checkout(session: Session, customer_id: int, method: str, priced: Quote) -> Checkout | None:
    """The live checkout of the same invoices, amounts and discounts; its charge may differ from
    this quote's only by the credit it already holds, so the charge is not compared."""
    wanted = sorted((line.invoice.id, line.amount.minor, line.discount.minor) for line in priced.lines)
    candidates = session.scalars(
        select(Checkout)
        .where(
            Checkout.customer_id == customer_id,
            Checkout.method == method,
            Checkout.currency == priced.currency,
            Checkout.status.in_(LIVE_STATUSES),
        )
        .order_by(Checkout.id.desc())
    )
    for candidate in candidates:
        lines = sorted((line.invoice_id, line.amount_minor, line.discount_minor) for line in candidate.lines)
        if lines == wanted:
            return candidate
    return None


def customer_checkout(session: Session, customer_id: int, checkout_id: int) -> Checkout | None:
    """The checkout only if it is this customer's: the portal's one way to fetch one."""
    return session.scalar(select(Checkout).where(Checkout.id == checkout_id, Checkout.customer_id == customer_id))
