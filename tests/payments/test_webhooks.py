from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, Iterator

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from kernel import sqlite_writer
from kernel.clock import clock
from kernel.settings import Settings
from ledger.models import AuditEvent, WebhookEvent
from payments import webhooks
from payments.webhooks import (
    MAX_ATTEMPTS, NOT_OURS, apply_new, is_stored, process_event, retry_due, store_and_apply, store_event, store_many,
    store_new, stored_already,
)
from payments.base import NotOurs
from tests.conftest import sqlite_writer_held_elsewhere


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
    """store_event inserts first and lets the unique key decide: a second delivery's insert does
    nothing, and gets the stored row."""
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
        assert stored.next_attempt_at == clock.now() + webhooks.RETRY.backoff(1)

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

    monkeypatch.setattr(webhooks, "registered_handlers", lambda settings: {"stripe": handled_by_worker})
    with session_factory() as session, session.begin():
        _store(session, "evt_worker")
    clock.set(clock.now() + webhooks.FIRST_RETRY)
    smtp = replace(settings, smtp_url=smtp_server.url)
    report = worker.run_once(smtp, session_factory)
    assert report.busy and "webhooks: 1 processed, 0 failed" in report.lines()
    assert _handled(session_factory, "evt_worker") == 1
    assert not worker.run_once(smtp, session_factory).webhooks.busy


@pytest.fixture
def statements(session_factory: sessionmaker[Session]) -> Iterator[list[str]]:
    """The SQL statements run through the test's connection, BEGIN/SAVEPOINT bookkeeping left out."""
    seen: list[str] = []
    bind = session_factory.kw["bind"]

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT")):
            seen.append(" ".join(statement.split()))

    sa_event.listen(bind, "before_cursor_execute", record)
    yield seen
    sa_event.remove(bind, "before_cursor_execute", record)


HEADERS = {"Stripe-Signature": "t=1,v1=abc", "Content-Type": "application/json"}


def _row(session_factory: sessionmaker[Session], pk: int) -> tuple[Any, ...]:
    with session_factory() as session:
        row = session.get_one(WebhookEvent, pk)
        return (row.event_type, row.body, row.headers, row.received_at, row.attempts, row.processed_at,
                row.next_attempt_at, row.error)


def test_a_duplicate_is_one_conflicting_insert_that_leaves_the_stored_event_untouched(
    session_factory: sessionmaker[Session], statements: list[str]
) -> None:
    pk = store_new(session_factory, "stripe", "evt_1", "payment_intent.succeeded", '{"id": "evt_1"}', HEADERS)
    assert pk is not None
    assert apply_new(session_factory, pk, lambda session: _mark(session, session.get_one(WebhookEvent, pk)))
    before = _row(session_factory, pk)
    clock.set(clock.now() + timedelta(minutes=5))
    statements.clear()
    again = store_new(session_factory, "stripe", "evt_1", "payment_intent.processing", '{"id": "evt_1", "x": 1}',
                      {"Stripe-Signature": "t=2,v1=def"})
    assert again is None
    assert len(statements) == 1 and statements[0].startswith("INSERT INTO webhook_events")
    assert "ON CONFLICT (provider, event_id) DO NOTHING" in statements[0]
    assert _row(session_factory, pk) == before  # the first copy, its headers, times and state
    assert _handled(session_factory, "evt_1") == 1


def test_store_many_keeps_a_request_together_and_marks_its_duplicates(session_factory: sessionmaker[Session]) -> None:
    first = store_many(session_factory, "gocardless", [("EV1", "payments.confirmed", "{}")], {})
    both = store_many(session_factory, "gocardless", [("EV1", "payments.confirmed", "{}"),
                                                      ("EV2", "payments.paid_out", "{}")], {})
    assert first[0] is not None and both[0] is None and both[1] is not None and both[1] != first[0]
    with pytest.raises(Exception):  # a body that cannot be stored: the whole request is refused
        store_many(session_factory, "gocardless", [("EV3", "payments.confirmed", "{}"),
                                                   ("EV4", "payments.confirmed", None)], {})  # type: ignore[list-item]
    with session_factory() as session:
        assert not is_stored(session, "gocardless", "EV3")


