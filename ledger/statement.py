"""A customer's statement of account, per currency, as of a date."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from operator import attrgetter

from sqlalchemy import BigInteger, bindparam, cast, func, literal, select, union_all
from sqlalchemy.orm import Session

from ledger.models import (
    Allocation,
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    PromiseToPay,
    promise_invoices,
)
from ledger.money import Money


@dataclass(frozen=True, slots=True)
class OpenItem:
    """An open invoice or credit note as a statement shows it: the invoice's columns as a plain
    row. Loading 200 ORM `Invoice` objects (identity map, instrumented attributes) cost the
    portal's statement page more than the query itself; nothing on a statement writes back."""

    id: int
    company_id: int
    customer_id: int
    kind: str
    number: str
    issue_date: date
    due_date: date
    currency: str
    total_minor: int
    open_minor: int
    status: str
    discount_bps: int | None
    discount_until: date | None

    @property
    def total(self) -> Money:
        return Money(self.total_minor, self.currency)

    @property
    def open(self) -> Money:
        return Money(self.open_minor, self.currency)

    @property
    def is_credit_note(self) -> bool:
        return self.kind == InvoiceKind.credit_note.value


_OPEN_ITEM_COLUMNS = [getattr(Invoice, name) for name in OpenItem.__dataclass_fields__]


@dataclass(frozen=True, slots=True)
class StatementLine:
    invoice: OpenItem
    days_overdue: int
    # Plain fields, set once by build_statement: the statement page reads them for every row and
    # every total.
    is_credit_note: bool
    is_disputed: bool
    # The part an open dispute sets aside of an invoice disputed in part (0 otherwise): the rest is due.
    disputed_part: int = 0

    @property
    def payable_minor(self) -> int:
        """What is asked of the customer on this line: nothing while wholly disputed."""
        return 0 if self.is_disputed else self.invoice.open_minor - self.disputed_part


@dataclass
class CurrencySection:
    """The open items of one currency. Its totals are computed once, when first read (the
    statement page reads each several times): build the section fully before reading them."""

    currency: str
    lines: list[StatementLine] = field(default_factory=list)
    unapplied_credit: Money | None = None

    def __post_init__(self) -> None:
        if self.unapplied_credit is None:
            self.unapplied_credit = Money.zero(self.currency)

    def _sum(self, lines: list[StatementLine]) -> Money:
        return Money(sum(line.invoice.open_minor for line in lines), self.currency)

    def _payable(self, lines: list[StatementLine]) -> Money:
        return Money(sum(line.payable_minor for line in lines), self.currency)

    @cached_property
    def invoice_lines(self) -> list[StatementLine]:
        return [line for line in self.lines if not line.is_credit_note]

    @cached_property
    def invoices_open(self) -> Money:
        """Open invoices the customer is asked to pay: what is disputed is set aside."""
        return self._payable(self.invoice_lines)

    @cached_property
    def disputed(self) -> Money:
        """Wholly disputed invoices, and the disputed parts of the others."""
        return self._sum([line for line in self.invoice_lines if line.is_disputed]) + Money(
            sum(line.disputed_part for line in self.invoice_lines if not line.is_disputed), self.currency)

    @cached_property
    def credit_notes_open(self) -> Money:
        return self._sum([line for line in self.lines if line.is_credit_note])

    @property
    def credits(self) -> Money:
        assert self.unapplied_credit is not None
        return self.credit_notes_open + self.unapplied_credit

    @property
    def balance(self) -> Money:
        """What is owed after credits; negative when the customer is in credit."""
        return self.invoices_open - self.credits

    @property
    def total_due(self) -> Money:
        balance = self.balance
        return balance if balance.minor > 0 else Money.zero(self.currency)

    @cached_property
    def overdue(self) -> Money:
        return self._payable([line for line in self.invoice_lines if line.days_overdue > 0])


@dataclass(frozen=True)
class Statement:
    customer: Customer
    as_of: date
    sections: list[CurrencySection]

    @property
    def is_empty(self) -> bool:
        return not self.sections


def days_overdue(due_date: date, today: date) -> int:
    return max(0, (today - due_date).days)


def open_items(session: Session, customer_id: int) -> list[Invoice]:
    return list(
        session.scalars(
            select(Invoice)
            .where(
                Invoice.customer_id == customer_id,
                Invoice.open_minor > 0,
                Invoice.status != InvoiceStatus.void.value,
            )
            .order_by(Invoice.currency, Invoice.due_date, Invoice.number)
        )
    )


