"""Back-office reading of invoices and payments: filtered, paged lists and one payment's story
(allocations, checkout, provider events). Services only: nothing here sees HTTP."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping
from urllib.parse import urlencode

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.i18n import N_
from kernel.paging import Page
from admin.customers_service import CHASED, PAGE_SIZE, one_page, like_pattern, page_number, param_text, param_flag, local_today
from ledger.models import (
    PaymentMethod,
    Allocation,
    Checkout,
    Company,
    Customer,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    WebhookEvent,
)

INVOICE_STATUSES = tuple(s.value for s in InvoiceStatus)
PAYMENT_STATUSES = tuple(s.value for s in PaymentStatus)
METHODS = tuple(PaymentMethod)
INVOICE_SORTS = ("due", "-due")


@dataclass(frozen=True)
class ListFilters:
    """Cleaned query parameters of a list page; `problems` names what was ignored and why (msgids)."""

    values: dict[str, str]
    page: int = 1
    problems: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def get(self, name: str) -> str:
        return self.values.get(name, "")

    def date(self, name: str) -> date | None:
        raw = self.get(name)
        return date.fromisoformat(raw) if raw else None

    def query_string(self, **changes: Any) -> str:
        values = {**self.values, **{k: str(v) for k, v in changes.items() if k != "page"}}
        page = int(changes.get("page", self.page))
        pairs = [(k, v) for k, v in values.items() if v]
        if page > 1:
            pairs.append(("page", str(page)))
        return urlencode(pairs)


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = param_text(params, name)
    return value if value in allowed else ""


def _dates(params: Mapping[str, str], names: tuple[str, str], values: dict[str, str],
           problems: list[tuple[str, dict[str, str]]]) -> None:
    for name in names:
        raw = param_text(params, name, 20)
        if not raw:
            continue
        try:
            date.fromisoformat(raw)
        except ValueError:
            problems.append((N_("“%(value)s” is not a date: write it as 2026-11-30. That filter was left out."),
                             {"value": raw}))
            continue
        values[name] = raw


def invoice_filters(params: Mapping[str, str]) -> ListFilters:
    collector = param_text(params, "collector")
    values = {
        "number": param_text(params, "number", 64), "company": param_text(params, "company"),
        "segment": param_text(params, "segment"),
        "collector": collector if collector == "none" or collector.isdigit() else "",
        "overdue": "1" if param_flag(params, "overdue") else "", "disputed": "1" if param_flag(params, "disputed") else "",
        "status": _choice(params, "status", INVOICE_STATUSES), "sort": _choice(params, "sort", INVOICE_SORTS[1:]),
    }
    problems: list[tuple[str, dict[str, str]]] = []
    _dates(params, ("due_from", "due_to"), values, problems)
    return ListFilters(values=values, page=page_number(params), problems=problems)


@dataclass(frozen=True)
class InvoiceRow:
    invoice: Invoice
    customer_id: int
    customer_ref: str
    customer_name: str
    company_code: str
    days_late: int


def invoice_query(session: Session, filters: ListFilters, scope: Any) -> Select[Any]:
    """(Invoice, customer id, ref, name, company code) of the invoices the filters keep, in the list's order."""
    today = local_today(session)
    query: Select[Any] = scope(
        select(Invoice, Customer.id, Customer.ref, Customer.name, Company.code)
        .join(Customer, Customer.id == Invoice.customer_id)
        .join(Company, Company.id == Invoice.company_id)
    )
    if filters.get("number"):
        query = query.where(Invoice.number.ilike(like_pattern(filters.get("number")), escape="\\"))
    if filters.get("company"):
        query = query.where(Company.code == filters.get("company"))
    if filters.get("segment"):
        query = query.where(Customer.segment == filters.get("segment"))
    if filters.get("collector") == "none":
        query = query.where(Customer.collector_id.is_(None))
    elif filters.get("collector"):
        query = query.where(Customer.collector_id == int(filters.get("collector")))
    if filters.get("status"):
        query = query.where(Invoice.status == filters.get("status"))
    if filters.get("overdue"):
        query = query.where(Invoice.open_minor > 0, Invoice.kind == "invoice", Invoice.status.in_(CHASED),
                            Invoice.due_date < today)
    if filters.get("disputed"):
        query = query.where(Invoice.status == InvoiceStatus.disputed.value)
    if filters.date("due_from"):
        query = query.where(Invoice.due_date >= filters.date("due_from"))
    if filters.date("due_to"):
        query = query.where(Invoice.due_date <= filters.date("due_to"))
    if filters.get("sort") == "-due":
        query = query.order_by(Invoice.due_date.desc(), Invoice.id.desc())
    else:
        query = query.order_by(Invoice.due_date, Invoice.id)
    return query


