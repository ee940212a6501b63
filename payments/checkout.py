"""What the debtor chose to pay: validated, discounts locked, never created twice."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Mapping
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.i18n import N_
from kernel.user_error import UserError
from ledger import audit
from ledger.allocation import allocate, settled_status
from ledger.disputes import disputed_parts
from ledger.models import (
    Allocation,
    Checkout,
    CheckoutLine,
    Company,
    Contact,
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Payment,
    PaymentMethod,
)
from ledger.money import AmountError, Money
from ledger.statement import available_discount, unapplied_credit
from payments.base import METHODS

# A checkout still waiting for its money: it locks its invoices and reserves its credit; a second
# identical one returns it instead.
LIVE_STATUSES = ("open", "processing")
# Only a checkout whose money has not started moving may be cancelled by the debtor ("open": a bank
# transfer awaited, a card or bank authorisation not confirmed). A "processing" one (card confirmed,
# direct debit submitted) runs to its end.
CANCELLABLE_STATUSES = ("open",)
# Failure codes of checkouts ended here rather than by the provider (see payments.settlement._follow).
ENDED_BY_US = ("debtor_cancelled", "expired", "provider_unavailable")

UNKNOWN_INVOICE = N_("The selection names an unknown invoice.")
NOT_AN_AMOUNT = N_("Invoice %(number)s: “%(text)s” is not an amount.")
MIXED_CURRENCIES = N_("These invoices are in different currencies: please pay one currency at a time.")
IN_PROGRESS = N_("Invoice %(number)s already has a payment in progress. Cancel that payment first if you "
                 "want to pay another way.")
DISPUTED_PART = N_("Invoice %(number)s: %(disputed)s of it is under dispute, so at most %(payable)s can be paid "
                   "until the dispute is settled.")
NOT_CANCELLABLE = N_("This payment is already on its way and can no longer be cancelled.")


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
            raise UserError(UNKNOWN_INVOICE) from None
        invoice = _own_invoice(session, customer, invoice_id)
        minor = amounts.get(f"minor-{invoice_id}", "").strip()
        typed = amounts.get(f"amount-{invoice_id}", "").strip()
        if minor:
            try:
                selection[invoice_id] = int(minor)
            except ValueError:
                raise UserError(NOT_AN_AMOUNT, number=invoice.number, text=minor) from None
        elif typed:
            try:
                selection[invoice_id] = Money.parse(typed, invoice.currency).minor
            except AmountError:
                raise UserError(NOT_AN_AMOUNT, number=invoice.number, text=typed) from None
        else:
            selection[invoice_id] = None
    return selection


def _own_invoice(session: Session, customer: Customer, invoice_id: int) -> Invoice:
    invoice = session.scalar(select(Invoice).where(Invoice.id == invoice_id, Invoice.customer_id == customer.id))
    if invoice is None:
        # Another customer's invoice reads exactly like one that does not exist.
        raise UserError(UNKNOWN_INVOICE)
    return invoice


def quote(
    session: Session, customer: Customer, selection: Mapping[int, int | None], today: date, *, locked: bool = True
) -> Quote:
    """Validate a selection and price it, writing nothing. An invoice a live checkout covers is
    refused (unless `locked` is False: create_checkout checks it after looking for a double click)."""
    if not selection:
        raise UserError(N_("Choose at least one invoice to pay."))
    company = customer.company
    lines: list[QuoteLine] = []
    currencies: set[str] = set()
    # An invoice disputed in part: its disputed part is set aside, the rest is what may be paid.
    parts = disputed_parts(session, invoice_ids=list(selection))
    for invoice_id, requested in selection.items():
        invoice = _own_invoice(session, customer, invoice_id)
        if invoice.kind != InvoiceKind.invoice.value:
            raise UserError(N_("%(number)s is a credit note: it is deducted, not paid."), number=invoice.number)
        if invoice.status in (InvoiceStatus.paid.value, InvoiceStatus.void.value) or invoice.open_minor <= 0:
            raise UserError(N_("Invoice %(number)s has nothing left to pay."), number=invoice.number)
        currencies.add(invoice.currency)
        payable = invoice.open_minor - parts.get(invoice.id, 0)
        if payable <= 0:
            raise UserError(N_("Invoice %(number)s has nothing left to pay."), number=invoice.number)
        amount = payable if requested is None else requested
        if amount <= 0:
            raise UserError(N_("Invoice %(number)s: the amount must be more than zero."), number=invoice.number)
        if amount > invoice.open_minor:
            raise UserError(N_("Invoice %(number)s: the amount is more than what is still open."),
                                number=invoice.number)
        if amount > payable:
            raise UserError(DISPUTED_PART, number=invoice.number, disputed=Money(parts[invoice.id], invoice.currency),
                            payable=Money(payable, invoice.currency))
        if amount < payable and not company.allow_partial_payments:
            raise UserError(N_("Invoice %(number)s can only be paid in full."), number=invoice.number)
        lines.append(QuoteLine(invoice, Money(amount, invoice.currency), Money.zero(invoice.currency)))
    if len(currencies) > 1:
        raise UserError(MIXED_CURRENCIES)
    if locked:
        refuse_locked(session, customer.id, [line.invoice for line in lines])
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


def live_checkouts(session: Session, customer_id: int) -> list[Checkout]:
    """The customer's checkouts whose money is awaited or on its way, newest first."""
    return list(session.scalars(
        select(Checkout)
        .where(Checkout.customer_id == customer_id, Checkout.status.in_(LIVE_STATUSES))
        .order_by(Checkout.id.desc())
    ))


