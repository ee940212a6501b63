"""A customer's payments as the debtor reads them: the history, and each payment's receipt.

A receipt lists each invoice at the full amount the payment settled of it, then the early-payment
discounts and the credit deducted as their own lines, negative (the sign the transfer page and its
PDF use too), so the debtor's accounts-payable team can reconcile it line by line. Its number is
given once, in order per company (`assign_receipt_number`), when the payment succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session, selectinload

from ledger.models import Allocation, Checkout, CheckoutLine, Company, Customer, Invoice, Payment, PaymentStatus
from ledger.money import Money

# Payments that took money at some point: they have a receipt (a refund says so on it).
RECEIPTED = (PaymentStatus.succeeded.value, PaymentStatus.refunded.value, PaymentStatus.charged_back.value)
# What the history lists: everything but a staff entry taken back as a mistake.
LISTED = ("pending", "processing", "succeeded", "failed", "refunded", "charged_back")


def assign_receipt_number(session: Session, payment: Payment) -> str:
    """The payment's receipt number, given now if it has none: `<company code>-R000001`, one
    counter per company, each number used once. The counter moves in one UPDATE … RETURNING, so
    two processes never take the same number."""
    if payment.receipt_number:
        return payment.receipt_number
    customer = session.get_one(Customer, payment.customer_id)
    payment.receipt_number = next_receipt_number(session, customer.company_id)
    return payment.receipt_number


def next_receipt_number(session: Session, company_id: int) -> str:
    """The company's next receipt number, taken now: its counter's row stays locked to the commit."""
    companies = cast(Table, Company.__table__)
    # On the connection, not the session: no autoflush, so whatever the caller has not flushed yet
    # is not written while the counter's row is locked (a settlement takes it last: payments.settlement).
    issued = session.connection().execute(
        update(companies).where(companies.c.id == company_id)
        .values(receipts_issued=companies.c.receipts_issued + 1)
        .returning(companies.c.receipts_issued, companies.c.code)
    ).one()
    return f"{issued.code}-R{issued.receipts_issued:06d}"


@dataclass(frozen=True)
class ReceiptLine:
    label: str  # "invoice", "discount", "credit", "left_as_credit"
    number: str | None  # the invoice's number (None for the customer's credit)
    amount: Money  # negative for what is deducted


@dataclass(frozen=True)
class PaymentRecord:
    """One payment of the history, with what its receipt lists."""

    payment: Payment
    day: date  # received, or created when not (yet) received
    invoices: list[str]
    lines: list[ReceiptLine] = field(default_factory=list)

    @property
    def refunded(self) -> Money:
        if self.payment.status == PaymentStatus.refunded.value:
            return self.payment.amount
        return Money(self.payment.refunded_minor, self.payment.currency)

    @property
    def paid(self) -> Money:
        """What came in, before any refund."""
        return Money(self.payment.amount_minor + self.payment.refunded_minor, self.payment.currency)

    @property
    def has_receipt(self) -> bool:
        return self.payment.status in RECEIPTED

    @property
    def total(self) -> Money:
        """What the lines come to: the amount paid."""
        return Money(sum(line.amount.minor for line in self.lines), self.payment.currency)


def _lines(session: Session, payment: Payment) -> tuple[list[str], list[ReceiptLine]]:
    currency = payment.currency
    if payment.checkout_id is not None:
        # What the debtor chose to pay: the checkout's lines, as the transfer page and PDF show them.
        lines = list(session.scalars(
            select(CheckoutLine).where(CheckoutLine.checkout_id == payment.checkout_id)
            .options(selectinload(CheckoutLine.invoice)).order_by(CheckoutLine.id)))
        out = [ReceiptLine("invoice", line.invoice.number, Money(line.amount_minor + line.credit_minor, currency))
               for line in lines]
        out += [ReceiptLine("discount", line.invoice.number, Money(-line.discount_minor, currency))
                for line in lines if line.discount_minor]
        credit = sum(line.credit_minor for line in lines)
        if credit:
            out.append(ReceiptLine("credit", None, Money(-credit, currency)))
        numbers = [line.invoice.number for line in lines]
    else:
        # Recorded by staff or matched from the bank: what it settled, invoice by invoice.
        allocations = list(session.scalars(
            select(Allocation).where(Allocation.payment_id == payment.id)
            .options(selectinload(Allocation.invoice)).order_by(Allocation.id)))
        out = [ReceiptLine("invoice", a.invoice.number, Money(a.amount_minor + a.discount_minor, currency))
               for a in allocations]
        out += [ReceiptLine("discount", a.invoice.number, Money(-a.discount_minor, currency))
                for a in allocations if a.discount_minor]
        numbers = list(dict.fromkeys(a.invoice.number for a in allocations))
    settled = sum(line.amount.minor for line in out)
    paid = payment.amount_minor + payment.refunded_minor  # what came in, before any partial refund
    if paid > settled:  # money beyond what was chosen stays the customer's (unapplied credit)
        out.append(ReceiptLine("left_as_credit", None, Money(paid - settled, currency)))
    return numbers, out


def _record(session: Session, payment: Payment) -> PaymentRecord:
    numbers, lines = _lines(session, payment)
    day = payment.received_on or payment.created_at.date()
    return PaymentRecord(payment=payment, day=day, invoices=numbers, lines=lines)


def payment_history(session: Session, customer: Customer) -> list[PaymentRecord]:
    """Every payment of the customer, latest first."""
    payments = session.scalars(
        select(Payment).where(Payment.customer_id == customer.id, Payment.status.in_(LISTED))
        .order_by(Payment.created_at.desc(), Payment.id.desc())
    ).all()
    return [_record(session, payment) for payment in payments]


def customer_payment(session: Session, customer_id: int, payment_id: int) -> PaymentRecord | None:
    """One payment, only if it is this customer's: the portal's one way to fetch one."""
    payment = session.scalar(select(Payment).where(Payment.id == payment_id, Payment.customer_id == customer_id,
                                                   Payment.status.in_(LISTED)))
    return _record(session, payment) if payment is not None else None


def checkout_of(session: Session, payment: Payment) -> Checkout | None:
    return session.get(Checkout, payment.checkout_id) if payment.checkout_id is not None else None


def invoice_ids(session: Session, customer_id: int, numbers: list[str]) -> dict[str, int]:
    """The customer's invoice ids by number, to link a receipt's lines to their invoices."""
    if not numbers:
        return {}
    return dict(session.execute(select(Invoice.number, Invoice.id).where(
        Invoice.customer_id == customer_id, Invoice.number.in_(numbers))).all())
