"""Outgoing webhooks: the worker sends the queued deliveries (ledger.events queues them with
their events), each a JSON event as `/api/v1/events` shows it, signed the way Stripe signs.

    Encours-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the endpoint's secret>
    Encours-Event-Id: <the event's id, also "id" in the body: the same for every endpoint and retry>

A delivery is claimed (its attempt counted, hidden for a lease) in a short transaction, sent
after it, and its outcome written in another: a worker that dies mid-send leaves it to be sent
again after the lease, which receivers dedupe by the event id. The lease is what one attempt may
take (the endpoint timeout) plus a margin (settings); a worker starts no attempt it could not
finish inside its lease, so a live worker's claim never runs out under it: what it has no time
left for is handed back, its attempt not counted. Endpoints are sent to in
parallel, each with a timeout per request, and an endpoint that times out or refuses the
connection has the rest of its batch put off: one slow receiver never holds the others up.
Failed attempts are retried with the one retry policy (kernel.retry) until the endpoint's attempts are
spent, then the delivery is marked failed (staff can send it again from the back-office)."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from kernel.clock import clock
from kernel.db import unit_of_work
from kernel.outbound import UnsafeUrl, check_public
from kernel.settings import Settings
from ledger.models import ApiIdempotency, AuditEvent, Customer, WebhookDelivery, WebhookEndpoint
from kernel.retry import RetryPolicy
from api import service

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Encours-Signature"
EVENT_ID_HEADER = "Encours-Event-Id"
USER_AGENT = "Encours-Webhooks/1"
BATCH = 50
MAX_PARALLEL = 8  # endpoints sent to at once
MAX_ERROR = 500  # characters of a receiver's answer kept in the log


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Encours-Signature header's value for `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    attempts: int
    endpoint_id: int
    url: str
    secret: str
    event_id: int
    event_type: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    attempts: int
    ok: bool
    response_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    put_off: bool = False  # not tried: its endpoint was unreachable earlier in the batch


@dataclass(frozen=True)
class WebhookReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.sent or self.retried or self.failed)

    def summary(self) -> str:
        return f"{self.sent} sent, {self.retried} to retry, {self.failed} failed"


def lease(settings: Settings) -> timedelta:
    """How long a claimed delivery stays hidden from other workers: one attempt's timeout plus the margin."""
    return timedelta(seconds=settings.webhook_timeout_seconds + settings.webhook_lease_margin_seconds)


def deliver_due(session_factory: sessionmaker[Session], settings: Settings, *, limit: int = BATCH) -> WebhookReport:
    """Send up to `limit` due deliveries and record how each went."""
    held = lease(settings)
    # The last moment an attempt may start and still end (timeout included) inside the lease,
    # measured from before the claim, on the monotonic clock the sends are timed with.
    last_start = time.monotonic() + settings.webhook_lease_margin_seconds * 0.9
    claimed = claim_due(session_factory, limit, held)
    if not claimed:
        return WebhookReport()
    by_endpoint: dict[int, list[Claimed]] = {}
    for item in claimed:
        by_endpoint.setdefault(item.endpoint_id, []).append(item)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(by_endpoint)),
                            thread_name_prefix="webhooks") as pool:
        batches = list(pool.map(lambda items: send_batch(items, settings, last_start), by_endpoint.values()))
    outcomes = [outcome for batch in batches for outcome in batch]
    return record_outcomes(session_factory, outcomes, settings.webhook_max_attempts)


def claim_due(session_factory: sessionmaker[Session], limit: int, lease: timedelta) -> list[Claimed]:
    """Take the due deliveries that have waited longest: count their attempt, hide them for
    `lease` (SKIP LOCKED on PostgreSQL: concurrent workers take different ones), and read what
    sending them needs, the event serialised as the events feed serialises it."""
    now = clock.now()
    with unit_of_work(session_factory) as session:
        query = (select(WebhookDelivery.id, WebhookDelivery.attempts, WebhookDelivery.audit_event_id,
                        WebhookEndpoint.id, WebhookEndpoint.url, WebhookEndpoint.secret)
                 .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                 .where(WebhookDelivery.status == "queued", WebhookDelivery.next_attempt_at <= now)
                 .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        rows = session.execute(query).all()
        if not rows:
            return []
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_([row[0] for row in rows]))
                        .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=now + lease))
        events = {event.id: (event, ref) for event, ref in session.execute(
            select(AuditEvent, Customer.ref).outerjoin(Customer, Customer.id == AuditEvent.customer_id)
            .where(AuditEvent.id.in_({row[2] for row in rows})))}
        bodies = {event_id: service.event_out(event, ref) for event_id, (event, ref) in events.items()}
        return [Claimed(delivery_id=delivery_id, attempts=attempts + 1, endpoint_id=endpoint_id, url=url,
                        secret=secret, event_id=event_id, event_type=bodies[event_id].type,
                        body=bodies[event_id].model_dump_json().encode("utf-8"))
                for delivery_id, attempts, event_id, endpoint_id, url, secret in rows]


