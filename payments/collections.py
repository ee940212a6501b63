"""Direct debit on a customer's mandate, without the provider's SDK: what the mandate will collect
next (for the portal), and what a run of collection did (payments.gocardless.collect_due, for the worker)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.models import Checkout, CheckoutLine, Customer, Invoice, InvoiceKind, InvoiceStatus
from ledger.money import Money

SCHEME_CURRENCY = {"sepa_core": "EUR", "bacs": "GBP"}
MANDATE_ENDED = ("failed", "cancelled", "expired")
# A mandate that can take payments: GoCardless accepts them before it is active too.
MANDATE_USABLE = ("pending_submission", "submitted", "active")


@dataclass(frozen=True)
class CollectionReport:
    created: int = 0  # payments created on mandates
    failed: int = 0  # customers whose collection failed this run (retried on the next)

    @property
    def busy(self) -> bool:
        return bool(self.created or self.failed)

    def summary(self) -> str:
        return f"{self.created} created, {self.failed} failed"


def mandate_currency(customer: Customer) -> str | None:
    """The currency the customer's mandate collects in, while it can take payments."""
    if customer.gocardless_mandate_id and customer.gocardless_mandate_status in MANDATE_USABLE:
        return SCHEME_CURRENCY.get(customer.gocardless_mandate_scheme or "")
    return None


def collectable_invoices(session: Session, customer: Customer, currency: str) -> list[Invoice]:
    """The customer's open, undisputed invoices in `currency` whose money is not already on its way
    (a checkout "processing"; one left "open" is a page the debtor may never finish)."""
    live = (
        select(CheckoutLine.invoice_id)
        .join(Checkout, Checkout.id == CheckoutLine.checkout_id)
        .where(Checkout.customer_id == customer.id, Checkout.status == "processing")
    )
    return list(session.scalars(
        select(Invoice)
        .where(
            Invoice.customer_id == customer.id,
            Invoice.kind == InvoiceKind.invoice.value,
            Invoice.status.in_((InvoiceStatus.open.value, InvoiceStatus.partially_paid.value)),
            Invoice.open_minor > 0,
            Invoice.currency == currency,
            Invoice.id.not_in(live),
        )
        .order_by(Invoice.due_date, Invoice.number)
    ))


def next_collections(session: Session, customer: Customer, today: date) -> list[tuple[date, Money]]:
    """(date, amount) of the invoices the mandate will collect next, soonest first (overdue ones: today)."""
    currency = mandate_currency(customer)
    if currency is None or customer.gocardless_mandate_status in MANDATE_ENDED:
        return []
    by_day: dict[date, int] = {}
    for invoice in collectable_invoices(session, customer, currency):
        day = max(invoice.due_date, today)
        by_day[day] = by_day.get(day, 0) + invoice.open_minor
    return [(day, Money(minor, currency)) for day, minor in sorted(by_day.items())][:5]


@dataclass(frozen=True)
class MandateSummary:
    """What the portal shows of a customer's mandate."""

    scheme: str | None  # sepa_core, bacs
    status: str  # pending_submission, submitted, active, failed, cancelled, expired
    collections: list[tuple[date, Money]]

    @property
    def ended(self) -> bool:
        return self.status in MANDATE_ENDED


def has_live_mandate(customer: Customer) -> bool:
    """The customer's mandate is set up or on its way: offering a new one would make a second."""
    return bool(customer.gocardless_mandate_id) and customer.gocardless_mandate_status not in (None, *MANDATE_ENDED)


def mandate_summary(session: Session, customer: Customer, today: date) -> MandateSummary | None:
    if not customer.gocardless_mandate_id or not customer.gocardless_mandate_status:
        return None
    return MandateSummary(scheme=customer.gocardless_mandate_scheme, status=customer.gocardless_mandate_status,
                          collections=next_collections(session, customer, today))