# The statement's queries, built once with the customer as a bound parameter: building a
# select anew on every page cost more than SQLite running it. The open items come unordered and
# are sorted here: PostgreSQL's sort of a page's 200 rows on three keys cost it more CPU than
# reading them (bench/RESULTS.md, 2026-12-06 page13).
_OPEN_ITEM_ROWS = select(*_OPEN_ITEM_COLUMNS).where(
    Invoice.customer_id == bindparam("customer_id"),
    Invoice.open_minor > 0,
    Invoice.status != InvoiceStatus.void.value,
)
_OPEN_ITEM_ORDER = attrgetter("currency", "due_date", "number")
# Succeeded payments and what was allocated from them, per currency, in one round trip; each sum
# as a plain integer (PostgreSQL's sum of a bigint is a numeric).
_RECEIVED, _ALLOCATED = 0, 1
_RECEIVED_AND_ALLOCATED = union_all(
    select(literal(_RECEIVED), Payment.currency, cast(func.sum(Payment.amount_minor), BigInteger))
    .where(Payment.customer_id == bindparam("customer_id"), Payment.status == PaymentStatus.succeeded.value)
    .group_by(Payment.currency),
    select(literal(_ALLOCATED), Allocation.currency, cast(func.sum(Allocation.amount_minor), BigInteger))
    .join(Payment, Allocation.payment_id == Payment.id)
    .where(Payment.customer_id == bindparam("customer_id"), Payment.status == PaymentStatus.succeeded.value)
    .group_by(Allocation.currency),
)
_CREDIT_NOTE = InvoiceKind.credit_note.value
_DISPUTED = InvoiceStatus.disputed.value


def open_item_rows(session: Session, customer_id: int) -> list[OpenItem]:
    """`open_items` as plain rows, in the same order, for reading only."""
    rows = [OpenItem(*row) for row in session.execute(_OPEN_ITEM_ROWS, {"customer_id": customer_id})]
    rows.sort(key=_OPEN_ITEM_ORDER)  # code point order, as SQLite's and a "C" collation's ORDER BY
    return rows


def unapplied_credit(session: Session, customer_id: int) -> dict[str, Money]:
    """Succeeded payments minus what was allocated from them, per currency."""
    received: dict[str, int] = {}
    allocated: dict[str, int] = {}
    for which, currency, amount in session.execute(_RECEIVED_AND_ALLOCATED, {"customer_id": customer_id}):
        (received if which == _RECEIVED else allocated)[currency] = amount
    credit: dict[str, Money] = {}
    for currency, amount in received.items():
        remaining = int(amount or 0) - int(allocated.get(currency) or 0)
        if remaining > 0:
            credit[currency] = Money(remaining, currency)
    return credit


def build_statement(session: Session, customer: Customer, today: date) -> Statement:
    from ledger.disputes import disputed_parts

    sections: dict[str, CurrencySection] = {}
    parts = disputed_parts(session, customer_id=customer.id)
    for invoice in open_item_rows(session, customer.id):
        section = sections.get(invoice.currency)
        if section is None:
            section = sections[invoice.currency] = CurrencySection(invoice.currency)
        credit_note = invoice.kind == _CREDIT_NOTE
        overdue = 0 if credit_note else max(0, (today - invoice.due_date).days)  # days_overdue, inlined
        section.lines.append(StatementLine(invoice, overdue, credit_note, invoice.status == _DISPUTED,
                                           parts.get(invoice.id, 0)))
    for currency, credit in unapplied_credit(session, customer.id).items():
        sections.setdefault(currency, CurrencySection(currency)).unapplied_credit = credit
    base = customer.company.base_currency
    # The company's own currency first, then the others alphabetically.
    ordered = sorted(sections.values(), key=lambda s: (s.currency != base, s.currency))
    return Statement(customer=customer, as_of=today, sections=ordered)


def promised_invoices(session: Session, customer_id: int) -> dict[int, date]:
    """Invoice id -> the date a pending promise to pay names for it (the earliest, if several)."""
    rows = session.execute(
        select(promise_invoices.c.invoice_id, func.min(PromiseToPay.promised_for))
        .join(PromiseToPay, PromiseToPay.id == promise_invoices.c.promise_id)
        .where(PromiseToPay.customer_id == customer_id, PromiseToPay.status == "pending")
        .group_by(promise_invoices.c.invoice_id)
    ).all()
    return {invoice_id: promised_for for invoice_id, promised_for in rows}


def customer_invoice(session: Session, customer_id: int, invoice_id: int) -> Invoice | None:
    """The invoice only if it belongs to this customer: the portal's one way to fetch one."""
    return session.scalar(select(Invoice).where(Invoice.id == invoice_id, Invoice.customer_id == customer_id))


def allocations_for(session: Session, invoice_id: int) -> list[Allocation]:
    return list(
        session.scalars(select(Allocation).where(Allocation.invoice_id == invoice_id).order_by(Allocation.created_at))
    )


@dataclass(frozen=True)
class Discount:
    amount: Money
    until: date
    bps: int


def available_discount(invoice: Invoice | OpenItem, today: date) -> Discount | None:
    """The early-payment saving on paying the whole open amount today, if still on offer."""
    if (
        invoice.kind != InvoiceKind.invoice.value
        or not invoice.discount_bps
        or invoice.discount_until is None
        or today > invoice.discount_until
        or invoice.open_minor == 0
        or invoice.status in (InvoiceStatus.void.value,)
    ):
        return None
    saving = invoice.open.percent_bps(invoice.discount_bps)
    if saving.minor == 0:
        return None
    return Discount(amount=saving, until=invoice.discount_until, bps=invoice.discount_bps)
