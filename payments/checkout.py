"""What the debtor chose to pay: validated, discounts locked, never created twice."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from encours.i18n import N_
from ledger.models import Checkout, CheckoutLine, Contact, Customer, Invoice, InvoiceKind, InvoiceStatus
from ledger.money import AmountError, Money
from ledger.statement import available_discount
from payments.base import METHODS

# A checkout still waiting for its money: a second identical one returns it instead.
LIVE_STATUSES = ("open", "processing")

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
    amount: Money  # the part of the open amount this line settles (discount included)
    discount: Money  # locked early-payment discount

    @property
    def charged(self) -> Money:
        return self.amount - self.discount

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
    def charged(self) -> Money:
        return self.subtotal - self.discount

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
    return Quote(currency=currencies.pop(), lines=lines)


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
    priced = quote(session, customer, selection, today)
    if priced.charged.minor <= 0:
        raise CheckoutError("There is nothing to charge.")
    # On PostgreSQL two tabs of one customer queue here rather than both creating a checkout.
    session.execute(select(Customer.id).where(Customer.id == customer.id).with_for_update())
    existing = _same_live_checkout(session, customer.id, method, priced)
    if existing is not None:
        return existing
    checkout = Checkout(
        customer_id=customer.id,
        contact_id=contact.id if contact else None,
        method=method,
        currency=priced.currency,
        amount_minor=priced.charged.minor,
        discount_minor=priced.discount.minor,
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
            )
        )
    session.flush()
    session.refresh(checkout, ["lines"])
    return checkout


def _same_live_checkout(session: Session, customer_id: int, method: str, priced: Quote) -> Checkout | None:
    wanted = sorted((line.invoice.id, line.amount.minor, line.discount.minor) for line in priced.lines)
    candidates = session.scalars(
        select(Checkout)
        .where(
            Checkout.customer_id == customer_id,
            Checkout.method == method,
            Checkout.currency == priced.currency,
            Checkout.amount_minor == priced.charged.minor,
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