# A live checkout whose payment was started at the provider (or whose transfer reference was given):
# one whose start failed (the provider did not answer) is a draft that locks nothing.
_STARTED = (Checkout.status == "processing") | (Checkout.provider_ref.is_not(None)) | (Checkout.reference.is_not(None))


def started_checkouts(session: Session, customer_id: int) -> list[Checkout]:
    """The customer's live checkouts started at the provider, newest first: its payments in progress."""
    return list(session.scalars(
        select(Checkout)
        .where(Checkout.customer_id == customer_id, Checkout.status.in_(LIVE_STATUSES), _STARTED)
        .order_by(Checkout.id.desc())
    ))


def locked_invoices(session: Session, customer_id: int) -> dict[int, Checkout]:
    """Invoice id -> the started live checkout that covers it: such an invoice is not paid a second time."""
    rows = session.execute(
        select(CheckoutLine.invoice_id, Checkout)
        .join(Checkout, Checkout.id == CheckoutLine.checkout_id)
        .where(Checkout.customer_id == customer_id, Checkout.status.in_(LIVE_STATUSES), _STARTED)
        .order_by(Checkout.id)
    ).all()
    return {invoice_id: checkout for invoice_id, checkout in rows}


def refuse_locked(session: Session, customer_id: int, invoices: list[Invoice]) -> None:
    locked = locked_invoices(session, customer_id)
    for invoice in invoices:
        if invoice.id in locked:
            raise UserError(IN_PROGRESS, number=invoice.number)


def reserved_credit(session: Session, customer_id: int, currency: str) -> int:
    """Credit the customer's live checkouts reserved (not yet applied), in minor units."""
    reserved = session.scalar(
        select(func.coalesce(func.sum(Checkout.credit_minor), 0)).where(
            Checkout.customer_id == customer_id,
            Checkout.currency == currency,
            Checkout.status.in_(LIVE_STATUSES),
            Checkout.credit_applied.is_(False),
        )
    )
    return int(reserved or 0)


def available_credit(session: Session, customer_id: int, currency: str) -> int:
    """What the customer may deduct from a payment in `currency`, in minor units: its open
    credit notes and money of succeeded payments not yet applied to an invoice, less what
    live checkouts reserved."""
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
    total = int(credit_notes or 0) + (unapplied.minor if unapplied else 0)
    return max(0, total - reserved_credit(session, customer_id, currency))


def create_checkout(
    session: Session,
    *,
    customer: Customer,
    contact: Contact | None,
    selection: Mapping[int, int | None],
    method: str,
    today: date,
) -> Checkout:
    """A checkout for `selection`, or the live one already made of the same invoices, amounts and
    method (a double click, a second tab). Raises UserError before writing anything, and when
    an invoice is covered by another live checkout.

    The customer's credit the quote deducts is reserved, not applied: it stays on the statement,
    marked reserved, until the payment succeeds (payments.settlement applies it then); a checkout
    that fails, is cancelled or expires simply stops reserving it. The lines hold what is left to
    pay on each invoice after that credit, and the credit itself."""
    if method not in METHODS:
        raise UserError(N_("Unknown payment method."))
    # On PostgreSQL two tabs of one customer queue here rather than both creating a checkout
    # (or both reserving the same credit).
    session.execute(select(Customer.id).where(Customer.id == customer.id).with_for_update())
    priced = quote(session, customer, selection, today, locked=False)
    existing = _same_live_checkout(session, customer.id, method, priced)
    if existing is not None:
        return existing
    refuse_locked(session, customer.id, [line.invoice for line in priced.lines])
    if priced.charged.minor <= 0:
        raise UserError(N_("There is nothing to charge."))  # settle_with_credit() is for that
    _drop_drafts(session, customer, contact)
    # The drafts' credit is free again: price the selection anew.
    priced = quote(session, customer, selection, today, locked=False)
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
        credit_applied=False,
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
        raise UserError(N_("Your credit does not cover this selection."))
    _apply_quoted_credit(session, customer, contact, priced)
    return priced


