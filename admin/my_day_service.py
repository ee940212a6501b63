"""A collector's worklist for today ("My day"): the customers to call or chase, ranked, each
with why.

A customer is on the list when, in its company's today:
- a task (a note's next action) of it is due: dated today or earlier, not done;
- a promise to pay of it is broken (marked broken, or still pending past the company's grace
  days) and dated within the last 30 days;
- a dispute or question of it waits for an answer: open, and its last message is the customer's;
- it has overdue invoices (open or partly paid, past due, not disputed) and no pending promise
  still within its grace days.
The first three are urgent and come first; then by overdue amount converted into the company's
currency with the dashboard's rates (`admin.dashboard_service.Converter`), then by oldest due date.

Fast on a big book: the overdue customers come from `customer_balances` (oldest due date kept by
triggers), tasks from a partial index of open tasks, and only the overdue invoices of the
collector's overdue customers are summed (a covering index); the columns of the page (last
contact, next action) are read for the rows shown only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from admin.dashboard_service import Amount, Converter
from kernel.clock import clock
from kernel.i18n import N_
from ledger.fx import RateBook
from ledger.money import Money
from ledger.models import (
    Company,
    Customer,
    CustomerBalance,
    CustomerNote,
    Dispute,
    DisputeMessage,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    PromiseToPay,
    Reminder,
)

LIMIT = 100
BROKEN_PROMISE_DAYS = 30
CHASED = (InvoiceStatus.open.value, InvoiceStatus.partially_paid.value)
_CHUNK = 500


@dataclass(frozen=True)
class Reason:
    """Why a customer is on the list: an English message id and its values (dates as dates)."""

    code: str  # task, promise, dispute, question, overdue
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def urgent(self) -> bool:
        return self.code != "overdue"


@dataclass
class DayRow:
    customer_id: int
    ref: str
    name: str
    company: Company
    reasons: list[Reason]
    overdue: Amount
    oldest_due: date | None
    today: date
    last_contact: datetime | None = None
    next_action: CustomerNote | None = None
    due_tasks: list[CustomerNote] = field(default_factory=list)

    @property
    def urgent(self) -> bool:
        return any(reason.urgent for reason in self.reasons)

    @property
    def max_days_overdue(self) -> int | None:
        return (self.today - self.oldest_due).days if self.oldest_due is not None else None


@dataclass
class MyDay:
    rows: list[DayRow]
    total: int  # customers on the list, of which `rows` are the first
    missing_rates: list[str]


def _chunks(values: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


@dataclass
class _Candidate:
    """A customer on the list before the page is built: what ranks it, nothing more."""

    customer_id: int
    company: Company
    today: date
    convert: Converter
    reasons: list[Reason]
    overdue: dict[str, int]
    oldest_due: date | None
    converted_minor: int = 0

    def sort_key(self) -> tuple[Any, ...]:
        urgent = any(reason.urgent for reason in self.reasons)
        return (not urgent, -self.converted_minor, self.oldest_due or date.max, self.customer_id)


def build_my_day(session: Session, collector_id: int, company_ids: Sequence[int], limit: int = LIMIT) -> MyDay:
    """The worklist of the customers assigned to `collector_id` in these companies.

    Every candidate is ranked on plain numbers (its overdue amount converted, one multiplication
    per foreign currency); rows, amounts and columns are built for the `limit` shown only."""
    companies = list(session.scalars(select(Company).where(Company.id.in_(list(company_ids) or [-1]))))
    candidates: list[_Candidate] = []
    missing: set[str] = set()
    books: dict[date, RateBook] = {}
    for company in companies:
        today = clock.today(company.timezone)
        if today not in books:
            books[today] = RateBook.load(session, today)
        convert = Converter(books[today], company.base_currency)
        candidates.extend(_company_candidates(session, company, collector_id, today, convert))
        missing |= convert.missing
    candidates.sort(key=_Candidate.sort_key)
    chosen = candidates[:limit]
    names: dict[int, tuple[str, str]] = {}
    for chunk in _chunks([c.customer_id for c in chosen]):
        for customer_id, ref, name in session.execute(
                select(Customer.id, Customer.ref, Customer.name).where(Customer.id.in_(chunk))):
            names[customer_id] = (ref, name)
    shown = [DayRow(customer_id=c.customer_id, ref=names[c.customer_id][0], name=names[c.customer_id][1],
                    company=c.company, reasons=sorted(c.reasons, key=lambda r: (not r.urgent, r.code)),
                    overdue=c.convert.amount(c.overdue), oldest_due=c.oldest_due, today=c.today)
             for c in chosen]
    _fill_columns(session, shown)
    return MyDay(shown, len(candidates), sorted(missing))


def _mine(collector_id: int, company_id: int) -> Any:
    return select(Customer.id).where(Customer.collector_id == collector_id, Customer.company_id == company_id)


def _company_candidates(session: Session, company: Company, collector_id: int, today: date,
                        convert: Converter) -> list[_Candidate]:
    reasons: dict[int, list[Reason]] = defaultdict(list)
    mine = _mine(collector_id, company.id)

    # Overdue customers: the oldest due date of an open chased invoice, kept by triggers.
    oldest: dict[int, date] = dict(session.execute(
        select(CustomerBalance.customer_id, CustomerBalance.oldest_due)
        .join(Customer, Customer.id == CustomerBalance.customer_id)
        .where(Customer.collector_id == collector_id, Customer.company_id == company.id,
               CustomerBalance.oldest_due < today)).all())

    # Tasks due (the partial index of open tasks).
    for customer_id, due_on in session.execute(
            select(CustomerNote.customer_id, func.min(CustomerNote.next_action_on))
            .where(CustomerNote.done_at.is_(None), CustomerNote.next_action_on.is_not(None),
                   CustomerNote.next_action_on <= today, CustomerNote.customer_id.in_(mine))
            .group_by(CustomerNote.customer_id)):
        reasons[customer_id].append(Reason("task", N_("Next action due on %(day)s"), {"day": due_on}))

    # Promises: broken ones of the last 30 days; pending ones still within grace keep overdue-only
    # customers off the list (reminders wait for them too).
    grace = timedelta(days=company.promise_grace_days)
    promised: set[int] = set()
    for customer_id, status, promised_for in session.execute(
            select(PromiseToPay.customer_id, PromiseToPay.status, PromiseToPay.promised_for)
            .where(PromiseToPay.customer_id.in_(mine), PromiseToPay.status.in_(("pending", "broken")),
                   PromiseToPay.promised_for >= today - timedelta(days=BROKEN_PROMISE_DAYS))
            .order_by(PromiseToPay.promised_for.desc())):
        if status == "broken" or today > promised_for + grace:
            if promised_for <= today and not any(r.code == "promise" for r in reasons[customer_id]):
                reasons[customer_id].append(Reason("promise", N_("Promise to pay of %(day)s broken"),
                                                   {"day": promised_for}))
        else:
            promised.add(customer_id)

    # Disputes and questions whose last message is the customer's (or that have none from staff yet).
    open_cases = dict(session.execute(
        select(Dispute.id, Dispute.customer_id).where(Dispute.customer_id.in_(mine), Dispute.status == "open")
    ).all())
    if open_cases:
        last: dict[int, tuple[datetime, str]] = {}
        for dispute_id, author_type, created_at in session.execute(
                select(DisputeMessage.dispute_id, DisputeMessage.author_type, DisputeMessage.created_at)
                .where(DisputeMessage.dispute_id.in_(list(open_cases)), DisputeMessage.internal.is_(False))
                .order_by(DisputeMessage.created_at, DisputeMessage.id)):
            last[dispute_id] = (created_at, author_type)
        kinds = dict(session.execute(select(Dispute.id, Dispute.kind).where(Dispute.id.in_(list(open_cases))))
                     .all())
        opened = dict(session.execute(select(Dispute.id, Dispute.opened_at).where(Dispute.id.in_(list(open_cases))))
                      .all())
        for dispute_id, customer_id in open_cases.items():
            at, author = last.get(dispute_id, (opened[dispute_id], "contact"))
            if author == "contact":
                if kinds[dispute_id] == "question":
                    reasons[customer_id].append(Reason("question", N_("Question waiting for an answer since %(day)s"),
                                                       {"day": at}))
                else:
                    reasons[customer_id].append(Reason("dispute", N_("Dispute waiting for an answer since %(day)s"),
                                                       {"day": at}))

    for customer_id, due in oldest.items():
        if customer_id in promised and not reasons.get(customer_id):
            continue
        reasons[customer_id].append(Reason("overdue", N_("Overdue since %(day)s"), {"day": due}))

    wanted = [customer_id for customer_id, found in reasons.items() if found]
    if not wanted:
        return []
    # The overdue invoices of the collector's overdue customers, summed per currency in one pass
    # (ix_invoices_open_per_customer, one seek per customer).
    overdue: dict[int, dict[str, int]] = defaultdict(dict)
    late_customers = (select(CustomerBalance.customer_id).join(Customer, Customer.id == CustomerBalance.customer_id)
                      .where(Customer.collector_id == collector_id, Customer.company_id == company.id,
                             CustomerBalance.oldest_due < today))
    for customer_id, currency, minor in session.execute(
            select(Invoice.customer_id, Invoice.currency, func.sum(Invoice.open_minor))
            .where(Invoice.customer_id.in_(late_customers), Invoice.open_minor > 0,
                   Invoice.status != InvoiceStatus.void.value, Invoice.kind == InvoiceKind.invoice.value,
                   Invoice.status.in_(CHASED), Invoice.due_date < today)
            .group_by(Invoice.customer_id, Invoice.currency)):
        overdue[customer_id][currency] = int(minor or 0)
    base = company.base_currency
    candidates = []
    for customer_id in wanted:
        amounts = overdue.get(customer_id, {})
        converted = 0
        for currency, minor in amounts.items():
            if currency == base:
                converted += minor
            else:
                money = convert.to_base(Money(minor, currency))
                converted += money.minor if money is not None else 0
        candidates.append(_Candidate(customer_id, company, today, convert, reasons[customer_id], dict(amounts),
                                     oldest.get(customer_id), converted))
    return candidates


def _fill_columns(session: Session, rows: list[DayRow]) -> None:
    """Last contact (reminder, note or call) and next action (the earliest open task) of the rows shown."""
    ids = [row.customer_id for row in rows]
    if not ids:
        return
    last: dict[int, datetime] = {}
    for query in (select(Reminder.customer_id, func.max(Reminder.created_at)).where(Reminder.customer_id.in_(ids))
                  .group_by(Reminder.customer_id),
                  select(CustomerNote.customer_id, func.max(CustomerNote.created_at))
                  .where(CustomerNote.customer_id.in_(ids)).group_by(CustomerNote.customer_id)):
        for customer_id, at in session.execute(query):
            if at is not None and (customer_id not in last or at > last[customer_id]):
                last[customer_id] = at
    tasks: dict[int, list[CustomerNote]] = defaultdict(list)
    for note in session.scalars(
            select(CustomerNote).where(CustomerNote.customer_id.in_(ids), CustomerNote.done_at.is_(None),
                                       CustomerNote.next_action_on.is_not(None))
            .order_by(CustomerNote.next_action_on, CustomerNote.id)):
        tasks[note.customer_id].append(note)
    for row in rows:
        row.last_contact = last.get(row.customer_id)
        open_tasks = tasks.get(row.customer_id, [])
        row.next_action = open_tasks[0] if open_tasks else None
        row.due_tasks = [task for task in open_tasks if task.next_action_on is not None
                         and task.next_action_on <= row.today]
