"""Provider-neutral webhook intake (dj-stripe style).

A provider's route verifies the signature on the raw body first, then:

    if is_stored(read_session, "stripe", event_id):  # a duplicate: answered without writing
        return 200
    event, created = store_event(session, "stripe", event_id, event_type, body, headers)  # and commit
    if created:
        process_event(session_factory, event.id, handle_stripe_event)
    return 200

`store_event` keeps each event raw, once per (provider, event id); `process_event` applies one
stored event in its own transaction with a handler `(session, event) -> None`; a handler that
raises leaves the ledger untouched, and the event keeps its error and is retried by the worker
(`retry_due`) with backoff. Handlers must be idempotent: a retry may follow a crash after commit.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from encours.clock import clock
from encours.db import unit_of_work
from ledger.models import WebhookEvent

log = logging.getLogger("encours.webhooks")

Handler = Callable[[Session, WebhookEvent], None]

# provider -> "module:function" of its event handler, imported when the worker needs it.
HANDLERS: tuple[tuple[str, str], ...] = (
    ("stripe", "payments.stripe:handle_event"),
    ("gocardless", "payments.gocardless:handle_event"),
)

# The route processes an event at once; the worker takes it only if that did not happen by then.
FIRST_RETRY = timedelta(minutes=1)
BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
    timedelta(hours=24),
)
MAX_ATTEMPTS = 10
KEPT_HEADERS = ("content-type", "user-agent", "stripe-signature", "webhook-signature", "origin")


def backoff(attempts: int) -> timedelta:
    return BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]


def is_stored(session: Session, provider: str, event_id: str) -> bool:
    """Whether this (provider, event id) is stored already: a read, so that a duplicate delivery
    costs a query and no write transaction (on SQLite, no wait for the write lock)."""
    return session.execute(_STORED, {"provider": provider, "event_id": event_id}).first() is not None


_STORED = select(WebhookEvent.id).where(
    WebhookEvent.provider == bindparam("provider"), WebhookEvent.event_id == bindparam("event_id")
)


def store_event(
    session: Session, provider: str, event_id: str, event_type: str, body: str, headers: Mapping[str, str]
) -> tuple[WebhookEvent, bool]:
    """Keep the raw event; `(stored, False)` when this (provider, event id) was already stored.

    Race-safe: of two concurrent deliveries one inserts, the other gets the stored row. The
    insert comes first (callers check `is_stored` before): the unique key decides.
    """
    event = WebhookEvent(
        provider=provider,
        event_id=event_id,
        event_type=event_type,
        body=body,
        headers={name.lower(): value for name, value in headers.items() if name.lower() in KEPT_HEADERS},
        attempts=0,
        next_attempt_at=clock.now() + FIRST_RETRY,
    )
    try:
        with session.begin_nested():
            session.add(event)
            session.flush()
    except IntegrityError:
        existing = session.scalar(
            select(WebhookEvent).where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
        )
        if existing is None:
            raise
        return existing, False
    return event, True


def process_event(session_factory: sessionmaker[Session], event_pk: int, handler: Handler) -> bool:
    """Apply one stored event in its own transaction; True when it is (or already was) processed.

    On an exception the handler's writes are rolled back, the error is kept and a retry scheduled
    (none after MAX_ATTEMPTS: `next_attempt_at` is cleared and staff see the error).
    """
    with unit_of_work(session_factory) as session:
        event = session.get(WebhookEvent, event_pk, with_for_update=True)
        if event is None:
            raise LookupError(f"no webhook event {event_pk}")
        if event.processed_at is not None:
            return True
        return _attempt(session, event, handler)


def _attempt(session: Session, event: WebhookEvent, handler: Handler) -> bool:
    """One attempt at a locked, unprocessed event, in the caller's transaction."""
    event.attempts += 1
    try:
        with session.begin_nested():
            handler(session, event)
    except Exception as error:  # noqa: BLE001 - any failure is kept and retried
        log.warning("webhook %s %s failed: %s", event.provider, event.event_id, error)
        event.error = "".join(traceback.format_exception(error))[-4000:]
        event.next_attempt_at = clock.now() + backoff(event.attempts) if event.attempts < MAX_ATTEMPTS else None
        return False
    event.processed_at = clock.now()
    event.next_attempt_at = None
    event.error = None
    return True


@dataclass(frozen=True)
class RetryReport:
    processed: int = 0
    failed: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.processed or self.failed)

    def summary(self) -> str:
        return f"{self.processed} processed, {self.failed} failed"


def retry_due(
    session_factory: sessionmaker[Session], handlers: Mapping[str, Handler], limit: int = 100
) -> RetryReport:
    """Process up to `limit` unprocessed events whose retry time has come (the worker's step).

    Each event is claimed and attempted in one transaction. Several workers at once: reading a
    list of due ids first and attempting them after let two workers attempt the same event
    twice in one pass (the second, once the first had failed and committed, found it still
    unprocessed); so the due event is selected `FOR UPDATE SKIP LOCKED` on PostgreSQL (another
    worker takes the next one instead of waiting) and the due condition is read under the
    claim. On SQLite the transaction begins IMMEDIATE and holds the one write lock throughout.
    """
    processed = failed = 0
    if not handlers:
        return RetryReport()
    for _ in range(limit):
        with unit_of_work(session_factory) as session:
            query = (
                select(WebhookEvent)
                .where(
                    WebhookEvent.processed_at.is_(None),
                    WebhookEvent.next_attempt_at.is_not(None),
                    WebhookEvent.next_attempt_at <= clock.now(),
                    WebhookEvent.provider.in_(list(handlers)),
                )
                .order_by(WebhookEvent.received_at, WebhookEvent.id)
                .limit(1)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            event = session.scalars(query).first()
            if event is None:
                break
            if _attempt(session, event, handlers[event.provider]):
                processed += 1
            else:
                failed += 1
    return RetryReport(processed=processed, failed=failed)


def registered_handlers() -> dict[str, Handler]:
    """The handlers named in HANDLERS; a provider whose module cannot be imported is left out."""
    found: dict[str, Handler] = {}
    for provider, path in HANDLERS:
        module_name, _, name = path.partition(":")
        try:
            found[provider] = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as error:
            log.error("webhook handler %s for %s cannot be loaded: %s", path, provider, error)
    return found


def decode_headers(headers: Any) -> dict[str, str]:
    """Starlette's request headers as a plain dict (for `store_event`)."""
    return {str(name): str(value) for name, value in headers.items()}
