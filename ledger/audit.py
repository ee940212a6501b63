"""The audit trail: who did what to which record, with before and after."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.models import AuditEvent, Customer


def record(
    session: Session,
    *,
    actor_type: str,
    action: str,
    entity_type: str,
    entity_id: int | None,
    actor: str | None = None,
    customer_id: int | None = None,
    company_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """`company_id` says whose record it is (so managers read their companies' trail); when not
    given it is the customer's company, or the company itself for a company record."""
    if company_id is None:
        if customer_id is not None:
            customer = session.get(Customer, customer_id)
            company_id = customer.company_id if customer is not None else session.scalar(
                select(Customer.company_id).where(Customer.id == customer_id))
        elif entity_type == "company":
            company_id = entity_id
    event = AuditEvent(
        actor_type=actor_type,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        customer_id=customer_id,
        company_id=company_id,
        before=before,
        after=after,
    )
    session.add(event)
    return event