def invoice_rows(session: Session, found: Iterable[Any]) -> list[InvoiceRow]:
    days = {company_id: clock.today(tz) for company_id, tz in session.execute(select(Company.id, Company.timezone))}
    rows = []
    for invoice, customer_id, ref, name, code in found:
        late = 0
        if invoice.open_minor > 0 and invoice.kind == "invoice":
            late = max(0, (days[invoice.company_id] - invoice.due_date).days)
        rows.append(InvoiceRow(invoice, customer_id, ref, name, code, late))
    return rows


def list_invoices(session: Session, filters: ListFilters, scope: Any) -> Page[InvoiceRow]:
    found, has_next = one_page(session.execute, invoice_query(session, filters, scope), filters.page)
    return Page(rows=invoice_rows(session, found), page=filters.page, has_next=has_next)


def payment_filters(params: Mapping[str, str], providers: list[str]) -> ListFilters:
    values = {
        "q": param_text(params, "q", 128), "company": param_text(params, "company"),
        "provider": _choice(params, "provider", tuple(providers)), "method": _choice(params, "method", METHODS),
        "status": _choice(params, "status", PAYMENT_STATUSES),
    }
    problems: list[tuple[str, dict[str, str]]] = []
    _dates(params, ("from", "to"), values, problems)
    return ListFilters(values=values, page=page_number(params), problems=problems)


def providers(session: Session) -> list[str]:
    return [p for p in session.scalars(select(Payment.provider).distinct().order_by(Payment.provider)) if p]


@dataclass(frozen=True)
class PaymentRow:
    payment: Payment
    customer_id: int
    customer_ref: str
    customer_name: str
    company_code: str
    company_id: int


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def payment_query(filters: ListFilters, scope: Any) -> Select[Any]:
    """(Payment, customer id, ref, name, company code) of the payments the filters keep, newest first."""
    query: Select[Any] = scope(
        select(Payment, Customer.id, Customer.ref, Customer.name, Company.code, Company.id)
        .join(Customer, Customer.id == Payment.customer_id)
        .join(Company, Company.id == Customer.company_id)
    )
    if filters.get("q"):
        pattern = like_pattern(filters.get("q"))
        query = query.where(or_(Payment.provider_ref.ilike(pattern, escape="\\"),
                                Customer.ref.ilike(pattern, escape="\\"), Customer.name.ilike(pattern, escape="\\")))
    for name, column in (("company", Company.code), ("provider", Payment.provider), ("method", Payment.method),
                         ("status", Payment.status)):
        if filters.get(name):
            query = query.where(column == filters.get(name))
    if filters.date("from"):
        query = query.where(Payment.created_at >= _day_start(filters.date("from")))  # type: ignore[arg-type]
    if filters.date("to"):
        query = query.where(Payment.created_at < _day_start(filters.date("to") + timedelta(days=1)))  # type: ignore[operator]
    return query.order_by(Payment.created_at.desc(), Payment.id.desc())


def list_payments(session: Session, filters: ListFilters, scope: Any) -> Page[PaymentRow]:
    found, has_next = one_page(session.execute, payment_query(filters, scope), filters.page)
    return Page(rows=[PaymentRow(*row) for row in found], page=filters.page, has_next=has_next)


