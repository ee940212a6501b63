"""Reports per collector over a period, for one company (definitions also printed on the page):

- Collected: what succeeded payments received in the period (by the day received) settled on
  invoices of the collector's customers (allocations, early-payment discounts excluded).
- Promises made: promises to pay of its customers made in the period; kept: those of them kept.
- Disputes resolved: disputes of its customers accepted or rejected in the period.
- DSO by month, the dashboard's simple method at each month's end (or the period's end):
  outstanding ÷ invoices issued over the 90 days before × 90; outstanding at a day being the
  invoices issued by then less what payments received by then, credit notes applied by then and
  settlements outside Encours by then settled on them.
The collector is the one the customer has today. Amounts are converted into the company's
currency with the latest rates on or before the period's end (`admin.dashboard_service.Converter`);
a currency without a rate is left out and named. Grouped in SQL per collector, currency and day.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from admin.dashboard_service import DSO_DAYS, Amount, Converter
from ledger.fx import RateBook
from ledger.models import (
    Allocation,
    Company,
    Customer,
    Dispute,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    PromiseToPay,
    User,
)

MAX_MONTHS = 24


@dataclass
class CollectorReport:
    collector_id: int | None
    email: str | None  # None: customers without a collector
    collected: Amount
    promises_made: int = 0
    promises_kept: int = 0
    disputes_resolved: int = 0
    dso: list[tuple[date, Decimal | None]] = field(default_factory=list)  # (month end, days)


@dataclass
class Report:
    company: Company
    first: date
    last: date
    months: list[date]  # the day each month's DSO is taken
    rows: list[CollectorReport]
    missing_rates: list[str]


def month_ends(first: date, last: date) -> list[date]:
    ends: list[date] = []
    month = date(first.year, first.month, 1)
    while month <= last:
        following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        ends.append(min(following - timedelta(days=1), last))
        month = following
    return ends


def _midnight(day: date, tz: str) -> datetime:
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(tz)).astimezone(timezone.utc)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def build_report(session: Session, company: Company, first: date, last: date,
                 collector_ids: Iterable[int | None] | None = None) -> Report:
    """Every collector of the company (and "nobody"), or only `collector_ids`."""
    company_customers = select(Customer.id).where(Customer.company_id == company.id)
    start, end = _midnight(first, company.timezone), _midnight(last + timedelta(days=1), company.timezone)
    convert = Converter(RateBook.load(session, last), company.base_currency)

    collected: dict[int | None, dict[str, int]] = defaultdict(dict)
    for collector_id, currency, minor in session.execute(
            select(Customer.collector_id, Allocation.currency, func.sum(Allocation.amount_minor))
            .select_from(Payment).join(Allocation, Allocation.payment_id == Payment.id)
            .join(Invoice, Invoice.id == Allocation.invoice_id).join(Customer, Customer.id == Invoice.customer_id)
            .where(Payment.status == PaymentStatus.succeeded.value, Payment.received_on >= first,
                   Payment.received_on <= last, Invoice.company_id == company.id)
            .group_by(Customer.collector_id, Allocation.currency)):
        collected[collector_id][currency] = int(minor or 0)

    made: dict[int | None, int] = defaultdict(int)
    kept: dict[int | None, int] = defaultdict(int)
    for collector_id, status, count in session.execute(
            select(Customer.collector_id, PromiseToPay.status, func.count(PromiseToPay.id))
            .join(Customer, Customer.id == PromiseToPay.customer_id)
            .where(Customer.company_id == company.id, PromiseToPay.created_at >= start, PromiseToPay.created_at < end)
            .group_by(Customer.collector_id, PromiseToPay.status)):
        made[collector_id] += int(count)
        if status == "kept":
            kept[collector_id] += int(count)

    resolved: dict[int | None, int] = dict(session.execute(
        select(Customer.collector_id, func.count(Dispute.id)).join(Customer, Customer.id == Dispute.customer_id)
        .where(Customer.company_id == company.id, Dispute.kind == "dispute",
               Dispute.status.in_(("accepted", "rejected")), Dispute.closed_at >= start, Dispute.closed_at < end)
        .group_by(Customer.collector_id)).all())

    months = month_ends(first, last)
    dso = _dso(session, company, company_customers, months, convert)

    wanted: list[int | None]
    if collector_ids is None:
        assigned = set(session.scalars(select(Customer.collector_id).where(Customer.company_id == company.id)
                                       .distinct()))
        named: list[int] = sorted(c for c in assigned | set(collected) | set(made) | set(resolved) if c is not None)
        wanted = [*named, None]
    else:
        wanted = list(collector_ids)
    emails = dict(session.execute(select(User.id, User.email).where(
        User.id.in_([c for c in wanted if c is not None] or [-1]))).all())
    rows = [CollectorReport(collector_id=c, email=emails.get(c) if c is not None else None,
                            collected=convert.amount(collected.get(c, {})), promises_made=made.get(c, 0),
                            promises_kept=kept.get(c, 0), disputes_resolved=int(resolved.get(c, 0)),
                            dso=[(e, dso.get((c, e))) for e in months])
            for c in wanted]
    rows.sort(key=lambda r: (r.email is None, r.email or ""))
    return Report(company, first, last, months, rows, sorted(convert.missing))


def _dso(session: Session, company: Company, customers: Any, months: list[date],
         convert: Converter) -> dict[tuple[int | None, date], Decimal | None]:
    """(collector, month end) -> DSO in days, from what was issued and settled day by day."""
    if not months:
        return {}
    last = months[-1]
    # (collector, currency) -> [(day, +issued / -settled)]
    moves: dict[tuple[int | None, str], list[tuple[date, int]]] = defaultdict(list)
    issued: dict[tuple[int | None, str], list[tuple[date, int]]] = defaultdict(list)
    invoice_scope = (Invoice.company_id == company.id, Invoice.kind == InvoiceKind.invoice.value,
                     Invoice.status != InvoiceStatus.void.value)
    for collector_id, currency, day, minor in session.execute(
            select(Customer.collector_id, Invoice.currency, Invoice.issue_date, func.sum(Invoice.total_minor))
            .join(Customer, Customer.id == Invoice.customer_id)
            .where(*invoice_scope, Invoice.issue_date <= last)
            .group_by(Customer.collector_id, Invoice.currency, Invoice.issue_date)):
        moves[(collector_id, currency)].append((_as_date(day), int(minor or 0)))
        issued[(collector_id, currency)].append((_as_date(day), int(minor or 0)))
    for collector_id, currency, received_on, minor in session.execute(
            select(Customer.collector_id, Allocation.currency, Payment.received_on,
                   func.sum(Allocation.amount_minor + Allocation.discount_minor))
            .select_from(Payment).join(Allocation, Allocation.payment_id == Payment.id)
            .join(Invoice, Invoice.id == Allocation.invoice_id).join(Customer, Customer.id == Invoice.customer_id)
            .where(*invoice_scope, Payment.status == PaymentStatus.succeeded.value, Payment.received_on <= last)
            .group_by(Customer.collector_id, Allocation.currency, Payment.received_on)):
        if received_on is not None:
            moves[(collector_id, currency)].append((_as_date(received_on), -int(minor or 0)))
    zone = ZoneInfo(company.timezone)
    for collector_id, currency, at, minor in session.execute(
            select(Customer.collector_id, Allocation.currency, Allocation.created_at,
                   Allocation.amount_minor + Allocation.discount_minor)
            .join(Invoice, Invoice.id == Allocation.invoice_id).join(Customer, Customer.id == Invoice.customer_id)
            .where(*invoice_scope, Allocation.credit_note_id.is_not(None))):
        applied_on = at.astimezone(zone).date()
        if applied_on <= last:
            moves[(collector_id, currency)].append((applied_on, -int(minor or 0)))
    for collector_id, currency, settled_on, minor in session.execute(
            select(Customer.collector_id, Invoice.currency, Invoice.settled_outside_on,
                   func.sum(Invoice.settled_outside_minor))
            .join(Customer, Customer.id == Invoice.customer_id)
            .where(*invoice_scope, Invoice.settled_outside_minor > 0, Invoice.settled_outside_on <= last)
            .group_by(Customer.collector_id, Invoice.currency, Invoice.settled_outside_on)):
        moves[(collector_id, currency)].append((_as_date(settled_on), -int(minor or 0)))

    outstanding: dict[tuple[int | None, date], dict[str, int]] = defaultdict(dict)
    sales: dict[tuple[int | None, date], dict[str, int]] = defaultdict(dict)
    for (collector_id, currency), changes in moves.items():
        for end in months:
            outstanding[(collector_id, end)][currency] = sum(minor for day, minor in changes if day <= end)
    for (collector_id, currency), days in issued.items():
        for end in months:
            window = end - timedelta(days=DSO_DAYS - 1)
            sales[(collector_id, end)][currency] = sum(minor for day, minor in days if window <= day <= end)
    result: dict[tuple[int | None, date], Decimal | None] = {}
    for key in set(outstanding) | set(sales):
        owed, sold = convert.amount(outstanding.get(key, {})), convert.amount(sales.get(key, {}))
        if sold.converted.minor and owed.complete and sold.complete:
            result[key] = (Decimal(owed.converted.minor) * DSO_DAYS / Decimal(sold.converted.minor)).quantize(
                Decimal("0.1"), rounding=ROUND_HALF_UP)
        else:
            result[key] = None
    return result
