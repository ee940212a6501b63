"""Rows that would grow for ever: sent emails and applied provider events past their retention are
deleted, in batches; what is not sent or not applied, the reminders and the audit trail stay. On
SQLite and PostgreSQL (this package's conftest)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from kernel.clock import clock
from ledger import personal_data
from ledger.models import AuditEvent, OutboxMessage, Reminder, WebhookEvent
from tests import factories

DAYS = 400


def _email(session: Session, to: str, status: str, age_days: int, **fields: object) -> OutboxMessage:
    at = clock.now() - timedelta(days=age_days)
    message = OutboxMessage(kind="reminder", to_address=to, subject=to, body_text="body", status=status,
                            created_at=at, sent_at=at if status == "sent" else None, **fields)
    session.add(message)
    session.flush()
    return message


def _event(session: Session, event_id: str, age_days: int, processed: bool) -> None:
    at = clock.now() - timedelta(days=age_days)
    session.add(WebhookEvent(provider="stripe", event_id=event_id, event_type="payment_intent.succeeded", body="{}",
                             received_at=at, processed_at=at if processed else None,
                             error=None if processed else "the database went away"))


def _names(session: Session, column: object) -> list[str]:
    return sorted(session.scalars(select(column)))  # type: ignore[call-overload]


def test_sent_emails_and_applied_events_past_their_retention_are_deleted_the_rest_stays(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    company = factories.company(session)
    customer = factories.customer(session, company)
    contact = customer.primary_contact
    assert contact is not None
    old = _email(session, "old@sent.test", "sent", DAYS + 1, customer_id=customer.id, contact_id=contact.id)
    session.add(Reminder(customer_id=customer.id, contact_id=contact.id, invoice_key="k", outbox_id=old.id))
    _email(session, "recent@sent.test", "sent", DAYS - 1)
    for status in ("queued", "failed", "held", "cancelled"):
        _email(session, f"old@{status}.test", status, DAYS + 100)
    _event(session, "evt_old_applied", DAYS + 1, processed=True)
    _event(session, "evt_old_unapplied", DAYS + 100, processed=False)
    _event(session, "evt_recent", DAYS - 1, processed=True)
    session.add(AuditEvent(actor_type="system", actor="test", action="reminder.queued", entity_type="reminder",
                           entity_id=1, created_at=clock.now() - timedelta(days=DAYS * 5)))
    session.commit()

    assert personal_data.delete_expired(session_factory, personal_data.Retention()) == (1, 1)

    session.expire_all()
    assert _names(session, OutboxMessage.to_address) == [
        "old@cancelled.test", "old@failed.test", "old@held.test", "old@queued.test", "recent@sent.test"]
    assert _names(session, WebhookEvent.event_id) == ["evt_old_unapplied", "evt_recent"]
    # The reminder stays (never sent twice, the customer's history), without its message.
    assert session.execute(select(Reminder.customer_id, Reminder.outbox_id)).all() == [(customer.id, None)]
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.actor == "test")) == 1
    assert personal_data.delete_expired(session_factory, personal_data.Retention()) == (0, 0)
    # 0 days: kept for ever.
    forever = personal_data.Retention(sent_emails_days=0, webhook_events_days=0)
    assert personal_data.delete_expired(session_factory, forever, now=clock.now() + timedelta(days=10_000)) == (0, 0)


def test_a_backlog_goes_in_batches_until_none_is_left(session: Session, session_factory: sessionmaker[Session]) -> None:
    for n in range(23):
        _email(session, f"m{n}@sent.test", "sent", DAYS + 1 + n)
        _event(session, f"evt_{n}", DAYS + 1 + n, processed=True)
    session.commit()
    later: datetime = clock.now()

    assert personal_data.delete_expired(session_factory, personal_data.Retention(), now=later, batch=5) == (23, 23)

    session.expire_all()
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def test_the_settings_name_the_days() -> None:
    from kernel.settings import load_settings
    from tests.conftest import TEST_SECRET

    settings = load_settings({"ENCOURS_SECRET_KEY": TEST_SECRET, "ENCOURS_RETAIN_SENT_EMAILS_DAYS": "730",
                              "ENCOURS_RETAIN_WEBHOOK_EVENTS_DAYS": "0"})
    retention = personal_data.Retention.from_settings(settings)
    assert (retention.sent_emails_days, retention.webhook_events_days) == (730, 0)
    assert (personal_data.Retention().sent_emails_days, personal_data.Retention().webhook_events_days) == (400, 400)
