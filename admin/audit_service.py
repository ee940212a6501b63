"""The audit trail as staff search it: by record, actor, action and dates, scoped by role.

Who reads what: an admin everything; a manager or a viewer the events of its companies
(`AuditEvent.company_id`); a collector the events on the customers assigned to it. Events
about no company (staff accounts) are an admin's alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, false, or_, select
from sqlalchemy.orm import Session

from admin.customers_service import PAGE_SIZE, one_page  # noqa: F401 (PAGE_SIZE: the audit page's size too)
from ledger.models import AuditEvent, BankEntry, Checkout, Company, Customer, Invoice, Payment, PromiseToPay, Role, User

# What people type for an actor, beside an email or a provider name.
ACTOR_KINDS = {"system": "system", "debtor": "contact", "contact": "contact", "provider": "provider", "user": "user"}


@dataclass(frozen=True)
class AuditQuery:
    entity_type: str = ""
    record: str = ""  # an id, or a customer ref or invoice number
    actor: str = ""
    action: str = ""
    since: date | None = None
    until: date | None = None
    page: int = 1
    zone: str = "UTC"  # whose days `since` and `until` are: the staff's time zone


@dataclass
class AuditPage:
    events: list[AuditEvent]
    page: int
    has_next: bool
    customers: dict[int, Customer] = field(default_factory=dict)
    companies: dict[int, Company] = field(default_factory=dict)


def scope(query: Select[Any], user: User) -> Select[Any]:
    if user.role == Role.admin.value:
        return query
    if user.role == Role.collector.value:
        mine = select(Customer.id).where(Customer.collector_id == user.id)
        return query.where(AuditEvent.customer_id.in_(mine))
    return query.where(AuditEvent.company_id.in_([c.id for c in user.companies] or [-1]))


def _record(query: Select[Any], session: Session, wanted: AuditQuery) -> Select[Any]:
    text = wanted.record.strip()
    if not text:
        return query
    if text.isdigit() and len(text) < 12:
        return query.where(AuditEvent.entity_id == int(text))
    customer_ids = select(Customer.id).where(Customer.ref == text)
    invoice_ids = select(Invoice.id).where(Invoice.number == text)
    return query.where(or_(
        AuditEvent.customer_id.in_(customer_ids),
        and_(AuditEvent.entity_type == "customer", AuditEvent.entity_id.in_(customer_ids)),
        and_(AuditEvent.entity_type == "invoice", AuditEvent.entity_id.in_(invoice_ids)),
    ))


def _actor(query: Select[Any], wanted: AuditQuery) -> Select[Any]:
    text = wanted.actor.strip().lower()
    if not text:
        return query
    if text in ACTOR_KINDS:
        kind = ACTOR_KINDS[text]
        return query.where(or_(AuditEvent.actor_type == kind, AuditEvent.actor == text))
    return query.where(AuditEvent.actor.ilike(f"%{_escape(text)}%", escape="\\"))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _midnight(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(), ZoneInfo(zone)).astimezone(timezone.utc)


def audit_query(session: Session, user: User, wanted: AuditQuery) -> Select[Any]:
    """The events `user` may read that `wanted` asks for, newest first."""
    query = scope(select(AuditEvent), user)
    if wanted.entity_type:
        query = query.where(AuditEvent.entity_type == wanted.entity_type)
    query = _record(query, session, wanted)
    query = _actor(query, wanted)
    if wanted.action.strip():
        query = query.where(AuditEvent.action.ilike(f"{_escape(wanted.action.strip())}%", escape="\\"))
    if wanted.since:
        query = query.where(AuditEvent.created_at >= _midnight(wanted.since, wanted.zone))
    if wanted.until:
        query = query.where(AuditEvent.created_at < _midnight(wanted.until + timedelta(days=1), wanted.zone))
    if wanted.since and wanted.until and wanted.until < wanted.since:
        query = query.where(false())
    return query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())


def search(session: Session, user: User, wanted: AuditQuery) -> AuditPage:
    page = max(1, wanted.page)
    events, has_next = one_page(session.scalars, audit_query(session, user, wanted), page)
    customer_ids = {e.customer_id for e in events if e.customer_id}
    company_ids = {e.company_id for e in events if e.company_id}
    customers = {c.id: c for c in session.scalars(select(Customer).where(Customer.id.in_(customer_ids)))} \
        if customer_ids else {}
    companies = {c.id: c for c in session.scalars(select(Company).where(Company.id.in_(company_ids)))} \
        if company_ids else {}
    return AuditPage(events=events, page=page, has_next=has_next, customers=customers,
                     companies=companies)


def entity_types(session: Session, user: User) -> list[str]:
    return sorted(t for t in session.scalars(scope(select(AuditEvent.entity_type).distinct(), user)) if t)


def changes(event: AuditEvent) -> list[tuple[str, Any, Any]]:
    """(field, before, after) for each field the event names, in a stable order."""
    before, after = event.before or {}, event.after or {}
    keys = list(dict.fromkeys([*before.keys(), *after.keys()]))
    return [(key, before.get(key), after.get(key)) for key in keys]


# Records whose amounts are in their own currency; anything else of a company is in its base currency.
_CURRENCY_OF = {"payment": Payment, "invoice": Invoice, "promise": PromiseToPay, "checkout": Checkout,
                "bank_entry": BankEntry}


def event_currency(session: Session, event: AuditEvent) -> str | None:
    """The currency of the amounts (`…_minor` fields) an event names: its own `currency` field,
    else the record's, else its company's base currency; None when nothing says."""
    for values in (event.after or {}, event.before or {}):
        if isinstance(values.get("currency"), str):
            return str(values["currency"])
    model = _CURRENCY_OF.get(event.entity_type)
    if model is not None and event.entity_id is not None:
        currency = session.scalar(select(model.currency).where(model.id == event.entity_id))  # type: ignore[attr-defined]
        if currency:
            return str(currency)
    if event.company_id is not None:
        return session.scalar(select(Company.base_currency).where(Company.id == event.company_id))
    return None
