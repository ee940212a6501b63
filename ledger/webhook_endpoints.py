"""A company's outgoing webhook endpoints and their delivery log: register, remove, list,
send a delivery again. Sending is the worker's (api.webhooks); queueing is ledger.events'."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.i18n import N_
from kernel.outbound import UnsafeUrl, check_public
from kernel.paging import Page, ids_by_cursor
from ledger import audit
from ledger.api_keys import REVEAL_WITHIN
from ledger.events import EVENT_TYPES, PUBLIC_TYPES
from ledger.models import AuditEvent, Company, WebhookDelivery, WebhookEndpoint

SECRET_PREFIX = "whsec_"
MAX_ENDPOINTS_PER_COMPANY = 20


class EndpointError(ValueError):
    """`message` is a message id, `values` fill it; str() is the English sentence."""

    def __init__(self, message: str, **values: object) -> None:
        self.message = message
        self.values = values
        super().__init__(message % values if values else message)


def _company(session: Session, code: str) -> Company:
    company = session.scalar(select(Company).where(Company.code == code))
    if company is None:
        raise EndpointError(N_("Unknown company %(code)s."), code=code)
    return company


def parse_event_types(values: list[str]) -> list[str]:
    """The event types asked for, checked: known public types, or "*" for all of them."""
    wanted = sorted({v.strip() for v in values if v.strip()})
    if not wanted:
        raise EndpointError(N_("Choose at least one event type."))
    if "*" in wanted:
        return ["*"]
    unknown = [v for v in wanted if v not in PUBLIC_TYPES]
    if unknown:
        raise EndpointError(N_("Unknown event type %(types)s; the types are %(known)s."),
                            types=", ".join(unknown), known=", ".join(PUBLIC_TYPES))
    return wanted


def add_endpoint(session: Session, company_code: str, url: str, event_types: list[str], *, allow_private: bool,
                 created_by: str | None = None) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (shown once by the caller)."""
    company = _company(session, company_code)
    url = url.strip()
    types = parse_event_types(event_types)
    try:
        check_public(url, allow_private=allow_private)
    except UnsafeUrl as error:
        raise EndpointError(N_("This URL cannot receive webhooks: %(reason)s."), reason=str(error)) from None
    count = session.scalar(select(func.count()).select_from(WebhookEndpoint)
                           .where(WebhookEndpoint.company_id == company.id)) or 0
    if count >= MAX_ENDPOINTS_PER_COMPANY:
        raise EndpointError(N_("A company has at most %(count)s webhook endpoints."), count=MAX_ENDPOINTS_PER_COMPANY)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(company_id=company.id, url=url, secret=secret, event_types=types,
                               created_at=clock.now(), created_by=created_by)
    session.add(endpoint)
    session.flush()
    audit.record(session, actor_type="user" if created_by else "system", actor=created_by or "cli",
                 action="webhook_endpoint.added", entity_type="webhook_endpoint", entity_id=endpoint.id,
                 company_id=company.id, after={"url": url, "event_types": types})
    return endpoint, secret


SECRET_SHOWN = "webhook_endpoint.secret_shown"


def reveal_secret_once(session: Session, endpoint_id: int, *, shown_to: str) -> tuple[WebhookEndpoint, str] | None:
    """A new endpoint and its signing secret, for the one page that shows it (as
    `api_keys.reveal_once` gives a new key): None once it was shown (the audit trail says when and
    to whom), when the endpoint is older than `api_keys.REVEAL_WITHIN`, or gone. The endpoint's row
    is locked first, so two requests cannot both show it."""
    endpoint = session.scalar(select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).with_for_update())
    if endpoint is None or endpoint.created_at < clock.now() - REVEAL_WITHIN:
        return None
    shown = session.scalar(select(AuditEvent.id).where(AuditEvent.entity_type == "webhook_endpoint",
                                                       AuditEvent.entity_id == endpoint.id,
                                                       AuditEvent.action == SECRET_SHOWN).limit(1))
    if shown is not None:
        return None
    audit.record(session, actor_type="user", actor=shown_to, action="webhook_endpoint.secret_shown",
                 entity_type="webhook_endpoint", entity_id=endpoint.id, company_id=endpoint.company_id)
    session.flush()
    return endpoint, endpoint.secret


def remove_endpoint(session: Session, company_code: str, endpoint_id: int, *,
                    removed_by: str | None = None) -> WebhookEndpoint:
    """Remove the endpoint and its delivery log; what it was is kept in the audit trail."""
    company = _company(session, company_code)
    endpoint = session.scalar(select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id,
                                                            WebhookEndpoint.company_id == company.id))
    if endpoint is None:
        raise EndpointError(N_("Company %(code)s has no webhook endpoint %(id)s."), code=company_code, id=endpoint_id)
    audit.record(session, actor_type="user" if removed_by else "system", actor=removed_by or "cli",
                 action="webhook_endpoint.removed", entity_type="webhook_endpoint", entity_id=endpoint.id,
                 company_id=company.id, before={"url": endpoint.url, "event_types": endpoint.event_types})
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()
    return endpoint


