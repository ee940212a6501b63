"""What the debtor chose to pay: validated, discounts locked, never created twice."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import date
from typing import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.i18n import N_
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
        from kernel import i18n

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
        lines.append(QuoteLine(invoice, Money(amount, invoice.currency), Money.zero(invoice.currency)))
    if len(currencies) > 1:
        raise CheckoutError(MIXED_CURRENCIES)
    lines.sort(key=lambda line: (line.invoice.due_date, line.invoice.number))
    currency = currencies.pop()
    return Quote(currency=currency, lines=_price(lines, available_credit(session, customer.id, currency), today))


def _price(lines: list[QuoteLine], credit_minor: int, today: date) -> list[QuoteLine]:
    """Spread the customer's credit over the lines, oldest due first, then grant each whole
    invoice its early-payment discount on what is left to pay (credit earns no discount)."""
    priced = []
    for line in lines:
        currency = line.amount.currency
        used = min(credit_minor, line.amount.minor)
        credit_minor -= used
        discount = Money.zero(currency)
        offer = available_discount(line.invoice, today)
        if offer is not None and line.is_whole and used < line.amount.minor:
            discount = Money(line.amount.minor - used, currency).percent_bps(offer.bps)
        priced.append(replace(line, discount=discount, credit=Money(used, currency)))
    return priced


def available_credit(session: Session, customer_id: int, currency: str) -> int:
    """What the customer may deduct from a payment in `currency`, in minor units: its open
    credit notes and money of succeeded payments not yet applied to an invoice."""
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
    return int(credit_notes or 0) + (unapplied.minor if unapplied else 0)


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
    (a double click, a second tab). Raises CheckoutError before writing anything.

    The customer's credit the quote deducts is applied to the invoices now, before anything is
    charged: netting a credit note against an invoice is right whatever the payment does, and
    it keeps the credit out of the events' way (their order cannot change where it went). The
    lines then hold what is left to pay on each invoice."""
    if method not in METHODS:
        raise CheckoutError("Unknown payment method.")
    # On PostgreSQL two tabs of one customer queue here rather than both creating a checkout
    # (or both spending the same credit).
    session.execute(select(Customer.id).where(Customer.id == customer.id).with_for_update())
    priced = quote(session, customer, selection, today)
    existing = _same_live_checkout(session, customer.id, method, priced)
    if existing is not None:
        return existing
    if priced.charged.minor <= 0:
        raise CheckoutError("There is nothing to charge.")  # settle_with_credit() is for that
    _apply_quoted_credit(session, customer, contact, priced)
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
                amount_minor=(line.amount - line.credited).minor,
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
    _apply_quoted_credit(session, customer, contact, priced)
    return priced


def _apply_quoted_credit(session: Session, customer: Customer, contact: Contact | None, priced: Quote) -> None:
    if not priced.credit.minor:
        return
    with session.begin_nested():  # credit that changed meanwhile leaves nothing half-applied
        for line in priced.lines:
            if line.credited.minor and apply_credit(session, line.invoice, line.credited.minor) != line.credited.minor:
                raise CheckoutError("Your credit changed meanwhile: please check the amounts and try again.")
    audit.record(
        session,
        actor_type="contact" if contact else "system",
        actor=contact.email if contact else "portal",
        action="credit.applied",
        entity_type="customer",
        entity_id=customer.id,
        customer_id=customer.id,
        after={"invoices": {line.invoice.number: line.credited.minor for line in priced.lines if line.credited.minor},
               "currency": priced.currency},
    )


def apply_credit(session: Session, invoice: Invoice, amount_minor: int) -> int:
    """Settle up to `amount_minor` of `invoice` from the customer's credit: open credit notes
    first (oldest first), then money of succeeded payments not yet applied. Returns what was
    applied, less than asked when the credit is not there."""
    amount_minor = min(amount_minor, invoice.open_minor)
    applied = 0
    for source, available in _credit_sources(session, invoice):
        take = min(amount_minor - applied, available)
        if take <= 0:
            break
        if isinstance(source, Payment):
            allocate(session, invoice, Money(take, invoice.currency), payment=source)
        else:
            allocate(session, invoice, Money(take, invoice.currency), credit_note=source)
        applied += take
    return applied


def _credit_sources(session: Session, invoice: Invoice) -> list[tuple[Invoice | Payment, int]]:
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
    sources: list[tuple[Invoice | Payment, int]] = [(note, note.open_minor) for note in notes]
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
        )
        .order_by(Payment.id)
    ).all()
    sources += [(payment, payment.amount_minor - int(used)) for payment, used in payments
                if payment.amount_minor - int(used) > 0]
    return sources


def _same_live_checkout(session: Session, customer_id: int, method: str, priced: Quote) -> Checkout | None:
    """The live checkout of the same invoices, amounts and discounts (its lines hold what was left
    after the credit it applied, which a new quote no longer sees as credit)."""
    wanted = sorted(((line.invoice.id, (line.amount - line.credited).minor, line.discount.minor)
                     for line in priced.lines))
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