def test_a_new_event_is_claimed_applied_and_marked_in_one_transaction(
    session_factory: sessionmaker[Session], statements: list[str]
) -> None:
    pk = store_new(session_factory, "stripe", "evt_1", "payment_intent.succeeded", '{"id": "evt_1"}', HEADERS)
    assert pk is not None
    statements.clear()

    def handler(session: Session) -> None:  # as the routes' handlers: from the payload, not the stored row
        session.add(AuditEvent(actor_type="provider", action="handled.evt_1", entity_type="webhook", entity_id=pk))

    assert apply_new(session_factory, pk, handler)
    # The row is claimed (and marked) by one UPDATE before the handler runs; it is never loaded.
    assert len(statements) == 2
    assert statements[0].startswith("UPDATE webhook_events SET") and "processed_at IS NULL" in statements[0]
    assert statements[1].startswith("INSERT INTO audit_events")
    event_type, body, headers, _, attempts, processed_at, next_attempt_at, error = _row(session_factory, pk)
    assert (attempts, error, next_attempt_at) == (1, None, None) and processed_at == clock.now()
    assert headers == {"stripe-signature": "t=1,v1=abc", "content-type": "application/json"}
    calls: list[int] = []
    assert apply_new(session_factory, pk, lambda session: calls.append(1))  # processed already: not applied again
    assert calls == [] and _handled(session_factory, "evt_1") == 1 and _row(session_factory, pk)[4] == 1


def test_a_failing_first_attempt_rolls_back_the_handler_and_keeps_the_error(
    session_factory: sessionmaker[Session],
) -> None:
    pk = store_new(session_factory, "stripe", "evt_1", "payment_intent.succeeded", '{"id": "evt_1"}', HEADERS)
    assert pk is not None

    def broken(session: Session) -> None:
        _mark(session, session.get_one(WebhookEvent, pk))
        session.flush()
        raise RuntimeError("database hiccup")

    assert not apply_new(session_factory, pk, broken)
    assert _handled(session_factory, "evt_1") == 0  # the handler's writes were rolled back, the claim too
    _, _, _, _, attempts, processed_at, next_attempt_at, error = _row(session_factory, pk)
    assert attempts == 1 and processed_at is None and "database hiccup" in (error or "")
    assert next_attempt_at == clock.now() + webhooks.RETRY.backoff(1)
    clock.set(clock.now() + timedelta(minutes=2))
    assert retry_due(session_factory, {"stripe": _mark}).processed == 1
    assert _handled(session_factory, "evt_1") == 1 and _row(session_factory, pk)[4] == 2