def send_batch(items: list[Claimed], settings: Settings, last_start: float) -> list[Outcome]:
    """One endpoint's deliveries, in order; once it cannot be reached, or once an attempt could
    outlast the lease (`last_start`, on time.monotonic()), the rest wait for later."""
    outcomes: list[Outcome] = []
    unreachable = False
    for item in items:
        if unreachable:
            outcomes.append(Outcome(item.delivery_id, item.attempts, ok=False, put_off=True,
                                    error="not tried: the endpoint could not be reached earlier in this run"))
            continue
        if time.monotonic() > last_start:
            outcomes.append(Outcome(item.delivery_id, item.attempts, ok=False, put_off=True,
                                    error="not tried: no time left in this run's lease"))
            continue
        outcome, reached = send(item, settings)
        outcomes.append(outcome)
        unreachable = not reached
    return outcomes


def send(item: Claimed, settings: Settings) -> tuple[Outcome, bool]:
    """POST one delivery; the outcome, and whether the endpoint answered at all."""
    try:
        parts = check_public(item.url, allow_private=settings.webhook_allow_private)
    except UnsafeUrl as error:
        return Outcome(item.delivery_id, item.attempts, ok=False, error=f"refused: {error}"), False
    timestamp = int(clock.now().timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: str(item.event_id),
        "Encours-Event-Type": item.event_type,
        SIGNATURE_HEADER: signature(item.secret, timestamp, item.body),
    }
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname or "", parts.port, timeout=settings.webhook_timeout_seconds)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    began = time.monotonic()
    try:
        connection.request("POST", path, body=item.body, headers=headers)
        response = connection.getresponse()
        answer = response.read(MAX_ERROR)
        latency = int((time.monotonic() - began) * 1000)
    except (OSError, http.client.HTTPException) as error:
        latency = int((time.monotonic() - began) * 1000)
        reason = "timed out" if isinstance(error, (socket.timeout, TimeoutError)) else f"{type(error).__name__}: {error}"
        return Outcome(item.delivery_id, item.attempts, ok=False, latency_ms=latency, error=reason[:MAX_ERROR]), False
    finally:
        connection.close()
    # Redirects are not followed (a 3xx is a failure): a receiver must not send us elsewhere.
    ok = 200 <= response.status < 300
    error = None if ok else f"HTTP {response.status}: {answer.decode('utf-8', 'replace')}"[:MAX_ERROR]
    return Outcome(item.delivery_id, item.attempts, ok=ok, response_code=response.status, latency_ms=latency,
                   error=error), True


def record_outcomes(session_factory: sessionmaker[Session], outcomes: list[Outcome],
                    max_attempts: int) -> WebhookReport:
    """Write each outcome, if the delivery is still the attempt we claimed (staff may have sent
    it again meanwhile)."""
    policy = RetryPolicy(max_attempts=max_attempts)
    now = clock.now()
    sent = retried = failed = 0
    with unit_of_work(session_factory) as session:
        for outcome in outcomes:
            current = (WebhookDelivery.id == outcome.delivery_id) & (WebhookDelivery.attempts == outcome.attempts) \
                & (WebhookDelivery.status == "queued")
            values: dict[str, object]
            if outcome.ok:
                values = {"status": "sent", "delivered_at": now, "last_error": None}
                sent += 1
            elif outcome.put_off:
                # Not tried: the attempt it was counted does not count.
                values = {"attempts": outcome.attempts - 1, "next_attempt_at": now + policy.backoff(1),
                          "last_error": outcome.error}
                retried += 1
            elif policy.gives_up(outcome.attempts):
                values = {"status": "failed", "last_error": outcome.error}
                failed += 1
            else:
                values = {"next_attempt_at": now + policy.backoff(outcome.attempts), "last_error": outcome.error}
                retried += 1
            if not outcome.put_off:
                values.update(response_code=outcome.response_code, latency_ms=outcome.latency_ms)
            session.execute(update(WebhookDelivery).where(current).values(**values))
    return WebhookReport(sent, retried, failed)


def purge_idempotency(session: Session, older_than: datetime) -> int:
    """Forget Idempotency-Key replies stored before `older_than`; how many were deleted."""
    result = session.execute(delete(ApiIdempotency).where(ApiIdempotency.created_at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)
