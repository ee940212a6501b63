"""The back-office lists as rows for a file: the same filters and scope as the pages, read in
batches so a list of any length streams without being held in memory. Services only: nothing
here sees HTTP; `admin.spreadsheets` writes the rows, `admin.exports` serves them.

Each list has its columns (English msgids, translated by the caller) and a function giving its
rows: amounts as `Money` beside a currency column, days as dates, moments as naive datetimes in
the company's time zone (the reader's, `admin.access.staff_zone`, for an event of no company).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable, Iterator, Mapping
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from admin import audit_service, book_service
from admin.access import scoped, staff_zone
from admin.audit_service import AuditQuery
from admin.customers_service import CustomerFilters, customer_query
from admin.dashboard_service import BUCKETS, bucket_of
from kernel.clock import clock
from kernel.i18n import N_
from ledger import audit
from ledger.models import (
    AuditEvent,
    Company,
    Customer,
    Dispute,
    DisputeReason,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    PromiseToPay,
    User,
)
from ledger.money import Money

BATCH = 1000
DISPUTE_STATUSES = ("open", "accepted", "rejected", "closed", "all")
PROMISE_STATUSES = ("pending", "kept", "broken", "cancelled")
Row = list[Any]
Labels = Callable[[str, Any], str]  # (kind of label, code) -> text in the reader's language


def batches(session: Session, query: Select[Any], size: int = BATCH) -> Iterator[list[Any]]:
    """The rows of an ordered query, `size` at a time."""
    offset = 0
    while True:
        found = list(session.execute(query.offset(offset).limit(size)))
        if not found:
            return
        yield found
        offset += len(found)


def local(moment: datetime | None, zone: str) -> datetime | None:
    """`moment` as the wall-clock time of `zone`, without its offset (spreadsheets hold no time zones)."""
    return moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None) if moment is not None else None


def _zones(session: Session) -> dict[int, str]:
    return {company_id: zone for company_id, zone in session.execute(select(Company.id, Company.timezone))}


# --- customers, with their aged balance ---------------------------------------------------------

CUSTOMER_COLUMNS = [
    N_("Ref"), N_("Name"), N_("Company"), N_("Segment"), N_("Collector"), N_("Currency"),
    N_("Outstanding"), *[label for _key, label in BUCKETS], N_("Overdue"), N_("Disputed"),
    N_("Open credit notes"), N_("Net balance"),
]


def customer_rows(session: Session, user: User, params: Mapping[str, str], labels: Labels) -> Iterator[Row]:
    """One row per customer and currency (a customer owing nothing: one row without amounts).
    Outstanding: open invoices neither void nor disputed, split by days past due into the aging
    columns, which add up to it exactly; overdue: its part past due; net balance: outstanding
    less open credit notes (the dashboard's definitions)."""
    filters = CustomerFilters.from_params(params)
    ids = customer_query(session, filters, lambda q: scoped(q, user))
    listed = select(Customer.id, Customer.ref, Customer.name, Company.code, Customer.segment, User.email) \
        .join(Company, Company.id == Customer.company_id).outerjoin(User, User.id == Customer.collector_id) \
        .where(Customer.id.in_(ids)).order_by(Customer.name, Customer.id)
    today = {company_id: clock.today(zone) for company_id, zone in _zones(session).items()}
    for batch in batches(session, listed):
        amounts: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        for customer_id, company_id, currency, kind, status, due, minor in session.execute(
            select(Invoice.customer_id, Invoice.company_id, Invoice.currency, Invoice.kind, Invoice.status,
                   Invoice.due_date, Invoice.open_minor)
            .where(Invoice.customer_id.in_([row[0] for row in batch]), Invoice.open_minor > 0,
                   Invoice.status != InvoiceStatus.void.value)
        ):
            figures = amounts[customer_id][currency]
            if kind == InvoiceKind.credit_note.value:
                figures["credits"] += minor
            elif status == InvoiceStatus.disputed.value:
                figures["disputed"] += minor
            else:
                bucket = bucket_of((today[company_id] - due).days)
                figures[bucket] += minor
                figures["outstanding"] += minor
                if bucket != "not_due":
                    figures["overdue"] += minor
        for customer_id, ref, name, code, segment, collector in batch:
            identity: Row = [ref, name, code, segment, collector]
            if not amounts.get(customer_id):
                yield identity + [None] * (len(CUSTOMER_COLUMNS) - len(identity))
                continue
            for currency, figures in sorted(amounts[customer_id].items()):
                def money(key: str) -> Money:
                    return Money(figures.get(key, 0), currency)

                yield identity + [currency, money("outstanding"), *[money(key) for key, _ in BUCKETS],
                                  money("overdue"), money("disputed"), money("credits"),
                                  Money(figures.get("outstanding", 0) - figures.get("credits", 0), currency)]


# --- invoices and payments ----------------------------------------------------------------------

INVOICE_COLUMNS = [
    N_("Number"), N_("Type"), N_("Customer ref"), N_("Customer"), N_("Company"), N_("Issue date"), N_("Due date"),
    N_("Currency"), N_("Total"), N_("Open amount"), N_("Status"), N_("Days late"),
]


def invoice_rows(session: Session, user: User, params: Mapping[str, str], labels: Labels) -> Iterator[Row]:
    filters = book_service.invoice_filters(params)
    query = book_service.invoice_query(session, filters, lambda q: scoped(q, user))
    for batch in batches(session, query):
        for row in book_service.invoice_rows(session, batch):
            invoice = row.invoice
            yield [invoice.number, labels("kind", invoice.kind), row.customer_ref, row.customer_name,
                   row.company_code, invoice.issue_date, invoice.due_date, invoice.currency,
                   Money(invoice.total_minor, invoice.currency), Money(invoice.open_minor, invoice.currency),
                   labels("invoice_status", invoice.status), row.days_late]


PAYMENT_COLUMNS = [
    N_("Date"), N_("Received on"), N_("Customer ref"), N_("Customer"), N_("Company"), N_("Provider"),
    N_("Reference"), N_("Method"), N_("Currency"), N_("Amount"), N_("Refunded"), N_("Status"),
]


def payment_rows(session: Session, user: User, params: Mapping[str, str], labels: Labels) -> Iterator[Row]:
    filters = book_service.payment_filters(params, book_service.providers(session))
    query = book_service.payment_query(filters, lambda q: scoped(q, user))
    zones = _zones(session)
    for batch in batches(session, query):
        for payment, _customer_id, ref, name, code, company_id in batch:
            yield [local(payment.created_at, zones[company_id]), payment.received_on, ref, name, code,
                   labels("provider", payment.provider), payment.provider_ref, labels("method", payment.method),
                   payment.currency,
                   Money(payment.amount_minor, payment.currency), Money(payment.refunded_minor, payment.currency),
                   labels("payment_status", payment.status)]


# --- disputes and promises ----------------------------------------------------------------------


@dataclass(frozen=True)
class DisputeFilters:
    status: str = "open"
    company: str = ""
    reason: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> DisputeFilters:
        status = params.get("status", "open")
        return cls(status=status if status in DISPUTE_STATUSES else "open", company=params.get("company", "")[:32],
                   reason=params.get("reason", "")[:64])


def dispute_query(user: User, filters: DisputeFilters) -> Select[Any]:
    """(Dispute, Customer, Company, reason) of the queue, oldest first: the page and the export."""
    query = scoped(
        select(Dispute, Customer, Company, DisputeReason)
        .join(Customer, Customer.id == Dispute.customer_id)
        .join(Company, Company.id == Customer.company_id)
        .outerjoin(DisputeReason, DisputeReason.id == Dispute.reason_id)
        .options(selectinload(Dispute.invoices)),  # each row's amounts, in one query
        user,
    ).order_by(Dispute.opened_at, Dispute.id)
    if filters.status != "all":
        query = query.where(Dispute.status == filters.status)
    if filters.company:
        query = query.where(Company.code == filters.company)
    if filters.reason:
        query = query.where(DisputeReason.code == filters.reason)
    return query


DISPUTE_COLUMNS = [
    N_("Case"), N_("Type"), N_("Opened"), N_("Customer ref"), N_("Customer"), N_("Company"), N_("Reason"),
    N_("Invoices"), N_("Currency"), N_("Amount"), N_("Status"), N_("Collector"),
]


def dispute_rows(session: Session, user: User, params: Mapping[str, str], labels: Labels) -> Iterator[Row]:
    """One row per case and currency of its invoices (open amounts)."""
    filters = DisputeFilters.from_params(params)
    emails = {user_id: email for user_id, email in session.execute(select(User.id, User.email))}
    for batch in batches(session, dispute_query(user, filters)):
        for case, customer, company, reason in batch:
            totals: dict[str, int] = defaultdict(int)
            for invoice in case.invoices:
                totals[invoice.currency] += invoice.open_minor
            identity = [case.id, labels("case_kind", case.kind), local(case.opened_at, company.timezone),
                        customer.ref, customer.name, company.code, labels("reason", reason) if reason else None,
                        ", ".join(invoice.number for invoice in case.invoices)]
            tail = [labels("case_status", case.status), emails.get(case.assigned_to_id or customer.collector_id or -1)]
            for currency, minor in sorted(totals.items()) or [(None, None)]:
                yield identity + [currency, Money(minor, currency) if currency else None] + tail


PROMISE_COLUMNS = [
    N_("Promised for"), N_("Made on"), N_("Customer ref"), N_("Customer"), N_("Company"), N_("Invoices"),
    N_("Currency"), N_("Amount"), N_("Status"),
]


def promise_rows(session: Session, user: User, params: Mapping[str, str], labels: Labels) -> Iterator[Row]:
    status = params.get("status", "")
    query = scoped(
        select(PromiseToPay, Customer, Company)
        .join(Customer, Customer.id == PromiseToPay.customer_id)
        .join(Company, Company.id == Customer.company_id)
        .options(selectinload(PromiseToPay.invoices)),
        user,
    ).order_by(PromiseToPay.promised_for, PromiseToPay.id)
    if status in PROMISE_STATUSES:
        query = query.where(PromiseToPay.status == status)
    if params.get("company"):
        query = query.where(Company.code == params.get("company"))
    for batch in batches(session, query):
        for promise, customer, company in batch:
            yield [promise.promised_for, local(promise.created_at, company.timezone), customer.ref, customer.name,
                   company.code, ", ".join(invoice.number for invoice in promise.invoices), promise.currency,
                   Money(promise.amount_minor, promise.currency), labels("case_status", promise.status)]


# --- the audit trail ----------------------------------------------------------------------------

AUDIT_COLUMNS = [
    N_("When"), N_("Who"), N_("Actor"), N_("What"), N_("Record type"), N_("Record"), N_("Customer ref"),
    N_("Company"), N_("Changes"),
]


def audit_wanted(params: Mapping[str, str], zone: str) -> AuditQuery:
    def day(name: str) -> date | None:
        try:
            return date.fromisoformat(params.get(name, "").strip()) if params.get(name, "").strip() else None
        except ValueError:
            return None

    return AuditQuery(entity_type=params.get("type", "")[:32], record=params.get("record", "")[:64],
                      actor=params.get("actor", "")[:254], action=params.get("action", "")[:64],
                      since=day("from"), until=day("to"), zone=zone)


def audit_rows(session: Session, user: User, params: Mapping[str, str], labels: Labels,
               describe: Callable[[AuditEvent], str] | None = None) -> Iterator[Row]:
    zone = staff_zone(session, user)
    query = audit_service.audit_query(session, user, audit_wanted(params, zone)).add_columns(Customer.ref, Company) \
        .outerjoin(Customer, Customer.id == AuditEvent.customer_id) \
        .outerjoin(Company, Company.id == AuditEvent.company_id)
    for batch in batches(session, query):
        for event, ref, company in batch:
            yield [local(event.created_at, company.timezone if company else zone),
                   labels("actor_type", event.actor_type), event.actor, labels("action", event.action),
                   labels("record_type", event.entity_type), event.entity_id, ref, company.code if company else None,
                   describe(event) if describe else None]


@dataclass(frozen=True)
class Export:
    name: str
    title: str  # msgid: the sheet's name
    columns: list[str]
    rows: Callable[..., Iterator[Row]]


EXPORTS = {
    export.name: export for export in (
        Export("customers", N_("Customers"), CUSTOMER_COLUMNS, customer_rows),
        Export("invoices", N_("Invoices"), INVOICE_COLUMNS, invoice_rows),
        Export("payments", N_("Payments"), PAYMENT_COLUMNS, payment_rows),
        Export("disputes", N_("Disputes"), DISPUTE_COLUMNS, dispute_rows),
        Export("promises", N_("Promises to pay"), PROMISE_COLUMNS, promise_rows),
        Export("audit", N_("Audit trail"), AUDIT_COLUMNS, audit_rows),
    )
}


def record_export(session: Session, user: User, export: Export, file_format: str, query_string: str) -> None:
    """Who took which list out, with which filters."""
    audit.record(session, actor_type="user", actor=user.email, action="export.downloaded", entity_type="export",
                 entity_id=None, after={"list": export.name, "format": file_format, "filters": query_string})
