"""The back-office dashboard: the receivables book's key figures, per company, aggregated in SQL.

Every query groups in the database (GROUP BY over covering indexes, see the indexes named in
`ledger.models`); Python only folds the grouped rows (at most one per company, currency and
day) into buckets, never loops over invoices or payments.

Definitions (also printed on the page):
- Outstanding: open amounts of invoices that are neither void nor disputed (gross: open credit
  notes are shown apart, as "open credit notes", and deducted only in "net balance"; money
  received but not yet applied to an invoice stays on each customer's statement and is not
  deducted here).
- Overdue and aging: the outstanding invoices by days past their due date, counted in the
  company's own timezone (today from `clock.today(company.timezone)`): not due, 1-30, 31-60,
  61-90, over 90.
- Open disputes: open dispute cases, and the open amount of the invoices in dispute.
- DSO (days sales outstanding), simple method: outstanding ÷ invoices issued over the last 90
  days × 90.
- CEI (collection effectiveness index, last 30 days): (B + S − E) ÷ (B + S − EC) × 100, with S
  the invoices issued, E the outstanding now, EC its part not yet due, B the outstanding 30 days
  ago taken as E − S + C, C the succeeded payments received over those 30 days; that is
  C ÷ (C + overdue now) × 100.
- Average days to pay: over succeeded payments received in the last 90 days, each amount they
  settled, from its invoice's issue date to the payment date, weighted by that amount.
- Promises: pending promises dated this week (Monday to Sunday) and not past their grace days;
  broken promises dated within the last 30 days (marked broken, or still pending past the
  company's grace days).
- Cash collected: succeeded payments by method, received over the last 30 and 90 days.
- Portal funnel (last 30 days): customers sent a reminder → of those, customers who opened a
  link → of those, customers who paid online (a succeeded payment from a portal checkout).
Every amount is shown in its own currency and converted into the company's base currency with
the latest rate on or before today of the dated FX table; which rate is said, and a currency
without a rate is left out of the converted total and named, never guessed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, literal_column, select, union_all
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from kernel.clock import clock
from kernel.i18n import N_
from ledger.day_totals import days_between
from ledger.fx import Conversion, RateBook
from ledger.models import (
    FAR_FUTURE,
    Allocation,
    BankEntryDay,
    BalanceState,
    Company,
    Contact,
    Customer,
    CustomerBalance,
    Dispute,
    Invoice,
    InvoicesIssuedByDay,
    InvoiceKind,
    InvoiceStatus,
    LinkOpen,
    OpenItemsByDue,
    OutboxMessage,
    Payment,
    PaymentDay,
    PaymentStatus,
    DEBTOR_METHODS,
    PaymentMethod,
    PromiseToPay,
    Reminder,
    dispute_invoices,
)
from ledger.money import Money

NOT_DUE = (InvoiceStatus.void.value, InvoiceStatus.disputed.value)
# Written as a literal so SQLite can prove the partial indexes' "WHERE open_minor > 0" (a bound
# parameter would hide it).
OPEN = Invoice.open_minor > literal_column("0")
METHODS = tuple(PaymentMethod)  # payments by hand (cheque, LCR, cash, set-off) are cash collected too
ONLINE_METHODS = DEBTOR_METHODS  # always listed; the others when used
BUCKETS = (
    ("not_due", N_("Not yet due")),
    ("1_30", N_("1–30 days")),
    ("31_60", N_("31–60 days")),
    ("61_90", N_("61–90 days")),
    ("over_90", N_("Over 90 days")),
)
TOP_CUSTOMERS = 10
DSO_DAYS = 90
CEI_DAYS = 30
PAY_DAYS = 90


@dataclass(frozen=True)
class Scope:
    """What the dashboard covers: these companies (already limited to what the user may see),
    only the customers of one collector when `collector_id` is set, one currency when set."""

    company_ids: tuple[int, ...]
    collector_id: int | None = None
    currency: str | None = None


def bucket_of(days_past_due: int) -> str:
    if days_past_due <= 0:
        return "not_due"
    if days_past_due <= 30:
        return "1_30"
    if days_past_due <= 60:
        return "31_60"
    if days_past_due <= 90:
        return "61_90"
    return "over_90"


# --- amounts in several currencies, converted ---------------------------------------------------


@dataclass
class Amount:
    """One figure: its part in each currency, and their total in the base currency where rates allow."""

    base: str
    parts: list[Money]
    converted: Money
    missing: list[str]  # currencies left out of `converted` for want of a rate

    @property
    def complete(self) -> bool:
        return not self.missing

    def part(self, currency: str) -> Money | None:
        return next((p for p in self.parts if p.currency == currency), None)

    @property
    def foreign(self) -> bool:
        """True when some part is not in the base currency (the converted total says something more)."""
        return any(part.currency != self.base for part in self.parts)


class Converter:
    """Converts into one company's base currency and remembers which rates it used or lacked."""

    def __init__(self, book: RateBook, base: str) -> None:
        self.book = book
        self.base = base
        self.used: dict[str, Conversion] = {}
        self.missing: set[str] = set()

    def to_base(self, money: Money) -> Money | None:
        if money.currency == self.base:
            return money
        conversion = self.book.convert(money, self.base)
        if conversion is None:
            self.missing.add(money.currency)
            return None
        self.used.setdefault(money.currency, conversion)
        return conversion.amount

    def amount(self, minor_by_currency: dict[str, int]) -> Amount:
        parts = [Money(int(minor), currency) for currency, minor in _ordered(minor_by_currency, self.base)]
        total = 0
        missing = []
        for part in parts:
            converted = self.to_base(part)
            if converted is None:
                missing.append(part.currency)
            else:
                total += converted.minor
        return Amount(self.base, parts, Money(total, self.base), missing)


