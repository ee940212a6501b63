"""The events a company's ERP is told about: which audit actions they are, under which public
type, and the outgoing webhook deliveries queued with them.

The audit trail is the one log: `/api/v1/events` reads it, and every audit event of these
actions queues one delivery per subscribed endpoint of its company in the same transaction
(an outbox: nothing is sent before the event is committed, nothing committed goes unsent)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from kernel.clock import clock
from ledger.models import AuditEvent, WebhookDelivery, WebhookEndpoint

# The audit actions the events feed and the webhooks carry, and the type each is published as.
EVENT_TYPES: dict[str, str] = {
    "payment.succeeded": "payment.succeeded",
    "payment.failed": "payment.failed",
    "payment.refunded": "payment.refunded",
    "payment.partially_refunded": "payment.refunded",
    "payment.charged_back": "payment.charged_back",
    # Recorded by hand (back-office or the ERP's POST /api/v1/payments): money in, as a provider's is.
    "payment.recorded": "payment.succeeded",
    "payment.cancelled": "payment.cancelled",
    "dispute.opened": "dispute.opened",
    "dispute.message": "dispute.answered",
    "dispute.accepted": "dispute.resolved",
    "dispute.rejected": "dispute.resolved",
    "promise.made": "promise.made",
    "promise.kept": "promise.kept",
    "promise.broken": "promise.broken",
    "invoice.settled_outside": "invoice.settled",
    "invoice.voided": "invoice.voided",
    "link.opened": "link.opened",
}
PUBLIC_TYPES: tuple[str, ...] = tuple(sorted(set(EVENT_TYPES.values())))


def subscribes(event_types: list[str], public_type: str) -> bool:
    return "*" in event_types or public_type in event_types


def _subscribers(session: Session | Connection, company_id: int, public_type: str) -> list[int]:
    rows = session.execute(select(WebhookEndpoint.id, WebhookEndpoint.event_types)
                           .where(WebhookEndpoint.company_id == company_id)).all()
    return [endpoint_id for endpoint_id, types in rows if subscribes(types or [], public_type)]


def queue_deliveries(session: Session, event: AuditEvent) -> None:
    """One delivery per endpoint of the event's company that wants it, flushed with the event."""
    public_type = EVENT_TYPES.get(event.action)
    if public_type is None or event.company_id is None:
        return
    with session.no_autoflush:
        endpoint_ids = _subscribers(session, event.company_id, public_type)
    now = clock.now()
    for endpoint_id in endpoint_ids:
        session.add(WebhookDelivery(endpoint_id=endpoint_id, event=event, next_attempt_at=now, created_at=now))


def queue_deliveries_for_ids(session: Session | Connection, events: list[tuple[int, int | None, str]]) -> None:
    """`queue_deliveries` for events written with Core: (audit event id, company id, action)."""
    now = clock.now()
    rows: list[dict[str, Any]] = []
    wanted: dict[tuple[int, str], list[int]] = {}
    for event_id, company_id, action in events:
        public_type = EVENT_TYPES.get(action)
        if public_type is None or company_id is None:
            continue
        if (company_id, public_type) not in wanted:
            wanted[(company_id, public_type)] = _subscribers(session, company_id, public_type)
        rows.extend({"endpoint_id": endpoint_id, "audit_event_id": event_id, "status": "queued", "attempts": 0,
                     "next_attempt_at": now, "created_at": now}
                    for endpoint_id in wanted[(company_id, public_type)])
    if rows:
        session.execute(insert(WebhookDelivery), rows)
