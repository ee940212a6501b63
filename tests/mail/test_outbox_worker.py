"""The worker delivers the outbox until it is empty (within a time budget per run), and starts
its next run at once while mail is still due, instead of 100 messages per interval."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.orm import Session, sessionmaker

from mail.outbox import DeliveryReport
from encours import worker
from kernel.settings import Settings, load_settings
from ledger.models import OutboxMessage
from tests.conftest import TEST_SECRET
from tests.fakes.smtp import CapturingSMTP


def _settings(db_url: str, smtp_url: str) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_SMTP_URL": smtp_url, "ENCOURS_MAIL_FROM": "relances@durand.test"})


def _queue(session: Session, count: int) -> None:
    for n in range(count):
        session.add(OutboxMessage(kind="reminder", to_address=f"ap{n}@client.test", subject=f"Relance {n}",
                                  body_text="Bonjour"))
    session.flush()


def test_one_run_delivers_more_than_a_chunk(
    db_url: str, session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "OUTBOX_CHUNK", 3)
    _queue(session, 7)
    report = worker.run_once(_settings(db_url, smtp_server.url), session_factory)
    assert (report.outbox, report.outbox_backlog) == (DeliveryReport(sent=7, retried=0, failed=0), False)
    assert smtp_server.sessions == 3  # chunks of 3, 3 and 1


def test_when_the_budget_is_spent_the_next_run_starts_at_once(
    db_url: str, session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "OUTBOX_CHUNK", 3)
    monkeypatch.setattr(worker, "OUTBOX_BUDGET", 0.0)  # one chunk per run
    _queue(session, 7)
    stop = threading.Event()
    reports: list[worker.WorkerReport] = []

    def on_report(report: worker.WorkerReport) -> None:
        reports.append(report)
        if not report.outbox_backlog:
            stop.set()

    # An hour between runs: only the backlog can bring the second and third run this soon.
    runner = threading.Thread(target=worker.run_forever, args=(_settings(db_url, smtp_server.url), session_factory),
                              kwargs={"interval": 3600, "stop": stop, "on_report": on_report})
    runner.start()
    runner.join(timeout=60)
    stop.set()
    runner.join()

    assert [(r.outbox.sent, r.outbox_backlog) for r in reports] == [(3, True), (3, True), (1, False)]
    assert len(smtp_server.messages) == 7
