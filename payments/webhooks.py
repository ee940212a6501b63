"""Provider-neutral webhook intake (dj-stripe style).

A provider's route verifies the signature on the raw body first, then, for one event that needs
nothing from the provider's API:

    if stored_already(connection, "stripe", [event_id]):  # one indexed read (SQLite: on the event loop)
        return 200  # a duplicate: nothing written, nothing applied
    store_and_apply(session_factory, "stripe", event_id, event_type, body, headers,
                    lambda session: apply_event(session, payload))  # one transaction of its own
    return 200

An event its provider tells unchanged by one read (`PaymentProvider.triage`: a decline told
again, a late status) is stored already processed by `store_unchanged`, one statement; one that
the same read tells moves a payment without settling money (a new decline reason, `processing`)
is stored and written with Core statements by `store_and_write`, in one transaction.

`store_and_apply` keeps the event raw, once per (provider, event id), with a single
`INSERT ... ON CONFLICT DO NOTHING RETURNING id` (the unique key decides between two concurrent
deliveries: the second one's insert does nothing) that already marks it processed, and applies it
in the same transaction: the event and its effects commit together. When the handler raises, both
roll back and the event is stored with its error in a transaction of its own. Events that ask the
provider something first, and requests of several events, are stored first (`store_new`,
`store_many`: committed before anything is applied) and applied by `apply_new`, with the payload
the route already parsed; `process_event` applies any stored event (the worker's retries, staff
replays) with a handler `(session, event) -> None`. Either way a handler that raises leaves the
ledger untouched, and the event keeps its error and is retried by the worker (`retry_due`) with
backoff. Handlers must be idempotent: a retry may follow a crash after commit.

An event about something we did not create (the handler raises `payments.base.NotOurs`) is kept,
marked processed with the outcome "not_ours" and why, and never retried. A provider's handler
(`ProviderHandler`) asks the provider what it needs *before* the event's transaction
(`prepare`): no transaction, and no SQLite writer, is ever held across a provider call.
"""

from __future__ import annotations