# --- one payment --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentStory:
    payment: Payment
    customer: Customer
    allocations: list[Allocation]
    checkout: Checkout | None
    events: list[WebhookEvent]


def provider_events(session: Session, payment: Payment, checkout: Checkout | None, limit: int = 200) -> list[WebhookEvent]:
    """The provider's events about this payment: those naming its provider reference (or its
    checkout's) in their raw body, or our checkout id in their metadata."""
    needles = {ref for ref in (payment.provider_ref, checkout.provider_ref if checkout else None) if ref}
    conditions = [WebhookEvent.body.contains(ref, autoescape=True) for ref in needles]
    if checkout is not None:
        for spacing in ('": "', '":"'):
            conditions.append(WebhookEvent.body.contains(f'"checkout_id{spacing}{checkout.id}"', autoescape=True))
    if not conditions:
        return []
    query = (select(WebhookEvent).where(WebhookEvent.provider == payment.provider, or_(*conditions))
             .order_by(WebhookEvent.received_at, WebhookEvent.id).limit(limit))
    return [event for event in session.scalars(query) if _names(event, needles, checkout)]


def _names(event: WebhookEvent, needles: set[str], checkout: Checkout | None) -> bool:
    """The LIKE is a first cut; the parsed body decides (a reference inside another id does not count)."""
    try:
        body = json.loads(event.body)
    except ValueError:
        return False
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "checkout_id" and checkout is not None and str(item) == str(checkout.id):
                    found.add("checkout")
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and value in needles:
            found.add(value)

    walk(body)
    return bool(found)


def payment_story(session: Session, payment: Payment) -> PaymentStory:
    customer = session.get_one(Customer, payment.customer_id)
    checkout = session.get(Checkout, payment.checkout_id) if payment.checkout_id else None
    allocations = list(session.scalars(select(Allocation).where(Allocation.payment_id == payment.id)
                                       .order_by(Allocation.id)))
    return PaymentStory(payment=payment, customer=customer, allocations=allocations, checkout=checkout,
                        events=provider_events(session, payment, checkout))


def visible_payment(session: Session, scope: Any, payment_id: int) -> Payment | None:
    return session.scalar(scope(select(Payment).join(Customer, Customer.id == Payment.customer_id))
                          .where(Payment.id == payment_id))



def _event_refs(event: WebhookEvent) -> tuple[set[str], set[int]]:
    """The ids an event names that could be ours: every short string of its body (provider
    references: payment, intent, billing request, mandate, customer) and our checkout ids from
    its metadata. Events are stored only once their signature is verified, so metadata is ours."""
    try:
        body = json.loads(event.body)
    except ValueError:
        return set(), set()
    refs: set[str] = set()
    checkouts: set[int] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "checkout_id" and str(item).isdigit() and len(str(item)) < 12:
                    checkouts.add(int(item))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and 3 <= len(value) <= 128 and " " not in value:
            refs.add(value)

    walk(body)
    return refs, checkouts


def _chunks(values: set[Any], size: int = 500) -> list[list[Any]]:
    ordered = sorted(values, key=str)
    return [ordered[start:start + size] for start in range(0, len(ordered), size)]


