"""Sending failed messages again, once staff fixed the cause (a wrong address, a server refusal).

A failed message goes back to the queue as new: status queued, due now, attempts from zero,
its last error cleared. Its Reminder is unchanged, so it is still that reminder that goes, once.
A contact whose address was marked failing (a permanent refusal at RCPT) is given the benefit of
the doubt: retrying a message to that very address clears the mark.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kernel.clock import clock
from ledger import audit
from ledger.models import Contact, Customer, OutboxMessage


@dataclass(frozen=True)
class RetryReport:
    requeued: int
    not_failed: int  # already sent, queued or otherwise not failed: left alone


def retry_failed(session: Session, message_ids: list[int], *, actor_type: str = "user",
                 actor: str | None = None) -> RetryReport:
    """Put these failed messages back in the queue; messages in any other state are left alone."""
    failed = list(session.scalars(
        select(OutboxMessage).where(OutboxMessage.id.in_(message_ids or [-1]), OutboxMessage.status == "failed")
        .order_by(OutboxMessage.id)))
    now = clock.now()
    for message in failed:
        before = {"status": message.status, "attempts": message.attempts, "error": message.last_error}
        session.execute(update(OutboxMessage).where(OutboxMessage.id == message.id,
                                                     OutboxMessage.status == "failed")
                        .values(status="queued", attempts=0, next_attempt_at=now, last_error=None))
        if message.contact_id is not None:
            session.execute(update(Contact).where(Contact.id == message.contact_id,
                                                  Contact.email == message.to_address)
                            .values(email_failing_since=None, email_failure=None))
        audit.record(session, actor_type=actor_type, actor=actor, action="email.retried", entity_type="outbox",
                     entity_id=message.id, customer_id=message.customer_id, before=before,
                     after={"status": "queued", "to": message.to_address})
    session.flush()
    session.expire_all()
    return RetryReport(requeued=len(failed), not_failed=len(set(message_ids)) - len(failed))


@dataclass(frozen=True)
class FailedMessage:
    id: int
    customer_id: int | None
    customer_ref: str | None
    to_address: str
    subject: str
    error: str | None


def failed_messages(session: Session, company_ids: list[int], collector_id: int | None = None, limit: int = 5
                    ) -> tuple[int, list[FailedMessage]]:
    """How many messages to these companies' customers (of one collector, when set) failed for
    good and were not sent again since, and the latest few: what the dashboard alerts about."""
    conditions = [OutboxMessage.status == "failed", Customer.company_id.in_(company_ids or [-1])]
    if collector_id is not None:
        conditions.append(Customer.collector_id == collector_id)
    count = session.scalar(select(func.count()).select_from(OutboxMessage)
                           .join(Customer, Customer.id == OutboxMessage.customer_id).where(*conditions)) or 0
    latest = [
        FailedMessage(id=message.id, customer_id=message.customer_id, customer_ref=ref, to_address=message.to_address,
                      subject=message.subject, error=message.last_error)
        for message, ref in session.execute(
            select(OutboxMessage, Customer.ref).join(Customer, Customer.id == OutboxMessage.customer_id)
            .where(*conditions).order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc()).limit(limit))
    ]
    return int(count), latest
