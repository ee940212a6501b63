"""The background worker: does what is due, now (`run_once`) or every few seconds (`run_forever`)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from types import FrameType
from typing import Any, Callable, Iterator
from contextlib import contextmanager
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from admin import customers_service
from api import webhooks as outgoing_webhooks
from dunning import claims, planner
from mail import outbox
from kernel.clock import clock
from kernel.db import unit_of_work
from kernel.settings import Settings
from kernel.templating import Templates
from ledger import disputes, personal_data
from mail import notifications
from payments import checkout as checkout_service, webhooks
from payments.webhooks import RetryReport
from payments.collections import CollectionReport
from ledger.models import Company, ReminderRun, WorkerHeartbeat

log = logging.getLogger("encours.worker")

DEFAULT_INTERVAL = 30.0  # seconds between runs
# A run delivers the outbox for up to this long (then the next run starts at once), so that a
# large reminder run goes out at the outbox's speed, not 100 messages per interval, while
# promises, webhook retries and direct debits wait no longer than this for their turn.
OUTBOX_BUDGET = 20.0
OUTBOX_CHUNK = 200  # messages per deliver_due call (and SMTP connection); the budget is checked between


@dataclass(frozen=True)
class WorkerReport:
    outbox: outbox.DeliveryReport
    reminders: tuple[planner.RunReport, ...] = ()
    webhooks: RetryReport = RetryReport()
    promises_kept: int = 0
    promises_broken: int = 0
    collections: CollectionReport = CollectionReport()
    # The outbox still had due messages when the run's delivery time was up.
    outbox_backlog: bool = False
    transfers_expired: int = 0
    purged: personal_data.PurgeReport = personal_data.PurgeReport()
    outgoing: outgoing_webhooks.WebhookReport = outgoing_webhooks.WebhookReport()
    idempotency_purged: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.outbox.sent or self.outbox.retried or self.outbox.failed or self.reminders or self.webhooks.busy
                    or self.promises_kept or self.promises_broken or self.collections.busy or self.transfers_expired
                    or self.purged.busy or self.outgoing.busy)

    def lines(self) -> list[str]:
        promises = (
            [f"promises: {self.promises_kept} kept, {self.promises_broken} broken"]
            if self.promises_kept or self.promises_broken else []
        ) + ([f"bank transfers expired: {self.transfers_expired}"] if self.transfers_expired else [])
        return promises + [f"reminders: {report.summary()}" for report in self.reminders] + [
            f"outbox: {self.outbox.summary()}"] + ([f"webhooks: {self.webhooks.summary()}"] if self.webhooks.busy else []) \
            + ([f"direct debits: {self.collections.summary()}"] if self.collections.busy else []) \
            + ([f"retention: {self.purged.summary()}"] if self.purged.busy else []) \
            + ([f"ERP webhooks: {self.outgoing.summary()}"] if self.outgoing.busy else [])


def run_once(settings: Settings, session_factory: sessionmaker[Session], *, deliver: bool = True) -> WorkerReport:
    """Everything that is due now: promises to settle, the daily reminder plans that are due,
    failed webhook events to retry, direct debits to collect, then delivering the outbox (unless
    `deliver` is False: the demo without a mail server keeps its emails queued, for staff to read)."""
    smtp_config = outbox.parse_smtp_url(settings.smtp_url)
    # Promises first: a broken one puts its invoices back into today's reminders.
    templates = _templates()
    with _job(session_factory, "promises"), unit_of_work(session_factory) as session:
        kept, broken = disputes.settle_promises(session, on_broken=lambda promise: notifications.notify_promise_broken(
            session, promise, base_url=settings.base_url, templates=templates))
    # The customers list's overdue sort keys move to the new day once, not at the first click.
    with _job(session_factory, "overdue_days"), unit_of_work(session_factory) as session:
        customers_service.refresh_overdue(session, customers_service.list_day(session))
    # Bank transfers that received nothing in their company's delay free their invoices (checked each
    # run: the delay is counted from each checkout's own start, not from one daily hour).
    with _job(session_factory, "transfers"), unit_of_work(session_factory) as session:
        expired = checkout_service.expire_transfers(session, clock.now())
    with _job(session_factory, "reminders"):
        reminders = run_due_reminders(settings, session_factory)
    with _job(session_factory, "webhooks"):
        retried = webhooks.retry_due(session_factory, webhooks.registered_handlers(settings))  # failed or unprocessed
    with _job(session_factory, "direct_debits"):
        collections = collect_direct_debits(settings, session_factory)
    with _job(session_factory, "outbox"):
        delivered, backlog = deliver_outbox(settings, session_factory, smtp_config) if deliver \
            else (outbox.DeliveryReport(0, 0, 0), False)
    with _job(session_factory, "erp_webhooks"):
        outgoing = deliver_erp_webhooks(settings, session_factory)
    with _job(session_factory, "retention"):
        with unit_of_work(session_factory) as session:
            idempotency_purged = outgoing_webhooks.purge_idempotency(
                session, clock.now() - timedelta(hours=settings.api_idempotency_hours))
        purged = purge_once_a_day(settings, session_factory)
    return WorkerReport(outbox=delivered, reminders=tuple(reminders), webhooks=retried, promises_kept=kept,
                        promises_broken=broken, collections=collections, outbox_backlog=backlog,
                        transfers_expired=expired, purged=purged, outgoing=outgoing,
                        idempotency_purged=idempotency_purged)


_last_purge: list[date] = []  # the day this process last purged (several workers purging is harmless)


def purge_once_a_day(settings: Settings, session_factory: sessionmaker[Session]) -> personal_data.PurgeReport:
    """Purge personal by-products and delete sent emails and applied provider events past their
    retention (settings ENCOURS_RETAIN_*), once a day."""
    today = clock.now().date()
    if _last_purge and _last_purge[0] == today:
        return personal_data.PurgeReport()
    report = purge_now(settings, session_factory)
    _last_purge[:] = [today]
    return report


def purge_now(settings: Settings, session_factory: sessionmaker[Session]) -> personal_data.PurgeReport:
    retention = personal_data.Retention.from_settings(settings)
    # Deleted first: the rows going away need no purge of their columns.
    emails, events = personal_data.delete_expired(session_factory, retention)
    with unit_of_work(session_factory) as session:
        report = personal_data.purge(session, retention)
    return dataclasses.replace(report, emails_deleted=emails, events_deleted=events)


@contextmanager
def _job(session_factory: sessionmaker[Session], job: str) -> Iterator[None]:
    """Records the job's run in `worker_heartbeats` (how /metrics tells that a worker is alive
    and which of its jobs fails)."""
    try:
        yield
    except Exception as error:
        _beat(session_factory, job, error=f"{type(error).__name__}: {error}"[:2000])
        raise
    _beat(session_factory, job)


def _beat(session_factory: sessionmaker[Session], job: str, error: str | None = None) -> None:
    now = clock.now()
    try:
        with unit_of_work(session_factory) as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            insert = postgresql_insert if postgres else sqlite_insert
            changes: dict[str, Any] = {"last_run_at": now, "runs": WorkerHeartbeat.runs + 1, "last_error": error}
            if error is None:
                changes["last_ok_at"] = now
            else:
                changes["failures"] = WorkerHeartbeat.failures + 1
            session.execute(
                insert(WorkerHeartbeat)
                .values(job=job, last_run_at=now, last_ok_at=None if error else now, last_error=error, runs=1,
                        failures=1 if error else 0)
                .on_conflict_do_update(index_elements=["job"], set_=changes)
            )
    except SQLAlchemyError as failure:  # the database may be what failed the job: the run goes on regardless
        log.warning("worker heartbeat of %s not recorded: %s", job, str(failure).splitlines()[0])


def deliver_erp_webhooks(settings: Settings, session_factory: sessionmaker[Session]) -> outgoing_webhooks.WebhookReport:
    """Send the due ERP webhook deliveries, batch after batch, for up to OUTBOX_BUDGET."""
    began = time.monotonic()
    sent = retried = failed = 0
    while True:
        report = outgoing_webhooks.deliver_due(session_factory, settings)
        sent, retried, failed = sent + report.sent, retried + report.retried, failed + report.failed
        if report.sent + report.retried + report.failed < outgoing_webhooks.BATCH \
                or time.monotonic() - began >= OUTBOX_BUDGET:
            return outgoing_webhooks.WebhookReport(sent, retried, failed)


def deliver_outbox(
    settings: Settings, session_factory: sessionmaker[Session], smtp_config: outbox.SMTPConfig
) -> tuple[outbox.DeliveryReport, bool]:
    """Deliver what is due until none is left or OUTBOX_BUDGET is spent; also says whether
    messages may still be due (the budget ran out on a full chunk)."""
    began = time.monotonic()
    sent = retried = failed = 0
    while True:
        report = outbox.deliver_due(session_factory, smtp_config, settings.mail_from, limit=OUTBOX_CHUNK,
                                    lease=timedelta(seconds=settings.outbox_lease_seconds))
        sent, retried, failed = sent + report.sent, retried + report.retried, failed + report.failed
        # Fewer than asked: nothing more is due, or the server stopped us (it is retried later).
        full = report.sent + report.retried + report.failed == OUTBOX_CHUNK
        if not full or time.monotonic() - began >= OUTBOX_BUDGET:
            return outbox.DeliveryReport(sent, retried, failed), full


def collect_direct_debits(settings: Settings, session_factory: sessionmaker[Session]) -> CollectionReport:
    """Invoices due on customers' active mandates become GoCardless payments (payments.gocardless);
    without the SDK installed there is nothing to collect with."""
    try:
        from payments import gocardless
    except ImportError as error:
        log.error("direct debits cannot be collected: %s", error)
        return CollectionReport()
    return gocardless.collect_due(settings, session_factory)


@functools.lru_cache(maxsize=1)
def _templates() -> Templates:
    return Templates()


def due_reminder_runs(session_factory: sessionmaker[Session]) -> list[tuple[int, date]]:
    """(company id, local date) of each company whose daily plan is due now: its local
    `reminder_hour` has passed and no finished run exists for its local date. A day the
    worker was down is caught up by the next day's run, which sends each customer only
    its latest step."""
    due = []
    now = clock.now()
    with session_factory() as session:
        # A company whose reminders are off has no daily plan: nothing goes out by surprise.
        companies = session.execute(select(Company.id, Company.timezone, Company.reminder_hour)
                                    .where(Company.reminders_enabled.is_(True))).all()
        done = {
            (company_id, run_date)
            for company_id, run_date in session.execute(
                select(ReminderRun.company_id, ReminderRun.run_date)
                .where(ReminderRun.dry_run.is_(False), ReminderRun.finished_at.is_not(None),
                       ReminderRun.run_date >= (now - timedelta(days=2)).date())
            )
        }
    for company_id, tz, hour in companies:
        local = now.astimezone(ZoneInfo(tz))
        if local.hour >= hour and (company_id, local.date()) not in done:
            due.append((company_id, local.date()))
    return due


def run_due_reminders(settings: Settings, session_factory: sessionmaker[Session]) -> list[planner.RunReport]:
    """The due runs this worker claims first (`dunning.claims`): another worker's are skipped, so
    each company's day is planned once however many workers share the database."""
    reports = []
    lease = timedelta(seconds=settings.reminder_lease_seconds)
    for company_id, today in due_reminder_runs(session_factory):
        held = claims.claim(session_factory, company_id, today, lease)
        if held is None:
            continue  # another worker plans it, or has just planned it
        try:
            report = planner.run_company(session_factory, settings, company_id, today,
                                         on_progress=functools.partial(_renew, session_factory, held))
        except Exception:
            # One company's failure must not hold up the others, nor the outbox.
            log.exception("reminder run failed for company %s on %s; retried on the next pass", company_id, today)
            _release(session_factory, held)
            continue
        if report.reminders_off:
            _release(session_factory, held)  # switched off meanwhile: the day stays open, as without a claim
        else:
            claims.finish(session_factory, held)
        reports.append(report)
    return reports