def test_a_delivery_waits_for_the_sqlite_writer_only_so_long(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the intake's writes queue on one lock of the process; a writer that never lets
    go (a handler stuck on a provider) makes the next delivery fail, not hang. PostgreSQL has row
    locks: its writers never queue in the process."""
    monkeypatch.setattr(sqlite_writer, "WRITER_WAIT", 0)  # no wait at all: the lock is held below
    with sqlite_writer.one_writer(session_factory):
        if session_factory.kw["bind"].dialect.name == "sqlite":
            with pytest.raises(TimeoutError):
                store_new(session_factory, "stripe", "evt_1", "payment_intent.succeeded", "{}", HEADERS)
        else:
            assert store_new(session_factory, "stripe", "evt_0", "payment_intent.succeeded", "{}", HEADERS)
    assert store_new(session_factory, "stripe", "evt_1", "payment_intent.succeeded", "{}", HEADERS) is not None


def _handled_in(session: Session, event_id: str = "evt_1") -> None:
    session.add(AuditEvent(actor_type="provider", action=f"handled.{event_id}", entity_type="webhook", entity_id=0))


def test_a_new_event_is_stored_processed_and_applied_in_one_transaction(
    session_factory: sessionmaker[Session], statements: list[str]
) -> None:
    assert store_and_apply(session_factory, "stripe", "evt_1", "payment_intent.succeeded", '{"id": "evt_1"}', HEADERS,
                           _handled_in) is True
    # Stored already marked done, then applied: no claim UPDATE, the row never read back.
    assert [s.split(None, 3)[:3] for s in statements] == [["INSERT", "INTO", "webhook_events"],
                                                          ["INSERT", "INTO", "audit_events"]]
    with session_factory() as session:
        [pk] = session.scalars(select(WebhookEvent.id)).all()
    event_type, body, headers, received_at, attempts, processed_at, next_attempt_at, error = _row(session_factory, pk)
    assert (event_type, body, attempts, error, next_attempt_at) == ("payment_intent.succeeded", '{"id": "evt_1"}', 1,
                                                                    None, None)
    assert processed_at == received_at == clock.now()
    assert headers == {"stripe-signature": "t=1,v1=abc", "content-type": "application/json"}
    assert _handled(session_factory, "evt_1") == 1
    assert retry_due(session_factory, {"stripe": _mark}).processed == 0
    clock.set(clock.now() + timedelta(days=1))
    assert retry_due(session_factory, {"stripe": _mark}).processed == 0  # done: the worker never takes it


def test_a_duplicate_is_neither_applied_nor_changed(session_factory: sessionmaker[Session]) -> None:
    assert store_and_apply(session_factory, "stripe", "evt_1", "payment_intent.succeeded", '{"id": "evt_1"}', HEADERS,
                           _handled_in)
    with session_factory() as session:
        [pk] = session.scalars(select(WebhookEvent.id)).all()
    before = _row(session_factory, pk)
    clock.set(clock.now() + timedelta(minutes=5))
    calls: list[int] = []
    assert store_and_apply(session_factory, "stripe", "evt_1", "payment_intent.processing", '{"x": 1}', {},
                           lambda session: calls.append(1)) is None
    assert calls == [] and _row(session_factory, pk) == before and _handled(session_factory, "evt_1") == 1
    # The same id from another provider is another event.
    assert store_and_apply(session_factory, "gocardless", "evt_1", "payments.confirmed", "{}", {}, _handled_in)


def test_a_failing_event_is_rolled_back_then_kept_with_its_error_for_the_worker(
    session_factory: sessionmaker[Session],
) -> None:
    def broken(session: Session) -> None:
        _handled_in(session)
        session.flush()
        raise RuntimeError("database hiccup")

    assert store_and_apply(session_factory, "stripe", "evt_1", "payment_intent.succeeded", '{"id": "evt_1"}', HEADERS,
                           broken) is False
    assert _handled(session_factory, "evt_1") == 0  # the handler's writes went with the first transaction
    with session_factory() as session:
        [pk] = session.scalars(select(WebhookEvent.id)).all()
    event_type, body, headers, _, attempts, processed_at, next_attempt_at, error = _row(session_factory, pk)
    assert (event_type, body, attempts, processed_at) == ("payment_intent.succeeded", '{"id": "evt_1"}', 1, None)
    assert headers == {"stripe-signature": "t=1,v1=abc", "content-type": "application/json"}
    assert "database hiccup" in (error or "") and next_attempt_at == clock.now() + webhooks.RETRY.backoff(1)
    # Stored: a second delivery is a duplicate; the worker applies it once its retry is due.
    assert store_and_apply(session_factory, "stripe", "evt_1", "payment_intent.succeeded", "{}", {}, _handled_in) is None
    assert retry_due(session_factory, {"stripe": _mark}).processed == 0
    clock.set(clock.now() + webhooks.RETRY.backoff(1))
    assert retry_due(session_factory, {"stripe": _mark}).processed == 1
    assert _handled(session_factory, "evt_1") == 1 and _row(session_factory, pk)[4] == 2


def test_an_event_not_ours_is_kept_done_and_never_retried(session_factory: sessionmaker[Session]) -> None:
    def stray(session: Session) -> None:
        _handled_in(session)
        raise NotOurs("pi_x is none of ours")

    assert store_and_apply(session_factory, "stripe", "evt_1", "payment_intent.succeeded", "{}", HEADERS, stray) is True
    assert _handled(session_factory, "evt_1") == 0
    with session_factory() as session:
        stored = session.scalars(select(WebhookEvent)).one()
        assert (stored.outcome, stored.note, stored.attempts, stored.error, stored.next_attempt_at) == (
            NOT_OURS, "pi_x is none of ours", 1, None, None)
        assert stored.processed_at == clock.now()


def test_stored_already_is_true_only_when_every_event_is(session_factory: sessionmaker[Session]) -> None:
    store_many(session_factory, "gocardless", [("EV1", "payments.confirmed", "{}"), ("EV2", "payments.paid_out", "{}")],
               {})
    with session_factory() as session:
        connection = session.connection()
        assert stored_already(connection, "gocardless", ["EV1"])
        assert stored_already(connection, "gocardless", ["EV1", "EV2"])
        assert stored_already(connection, "gocardless", ["EV2", "EV1", "EV2"])
        assert not stored_already(connection, "gocardless", ["EV1", "EV3"])
        assert not stored_already(connection, "stripe", ["EV1"])


def test_a_failure_that_is_not_the_handlers_fails_the_delivery_and_stores_nothing(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the handler's failures are kept for the worker: an event that cannot be stored, or a
    SQLite writer that never lets go, fails the request (the provider delivers it again)."""
    calls: list[int] = []
    with pytest.raises(Exception):  # noqa: B017 - the database's own error (a body that cannot be stored)
        store_and_apply(session_factory, "stripe", "evt_1", "payment_intent.succeeded", None,  # type: ignore[arg-type]
                        HEADERS, lambda session: calls.append(1))
    monkeypatch.setattr(sqlite_writer, "WRITER_WAIT", 0)
    with sqlite_writer.one_writer(session_factory):
        if session_factory.kw["bind"].dialect.name == "sqlite":
            with pytest.raises(TimeoutError):
                store_and_apply(session_factory, "stripe", "evt_2", "payment_intent.succeeded", "{}", HEADERS,
                                lambda session: calls.append(2))
    assert calls == []
    with session_factory() as session:
        assert not is_stored(session, "stripe", "evt_1") and not is_stored(session, "stripe", "evt_2")


def test_the_sqlite_writer_is_one_across_processes(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `encours serve` processes on one SQLite file: the intake's writers queue on a lock file
    beside the database instead of in SQLite's busy handler. While another process holds it, a
    delivery waits (bounded: it fails, and the provider delivers it again); once let go, it goes in."""
    from payments.webhooks import store_unchanged

    bind = session_factory.kw["bind"]
    if bind.dialect.name != "sqlite":  # a server database has no lock file: its own locks suffice
        store_unchanged(session_factory, "stripe", "evt_pg", "payment_intent.processing", "{}", HEADERS)
        with session_factory() as session:
            assert is_stored(session, "stripe", "evt_pg")
        return
    with sqlite_writer_held_elsewhere(bind.engine.url.database):
        monkeypatch.setattr(sqlite_writer, "WRITER_WAIT", 0.2)
        with pytest.raises(TimeoutError, match="another process"):
            store_unchanged(session_factory, "stripe", "evt_1", "payment_intent.processing", "{}", HEADERS)
        with session_factory() as session:
            assert not is_stored(session, "stripe", "evt_1")
    assert store_unchanged(session_factory, "stripe", "evt_1", "payment_intent.processing", "{}", HEADERS) is True
    assert store_unchanged(session_factory, "stripe", "evt_1", "payment_intent.processing", "{}", HEADERS) is None
    with session_factory() as session:
        stored = session.scalars(select(WebhookEvent)).one()
        assert (stored.processed_at, stored.attempts, stored.next_attempt_at) == (clock.now(), 1, None)


def test_the_workers_due_events_are_found_through_the_pending_index(session_factory: sessionmaker[Session]) -> None:
    """ix_webhook_events_pending holds the unprocessed events only (migration 0041); the worker's
    query for the due ones still reads through it, not through every event of the provider (with
    next_attempt_at alone as its column, SQLite's planner chose the (provider, event_id) index)."""
    with session_factory() as session, session.begin():
        _store(session, "evt_lost")
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().startswith("SELECT webhook_events.id, webhook_events.provider \nFROM") \
                and "ORDER BY webhook_events.received_at" in statement:
            seen.append((statement, parameters))

    with session_factory() as session:
        engine = session.get_bind().engine
    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        clock.set(clock.now() + webhooks.FIRST_RETRY)
        assert retry_due(session_factory, {"stripe": _mark}).processed == 1
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    assert seen, "the worker's query was not seen"
    with session_factory() as session:
        connection = session.connection()
        for statement, parameters in seen:
            if connection.dialect.name == "sqlite":
                rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
                plan = "\n".join(str(row[-1]) for row in rows)
            else:  # too few rows for PostgreSQL's planner to prefer any index: its plan is not checked
                continue
            assert "ix_webhook_events_pending" in plan, plan
