"""Provider-neutral webhook intake (dj-stripe style).

A provider's route verifies the signature on the raw body first, then:

    pk = store_new(session_factory, "stripe", event_id, event_type, body, headers)  # its own commit
    if pk is None:
        return 200  # a duplicate: one conflicting insert, nothing applied, nothing read
    apply_new(session_factory, pk, lambda session: apply_event(session, payload))  # its own transaction
    return 200

`store_new` keeps each event raw, once per (provider, event id), with a single
`INSERT ... ON CONFLICT DO NOTHING RETURNING id`: the unique key decides between two concurrent
deliveries, and a duplicate costs that one statement. `apply_new` applies an event the route
has just stored with the payload it already parsed; `process_event` applies any stored event
(the worker's retries, staff replays) with a handler `(session, event) -> None`. Either way a
handler that raises leaves the ledger untouched, and the event keeps its error and is retried
by the worker (`retry_due`) with backoff. Handlers must be idempotent: a retry may follow a
crash after commit.
"""

from __future__ import annotations

import importlib
import logging
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping

from sqlalchemy import Connection, Insert, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from kernel.clock import clock
from kernel.db import unit_of_work
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
    """Whether this (provider, event id) is stored already."""
    return session.execute(_STORED, {"provider": provider, "event_id": event_id}).first() is not None


_TABLE = WebhookEvent.__table__
_STORED = select(_TABLE.c.id).where(_TABLE.c.provider == bindparam("provider"),
                                    _TABLE.c.event_id == bindparam("event_id"))
_INSERT_DIALECTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
_INSERTS: dict[str, Insert] = {}


def _insert(dialect: str) -> Insert:
    """`INSERT ... ON CONFLICT (provider, event_id) DO NOTHING RETURNING id`, built once per dialect."""
    statement = _INSERTS.get(dialect)
    if statement is None:
        columns = ("provider", "event_id", "event_type", "body", "headers", "received_at", "attempts",
                   "next_attempt_at")
        statement = (
            _INSERT_DIALECTS[dialect](_TABLE)
            .values({name: bindparam(name, type_=_TABLE.c[name].type) for name in columns})
            .on_conflict_do_nothing(index_elements=["provider", "event_id"])
            .returning(_TABLE.c.id)
        )
        _INSERTS[dialect] = statement
    return statement


def insert_event(
    connection: Connection, provider: str, event_id: str, event_type: str, body: str, headers: Mapping[str, str]
) -> int | None:
    """Keep the raw event in the caller's transaction: its new row id, or None when this (provider,
    event id) is stored already. One statement either way, race-safe: of two concurrent deliveries
    the unique key lets one insert; the other's insert does nothing (on PostgreSQL it waits for the
    first to commit or roll back), with no error to recover from."""
    now = clock.now()
    row = connection.execute(_insert(connection.dialect.name), {
        "provider": provider,
        "event_id": event_id,
        "event_type": event_type,
        "body": body,
        "headers": {name.lower(): value for name, value in headers.items() if name.lower() in KEPT_HEADERS},
        "received_at": now,
        "attempts": 0,
        "next_attempt_at": now + FIRST_RETRY,
    }).first()
    return None if row is None else int(row[0])


# SQLite has one writer at a time. Intake threads that find the write lock taken wait in SQLite's
# busy handler, which polls with sleeps growing to 100 ms: under a burst of deliveries most of the
# time went there (p99 of 5 s at 111 events/s with the CPU half idle). Queued on a lock of the
# process instead, the next writer starts as soon as the previous one commits. (Writers of other
# processes are still waited for by SQLite's busy handler.) The wait is bounded like SQLite's
# busy timeout: a handler stuck on a provider's API must not hold every delivery forever.
_SQLITE_WRITER = threading.Lock()
WRITER_WAIT = 10.0  # seconds, kernel.db's busy_timeout


@contextmanager
def _one_writer(session_factory: sessionmaker[Session]) -> Iterator[None]:
    bind = session_factory.kw.get("bind")
    if bind is None or bind.dialect.name != "sqlite":
        yield
        return
    if not _SQLITE_WRITER.acquire(timeout=WRITER_WAIT):
        raise TimeoutError(f"the database stayed busy with another webhook for {WRITER_WAIT:.0f} s")
    try:
        yield
    finally:
        _SQLITE_WRITER.release()


