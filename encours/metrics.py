"""Prometheus metrics at `/metrics`, behind a bearer token (ENCOURS_METRICS_TOKEN; unset: 404).

Two kinds: what this process saw (requests by route template and status, their latency), and
what the database says at scrape time (outbox depth and oldest queued message, webhook events
by state, the worker's heartbeat per job, reminder runs), which every process reports alike.
With `encours serve --workers N` the request metrics of all N processes are summed through
prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the serve command)."""

from __future__ import annotations

import hmac
import os
import time
from datetime import datetime
from typing import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernel.clock import clock
from kernel.routing import Prefix
from ledger.models import OutboxMessage, ReminderRun, WebhookEvent, WorkerHeartbeat

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"  # never the raw path: one series per URL would grow without end

# Registered nowhere by default: the scrape registry collects them (or, with several processes,
# the multiprocess files they write).
_PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("encours_http_requests_total", "HTTP requests answered, by route template and status",
                   ["method", "route", "status"], registry=_PROCESS_REGISTRY)
LATENCY = Histogram("encours_http_request_duration_seconds", "Time to answer an HTTP request, by route template",
                    ["method", "route"], registry=_PROCESS_REGISTRY,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    # Under a package's mount (/admin, /portal, /api/v1) the route's path is relative to it: the
    # root path the mounts added says where.
    mounted = scope.get("root_path", "")[len(scope["app_root_path"]):] if "app_root_path" in scope else ""
    if isinstance(route, Prefix):
        return UNMATCHED  # no route of the package answered: a 404, as anywhere else
    if isinstance(route, Mount):
        return f"{mounted or path}/{{path}}"
    return mounted + path


class MetricsMiddleware:
    """Counts each HTTP request by its route's template (`/portal/pay/{checkout_id:int}`, never the
    id itself) and final status, and times it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # an exception before any response is a 500 to the client

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            counted, timed = _series(str(scope.get("method", "")), _route_template(scope), status)
            counted.inc()
            timed.observe(time.perf_counter() - began)


# Each (method, route, status)'s two series, looked up once: `labels()` formats the labels, takes a
# lock and looks them up on every call. As many keys as the series they name, no more.
_SERIES: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def _series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    key = (method, route, status)
    found = _SERIES.get(key)
    if found is None:
        found = _SERIES[key] = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
    return found


def _seconds(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else float("nan")


class DatabaseCollector(Collector):
    """Gauges read from the database at each scrape (a few indexed aggregate queries)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        now = clock.now()
        with self.sessions() as session:
            yield from self._outbox(session, now)
            yield from self._webhooks(session)
            yield from self._heartbeats(session)
            yield from self._reminders(session)
            session.rollback()

    def _outbox(self, session: Session, now: datetime) -> Iterable[Metric]:
        by_status = GaugeMetricFamily("encours_outbox_messages", "Outbox messages, by status", labels=["status"])
        counts = dict(session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())
        for status in ("queued", "held", "sent", "failed", "cancelled"):
            by_status.add_metric([status], counts.get(status, 0))
        due = session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.status == "queued", OutboxMessage.next_attempt_at <= now)) or 0
        oldest = session.scalar(select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status == "queued"))
        yield by_status
        yield GaugeMetricFamily("encours_outbox_due_messages", "Queued messages whose time to be sent has come",
                                value=due)
        yield GaugeMetricFamily("encours_outbox_oldest_queued_age_seconds",
                                "Age of the oldest queued message (0 when none waits)",
                                value=max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0)

    def _webhooks(self, session: Session) -> Iterable[Metric]:
        family = GaugeMetricFamily("encours_webhook_events", "Provider webhook events stored, by provider and state "
                                   "(processed, not_ours, failed: kept with an error and retried, pending)",
                                   labels=["provider", "state"])
        processed = WebhookEvent.processed_at.is_not(None)
        rows = session.execute(
            select(WebhookEvent.provider, processed, WebhookEvent.outcome, WebhookEvent.error.is_not(None), func.count())
            .group_by(WebhookEvent.provider, processed, WebhookEvent.outcome, WebhookEvent.error.is_not(None))
        ).all()
        totals: dict[tuple[str, str], int] = {}
        for provider, done, outcome, failed, count in rows:
            state = (outcome or "processed") if done else ("failed" if failed else "pending")
            totals[(provider, state)] = totals.get((provider, state), 0) + count
        for (provider, state), count in sorted(totals.items()):
            family.add_metric([provider, state], count)
        yield family

    def _heartbeats(self, session: Session) -> Iterable[Metric]:
        last_run = GaugeMetricFamily("encours_worker_last_run_timestamp_seconds",
                                     "When a worker last ran each job (Unix time)", labels=["job"])
        last_ok = GaugeMetricFamily("encours_worker_last_success_timestamp_seconds",
                                    "When each job last ran without an error (Unix time)", labels=["job"])
        failing = GaugeMetricFamily("encours_worker_job_failing", "1 when the job's last run failed", labels=["job"])
        for beat in session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.job)):
            last_run.add_metric([beat.job], _seconds(beat.last_run_at))
            last_ok.add_metric([beat.job], _seconds(beat.last_ok_at))
            failing.add_metric([beat.job], 1 if beat.last_error else 0)
        yield from (last_run, last_ok, failing)

    def _reminders(self, session: Session) -> Iterable[Metric]:
        runs = GaugeMetricFamily("encours_reminder_runs", "Reminder runs (not dry runs), finished or not",
                                 labels=["state"])
        finished = ReminderRun.finished_at.is_not(None)
        counts = dict(session.execute(select(finished, func.count()).where(ReminderRun.dry_run.is_(False))
                                      .group_by(finished)).all())
        runs.add_metric(["finished"], counts.get(True, 0))
        runs.add_metric(["unfinished"], counts.get(False, 0))
        queued = session.scalar(select(func.coalesce(func.sum(ReminderRun.queued), 0))
                                .where(ReminderRun.dry_run.is_(False))) or 0
        last = session.scalar(select(func.max(ReminderRun.finished_at)).where(ReminderRun.dry_run.is_(False)))
        yield runs
        yield GaugeMetricFamily("encours_reminders_queued", "Reminders queued by all finished runs", value=queued)
        yield GaugeMetricFamily("encours_reminder_last_run_timestamp_seconds",
                                "When the last reminder run finished (Unix time)", value=_seconds(last))


def exposition(sessions: sessionmaker[Session]) -> bytes:
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROCESS_ENV):
        MultiProcessCollector(registry)  # every server process's request metrics, summed
    else:
        registry.register(_ProcessCollector())
    registry.register(DatabaseCollector(sessions))
    return generate_latest(registry)


class _ProcessCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from _PROCESS_REGISTRY.collect()


def metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token is None:
        return PlainTextResponse("Not Found", status_code=404)
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return PlainTextResponse("Unauthorized", status_code=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return Response(exposition(request.app.state.read_sessions), media_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})