def _apportioned(convert: Converter, parts: list[tuple[str, str, dict[str, int]]], whole: dict[str, int]
                 ) -> list[tuple[str, str, Amount]]:
    """The parts of a figure (non-negative amounts per currency), converted so that they add up to
    the figure converted, to the cent: each currency's whole is converted once and shared among
    the parts in proportion to their amounts, the cents left over going to the largest remainders.
    (Converting and rounding each part on its own can leave the sum a cent off the total.)"""
    shares: dict[str, int] = {key: 0 for key, _label, _amounts in parts}
    for currency, total in whole.items():
        converted = convert.to_base(Money(int(total), currency)) if total else None
        if converted is None:
            continue
        amounts = [(key, int(minor_by_currency.get(currency, 0))) for key, _label, minor_by_currency in parts]
        floors = {key: minor * converted.minor // total for key, minor in amounts}
        leftover = converted.minor - sum(floors.values())
        by_remainder = sorted(amounts, key=lambda item: -(item[1] * converted.minor % total))
        for key, _minor in by_remainder[:leftover]:
            floors[key] += 1
        for key, share in floors.items():
            shares[key] += share
    return [(key, label, replace(convert.amount(minor_by_currency), converted=Money(shares[key], convert.base)))
            for key, label, minor_by_currency in parts]


def _ordered(values: dict[str, Any], base: str) -> list[tuple[str, Any]]:
    return sorted(values.items(), key=lambda item: (item[0] != base, item[0]))


# --- the page's figures -------------------------------------------------------------------------


@dataclass
class Ratio:
    """A ratio per currency and, where every rate exists, over all currencies in the base currency."""

    by_currency: dict[str, Decimal | None]
    overall: Decimal | None


@dataclass
class TopCustomer:
    """One customer, once: its overdue in each currency and their total in the base currency
    (None when a currency has no rate)."""

    customer_id: int
    ref: str
    name: str
    overdue: list[Money]
    converted: Money | None


@dataclass
class Funnel:
    reminded: int = 0
    opened: int = 0
    paid_online: int = 0

    def rate(self, part: int, whole: int) -> Decimal | None:
        if not whole:
            return None
        return (Decimal(100 * part) / Decimal(whole)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


@dataclass
class CompanyDashboard:
    company: Company
    today: date
    week: tuple[date, date]
    outstanding: Amount
    overdue: Amount
    aging: list[tuple[str, str, Amount]]  # (key, label message id, amount)
    disputed: Amount
    open_disputes: int
    credit_notes: Amount
    net_balance: Amount
    dso: Ratio
    cei: Ratio
    days_to_pay: Ratio
    promises_due: Amount
    promises_due_count: int
    promises_broken: Amount
    promises_broken_count: int
    cash: list[tuple[str, Amount, Amount]]  # per method: last 30 days, last 90 days
    cash_30_total: Amount
    cash_90_total: Amount
    funnel: Funnel
    top_overdue: list[TopCustomer]
    rates_used: list[Conversion]
    missing_rates: list[str]
    currencies: list[str]


@dataclass
class Dashboard:
    companies: list[CompanyDashboard] = field(default_factory=list)


# --- query helpers ------------------------------------------------------------------------------


def _invoice_scope(query: Any, scope: Scope, company_ids: list[int]) -> Any:
    query = query.where(Invoice.company_id.in_(company_ids))
    if scope.collector_id is not None:
        query = query.where(Invoice.customer_id.in_(select(Customer.id).where(Customer.collector_id == scope.collector_id)))
    if scope.currency:
        query = query.where(Invoice.currency == scope.currency)
    return query


def _customer_scope(query: Any, scope: Scope, company_ids: list[int]) -> Any:
    """For a query joined with Customer."""
    query = query.where(Customer.company_id.in_(company_ids))
    if scope.collector_id is not None:
        query = query.where(Customer.collector_id == scope.collector_id)
    return query


def _local_midnight_utc(day: date, tz: str) -> datetime:
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(tz)).astimezone(timezone.utc)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _add(target: dict[Any, dict[str, int]], key: Any, currency: str, minor: int) -> None:
    target[key][currency] = target[key].get(currency, 0) + int(minor or 0)


def _nested() -> defaultdict[Any, dict[str, int]]:
    return defaultdict(dict)


# --- building -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Days:
    """One company's calendar: today in its timezone and the windows counted back from it."""

    today: date
    d30: date
    d90: date
    monday: date
    sunday: date

    @classmethod
    def of(cls, today: date) -> _Days:
        monday = today - timedelta(days=today.weekday())
        return cls(today, today - timedelta(days=CEI_DAYS - 1), today - timedelta(days=DSO_DAYS - 1), monday,
                   monday + timedelta(days=6))


def build_dashboard(session: Session, scope: Scope, use_aggregates: bool = True) -> Dashboard:
    """Every figure for the companies of `scope`. One query per figure for all companies at once,
    over the union of their windows (companies in different timezones may be on different days);
    each company's own window is applied when folding the rows grouped by day.

    Open items, sales and payments are read from the running totals kept by triggers
    (`OpenItemsByDue`, `InvoicesIssuedByDay`, `PaymentDay`), a few thousand rows instead of a
    million invoices. Those are per company, not per collector: a collector's dashboard (a slice
    of the customers) groups the invoices and payments themselves, as does `use_aggregates=False`,
    which the tests use to check the totals against the rows."""
    companies = list(session.scalars(select(Company).where(Company.id.in_(scope.company_ids or [-1]))
                                     .order_by(Company.name, Company.id)))
    if not companies:
        return Dashboard([])
    ids = [c.id for c in companies]
    days = {c.id: _Days.of(clock.today(c.timezone)) for c in companies}
    first_d90 = min(d.d90 for d in days.values())
    first_d30 = min(min(d.d30, d.monday) for d in days.values())
    last_today = max(d.today for d in days.values())
    last_sunday = max(d.sunday for d in days.values())

    # Open items by company, currency, kind, status and due date (ix_invoices_open_items).
    outstanding, overdue, disputed, credits = _nested(), _nested(), _nested(), _nested()
    aging: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    currencies: dict[int, set[str]] = defaultdict(set)
    live = scope.collector_id is not None or not use_aggregates
    by_today: dict[date, list[int]] = defaultdict(list)
    for company_id, window in days.items():
        by_today[window.today].append(company_id)
    for today, group in by_today.items():
        for company_id, currency, kind, status, bucket, minor in _open_items(session, scope, group, today, live):
            currencies[company_id].add(currency)
            if kind == InvoiceKind.credit_note.value:
                _add(credits, company_id, currency, minor)
            elif status == InvoiceStatus.disputed.value:
                _add(disputed, company_id, currency, minor)
            else:
                _add(outstanding, company_id, currency, minor)
                _add(aging, (company_id, bucket), currency, minor)
                if bucket != "not_due":
                    _add(overdue, company_id, currency, minor)

    # Invoices issued over the last 90 days, by day (ix_invoices_issued).
    sales_90 = _nested()
    for issue_date, company_id, currency, minor in _issued(session, scope, ids, first_d90, last_today, live):
        window, issue_date = days[company_id], _as_date(issue_date)
        if window.d90 <= issue_date <= window.today:
            currencies[company_id].add(currency)
            _add(sales_90, company_id, currency, minor)

    # Cash collected by method, by day (ix_payments_received).
    cash_30: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    cash_90: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    collected_30 = _nested()
    for company_id, currency, method, received_on, minor in _cash(session, scope, ids, first_d90, last_today, live):
        window, received_on = days[company_id], _as_date(received_on)
        if not window.d90 <= received_on <= window.today:
            continue
        currencies[company_id].add(currency)
        _add(cash_90, (company_id, method), currency, minor)
        if received_on >= window.d30:
            _add(cash_30, (company_id, method), currency, minor)
            _add(collected_30, company_id, currency, minor)

    # Days to pay: what those payments settled, weighted by amount, by payment day
    # (ix_payments_received, ix_allocations_payment_invoice; the invoice gives issue date and company).
    paid_amount, paid_days = _nested(), _nested()
    for company_id, currency, received_on, amount, weighted in _settled(session, scope, ids, first_d90, last_today,
                                                                         live):
        window = days[company_id]
        if window.d90 <= _as_date(received_on) <= window.today:
            _add(paid_amount, company_id, currency, amount)
            _add(paid_days, company_id, currency, weighted)

    # Open disputes (cases), by company.
    dispute_query = _customer_scope(
        select(Customer.company_id, func.count(Dispute.id))
        .join(Customer, Customer.id == Dispute.customer_id)
        .where(Dispute.kind == "dispute", Dispute.status == "open"), scope, ids)
    if scope.currency:
        dispute_query = dispute_query.where(Dispute.id.in_(
            select(dispute_invoices.c.dispute_id).join(Invoice, Invoice.id == dispute_invoices.c.invoice_id)
            .where(Invoice.currency == scope.currency)))
    open_disputes = dict(session.execute(dispute_query.group_by(Customer.company_id)).all())

    # Promises: pending up to this Sunday, broken or pending dated within the last 30 days.
    grace = {c.id: c.promise_grace_days for c in companies}
    promise_query = _customer_scope(
        select(Customer.company_id, PromiseToPay.status, PromiseToPay.promised_for, PromiseToPay.currency,
               func.count(PromiseToPay.id), func.sum(PromiseToPay.amount_minor))
        .join(Customer, Customer.id == PromiseToPay.customer_id)
        .where(PromiseToPay.status.in_(("pending", "broken")), PromiseToPay.promised_for >= first_d30,
               PromiseToPay.promised_for <= last_sunday), scope, ids)
    if scope.currency:
        promise_query = promise_query.where(PromiseToPay.currency == scope.currency)
    due_week, broken = _nested(), _nested()
    due_count: dict[int, int] = defaultdict(int)
    broken_count: dict[int, int] = defaultdict(int)
    for company_id, status, promised_for, currency, count, minor in session.execute(
            promise_query.group_by(Customer.company_id, PromiseToPay.status, PromiseToPay.promised_for,
                                   PromiseToPay.currency)):
        window, promised_for = days[company_id], _as_date(promised_for)
        lapsed = window.today > promised_for + timedelta(days=grace[company_id])
        if status == "broken" or lapsed:
            if window.d30 <= promised_for <= window.today:
                _add(broken, company_id, currency, minor)
                broken_count[company_id] += int(count)
        elif window.monday <= promised_for <= window.sunday:
            _add(due_week, company_id, currency, minor)
            due_count[company_id] += int(count)

    funnel: dict[int, Funnel] = {}
    by_tz: dict[str, list[Company]] = defaultdict(list)
    for company in companies:
        by_tz[company.timezone].append(company)
    for tz, group in by_tz.items():  # small tables, but timestamps: one window per timezone
        window = days[group[0].id]
        funnel.update(_funnel(session, scope, [c.id for c in group], tz, window.today, window.d30))
    wanted = {cid: (days[cid].today, sorted(overdue[cid])) for cid in ids}
    top = _top_overdue_from_balances(session, scope, wanted) if use_aggregates else {}
    for cid, rows in _top_overdue(session, scope, {cid: (today, [c for c in currencies if (cid, c) not in top])
                                                   for cid, (today, currencies) in wanted.items()}).items():
        for row in rows:
            top.setdefault((cid, row[3].currency), []).append(row)
    candidates: dict[int, set[int]] = defaultdict(set)
    for (cid, _currency), rows in top.items():
        candidates[cid].update(row[0] for row in rows)
    top_by_company = _overdue_by_customer(session, scope, {cid: (days[cid].today, found)
                                                            for cid, found in candidates.items()})

    books: dict[date, RateBook] = {}
    built: list[CompanyDashboard] = []
    for company in companies:
        window = days[company.id]
        if window.today not in books:
            books[window.today] = RateBook.load(session, window.today)
        convert = Converter(books[window.today], company.base_currency)
        cid = company.id
        net = {cur: outstanding[cid].get(cur, 0) - credits[cid].get(cur, 0)
               for cur in set(outstanding[cid]) | set(credits[cid])}
        top_rows = []
        for customer_id, ref, name, by_currency in top_by_company.get(cid, []):
            total = convert.amount(by_currency)
            top_rows.append(TopCustomer(customer_id, ref, name, total.parts, total.converted if total.complete else None))
        top_rows.sort(key=lambda t: (t.converted is None, -(t.converted.minor if t.converted else
                                                             max(m.minor for m in t.overdue)), t.customer_id))
        built.append(CompanyDashboard(
            company=company,
            today=window.today,
            week=(window.monday, window.sunday),
            outstanding=convert.amount(outstanding[cid]),
            overdue=convert.amount(overdue[cid]),
            aging=_apportioned(convert, [(key, label, aging[(cid, key)]) for key, label in BUCKETS], outstanding[cid]),
            disputed=convert.amount(disputed[cid]),
            open_disputes=int(open_disputes.get(cid, 0)),
            credit_notes=convert.amount(credits[cid]),
            net_balance=convert.amount(net),
            dso=_ratio(convert, outstanding[cid], sales_90[cid], lambda r, s: r * DSO_DAYS / s),
            cei=_cei(convert, collected_30[cid], overdue[cid]),
            days_to_pay=_weighted_days(convert, paid_amount[cid], paid_days[cid]),
            promises_due=convert.amount(due_week[cid]),
            promises_due_count=due_count[cid],
            promises_broken=convert.amount(broken[cid]),
            promises_broken_count=broken_count[cid],
            cash=[(m, convert.amount(cash_30[(cid, m)]), convert.amount(cash_90[(cid, m)])) for m in METHODS
                  if m in ONLINE_METHODS or any(cash_90[(cid, m)].values())],
            cash_30_total=convert.amount(_sum_by_currency(cash_30[(cid, m)] for m in METHODS)),
            cash_90_total=convert.amount(_sum_by_currency(cash_90[(cid, m)] for m in METHODS)),
            funnel=funnel.get(cid, Funnel()),
            top_overdue=top_rows[:TOP_CUSTOMERS],
            rates_used=[convert.used[c] for c in sorted(convert.used)],
            missing_rates=sorted(convert.missing),
            currencies=[c for c, _ in _ordered({c: 0 for c in currencies[cid]}, company.base_currency)],
        ))
    return Dashboard(built)


# --- the grouped rows each figure folds: from the running totals, or from the rows themselves ---


def _aging_bucket(due_date: Any, today: date) -> ColumnElement[str]:
    """The aging bucket of a due date as of `today`, in SQL (as `bucket_of` on the days past due)."""
    return case((due_date >= today, "not_due"), (due_date >= today - timedelta(days=30), "1_30"),
                (due_date >= today - timedelta(days=60), "31_60"), (due_date >= today - timedelta(days=90), "61_90"),
                else_="over_90")


def _open_items(session: Session, scope: Scope, ids: list[int], today: date, live: bool) -> Iterable[Any]:
    """(company, currency, kind, status, aging bucket, open amount) of open, non-void items."""
    if live:  # ix_invoices_open_items
        bucket = _aging_bucket(Invoice.due_date, today)
        return session.execute(_invoice_scope(
            select(Invoice.company_id, Invoice.currency, Invoice.kind, Invoice.status, bucket,
                   func.sum(Invoice.open_minor))
            .where(OPEN, Invoice.status != InvoiceStatus.void.value), scope, ids)
            .group_by(Invoice.company_id, Invoice.currency, Invoice.kind, Invoice.status, bucket))
    items = OpenItemsByDue
    bucket = _aging_bucket(items.due_date, today)
    query = (select(items.company_id, items.currency, items.kind, items.status, bucket, func.sum(items.open_minor))
             .where(items.company_id.in_(ids), items.open_minor != 0, items.status != InvoiceStatus.void.value)
             .group_by(items.company_id, items.currency, items.kind, items.status, bucket))
    if scope.currency:
        query = query.where(items.currency == scope.currency)
    return session.execute(query)


def _issued(session: Session, scope: Scope, ids: list[int], first: date, last: date, live: bool) -> Iterable[Any]:
    """(issue date, company, currency, total) of invoices issued from `first` to `last`."""
    if live:  # ix_invoices_issued
        return session.execute(_invoice_scope(
            select(Invoice.issue_date, Invoice.company_id, Invoice.currency, func.sum(Invoice.total_minor))
            .where(Invoice.issue_date >= first, Invoice.issue_date <= last,
                   Invoice.kind == InvoiceKind.invoice.value, Invoice.status != InvoiceStatus.void.value), scope, ids)
            .group_by(Invoice.issue_date, Invoice.company_id, Invoice.currency))
    day = InvoicesIssuedByDay
    query = (select(day.issue_date, day.company_id, day.currency, day.total_minor)
             .where(day.company_id.in_(ids), day.issue_date >= first, day.issue_date <= last, day.total_minor != 0))
    if scope.currency:
        query = query.where(day.currency == scope.currency)
    return session.execute(query)


def _cash(session: Session, scope: Scope, ids: list[int], first: date, last: date, live: bool) -> Iterable[Any]:
    """(company, currency, method, day received, amount) of succeeded payments."""
    if live:  # ix_payments_received
        query = _customer_scope(
            select(Customer.company_id, Payment.currency, Payment.method, Payment.received_on,
                   func.sum(Payment.amount_minor))
            .join(Customer, Customer.id == Payment.customer_id)
            .where(Payment.status == PaymentStatus.succeeded.value, Payment.received_on >= first,
                   Payment.received_on <= last), scope, ids)
        if scope.currency:
            query = query.where(Payment.currency == scope.currency)
        return session.execute(
            query.group_by(Customer.company_id, Payment.currency, Payment.method, Payment.received_on))
    query = (select(PaymentDay.company_id, PaymentDay.currency, PaymentDay.method, PaymentDay.received_on,
                    PaymentDay.collected_minor)
             .where(PaymentDay.company_id.in_(ids), PaymentDay.received_on >= first, PaymentDay.received_on <= last,
                    PaymentDay.collected_minor != 0))
    if scope.currency:
        query = query.where(PaymentDay.currency == scope.currency)
    return session.execute(query)


def _settled(session: Session, scope: Scope, ids: list[int], first: date, last: date, live: bool) -> Iterable[Any]:
    """(company, currency, day received, amount settled, amount × days from issue to payment) of what
    the succeeded payments received from `first` to `last` settled."""
    if live:  # ix_payments_received, ix_allocations_payment_invoice; the invoice gives issue date and company
        day_count = days_between(session, Payment.received_on, Invoice.issue_date)
        query = _invoice_scope(
            select(Invoice.company_id, Allocation.currency, Payment.received_on, func.sum(Allocation.amount_minor),
                   func.sum(Allocation.amount_minor * day_count))
            .select_from(Payment)
            .join(Allocation, Allocation.payment_id == Payment.id)
            .join(Invoice, Invoice.id == Allocation.invoice_id)
            .where(Payment.status == PaymentStatus.succeeded.value, Payment.received_on >= first,
                   Payment.received_on <= last), scope, ids)
        return session.execute(query.group_by(Invoice.company_id, Allocation.currency, Payment.received_on))
    query = (select(PaymentDay.company_id, PaymentDay.currency, PaymentDay.received_on,
                    func.sum(PaymentDay.settled_minor), func.sum(PaymentDay.settled_days_minor))
             .where(PaymentDay.company_id.in_(ids), PaymentDay.received_on >= first, PaymentDay.received_on <= last,
                    PaymentDay.settled_minor != 0))
    if scope.currency:
        query = query.where(PaymentDay.currency == scope.currency)
    return session.execute(query.group_by(PaymentDay.company_id, PaymentDay.currency, PaymentDay.received_on))


def _sum_by_currency(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for currency, minor in part.items():
            total[currency] = total.get(currency, 0) + minor
    return total


def _one_decimal(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _ratio(convert: Converter, numerator: dict[str, int], denominator: dict[str, int], formula: Any) -> Ratio:
    """formula(numerator, denominator) per currency (None without a denominator), and over all
    currencies converted to the base one when every rate exists."""
    rows: dict[str, Decimal | None] = {}
    for currency, _ in _ordered({c: 0 for c in set(numerator) | set(denominator)}, convert.base):
        num, den = Decimal(numerator.get(currency, 0)), Decimal(denominator.get(currency, 0))
        rows[currency] = _one_decimal(formula(num, den)) if den else None
    num_all, den_all = convert.amount(numerator), convert.amount(denominator)
    overall = None
    if num_all.complete and den_all.complete and den_all.converted.minor:
        overall = _one_decimal(formula(Decimal(num_all.converted.minor), Decimal(den_all.converted.minor)))
    return Ratio(rows, overall)


def _cei(convert: Converter, collected: dict[str, int], overdue: dict[str, int]) -> Ratio:
    # CEI = C ÷ (C + overdue) × 100: the denominator is collected + overdue, per currency.
    denominator = {c: collected.get(c, 0) + overdue.get(c, 0) for c in set(collected) | set(overdue)}
    return _ratio(convert, collected, denominator, lambda c, d: c * 100 / d)


def _weighted_days(convert: Converter, amounts: dict[str, int], weighted: dict[str, int]) -> Ratio:
    rows: dict[str, Decimal | None] = {}
    total_weight = Decimal(0)
    total_days = Decimal(0)
    complete = True
    for currency, amount in _ordered(amounts, convert.base):
        if not amount:
            rows[currency] = None
            continue
        average = Decimal(weighted.get(currency, 0)) / Decimal(amount)
        rows[currency] = _one_decimal(average)
        converted = convert.to_base(Money(int(amount), currency))
        if converted is None:
            complete = False
        else:
            total_weight += converted.minor
            total_days += converted.minor * average
    overall = _one_decimal(total_days / total_weight) if complete and total_weight else None
    return Ratio(rows, overall)


def _funnel(session: Session, scope: Scope, ids: list[int], tz: str, today: date, d30: date) -> dict[int, Funnel]:
    since = _local_midnight_utc(d30, tz)
    reminded = _customer_scope(
        select(Reminder.customer_id)
        .join(OutboxMessage, OutboxMessage.id == Reminder.outbox_id)
        .join(Customer, Customer.id == Reminder.customer_id)
        .where(OutboxMessage.status == "sent", OutboxMessage.sent_at >= since), scope, ids)
    opened = (select(Contact.customer_id).join(LinkOpen, LinkOpen.contact_id == Contact.id)
              .where(LinkOpen.opened_at >= since, Contact.customer_id.in_(reminded)))
    paid = select(Payment.customer_id).where(
        Payment.status == PaymentStatus.succeeded.value, Payment.checkout_id.is_not(None),
        Payment.received_on >= d30, Payment.received_on <= today, Payment.customer_id.in_(opened))
    if scope.currency:
        paid = paid.where(Payment.currency == scope.currency)
    result: dict[int, Funnel] = defaultdict(Funnel)
    for stage, members in (("reminded", reminded), ("opened", opened), ("paid_online", paid)):
        query = (select(Customer.company_id, func.count(Customer.id)).where(Customer.id.in_(members))
                 .group_by(Customer.company_id))
        for company_id, count in session.execute(query):
            setattr(result[company_id], stage, int(count))
    return result


# Candidates read from the customers list's sort keys before the exact per-currency sums.
TOP_CANDIDATES = 40


def _top_overdue_from_balances(session: Session, scope: Scope, wanted: dict[int, tuple[date, list[str]]]
                               ) -> dict[tuple[int, str], list[tuple[int, str, str, Money]]]:
    """The top overdue customers of each (company, currency) that the customers list's sort keys
    prove exactly, without summing every overdue invoice of the company.

    `CustomerBalance.overdue_minor` is each customer's largest per-currency overdue amount as of
    `BalanceState.as_of` (kept by triggers, moved daily). Overdue only grows with the day it is
    counted from, so when that day is not before the company's today, it bounds what the customer
    owes overdue today in any one currency. The TOP_CANDIDATES customers with the largest keys
    get their exact sums; a currency whose tenth exact amount exceeds the next candidate's key
    (the bound for every customer not read) is proven, and the others are left to `_top_overdue`."""
    as_of = session.scalar(select(BalanceState.as_of).where(BalanceState.id == 1))
    proven: dict[tuple[int, str], list[tuple[int, str, str, Money]]] = {}
    for company_id, (today, currencies) in wanted.items():
        if as_of is None or _as_date(as_of) < today or not currencies:
            continue
        candidates = _customer_scope(
            select(CustomerBalance.customer_id, CustomerBalance.overdue_minor)
            .join(Customer, Customer.id == CustomerBalance.customer_id)
            .where(CustomerBalance.overdue_minor > 0), scope, [company_id]
        ).order_by(CustomerBalance.overdue_minor.desc(), CustomerBalance.customer_id.desc()).limit(TOP_CANDIDATES + 1)
        keys = session.execute(candidates).all()
        read = [customer_id for customer_id, _key in keys[:TOP_CANDIDATES]]
        bound = keys[TOP_CANDIDATES][1] if len(keys) > TOP_CANDIDATES else 0  # 0: every debtor was read
        total = func.sum(Invoice.open_minor)
        sums = session.execute(
            select(Invoice.customer_id, Invoice.currency, total)
            .where(Invoice.customer_id.in_(read or [-1]), Invoice.currency.in_(currencies), OPEN,
                   Invoice.kind == InvoiceKind.invoice.value, Invoice.status.not_in(NOT_DUE), Invoice.due_date < today)
            .group_by(Invoice.customer_id, Invoice.currency)).all()
        names = {row.id: row for row in session.execute(
            select(Customer.id, Customer.ref, Customer.name).where(Customer.id.in_(read or [-1])))}
        for currency in currencies:
            ranked = sorted(((int(minor), customer_id) for customer_id, cur, minor in sums if cur == currency and minor),
                            key=lambda item: (-item[0], item[1]))[:TOP_CUSTOMERS]
            if len(ranked) == TOP_CUSTOMERS and ranked[-1][0] > bound or bound == 0:
                proven[(company_id, currency)] = [
                    (customer_id, names[customer_id].ref, names[customer_id].name, Money(minor, currency))
                    for minor, customer_id in ranked]
    return proven


def _top_overdue(session: Session, scope: Scope, wanted: dict[int, tuple[date, list[str]]]
                 ) -> dict[int, list[tuple[int, str, str, Money]]]:
    """The largest overdue amounts of each company in each currency (one row per customer and
    currency), ranked in SQL: one small query per company and currency, all in one statement,
    each reading its slice of ix_invoices_open_by_customer; the caller ranks them again converted."""
    total = func.sum(Invoice.open_minor)
    parts = []
    for company_id, (today, currencies) in wanted.items():
        for currency in currencies:
            part = _invoice_scope(
                select(Invoice.customer_id.label("customer_id"), Invoice.currency.label("currency"),
                       total.label("overdue"))
                .where(Invoice.company_id == company_id, Invoice.currency == currency, OPEN,
                       Invoice.kind == InvoiceKind.invoice.value, Invoice.status.not_in(NOT_DUE),
                       Invoice.due_date < today), scope, [company_id])
            ranked_part = (part.group_by(Invoice.customer_id, Invoice.currency)
                           .order_by(total.desc(), Invoice.customer_id).limit(TOP_CUSTOMERS))
            parts.append(select(ranked_part.subquery()))
    if not parts:
        return {}
    ranked = session.execute(union_all(*parts)).all()
    customers = {row.id: row for row in session.execute(
        select(Customer.id, Customer.company_id, Customer.ref, Customer.name)
        .where(Customer.id.in_({customer_id for customer_id, _c, _o in ranked})))}
    found: dict[int, list[tuple[int, str, str, Money]]] = defaultdict(list)
    for customer_id, currency, overdue in ranked:
        customer = customers[customer_id]
        found[customer.company_id].append((customer_id, customer.ref, customer.name, Money(int(overdue), currency)))
    return found


def _overdue_by_customer(session: Session, scope: Scope, wanted: dict[int, tuple[date, set[int]]]
                         ) -> dict[int, list[tuple[int, str, str, dict[str, int]]]]:
    """Per company, its top candidates (the largest debtors in each currency) with what each owes
    overdue in every currency: a customer is one row however many currencies it owes in."""
    found: dict[int, list[tuple[int, str, str, dict[str, int]]]] = defaultdict(list)
    for company_id, (today, customer_ids) in wanted.items():
        if not customer_ids:
            continue
        sums: dict[int, dict[str, int]] = defaultdict(dict)
        for customer_id, currency, minor in session.execute(_invoice_scope(
                select(Invoice.customer_id, Invoice.currency, func.sum(Invoice.open_minor))
                .where(Invoice.customer_id.in_(customer_ids), OPEN, Invoice.kind == InvoiceKind.invoice.value,
                       Invoice.status.not_in(NOT_DUE), Invoice.due_date < today), scope, [company_id])
                .group_by(Invoice.customer_id, Invoice.currency)):
            if minor:
                sums[customer_id][currency] = int(minor)
        for customer_id, ref, name in session.execute(
                select(Customer.id, Customer.ref, Customer.name).where(Customer.id.in_(customer_ids))):
            if sums.get(customer_id):
                found[company_id].append((customer_id, ref, name, sums[customer_id]))
    return found


# --- bank reconciliation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BankShare:
    amount: Money
    count: int
    percent: Decimal | None  # of the incoming amount in this currency; None when nothing came in


@dataclass(frozen=True)
class BankState:
    """Money received on a company's accounts in one currency (credits, not returned transfers,
    every statement imported), by what became of it."""

    currency: str
    incoming: Money
    automatic: BankShare  # matched by a rule, no person involved
    by_hand: BankShare  # matched or confirmed by staff
    set_aside: BankShare  # not a customer payment
    unmatched: BankShare  # still to do: unmatched or only suggested
    oldest_unmatched: date | None


def bank_state(session: Session, company_ids: Sequence[int], currency: str | None = None) -> dict[int, list[BankState]]:
    """Per company, per currency (base currency first), from the running totals `BankEntryDay`
    (kept by triggers on the entries): one indexed read of a few rows per day, never the entries."""
    if not company_ids:
        return {}
    days = BankEntryDay
    query = (
        select(days.company_id, days.currency, days.kind, func.sum(days.amount_minor), func.sum(days.entries),
               func.min(case((days.entries > 0, days.day))))
        .where(days.company_id.in_(list(company_ids)))
        .group_by(days.company_id, days.currency, days.kind)
    )
    if currency:
        query = query.where(days.currency == currency)
    sums: dict[tuple[int, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    oldest: dict[tuple[int, str], date] = {}
    for company_id, code, kind, minor, count, first in session.execute(query):
        if not count:
            continue
        bucket = sums[(company_id, code)][kind]
        bucket[0] += int(minor or 0)
        bucket[1] += int(count)
        if kind == "unmatched" and first is not None and first != FAR_FUTURE:
            oldest[(company_id, code)] = first
    bases = dict(session.execute(select(Company.id, Company.base_currency).where(Company.id.in_(list(company_ids)))).all())
    found: dict[int, list[BankState]] = defaultdict(list)
    for (company_id, code), kinds in sorted(sums.items(), key=lambda item: (item[0][0], item[0][1] != bases.get(
            item[0][0]), item[0][1])):
        total = sum(minor for minor, _count in kinds.values())

        def share(kind: str) -> BankShare:
            minor, count = kinds.get(kind, [0, 0])
            percent = (Decimal(minor * 100) / Decimal(total)).quantize(Decimal("0.1")) if total else None
            return BankShare(Money(minor, code), count, percent)

        found[company_id].append(BankState(code, Money(total, code), share("automatic"), share("by_hand"),
                                           share("set_aside"), share("unmatched"), oldest.get((company_id, code))))
    return dict(found)