def endpoints(session: Session, company_ids: list[int] | None = None) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.company_id, WebhookEndpoint.id)
    if company_ids is not None:
        query = query.where(WebhookEndpoint.company_id.in_(company_ids or [-1]))
    return list(session.scalars(query))


@dataclass(frozen=True)
class DeliveryLine:
    id: int
    endpoint_id: int
    url: str
    company_code: str
    event_id: int
    event_type: str
    status: str
    attempts: int
    response_code: int | None
    latency_ms: int | None
    last_error: str | None
    next_attempt_at: datetime | None  # None once sent or failed for good
    created_at: datetime
    delivered_at: datetime | None


DELIVERY_STATES = ("queued", "sent", "failed")
PAGE_SIZE = 50


def _filtered(query: Select[Any], company_ids: list[int] | None, endpoint_id: int | None,
              status: str | None) -> Select[Any]:
    if company_ids is not None:
        query = query.where(WebhookDelivery.endpoint_id.in_(
            select(WebhookEndpoint.id).where(WebhookEndpoint.company_id.in_(company_ids or [-1]))))
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        if status not in DELIVERY_STATES:
            raise EndpointError(N_("Unknown delivery state %(state)s."), state=status)
        query = query.where(WebhookDelivery.status == status)
    return query


def _lines(session: Session, ids: list[int]) -> list[DeliveryLine]:
    """Those deliveries with their endpoints and events, newest first."""
    if not ids:
        return []
    query = (select(WebhookDelivery, WebhookEndpoint.url, Company.code, AuditEvent.action)
             .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
             .join(Company, Company.id == WebhookEndpoint.company_id)
             .join(AuditEvent, AuditEvent.id == WebhookDelivery.audit_event_id)
             .where(WebhookDelivery.id.in_(ids)).order_by(WebhookDelivery.id.desc()))
    return [DeliveryLine(id=d.id, endpoint_id=d.endpoint_id, url=url, company_code=code, event_id=d.audit_event_id,
                         event_type=EVENT_TYPES.get(action, action), status=d.status, attempts=d.attempts,
                         response_code=d.response_code, latency_ms=d.latency_ms, last_error=d.last_error,
                         next_attempt_at=d.next_attempt_at if d.status == "queued" else None,
                         created_at=d.created_at, delivered_at=d.delivered_at)
            for d, url, code, action in session.execute(query)]


def deliveries(session: Session, company_ids: list[int] | None = None, *, endpoint_id: int | None = None,
               status: str | None = None, limit: int = 100) -> list[DeliveryLine]:
    """The delivery log, newest first."""
    ids = _filtered(select(WebhookDelivery.id), company_ids, endpoint_id, status)
    return _lines(session, list(session.scalars(ids.order_by(WebhookDelivery.id.desc()).limit(limit))))


def delivery_page(session: Session, company_ids: list[int] | None = None, *, endpoint_id: int | None = None,
                  status: str | None = None, page: int = 1, after: int | None = None, before: int | None = None,
                  size: int = PAGE_SIZE) -> Page[DeliveryLine]:
    """One page of the delivery log, newest first, as the bank queue pages: `after` (the last
    delivery id of the page before) or `before` (the first id of the page after) find the page
    from where the reader is, in one index range whatever its depth; a bare `page` counts its
    way there."""
    ids, page, has_next = ids_by_cursor(session, _filtered(select(WebhookDelivery.id), company_ids, endpoint_id, status),
                                        WebhookDelivery.id, page, after, before, size)
    return Page.by_cursor(_lines(session, ids), page, has_next, lambda line: line.id)


def send_again(session: Session, delivery_id: int, *, company_ids: list[int] | None = None,
               actor: str | None = None) -> bool:
    """Queue a delivery again, due now with its attempts from zero (a sent one too: the receiver
    dedupes by the event id). False when there is no such delivery (for these companies)."""
    row = session.execute(select(WebhookDelivery, WebhookEndpoint.company_id)
                          .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                          .where(WebhookDelivery.id == delivery_id)).first()
    if row is None or (company_ids is not None and row[1] not in company_ids):
        return False
    delivery, company_id = row
    before = {"status": delivery.status, "attempts": delivery.attempts}
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id)
                    .values(status="queued", attempts=0, next_attempt_at=clock.now(), last_error=None))
    audit.record(session, actor_type="user" if actor else "system", actor=actor or "cli",
                 action="webhook_delivery.resent", entity_type="webhook_delivery", entity_id=delivery.id,
                 company_id=company_id, before=before, after={"status": "queued"})
    session.expire_all()
    return True