def apply_reserved_credit(session: Session, checkout: Checkout) -> None:
    """Apply the credit `checkout` reserved to its invoices: its payment succeeded (the
    settlement calls this before allocating the payment). Once only. Credit that is no longer
    there (a credit note voided meanwhile) is not invented: the payment covers what it can."""
    if checkout.credit_applied:
        return
    checkout.credit_applied = True
    applied: dict[str, int] = {}
    for line in checkout.lines:
        if not line.credit_minor:
            continue
        invoice = session.scalar(select(Invoice).where(Invoice.id == line.invoice_id).with_for_update())
        if invoice is None or invoice.kind != InvoiceKind.invoice.value or invoice.status == InvoiceStatus.void.value:
            continue
        taken = apply_credit(session, invoice, line.credit_minor, exclude_checkout=checkout.id, for_checkout=checkout.id)
        if taken:
            applied[invoice.number] = taken
    if applied:
        audit.record(session, actor_type="system", actor="settlement", action="credit.applied",
                     entity_type="checkout", entity_id=checkout.id, customer_id=checkout.customer_id,
                     after={"invoices": applied, "currency": checkout.currency})


def release_applied_credit(session: Session, checkout: Checkout, undone: Payment) -> set[int]:
    """The success of `undone` was undone (refund, chargeback, late failure): unless another payment
    of the checkout still succeeded, the credit applied for it goes back to the customer, so the
    ledger does not depend on whether the success or its undoing arrived first. The invoice ids reopened."""
    if not checkout.credit_applied:
        return set()
    still_paid = session.scalar(select(func.count()).select_from(Payment).where(
        Payment.checkout_id == checkout.id, Payment.id != undone.id, Payment.status == "succeeded"))
    if still_paid:
        return set()
    reopened: set[int] = set()
    for allocation in session.scalars(
        select(Allocation).where(Allocation.credit_for_checkout_id == checkout.id).order_by(Allocation.id)
    ).all():
        invoice = session.scalar(select(Invoice).where(Invoice.id == allocation.invoice_id).with_for_update())
        assert invoice is not None
        invoice.open_minor += allocation.amount_minor + allocation.discount_minor
        invoice.status = settled_status(invoice)
        if allocation.credit_note_id is not None:
            note = session.scalar(select(Invoice).where(Invoice.id == allocation.credit_note_id).with_for_update())
            assert note is not None
            note.open_minor += allocation.amount_minor
            note.status = settled_status(note)
        reopened.add(invoice.id)
        session.delete(allocation)
    checkout.credit_applied = False
    session.flush()
    return reopened


def _apply_quoted_credit(session: Session, customer: Customer, contact: Contact | None, priced: Quote) -> None:
    if not priced.credit.minor:
        return
    with session.begin_nested():  # credit that changed meanwhile leaves nothing half-applied
        for line in priced.lines:
            if line.credited.minor and apply_credit(session, line.invoice, line.credited.minor) != line.credited.minor:
                raise UserError(N_("Your credit changed meanwhile: please check the amounts and try again."))
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


def apply_credit(
    session: Session, invoice: Invoice, amount_minor: int, *, exclude_checkout: int | None = None,
    for_checkout: int | None = None,
) -> int:
    """Settle up to `amount_minor` of `invoice` from the customer's credit: open credit notes
    first (oldest first), then money of succeeded payments not yet applied (other than the
    payments of `exclude_checkout`, whose money is the payment itself). Returns what was
    applied, less than asked when the credit is not there."""
    amount_minor = min(amount_minor, invoice.open_minor)
    applied = 0
    for source, available in _credit_sources(session, invoice, exclude_checkout):
        take = min(amount_minor - applied, available)
        if take <= 0:
            break
        if isinstance(source, Payment):
            allocation = allocate(session, invoice, Money(take, invoice.currency), payment=source)
        else:
            allocation = allocate(session, invoice, Money(take, invoice.currency), credit_note=source)
        allocation.credit_for_checkout_id = for_checkout
        applied += take
    return applied


