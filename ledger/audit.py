"""The audit trail: who did what to which record, with before and after."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ledger.models import AuditEvent


def record(
    session: Session,
    *,
    actor_type: str,
    action: str,
    entity_type: str,
    entity_id: int | None,
    actor: str | None = None,
    customer_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        actor_type=actor_type,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        customer_id=customer_id,
        before=before,
        after=after,
    )
    session.add(event)
    return event
