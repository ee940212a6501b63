from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from encours.clock import clock
from encours.settings import Settings
from ledger.models import AuditEvent, WebhookEvent
from payments import webhooks
from payments.webhooks import MAX_ATTEMPTS, is_stored, process_event, retry_due, store_event


def _store(session: Session, event_id: str = "evt_1", body: str = '{"id": "evt_1"}') -> tuple[WebhookEvent, bool]:
    return store_event(session, "stripe", event_id, "payment_intent.succeeded", body,
                       {"Stripe-Signature": "t=1,v1=abc", "Cookie": "secret", "Content-Type": "application/json"})


def _mark(session: Session, event: WebhookEvent) -> None:
    """A handler with a visible side effect, so a rollback can be seen."""
    session.add(AuditEvent(actor_type="provider", action=f"handled.{event.event_id}", entity_type="webhook",
                           entity_id=event.id))


def _handled(session_factory: sessionmaker[Session], event_id: str) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.action == f"handled.{event_id}")) or 0


def test_an_event_is_stored_raw_once(session: Session) -> None:
    event, created = _store(session)
    assert created and event.id is not None
    assert event.body == '{"id": "evt_1"}'
    assert event.headers == {"stripe-signature": "t=1,v1=abc", "content-type": "application/json"}  # no cookies
    again, created_again = _store(session, body="something else")
    assert not created_again and again.id == event.id and again.body == '{"id": "evt_1"}'
    other_provider, created_other = store_event(session, "gocardless", "evt_1", "payments.confirmed", "{}", {})
    assert created_other and other_provider.id != event.id


def test_a_concurrent_duplicate_is_caught(session: Session) -> None:
    """store_event inserts first and lets the unique key decide (the route reads `is_stored`
    before): a second delivery's insert collides, is rolled back alone, and gets the stored row."""
    event, _ = _store(session)
    session.flush()
    duplicate, created = _store(session)  # as if another request had inserted it after our check
    assert not created and duplicate.id == event.id
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
    assert is_stored(session, "stripe", "evt_1") and not is_stored(session, "stripe", "evt_2")


def test_process_marks_the_event_processed(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        event, _ = _store(session)
    assert process_event(session_factory, event.id, _mark)
    assert process_event(session_factory, event.id, _mark)  # already done: not applied twice
    assert _handled(session_factory, "evt_1") == 1
    with session_factory() as session:
        stored = session.get(WebhookEvent, event.id)
        assert stored is not None and stored.processed_at is not None and stored.attempts == 1
        assert stored.error is None and stored.next_attempt_at is None


def test_a_failing_event_keeps_its_error_and_is_retried(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        event, _ = _store(session)

    def broken(session: Session, event: WebhookEvent) -> None:
        _mark(session, event)
        raise RuntimeError("database hiccup")

    assert not process_event(session_factory, event.id, broken)
    assert _handled(session_factory, "evt_1") == 0  # the handler's writes were rolled back
    with session_factory() as session:
        stored = session.get(WebhookEvent, event.id)
        assert stored is not None and stored.processed_at is None and stored.attempts == 1
        assert "database hiccup" in (stored.error or "")
        assert stored.next_attempt_at == clock.now() + webhooks.backoff(1)

    assert retry_due(session_factory, {"stripe": _mark}).processed == 0  # not due yet
    clock.set(clock.now() + timedelta(minutes=2))
    report = retry_due(session_factory, {"stripe": _mark})
    assert (report.processed, report.failed) == (1, 0)
    assert _handled(session_factory, "evt_1") == 1
    assert retry_due(session_factory, {"stripe": _mark}).processed == 0


def test_the_worker_picks_up_an_event_the_route_never_processed(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        _store(session, "evt_lost")
    assert retry_due(session_factory, {"stripe": _mark}).processed == 0  # the route gets a minute first
    clock.set(clock.now() + webhooks.FIRST_RETRY)
    assert retry_due(session_factory, {"stripe": _mark}).processed == 1
    assert retry_due(session_factory, {}).processed == 0


def test_retries_stop_after_max_attempts(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        event, _ = _store(session)

    def broken(session: Session, event: WebhookEvent) -> None:
        raise ValueError("unknown checkout")

    for _ in range(MAX_ATTEMPTS):
        assert not process_event(session_factory, event.id, broken)
    with session_factory() as session:
        stored = session.get(WebhookEvent, event.id)
        assert stored is not None and stored.attempts == MAX_ATTEMPTS and stored.next_attempt_at is None


def handled_by_worker(session: Session, event: WebhookEvent) -> None:
    _mark(session, event)


def test_the_worker_retries_due_events(session_factory: sessionmaker[Session], settings: Settings,
                                       smtp_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from encours import worker

    monkeypatch.setattr(webhooks, "HANDLERS", (("stripe", "tests.payments.test_webhooks:handled_by_worker"),))
    with session_factory() as session, session.begin():
        _store(session, "evt_worker")
    clock.set(clock.now() + webhooks.FIRST_RETRY)
    smtp = replace(settings, smtp_url=smtp_server.url)
    report = worker.run_once(smtp, session_factory)
    assert report.busy and "webhooks: 1 processed, 0 failed" in report.lines()
    assert _handled(session_factory, "evt_worker") == 1
    assert not worker.run_once(smtp, session_factory).webhooks.busy