def _credit_sources(
    session: Session, invoice: Invoice, exclude_checkout: int | None = None
) -> list[tuple[Invoice | Payment, int]]:
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
    # Summed per payment of this customer through the payment's index: a grouped subquery of every
    # allocation was materialised whole (800,000 rows on the bench book) on each card success.
    used = (
        select(func.coalesce(func.sum(Allocation.amount_minor), 0))
        .where(Allocation.payment_id == Payment.id)
        .correlate(Payment)
        .scalar_subquery()
    )
    payments = session.execute(
        select(Payment, used)
        .where(
            Payment.customer_id == invoice.customer_id,
            Payment.currency == invoice.currency,
            Payment.status == "succeeded",
            (Payment.checkout_id.is_(None) | (Payment.checkout_id != (exclude_checkout or 0))),
        )
        .order_by(Payment.id)
    ).all()
    sources += [(payment, payment.amount_minor - int(used)) for payment, used in payments
                if payment.amount_minor - int(used) > 0]
    return sources


def _same_live_checkout(session: Session, customer_id: int, method: str, priced: Quote) -> Checkout | None:
    """The live checkout of the same invoices and amounts (credit included: the credit it
    reserved is no longer offered to a new quote, so only what was asked is compared)."""
    wanted = sorted((line.invoice.id, line.amount.minor) for line in priced.lines)
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
        lines = sorted((line.invoice_id, line.amount_minor + line.credit_minor) for line in candidate.lines)
        if lines == wanted:
            return candidate
    return None


def customer_checkout(session: Session, customer_id: int, checkout_id: int) -> Checkout | None:
    """The checkout only if it is this customer's: the portal's one way to fetch one."""
    return session.scalar(select(Checkout).where(Checkout.id == checkout_id, Checkout.customer_id == customer_id))


def _drop_drafts(session: Session, customer: Customer, contact: Contact | None) -> None:
    """A new checkout supersedes the customer's drafts: open checkouts whose start failed, which
    would otherwise hold their credit reserved."""
    drafts = session.scalars(select(Checkout).where(
        Checkout.customer_id == customer.id, Checkout.status == "open", Checkout.provider_ref.is_(None),
        Checkout.reference.is_(None)))
    for draft in drafts.all():
        _end(session, draft, "provider_unavailable", action="checkout.superseded",
             actor_type="contact" if contact else "system", actor=contact.email if contact else "portal")


def cancel_checkout(session: Session, checkout: Checkout, *, contact: Contact | None, code: str = "debtor_cancelled") -> None:
    """The debtor will pay another way: the checkout ends, its invoices and reserved credit are free.
    Refused once its money has started moving (a card confirmed, a direct debit submitted)."""
    session.refresh(checkout, with_for_update=True)
    if checkout.status not in CANCELLABLE_STATUSES:
        raise UserError(NOT_CANCELLABLE)
    _end(session, checkout, code, action="checkout.cancelled", actor_type="contact" if contact else "system",
         actor=contact.email if contact else "portal")


def expire_transfers(session: Session, now: datetime) -> int:
    """Bank-transfer checkouts that received nothing within their company's delay expire: their
    invoices and reserved credit are free again. How many expired."""
    rows = session.execute(
        select(Checkout, Company.transfer_expiry_days)
        .join(Customer, Customer.id == Checkout.customer_id)
        .join(Company, Company.id == Customer.company_id)
        .where(Checkout.method == PaymentMethod.bank_transfer, Checkout.status == "open")
        .order_by(Checkout.id)
    ).all()
    expired = 0
    for checkout, days in rows:
        created = checkout.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=now.tzinfo)
        if created + timedelta(days=days) <= now:
            _end(session, checkout, "expired", action="checkout.expired", actor_type="system", actor="worker")
            expired += 1
    return expired


def _end(session: Session, checkout: Checkout, code: str, *, action: str, actor_type: str, actor: str) -> None:
    before = checkout.status
    checkout.status = "cancelled"
    checkout.failure_code = code
    audit.record(session, actor_type=actor_type, actor=actor, action=action, entity_type="checkout",
                 entity_id=checkout.id, customer_id=checkout.customer_id, before={"status": before},
                 after={"status": "cancelled", "code": code})
    session.flush()


