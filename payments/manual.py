"""Payments staff record by hand: a cheque, a bill of exchange (LCR), cash, a set-off against
what the company owes the customer, or a bank transfer seen elsewhere than in a statement.

Same ledger path as a provider's payment: a succeeded `Payment` allocated to invoices with
`ledger.allocation.allocate` (they become paid or partly paid and leave the reminders), money
beyond the chosen invoices stays the customer's unapplied credit, the dashboard counts it by
method (triggers), the statement and the customer's timeline show it. Cancelling it deletes
its allocations and reopens exactly what they settled; the payment stays, `cancelled`.

Who: a viewer never acts; a collector only for the customers assigned to it; managers for
their companies; admins for all; an ERP's API key (`KeyActor`) for its own company's customers.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from collections.abc import Iterable
from datetime import date
from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, ValidationInfo, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.forms import Form, parse
from kernel.i18n import N_
from kernel.user_error import UserError
from ledger import audit
from ledger.receipts import assign_receipt_number
from ledger.allocation import allocate, unallocate
from ledger.models import (
    STAFF_METHODS,
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Role,
    User,
)
from ledger.money import AmountError, CurrencyError, Money, check_currency

PROVIDER = "manual"
METHODS = STAFF_METHODS
# A cheque or a bill is identified by its number: without it nobody can trace it at the bank.
REFERENCE_REQUIRED = (PaymentMethod.cheque, PaymentMethod.bill_of_exchange)
MAX_REFERENCE = 64
OPEN_STATUSES = (InvoiceStatus.open.value, InvoiceStatus.partially_paid.value)


def _staff_method(value: object) -> PaymentMethod:
    if value not in METHODS:
        raise UserError(N_("Choose how the payment was made."))
    return PaymentMethod(str(value))


def _payment_currency(value: object) -> str:
    try:
        return check_currency(str(value or ""))
    except CurrencyError:
        raise UserError(N_("Choose the currency of the payment.")) from None


class ManualPaymentForm(Form):
    """The back-office form of a payment received by other means, read at the edge: amounts in
    the payment's currency, the day, how it came, and how to spread it (None: oldest first)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    currency: Annotated[str, BeforeValidator(_payment_currency)]
    amount: Money | None  # None only when the currency is the problem
    received_on: date
    method: Annotated[PaymentMethod, BeforeValidator(_staff_method)]
    reference: str = ""
    # (invoice id, amount) as typed in the form's "alloc-<invoice id>" inputs; None: oldest first.
    allocations: list[tuple[int, Money]] | None = None
    key: str | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: object, info: ValidationInfo) -> Money | None:
        currency = info.data.get("currency")
        if currency is None:
            return None  # the currency is named as the problem
        try:
            return Money.parse(str(value or ""), currency)
        except AmountError:
            raise UserError(N_("The amount received %(value)s is not an amount in %(currency)s."), value=value,
                            currency=currency) from None

    @field_validator("received_on", mode="before")
    @classmethod
    def _day(cls, value: object) -> date:
        try:
            return date.fromisoformat(str(value or "").strip())
        except ValueError:
            raise UserError(N_("The date received %(value)s is not a date."), value=value) from None

    @field_validator("allocations", mode="before")
    @classmethod
    def _allocations(cls, value: object, info: ValidationInfo) -> list[tuple[int, Money]] | None:
        currency = info.data.get("currency")
        chosen: list[tuple[int, Money]] = []
        for invoice_id, typed in value or []:  # type: ignore[attr-defined]
            if not str(invoice_id).isdigit() or len(str(invoice_id)) > 12:
                raise UserError(N_("An invoice chosen is not an open invoice of this customer."))
            if currency is None:
                continue
            try:
                chosen.append((int(invoice_id), Money.parse(typed, currency)))
            except AmountError:
                raise UserError(N_("%(value)s is not an amount in %(currency)s."), value=typed,
                                currency=currency) from None
        return chosen or None

    @classmethod
    def from_form(cls, form: Iterable[tuple[str, object]]) -> ManualPaymentForm:
        """From the posted form's items; UserErrors naming every bad field."""
        fields: dict[str, object] = {"currency": "", "amount": "", "received_on": "", "method": ""}
        allocations = []
        for name, value in form:
            if not isinstance(value, str):
                continue
            if name.startswith("alloc-"):
                if value.strip():
                    allocations.append((name.removeprefix("alloc-"), value))
            elif name in ("currency", "amount", "received_on", "method", "reference", "key"):
                fields[name] = value[:MAX_REFERENCE * 2] if name == "reference" else value[:64]
        return parse(cls, {**fields, "allocations": allocations, "key": fields.get("key") or None})