def event_companies(session: Session, events: list[WebhookEvent]) -> dict[int, set[int]]:
    """Per event id, the companies it belongs to through the payments, checkouts or customers it
    names (a set: empty when it names nothing of ours — such events are for admins only)."""
    named = {event.id: _event_refs(event) for event in events}
    all_refs = set().union(*(refs for refs, _ in named.values())) if named else set()
    all_checkouts = set().union(*(ids for _, ids in named.values())) if named else set()
    by_ref: dict[str, set[int]] = {}
    by_checkout: dict[int, set[int]] = {}
    for chunk in _chunks(all_refs):
        for ref, company_id in session.execute(
                select(Payment.provider_ref, Customer.company_id).join(Customer, Customer.id == Payment.customer_id)
                .where(Payment.provider_ref.in_(chunk))):
            by_ref.setdefault(ref, set()).add(company_id)
        for ref, company_id in session.execute(
                select(Checkout.provider_ref, Customer.company_id).join(Customer, Customer.id == Checkout.customer_id)
                .where(Checkout.provider_ref.in_(chunk))):
            by_ref.setdefault(ref, set()).add(company_id)
        for column in (Customer.stripe_customer_id, Customer.gocardless_customer_id, Customer.gocardless_mandate_id):
            for ref, company_id in session.execute(select(column, Customer.company_id).where(column.in_(chunk))):
                by_ref.setdefault(ref, set()).add(company_id)
    for chunk in _chunks(all_checkouts):
        for checkout_id, company_id in session.execute(
                select(Checkout.id, Customer.company_id).join(Customer, Customer.id == Checkout.customer_id)
                .where(Checkout.id.in_(chunk))):
            by_checkout.setdefault(checkout_id, set()).add(company_id)
    found: dict[int, set[int]] = {}
    for event_id, (refs, checkouts) in named.items():
        companies: set[int] = set()
        for ref in refs:
            companies |= by_ref.get(ref, set())
        for checkout_id in checkouts:
            companies |= by_checkout.get(checkout_id, set())
        found[event_id] = companies
    return found


def _visible(companies: set[int], company_ids: set[int] | None) -> bool:
    """An admin (`company_ids` None) sees every event; anyone else the events that belong to its
    companies only: none of another company, none tied to no company."""
    return company_ids is None or (bool(companies) and companies <= company_ids)


def visible_webhook_event(session: Session, company_ids: set[int] | None, event_id: int) -> WebhookEvent | None:
    event = session.get(WebhookEvent, event_id)
    if event is None or not _visible(event_companies(session, [event])[event.id], company_ids):
        return None
    return event


SCAN_BATCH = 500


def _scoped_events(session: Session, query: Select[Any], company_ids: set[int], wanted: int | None) -> list[WebhookEvent]:
    """The events of `query`, in its order, that `company_ids` may see; stops once `wanted` are found.
    Which company an event belongs to is read from its body, so the rows are scanned in batches."""
    visible: list[WebhookEvent] = []
    offset = 0
    while wanted is None or len(visible) < wanted:
        batch = list(session.scalars(query.offset(offset).limit(SCAN_BATCH)))
        if not batch:
            break
        offset += len(batch)
        companies = event_companies(session, batch)
        visible.extend(event for event in batch if _visible(companies[event.id], company_ids))
    return visible


def list_webhook_events(session: Session, state: str, provider: str, page: int,
                        company_ids: set[int] | None = None) -> tuple[Page[WebhookEvent], int]:
    """A page of stored provider events, newest first, in `state` ("failed", "unprocessed",
    "processed", "not_ours" or anything else for all) and from `provider` if given; with how many failed.
    `company_ids`: only the events of these companies (None: every event, for an admin)."""
    query = select(WebhookEvent).order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc())
    if state == "failed":
        query = query.where(WebhookEvent.processed_at.is_(None), WebhookEvent.error.is_not(None))
    elif state == "unprocessed":
        query = query.where(WebhookEvent.processed_at.is_(None))
    elif state == "processed":
        query = query.where(WebhookEvent.processed_at.is_not(None))
    elif state == "not_ours":
        query = query.where(WebhookEvent.outcome == "not_ours")
    if provider:
        query = query.where(WebhookEvent.provider == provider)
    failed_query = select(WebhookEvent).where(WebhookEvent.processed_at.is_(None), WebhookEvent.error.is_not(None))
    if company_ids is None:
        events, has_next = one_page(session.scalars, query, page)
        failed = session.scalar(select(func.count()).select_from(failed_query.subquery())) or 0
        return Page(rows=events, page=page, has_next=has_next), failed
    found = _scoped_events(session, query, company_ids, page * PAGE_SIZE + 1)
    rows = found[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    failed = len(_scoped_events(session, failed_query.order_by(WebhookEvent.id), company_ids, None))
    return Page(rows=rows, page=page, has_next=len(found) > page * PAGE_SIZE), failed