def store_new(
    session_factory: sessionmaker[Session], provider: str, event_id: str, event_type: str, body: str,
    headers: Mapping[str, str],
) -> int | None:
    """`insert_event` in a transaction of its own, committed before anything is applied (so the raw
    event survives a handler that fails or a crash): the new row id, or None for a duplicate."""
    return store_many(session_factory, provider, [(event_id, event_type, body)], headers)[0]


def store_many(
    session_factory: sessionmaker[Session], provider: str, events: list[tuple[str, str, str]],
    headers: Mapping[str, str],
) -> list[int | None]:
    """Several events of one request `(event id, type, raw body)` kept together in one transaction
    (all or none): for each, its new row id or None when it was stored already."""
    with _one_writer(session_factory), unit_of_work(session_factory) as session:
        connection = session.connection()
        return [insert_event(connection, provider, event_id, event_type, body, headers)
                for event_id, event_type, body in events]


def store_event(
    session: Session, provider: str, event_id: str, event_type: str, body: str, headers: Mapping[str, str]
) -> tuple[WebhookEvent, bool]:
    """`insert_event` in the caller's session, with the stored row: `(stored, False)` when this
    (provider, event id) was already stored (its row is left as it was)."""
    session.flush()
    pk = insert_event(session.connection(), provider, event_id, event_type, body, headers)
    if pk is None:
        existing = session.scalar(
            select(WebhookEvent).where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
        )
        if existing is None:  # the conflicting row vanished meanwhile: nothing sensible to return
            raise LookupError(f"webhook event {provider} {event_id} conflicts but cannot be read")
        return existing, False
    return session.get_one(WebhookEvent, pk), True


# The route's first attempt claims the event and marks it processed with one conditional UPDATE,
# without loading it; a failure rolls the mark back with the handler's writes.
_CLAIM_DONE = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("pk"), _TABLE.c.processed_at.is_(None))
    .values(attempts=_TABLE.c.attempts + 1, processed_at=bindparam("now", type_=_TABLE.c.processed_at.type),
            next_attempt_at=None, error=None)
)


def apply_new(session_factory: sessionmaker[Session], event_pk: int, apply: Callable[[Session], Any]) -> bool:
    """Apply an event just stored by `store_new`, in its own transaction, with `apply(session)`
    working from the payload the caller already parsed (the same bytes as the stored body).
    True when it is (or already was) processed. On an exception nothing of the attempt is kept
    but the error, recorded as `process_event` does, and a retry scheduled."""
    try:
        with _one_writer(session_factory), unit_of_work(session_factory) as session:
            # First, as process_event and retry_due do: the event row is locked before anything
            # the handler locks (on PostgreSQL; on SQLite the transaction holds the write lock).
            claimed = session.connection().execute(_CLAIM_DONE, {"pk": event_pk, "now": clock.now()}).rowcount
            if not claimed:
                return True  # processed meanwhile (a replay, the worker)
            apply(session)
        return True
    except Exception as error:  # noqa: BLE001 - any failure is kept and retried
        failure = error
    with _one_writer(session_factory), unit_of_work(session_factory) as session:
        event = session.get(WebhookEvent, event_pk, with_for_update=True)
        if event is None:
            raise LookupError(f"no webhook event {event_pk}") from failure
        if event.processed_at is not None:
            return True
        event.attempts += 1
        _failed(event, failure)
        return False


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
        _failed(event, error)
        return False
    event.processed_at = clock.now()
    event.next_attempt_at = None
    event.error = None
    return True


def _failed(event: WebhookEvent, error: BaseException) -> None:
    """Keep an attempt's error and schedule the next (none after MAX_ATTEMPTS)."""
    log.warning("webhook %s %s failed: %s", event.provider, event.event_id, error)
    event.error = "".join(traceback.format_exception(error))[-4000:]
    event.next_attempt_at = clock.now() + backoff(event.attempts) if event.attempts < MAX_ATTEMPTS else None


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
    """Starlette's request headers as a plain dict (for `store_new`)."""
    return {str(name): str(value) for name, value in headers.items()}