@dataclass(frozen=True)
class KeyActor:
    """An API key acting for its company: audited as actor type "api" under the key's name."""

    name: str
    company_id: int


Actor = User | KeyActor


@dataclass(frozen=True)
class Share:
    invoice: Invoice
    amount: Money


def new_key() -> str:
    """A fresh form key: the same form posted twice records one payment."""
    return secrets.token_urlsafe(18)


def may_act(user: Actor, customer: Customer) -> bool:
    if isinstance(user, KeyActor):
        return customer.company_id == user.company_id
    if user.role == Role.viewer.value or not user.active:
        return False
    if user.role == Role.admin.value:
        return True
    if user.role == Role.collector.value:
        return customer.collector_id == user.id
    return customer.company_id in {c.id for c in user.companies}


def _check_actor(user: Actor, customer: Customer) -> None:
    if not may_act(user, customer):
        raise UserError(N_("You may not record payments for this customer.")).at(field="customer")


def _audited_as(user: Actor) -> tuple[str, str]:
    """(actor type, actor) of the audit trail."""
    return ("api", user.name) if isinstance(user, KeyActor) else ("user", user.email)


def payable_invoices(session: Session, customer: Customer, currency: str | None = None) -> list[Invoice]:
    """The customer's open invoices, oldest due first: what a payment by hand is spread over."""
    query = select(Invoice).where(
        Invoice.customer_id == customer.id,
        Invoice.kind == InvoiceKind.invoice.value,
        Invoice.open_minor > 0,
        Invoice.status.in_(OPEN_STATUSES),
    )
    if currency is not None:
        query = query.where(Invoice.currency == currency)
    return list(session.scalars(query.order_by(Invoice.due_date, Invoice.id)))


def oldest_first(invoices: list[Invoice], amount: Money) -> list[Share]:
    """`amount` over `invoices` in their order, each up to its open amount."""
    left = amount.minor
    shares = []
    for invoice in invoices:
        if left <= 0:
            break
        if invoice.currency != amount.currency:
            continue
        take = min(left, invoice.open_minor)
        if take > 0:
            shares.append(Share(invoice, Money(take, amount.currency)))
            left -= take
    return shares


def record_manual_payment(
    session: Session,
    customer: Customer,
    amount: Money,
    received_on: date,
    method: str,
    reference: str,
    allocations: list[tuple[int, Money]] | None,
    user: Actor,
    *,
    key: str | None = None,
) -> Payment:
    """A succeeded payment of `customer`, settling `allocations` ((invoice id, amount), in that
    order), or the open invoices oldest due first when None; what is left is unapplied credit.

    `key` (from the form) makes a repeated post return the payment already recorded. A refusal names
    the argument it is about in its `field`: "customer", "method", "amount", "received_on",
    "reference", "allocations", or "allocations[i].invoice" / "allocations[i].amount" for the i-th
    allocation given."""
    _check_actor(user, customer)
    provider_ref = f"{customer.id}/{key or new_key()}"
    existing = session.scalar(select(Payment).where(Payment.provider == PROVIDER, Payment.provider_ref == provider_ref))
    if existing is not None:
        return existing
    if method not in METHODS:
        raise UserError(N_("Choose how the payment was made.")).at(field="method")
    if amount.minor <= 0:
        raise UserError(N_("The amount received must be more than zero.")).at(field="amount")
    today = clock.today(customer.company.timezone)
    if received_on > today:
        raise UserError(N_("The date received %(day)s is in the future."), day=received_on.isoformat()).at(field="received_on")
    reference = " ".join(reference.split())
    if len(reference) > MAX_REFERENCE:
        raise UserError(N_("The reference is at most %(count)s characters."), count=MAX_REFERENCE).at(field="reference")
    if method in REFERENCE_REQUIRED and not reference:
        raise UserError(N_("Give the cheque or bill number as the reference.")).at(field="reference")
    shares = _shares(session, customer, amount, allocations)
    payment = Payment(
        customer_id=customer.id,
        provider=PROVIDER,
        provider_ref=provider_ref,
        method=method,
        amount_minor=amount.minor,
        currency=amount.currency,
        status=PaymentStatus.succeeded.value,
        received_on=received_on,
        reference=reference or None,
    )
    session.add(payment)
    session.flush()
    for share in shares:
        allocate(session, share.invoice, share.amount, payment=payment)
    assign_receipt_number(session, payment)
    applied = sum(share.amount.minor for share in shares)
    actor_type, actor = _audited_as(user)
    audit.record(
        session, actor_type=actor_type, actor=actor, action="payment.recorded", entity_type="payment",
        entity_id=payment.id, customer_id=customer.id,
        after={"method": method, "amount_minor": amount.minor, "currency": amount.currency,
               "received_on": received_on.isoformat(), "reference": reference or None,
               "invoices": {share.invoice.number: share.amount.minor for share in shares},
               "unapplied_minor": amount.minor - applied},
    )
    return payment


