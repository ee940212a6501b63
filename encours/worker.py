"""The background worker: does what is due, now (`run_once`) or every few seconds (`run_forever`)."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable

from sqlalchemy.orm import Session, sessionmaker

from dunning import outbox
from encours.settings import Settings

log = logging.getLogger("encours.worker")

DEFAULT_INTERVAL = 30.0  # seconds between runs


@dataclass(frozen=True)
class WorkerReport:
    outbox: outbox.DeliveryReport

    @property
    def busy(self) -> bool:
        return bool(self.outbox.sent or self.outbox.retried or self.outbox.failed)

    def lines(self) -> list[str]:
        return [f"outbox: {self.outbox.summary()}"]


def run_once(settings: Settings, session_factory: sessionmaker[Session]) -> WorkerReport:
    """Everything that is due now: today, delivering the outbox."""
    smtp_config = outbox.parse_smtp_url(settings.smtp_url)
    return WorkerReport(outbox=outbox.deliver_due(session_factory, smtp_config, settings.mail_from))


def run_forever(
    settings: Settings,
    session_factory: sessionmaker[Session],
    interval: float = DEFAULT_INTERVAL,
    stop: threading.Event | None = None,
    on_report: Callable[[WorkerReport], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set); a failed run is logged and retried next time."""
    stop = stop or threading.Event()
    outbox.parse_smtp_url(settings.smtp_url)  # a bad URL stops us at once, not every run
    previous = _install_stop_handlers(stop)
    try:
        while not stop.is_set():
            try:
                report = run_once(settings, session_factory)
            except Exception:
                # The database or the mail server may come back: the worker must outlive them.
                log.exception("worker run failed; retrying in %s s", interval)
            else:
                if on_report is not None:
                    on_report(report)
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