def _renew(session_factory: sessionmaker[Session], held: claims.Claim) -> None:
    if not claims.renew(session_factory, held):
        # Our lease ran out and another worker took the run over: it may plan what we still queue,
        # but the reminders' unique key lets each in once.
        log.warning("reminder run of company %s on %s was taken over by another worker", held.company_id,
                    held.run_date)


def _release(session_factory: sessionmaker[Session], held: claims.Claim) -> None:
    try:
        claims.release(session_factory, held)
    except SQLAlchemyError as failure:  # the database may be what failed the run: its lease frees it later
        log.warning("reminder claim of company %s on %s not released: %s", held.company_id, held.run_date,
                    str(failure).splitlines()[0])


def run_forever(
    settings: Settings,
    session_factory: sessionmaker[Session],
    interval: float = DEFAULT_INTERVAL,
    stop: threading.Event | None = None,
    on_report: Callable[[WorkerReport], None] | None = None,
    deliver: bool = True,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set); a failed run is logged and retried next time."""
    stop = stop or threading.Event()
    outbox.parse_smtp_url(settings.smtp_url)  # a bad URL stops us at once, not every run
    previous = _install_stop_handlers(stop)
    try:
        while not stop.is_set():
            try:
                report = run_once(settings, session_factory, deliver=deliver)
            except Exception:
                # The database or the mail server may come back: the worker must outlive them.
                log.exception("worker run failed; retrying in %s s", interval)
            else:
                if on_report is not None:
                    on_report(report)
                if report.outbox_backlog:
                    continue  # more mail is due: no pause
            stop.wait(interval)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _install_stop_handlers(stop: threading.Event) -> dict[signal.Signals, Any]:
    """Let SIGTERM/SIGINT finish the current run, then stop. Only the main thread may do this."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping after the current run", signal.Signals(signum).name)
        stop.set()

    return {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