import functools
import json
import logging
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from sqlalchemy import (ColumnElement, Connection, Engine, Insert, Select, String, Subquery, Table, and_, bindparam,
                        case, exists, null, select, true, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from kernel.clock import clock
from kernel.retry import RetryPolicy
from kernel.sqlite_writer import one_writer
from kernel.db import SQLITE_BEGIN_OPTION, driver_rows, statement_connection, unit_of_work, write_connection
from kernel.loop_reads import BatchedRead, LoopReads
from ledger.models import WebhookEvent
from payments.base import NotOurs, PaymentProvider, PaymentWrites, ProviderEvent

if TYPE_CHECKING:
    from kernel.settings import Settings

log = logging.getLogger("encours.webhooks")

Handler = Callable[[Session, WebhookEvent], Any]
# A handler `ProviderHandler.prepare` made for one event: it needs nothing of the stored row.
PreparedHandler = Callable[[Session, WebhookEvent | None], str]
NOT_OURS = "not_ours"

# The route processes an event at once; the worker takes it only if that did not happen by then.
RETRY = RetryPolicy(max_attempts=10)
MAX_ATTEMPTS = RETRY.max_attempts
# A stored event is first applied at once; if that process dies first, the worker takes it then.
FIRST_RETRY = RETRY.backoff(1)
KEPT_HEADERS = ("content-type", "user-agent", "stripe-signature", "webhook-signature", "origin")


def is_stored(session: Session, provider: str, event_id: str) -> bool:
    """Whether this (provider, event id) is stored already."""
    return session.execute(_STORED, {"provider": provider, "event_id": event_id}).first() is not None


_TABLE = WebhookEvent.metadata.tables[WebhookEvent.__tablename__]


def _is_event(provider: Any, event_id: Any) -> ColumnElement[bool]:
    """The stored event of this provider and id (both parameters, or the columns of a batch's questions)."""
    return and_(_TABLE.c.provider == provider, _TABLE.c.event_id == event_id)


_STORED = select(_TABLE.c.id).where(_is_event(bindparam("provider"), bindparam("event_id")))
_STORED_ONE = select(_TABLE.c.event_id).where(_is_event(bindparam("provider"), bindparam("event_id")))
_STORED_MANY = select(_TABLE.c.event_id).where(_TABLE.c.provider == bindparam("provider"),
                                               _TABLE.c.event_id.in_(bindparam("event_ids", expanding=True)))
_INSERT_DIALECTS: dict[str, Callable[[Table], sqlite.Insert | postgresql.Insert]] = {
    "sqlite": sqlite.insert, "postgresql": postgresql.insert}
_INSERTS: dict[str, Insert] = {}


def _insert(dialect: str) -> Insert:
    """`INSERT ... ON CONFLICT (provider, event_id) DO NOTHING RETURNING id`, built once per dialect."""
    statement = _INSERTS.get(dialect)
    if statement is None:
        columns = ("provider", "event_id", "event_type", "body", "headers", "received_at", "attempts",
                   "next_attempt_at", "processed_at", "error", "outcome", "note")
        statement = (
            _INSERT_DIALECTS[dialect](_TABLE)
            .values({name: bindparam(name, type_=_TABLE.c[name].type) for name in columns})
            .on_conflict_do_nothing(index_elements=["provider", "event_id"])
            .returning(_TABLE.c.id)
        )
        _INSERTS[dialect] = statement
    return statement


def insert_event(
    connection: Connection, provider: str, event_id: str, event_type: str, body: str, headers: Mapping[str, str],
    state: Mapping[str, Any] | None = None,
) -> int | None:
    """Keep the raw event in the caller's transaction: its new row id, or None when this (provider,
    event id) is stored already. One statement either way, race-safe: of two concurrent deliveries
    the unique key lets one insert; the other's insert does nothing (on PostgreSQL it waits for the
    first to commit or roll back), with no error to recover from. `state`: the processing columns
    (attempts, processed_at, next_attempt_at, error, outcome, note) when they are known already;
    by default a new event waiting for its first attempt."""
    rows = driver_rows(connection, _insert(connection.dialect.name),
                       event_row(provider, event_id, event_type, body, headers, state))
    return int(rows[0][0]) if rows else None


def event_row(
    provider: str, event_id: str, event_type: str, body: str, headers: Mapping[str, str],
    state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The stored event's columns (`insert_event`'s parameters)."""
    now = clock.now()
    return {
        "provider": provider,
        "event_id": event_id,
        "event_type": event_type,
        "body": body,
        "headers": {name.lower(): value for name, value in headers.items() if name.lower() in KEPT_HEADERS},
        "received_at": now,
        "attempts": 0,
        "next_attempt_at": now + FIRST_RETRY,
        "processed_at": None,
        "error": None,
        "outcome": None,
        "note": None,
        **(state or {}),
    }


def stored_already(connection: Connection, provider: str, event_ids: list[str]) -> bool:
    """Whether every one of these events of `provider` is stored already: one indexed read, which on
    SQLite neither waits for nor takes the one write lock, so a duplicate delivery is answered
    without queuing behind the writers."""
    if len(set(event_ids)) == 1:  # most deliveries: a statement compiled once, on the driver's cursor
        return bool(driver_rows(connection, _STORED_ONE, {"provider": provider, "event_id": event_ids[0]}))
    found = connection.execute(_STORED_MANY, {"provider": provider, "event_ids": event_ids}).all()
    return len(found) == len(set(event_ids))


# `_STORED_ONE` for many events at once (kernel.loop_reads): whether each is stored, one row per question.
STORED_ASKED = BatchedRead(lambda q: select(q.c.n, exists().where(_is_event(q.c.provider, q.c.event_id))),
                           (("provider", String()), ("event_id", String())))

async def stored_one_on_loop(reads: LoopReads, provider: str, event_id: str) -> bool:
    """`stored_already` of one event through `reads` (PostgreSQL, on the event loop): the same
    indexed read, without the hop to the thread pool, asked in one statement with the other events
    checked at the same time on this loop."""
    return bool((await reads.ask(STORED_ASKED, {"provider": provider, "event_id": event_id}))[0])


def store_and_apply(
    session_factory: sessionmaker[Session], provider: str, event_id: str, event_type: str, body: str,
    headers: Mapping[str, str], apply: Callable[[Session], Any],
) -> bool | None:
    """One new event stored raw and applied with `apply(session)` (from the payload the caller
    already parsed, the same bytes as the stored body) in ONE transaction of its own: None when it
    was stored already (a duplicate: nothing applied), True when it is applied (or not ours), False
    when it failed and is kept for a retry.

    The event and what it did commit together or not at all: no claim to write, no second
    transaction. When `apply` raises, both are rolled back and the event is then stored with its
    error (or as not ours) in a transaction of its own, as `apply_new` would have left it: the raw
    event is kept whatever its handler does. A crash before the commit keeps nothing and answers
    nothing, so the provider delivers the event again. The event row goes in on the driver's
    cursor (`kernel.db.driver_rows`); `apply` gets a Session joined to that transaction."""
    failure: Exception | None = None
    try:
        with one_writer(session_factory), write_connection(session_factory) as connection:
            pk = insert_event(connection, provider, event_id, event_type, body, headers,
                              {"attempts": 1, "processed_at": clock.now(), "next_attempt_at": None})
            if pk is None:
                return None
            try:
                # Joined to the connection's transaction: its commit only flushes (a savepoint's
                # release under tests' outer transaction); the connection commits below.
                with Session(bind=connection, expire_on_commit=False,
                             join_transaction_mode="conditional_savepoint") as session:
                    apply(session)
                    session.commit()
            except Exception as error:  # the handler's failure: kept below, once all is rolled back
                failure = error
                raise
        return True
    except Exception:
        if failure is None:  # not the handler's (the database, the writer's wait): the delivery fails
            raise
    if isinstance(failure, NotOurs):
        log.warning("webhook %s %s is not ours: %s", provider, event_id, failure)
        state = {"attempts": 1, "processed_at": clock.now(), "next_attempt_at": None, "outcome": NOT_OURS,
                 "note": str(failure)[:2000]}
    else:
        log.warning("webhook %s %s failed: %s", provider, event_id, failure)
        state = {"attempts": 1, "next_attempt_at": RETRY.next_attempt(1, clock.now()),
                 "error": "".join(traceback.format_exception(failure))[-4000:]}
    with one_writer(session_factory), statement_connection(session_factory) as connection:
        if insert_event(connection, provider, event_id, event_type, body, headers, state) is None:
            return None  # another delivery stored it meanwhile: that one applies it
    return isinstance(failure, NotOurs)


def store_unchanged(
    session_factory: sessionmaker[Session], provider: str, event_id: str, event_type: str, body: str,
    headers: Mapping[str, str],
) -> bool | None:
    """A new event that changes nothing, as a read has just told (`PaymentProvider.triage`, no writes):
    stored raw already marked processed, in one statement that is its whole transaction (on
    PostgreSQL in autocommit; on SQLite the one writer holds the lock for that INSERT alone).
    True when stored, None when it was stored already (a duplicate).

    Told by a read before the write, not under a lock: the event is applied, in effect, at that
    read, where it changes nothing; whatever commits between the read and the INSERT comes after
    it in the order of events, so nothing is lost and no status moves backwards. Its record is
    one statement: stored and applied in one transaction of its own all the same."""
    with one_writer(session_factory), statement_connection(session_factory) as connection:
        pk = insert_event(connection, provider, event_id, event_type, body, headers,
                          {"attempts": 1, "processed_at": clock.now(), "next_attempt_at": None})
    return None if pk is None else True


class _Moved(Exception):
    """The payment or checkout changed between the read and the write: roll back."""


def store_and_write(
    session_factory: sessionmaker[Session], provider: str, event_id: str, event_type: str, body: str,
    headers: Mapping[str, str], writes: PaymentWrites,
) -> bool | None:
    """A new event that moves a payment without settling money, as a read has just told
    (`PaymentProvider.triage`): stored raw already marked processed and `writes` made with Core
    statements (`payments.settlement.write_payment`), in ONE transaction of its own, as
    `store_and_apply` would store and apply it through the ORM handler. True when done, None
    when the event was stored already (a duplicate: nothing written), False when the payment or
    its checkout changed since the read: nothing is kept and the caller hands the event to
    `store_and_apply`."""
    from payments.settlement import write_payment, write_payment_with_event

    done = {"attempts": 1, "processed_at": clock.now(), "next_attempt_at": None}
    bind = session_factory.kw.get("bind")
    if bind is not None and bind.dialect.name == "postgresql":
        # One statement, its own transaction (autocommit): one round trip instead of five.
        with statement_connection(session_factory) as connection:
            return write_payment_with_event(connection, provider, writes,
                                            event_row(provider, event_id, event_type, body, headers, done))
    try:
        with one_writer(session_factory), write_connection(session_factory) as connection:
            pk = insert_event(connection, provider, event_id, event_type, body, headers, done)
            if pk is None:
                return None
            if not write_payment(connection, provider, writes):
                raise _Moved
    except _Moved:
        return False
    return True


@functools.cache
def stored_and_payment_asked() -> BatchedRead:
    """PostgreSQL, on the event loop (`intake_on_loop`): whether the event is stored (`_is_event`, as
    `STORED_ASKED`), and, only when it is not, `triage`'s read of the payment its update names
    (`payments.settlement.payment_and_checkout`, the same clauses), for many events at once. A
    duplicate reads no payment: its reference is NULL once the event is found stored (`NOT stored`
    as a join filter read the payment for every question). No payment asked (NULL) or none
    recorded: NULLs. Built on first use: payments.settlement imports this module."""
    from payments.settlement import payment_and_checkout

    def build(q: Subquery) -> Select[Any]:
        stored = select(exists().where(_is_event(q.c.provider, q.c.event_id)).label("stored")).lateral("s")
        payment = payment_and_checkout(q.c.payment_provider,
                                       case((stored.c.stored, null()), else_=q.c.provider_ref)).lateral("t")
        return (select(q.c.n, stored.c.stored, *payment.c)
                .select_from(q.join(stored, true()).outerjoin(payment, true())))

    return BatchedRead(build, (("provider", String()), ("event_id", String()), ("payment_provider", String()),
                               ("provider_ref", String())))


async def intake_on_loop(reads: LoopReads, provider: PaymentProvider, event: ProviderEvent,
                         headers: Mapping[str, str]) -> str | None:
    """One event that needs nothing from the provider's API, taken in on PostgreSQL's event loop
    (`kernel.loop_reads`), without the thread pool: ONE read tells whether it is stored already
    and what `triage` tells of it; an event that changes nothing is then stored already
    processed, and one that moves its payment without settling money is stored with its writes
    (`payments.settlement.write_payment_with_event`), each in ONE statement on a loop connection
    in autocommit (its own transaction, no BEGIN/COMMIT round trips). The outcome for the answer
    ("duplicate", "processed"), or None when the event is for `store_and_apply` (not stored yet,
    not told by the read, or its payment moved since the read: nothing written).

    A write whose outcome is unknown (timed out, its connection lost) is never sent again here:
    it raises, the delivery is answered 5xx and the provider sends the event again. That is safe
    whether or not the first write committed: the event's INSERT is ON CONFLICT DO NOTHING on
    (provider, event id), so a committed first write makes the second delivery a duplicate, and
    one that did not commit left nothing."""
    from payments.settlement import payment_with_event, payment_with_event_done, triage_reads, triage_told

    asked = provider.triage_update(event)
    update, by_checkout_ref = asked if asked is not None and triage_reads(asked[0]) else (None, False)
    row = await reads.ask(stored_and_payment_asked(), {
        "provider": provider.name, "event_id": event.id, "payment_provider": None if update is None else update.provider,
        "provider_ref": None if update is None else update.provider_ref})
    if row[0]:
        return "duplicate"
    if update is None:
        return None
    told = triage_told(update, row[1:] if row[1] is not None else None, by_checkout_ref=by_checkout_ref)
    if told is None:
        return None
    stored = event_row(provider.name, event.id, event.type, event.body, headers,
                       {"attempts": 1, "processed_at": clock.now(), "next_attempt_at": None})
    if told.writes is None:  # store_unchanged's one statement
        return "processed" if await reads.write(_insert("postgresql"), stored) else "duplicate"
    statement, params = payment_with_event(reads.dialect, provider.name, told.writes, stored)
    done = payment_with_event_done((await reads.write(statement, params))[0])
    if done is False:  # the payment moved since the read: the handler decides
        return None
    return "duplicate" if done is None else "processed"


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
    if len(events) == 1:  # one statement: no transaction of its own around it (on PostgreSQL)
        with one_writer(session_factory), statement_connection(session_factory) as connection:
            return [insert_event(connection, provider, *events[0], headers)]
    with one_writer(session_factory), unit_of_work(session_factory) as session:
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
        with one_writer(session_factory), unit_of_work(session_factory) as session:
            # First, as process_event and retry_due do: the event row is locked before anything
            # the handler locks (on PostgreSQL; on SQLite the transaction holds the write lock).
            claimed = session.connection().execute(_CLAIM_DONE, {"pk": event_pk, "now": clock.now()}).rowcount
            if not claimed:
                return True  # processed meanwhile (a replay, the worker)
            apply(session)
        return True
    except NotOurs as unmatched:
        failure: Exception = unmatched
    except Exception as error:  # noqa: BLE001 - any failure is kept and retried
        failure = error
    with one_writer(session_factory), unit_of_work(session_factory) as session:
        event = session.get(WebhookEvent, event_pk, with_for_update=True)
        if event is None:
            raise LookupError(f"no webhook event {event_pk}") from failure
        if event.processed_at is not None:
            return True
        event.attempts += 1
        if isinstance(failure, NotOurs):
            _not_ours(event, failure)
            return True
        _failed(event, failure)
        return False


def process_event(session_factory: sessionmaker[Session], event_pk: int, handler: Handler) -> bool:
    """Apply one stored event in its own transaction; True when it is (or already was) processed.

    On an exception the handler's writes are rolled back, the error is kept and a retry scheduled
    (none after MAX_ATTEMPTS: `next_attempt_at` is cleared and staff see the error).
    """
    handler = prepared(session_factory, event_pk, handler)
    with unit_of_work(session_factory) as session:
        event = session.get(WebhookEvent, event_pk, with_for_update=True)
        if event is None:
            raise LookupError(f"no webhook event {event_pk}")
        if event.processed_at is not None:
            return True
        return _attempt(session, event, handler)


def reading(session_factory: sessionmaker[Session]) -> Session:
    """A session of `session_factory`'s database that only reads: on SQLite a deferred BEGIN, so
    it neither waits for nor holds the one write lock (as kernel.db's `write=False` sessions)."""
    bind = session_factory.kw.get("bind")
    if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
        return Session(bind=bind.execution_options(**{SQLITE_BEGIN_OPTION: None}), expire_on_commit=False)
    return session_factory()


def prepared(session_factory: sessionmaker[Session], event_pk: int, handler: Handler) -> Handler:
    """A provider's handler made ready for one stored event: what it asks of the provider is asked
    now, outside any transaction (a plain handler is returned as it is)."""
    prepare = getattr(handler, "prepare", None)
    if prepare is None:
        return handler
    result: Handler = prepare(session_factory, stored_event(session_factory, event_pk))
    return result


def stored_event(session_factory: sessionmaker[Session], event_pk: int) -> ProviderEvent:
    """A stored event's id, type and raw body, as `ProviderHandler.prepare` takes them."""
    with reading(session_factory) as session:
        stored = session.get(WebhookEvent, event_pk)
        if stored is None:
            raise LookupError(f"no webhook event {event_pk}")
        return ProviderEvent(id=stored.event_id, type=stored.event_type, payload={}, body=stored.body)


@dataclass(frozen=True)
class ProviderHandler:
    """A provider's stored events as the worker and staff replays apply them: `prepare` asks the
    provider what it needs first (outside any transaction); the handler it returns applies the
    event in the event's transaction."""

    provider: PaymentProvider
    settings: Settings

    def prepare(self, session_factory: sessionmaker[Session], stored: ProviderEvent) -> PreparedHandler:
        event = provider_event(stored.id, stored.type, stored.body)
        fetched: Any = None
        failure: Exception | None = None
        try:
            with reading(session_factory) as session:
                fetched = self.provider.fetch(self.settings, session, event)
        except Exception as error:  # noqa: BLE001 - raised again in the event's transaction, kept there
            failure = error

        def apply(session: Session, _stored: WebhookEvent | None) -> str:
            if failure is not None:
                raise failure
            return self.provider.apply(session, self.settings, event, fetched)

        return apply

    def __call__(self, session: Session, stored: WebhookEvent) -> str:
        """Fetch and apply in the caller's transaction: only where no transaction of our own can be
        avoided; the worker and replays `prepare` instead."""
        event = provider_event(stored.event_id, stored.event_type, stored.body)
        return self.provider.apply(session, self.settings, event, self.provider.fetch(self.settings, session, event))


def provider_event(event_id: str, event_type: str, body: str) -> ProviderEvent:
    """A stored event as its provider verified it (its raw body is the event's JSON)."""
    payload = json.loads(body)
    return ProviderEvent(id=event_id, type=event_type, payload=payload if isinstance(payload, dict) else {}, body=body)


def _attempt(session: Session, event: WebhookEvent, handler: Handler) -> bool:
    """One attempt at a locked, unprocessed event, in the caller's transaction."""
    event.attempts += 1
    try:
        with session.begin_nested():
            handler(session, event)
    except NotOurs as unmatched:
        _not_ours(event, unmatched)
        return True
    except Exception as error:  # noqa: BLE001 - any failure is kept and retried
        _failed(event, error)
        return False
    event.processed_at = clock.now()
    event.next_attempt_at = None
    event.error = None
    return True


def _not_ours(event: WebhookEvent, why: NotOurs) -> None:
    """An event about something we did not create: kept for the log, done with, never retried."""
    log.warning("webhook %s %s is not ours: %s", event.provider, event.event_id, why)
    event.processed_at = clock.now()
    event.next_attempt_at = None
    event.error = None
    event.outcome = NOT_OURS
    event.note = str(why)[:2000]


def _failed(event: WebhookEvent, error: BaseException) -> None:
    """Keep an attempt's error and schedule the next (none after MAX_ATTEMPTS)."""
    log.warning("webhook %s %s failed: %s", event.provider, event.event_id, error)
    event.error = "".join(traceback.format_exception(error))[-4000:]
    event.next_attempt_at = RETRY.next_attempt(event.attempts, clock.now())


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

    Each due event is first prepared (a provider's handler asks the provider what it needs,
    outside any transaction), then claimed and attempted in one transaction, its due condition
    read again under the claim: on PostgreSQL `FOR UPDATE SKIP LOCKED` (another worker takes the
    next one instead of waiting; one that was attempted meanwhile is left), on SQLite under the
    one write lock the transaction holds from its IMMEDIATE begin.
    """
    processed = failed = 0
    if not handlers:
        return RetryReport()
    seen: set[int] = set()
    for _ in range(limit):
        with reading(session_factory) as session:
            query = (
                select(WebhookEvent.id, WebhookEvent.provider)
                .where(
                    WebhookEvent.processed_at.is_(None),
                    WebhookEvent.next_attempt_at.is_not(None),
                    WebhookEvent.next_attempt_at <= clock.now(),
                    WebhookEvent.provider.in_(list(handlers)),
                )
                .order_by(WebhookEvent.received_at, WebhookEvent.id)
                .limit(1)
            )
            if seen:
                query = query.where(WebhookEvent.id.not_in(seen))
            due = session.execute(query).first()
        if due is None:
            break
        event_pk, provider = int(due[0]), str(due[1])
        seen.add(event_pk)
        handler = prepared(session_factory, event_pk, handlers[provider])
        with unit_of_work(session_factory) as session:
            claim = (
                select(WebhookEvent)
                .where(
                    WebhookEvent.id == event_pk,
                    WebhookEvent.processed_at.is_(None),
                    WebhookEvent.next_attempt_at.is_not(None),
                    WebhookEvent.next_attempt_at <= clock.now(),
                )
            )
            if session.get_bind().dialect.name == "postgresql":
                claim = claim.with_for_update(skip_locked=True)
            event = session.scalars(claim).first()
            if event is None:
                continue  # another worker has it, or did it meanwhile
            if _attempt(session, event, handler):
                processed += 1
            else:
                failed += 1
    return RetryReport(processed=processed, failed=failed)


def registered_handlers(settings: Settings) -> dict[str, Handler]:
    """Every webhook provider's handler (payments.registry), by provider name."""
    from payments.registry import webhook_providers  # the registry imports every provider module

    return {name: ProviderHandler(provider, settings) for name, provider in webhook_providers().items()}


def decode_headers(headers: Any) -> dict[str, str]:
    """Starlette's request headers as a plain dict (for `store_new`)."""
    return {str(name): str(value) for name, value in headers.items()}