def _shares(session: Session, customer: Customer, amount: Money,
            allocations: list[tuple[int, Money]] | None) -> list[Share]:
    if allocations is None:
        return oldest_first(_locked(session, customer, None), amount)
    ids = [invoice_id for invoice_id, _ in allocations]
    if len(set(ids)) != len(ids):
        raise UserError(N_("An invoice is listed twice.")).at(field="allocations")
    invoices = {invoice.id: invoice for invoice in _locked(session, customer, ids)}
    shares = []
    for index, (invoice_id, share) in enumerate(allocations):
        invoice = invoices.get(invoice_id)
        if invoice is None:
            raise UserError(N_("An invoice chosen is not an open invoice of this customer.")).at(
                field=f"allocations[{index}].invoice")
        if share.currency != amount.currency or invoice.currency != amount.currency:
            raise UserError(N_("%(number)s is in %(currency)s: a payment settles invoices of its own "
                               "currency."), number=invoice.number, currency=invoice.currency).at(
                field=f"allocations[{index}].invoice")
        if share.minor < 0:
            raise UserError(N_("%(number)s: an amount cannot be negative."), number=invoice.number).at(
                field=f"allocations[{index}].amount")
        if share.minor == 0:
            continue  # an invoice left at zero is not settled by this payment
        if share.minor > invoice.open_minor:
            raise UserError(N_("%(number)s has only %(open)s open."), number=invoice.number,
                            open=invoice.open).at(field=f"allocations[{index}].amount")
        shares.append(Share(invoice, share))
    spread = sum(share.amount.minor for share in shares)
    if spread > amount.minor:
        raise UserError(N_("The amounts given to invoices (%(spread)s) exceed the payment (%(amount)s)."),
                        spread=Money(spread, amount.currency), amount=amount).at(field="allocations")
    return shares


def _locked(session: Session, customer: Customer, ids: list[int] | None) -> list[Invoice]:
    """Open invoices of the customer, locked in id order (as settlement does), oldest due first."""
    query = select(Invoice).where(
        Invoice.customer_id == customer.id,
        Invoice.kind == InvoiceKind.invoice.value,
        Invoice.open_minor > 0,
        Invoice.status != InvoiceStatus.void.value,
    )
    if ids is None:
        query = query.where(Invoice.status.in_(OPEN_STATUSES))  # disputed ones only when chosen
    else:
        query = query.where(Invoice.id.in_(ids))
    locked = list(session.scalars(query.order_by(Invoice.id).with_for_update()))
    return sorted(locked, key=lambda invoice: (invoice.due_date, invoice.id))


def reverse_manual_payment(session: Session, payment: Payment, user: Actor) -> Payment:
    """Cancel a payment recorded by hand: what it settled reopens exactly, its credit is gone."""
    customer = session.get_one(Customer, payment.customer_id)
    _check_actor(user, customer)
    if payment.provider != PROVIDER:
        raise UserError(N_("Only a payment recorded by hand can be cancelled here."))
    if payment.status != PaymentStatus.succeeded.value:
        raise UserError(N_("This payment is already cancelled."))
    session.refresh(payment, with_for_update=True)
    if payment.status != PaymentStatus.succeeded.value:  # cancelled meanwhile by someone else
        raise UserError(N_("This payment is already cancelled."))
    reopened = unallocate(session, payment)
    numbers = {invoice_id: session.get_one(Invoice, invoice_id).number for invoice_id in reopened}
    payment.status = PaymentStatus.cancelled.value
    session.flush()
    actor_type, actor = _audited_as(user)
    audit.record(
        session, actor_type=actor_type, actor=actor, action="payment.cancelled", entity_type="payment",
        entity_id=payment.id, customer_id=customer.id,
        before={"status": PaymentStatus.succeeded.value,
                "invoices": {numbers[invoice_id]: minor for invoice_id, minor in reopened.items()}},
        after={"status": PaymentStatus.cancelled.value},
    )
    return payment