def new_attempt(session: Session, checkout: Checkout) -> None:
    """The provider's intent for this checkout can no longer be confirmed (declined and cancelled,
    abandoned): the next start creates a fresh one, under a fresh idempotency key made of the
    checkout id and the attempt number."""
    checkout.attempt += 1
    checkout.idempotency_key = f"checkout-{checkout.id}-{checkout.attempt}"
    checkout.provider_ref = None
    checkout.failure_code = None
    session.flush()


def record_failure_code(checkout: Checkout, *signals: str | None) -> None:
    """Keep why the checkout's last attempt failed, as a code of the catalog."""
    from payments import failures

    checkout.failure_code = failures.classify(*signals)


@dataclass(frozen=True)
class Breakdown:
    """A checkout as the debtor's accounts-payable team reconciles it: each invoice at its full
    amount, then each early-payment discount and the credit deducted as lines of their own."""

    invoices: list[tuple[str, Money]]
    discounts: list[tuple[str, Money]]
    credit: Money
    total: Money


def breakdown(checkout: Checkout) -> Breakdown:
    currency = checkout.currency
    return Breakdown(
        invoices=[(line.invoice.number, Money(line.amount_minor + line.credit_minor, currency))
                  for line in checkout.lines],
        discounts=[(line.invoice.number, Money(line.discount_minor, currency))
                   for line in checkout.lines if line.discount_minor],
        credit=Money(sum(line.credit_minor for line in checkout.lines), currency),
        total=Money(checkout.amount_minor, currency),
    )


@dataclass(frozen=True)
class InProgress:
    """A live checkout as the statement shows it: which payment, how, since when."""

    checkout_id: int
    method: str
    status: str
    day: date
    amount: Money
    credit: Money


def in_progress_by_invoice(session: Session, customer: Customer) -> dict[int, InProgress]:
    """Invoice id -> the payment in progress that covers it."""
    tz = ZoneInfo(customer.company.timezone)
    views = {checkout.id: _in_progress(checkout, tz) for checkout in started_checkouts(session, customer.id)}
    return {invoice_id: views[checkout.id] for invoice_id, checkout in locked_invoices(session, customer.id).items()}


def reservations(session: Session, customer: Customer) -> dict[str, list[InProgress]]:
    """Per currency, the live checkouts that reserve some of the customer's credit."""
    return _reserving(live_checkouts(session, customer.id), ZoneInfo(customer.company.timezone))


def _reserving(live: list[Checkout], tz: ZoneInfo) -> dict[str, list[InProgress]]:
    """`reservations` from the customer's live checkouts, loaded already."""
    out: dict[str, list[InProgress]] = {}
    for checkout in live:
        if checkout.credit_minor and not checkout.credit_applied:
            out.setdefault(checkout.currency, []).append(_in_progress(checkout, tz))
    return out


def statement_checkouts(session: Session, customer: Customer) -> tuple[dict[int, InProgress],
                                                                       dict[str, list[InProgress]]]:
    """`in_progress_by_invoice` and `reservations` together, for the statement page: the customer's
    live checkouts read once, and their lines only when one of them was started (a round trip, not
    three, on most pages)."""
    tz = ZoneInfo(customer.company.timezone)
    live = live_checkouts(session, customer.id)
    out = _reserving(live, tz)
    views = {checkout.id: _in_progress(checkout, tz) for checkout in live if _started(checkout)}
    if not views:
        return {}, out
    lines = session.execute(
        select(CheckoutLine.invoice_id, CheckoutLine.checkout_id)
        .where(CheckoutLine.checkout_id.in_(views))
        .order_by(CheckoutLine.checkout_id)  # an invoice in two started checkouts: the newest, as locked_invoices
    )
    return {invoice_id: views[checkout_id] for invoice_id, checkout_id in lines}, out


def _started(checkout: Checkout) -> bool:
    """`_STARTED` of a loaded checkout."""
    return checkout.status == "processing" or checkout.provider_ref is not None or checkout.reference is not None


def _in_progress(checkout: Checkout, tz: ZoneInfo) -> InProgress:
    created = checkout.created_at if checkout.created_at.tzinfo else checkout.created_at.replace(tzinfo=ZoneInfo("UTC"))
    return InProgress(checkout_id=checkout.id, method=checkout.method, status=checkout.status,
                      day=created.astimezone(tz).date(), amount=checkout.amount,
                      credit=Money(checkout.credit_minor, checkout.currency))
