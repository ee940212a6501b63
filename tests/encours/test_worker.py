"""`encours worker`: the console script against a SQLite file and a real SMTP server, and its loop."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mail.outbox import DeliveryReport
from encours import worker
from kernel.db import make_engine
from kernel.settings import Settings, load_settings
from ledger.models import OutboxMessage
from tests.conftest import TEST_SECRET
from tests.fakes.smtp import CapturingSMTP

ENCOURS = Path(sys.executable).with_name("encours")
SECRET = "worker-test-secret-0123456789abc"
assert len(SECRET) == 32


def _environ(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_"))}
    environ.update(ENCOURS_SECRET_KEY=SECRET, PYTHONUNBUFFERED="1", **env)
    return environ


def _check_installed(stderr: str) -> None:
    if "No module named 'dunning'" in stderr:
        pytest.fail(
            "the installed `encours` script cannot import `dunning`: add \"dunning*\" to "
            "[tool.setuptools.packages.find] include in pyproject.toml, then reinstall (make venv)",
            pytrace=False,
        )


def _encours(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The console script, run from a scratch directory (so no `.env` is read)."""
    result = subprocess.run(
        [str(ENCOURS), *args], cwd=cwd, env=_environ(**env), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=120,
    )
    _check_installed(result.stderr)
    return result


def _queue_long_due(url: str, **fields: Any) -> None:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            values: dict[str, Any] = {
                "kind": "fresh_link",
                "to_address": "compta@client.test",
                "subject": "Votre nouveau lien",
                "body_text": "Bonjour,\n\nhttp://127.0.0.1:8000/p/abc\n",
                "body_html": "<p>Bonjour,</p>",
                # Long due: the subprocess runs on the system clock, not the tests' frozen one.
                "next_attempt_at": datetime(2020, 1, 1, tzinfo=timezone.utc),
                "created_at": datetime(2020, 1, 1, tzinfo=timezone.utc),
            }
            values.update(fields)
            session.add(OutboxMessage(**values))
            session.commit()
    finally:
        engine.dispose()


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


def test_worker_once_delivers_the_outbox_and_says_so(tmp_path: Path, smtp_server: CapturingSMTP) -> None:
    url = f"sqlite:///{tmp_path / 'encours.sqlite3'}"
    env = {
        "ENCOURS_DATABASE_URL": url,
        "ENCOURS_SMTP_URL": smtp_server.url,
        "ENCOURS_MAIL_FROM": "Durand Industrie <relances@durand.test>",
    }
    assert _ok(_encours(tmp_path, "db", "upgrade", **env)) == "database is up to date\n"
    _queue_long_due(url)
    engine = make_engine(url)
    try:
        assert _ok(_encours(tmp_path, "worker", "--once", **env)) == "outbox: 1 sent, 0 retried, 0 failed\n"

        [received] = smtp_server.messages
        assert received.rcpt_tos == ["compta@client.test"]
        assert received.mail_from == "relances@durand.test"
        assert received.message["Subject"] == "Votre nouveau lien"
        assert received.text() == "Bonjour,\n\nhttp://127.0.0.1:8000/p/abc\n"
        with Session(engine) as session:
            assert session.scalars(select(OutboxMessage.status)).all() == ["sent"]

        assert _ok(_encours(tmp_path, "worker", "--once", **env)) == "outbox: 0 sent, 0 retried, 0 failed\n"
        assert len(smtp_server.messages) == 1
    finally:
        engine.dispose()


def test_worker_runs_until_sigterm(tmp_path: Path, smtp_server: CapturingSMTP) -> None:
    url = f"sqlite:///{tmp_path / 'encours.sqlite3'}"
    env = {"ENCOURS_DATABASE_URL": url, "ENCOURS_SMTP_URL": smtp_server.url}
    _ok(_encours(tmp_path, "db", "upgrade", **env))
    _queue_long_due(url)
    process = subprocess.Popen(
        [str(ENCOURS), "worker", "--interval", "3600"], cwd=tmp_path, env=_environ(**env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        if not banner:
            _check_installed(process.communicate(timeout=30)[1])
        assert banner == "encours worker: running every 3600 s (Ctrl+C or SIGTERM to stop)\n"
        # Printed after the first run, so the stop handlers are in place by then.
        assert process.stdout.readline() == "outbox: 1 sent, 0 retried, 0 failed\n"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    # A clean stop: nothing more on stdout, one log line (kernel.logs' format) saying why it stopped.
    assert out == ""
    [line] = err.splitlines()
    assert line.split(" ", 4)[1:] == ["INFO", "encours.worker", "[-]",
                                      "received SIGTERM; stopping after the current run"]
    assert len(smtp_server.messages) == 1


def test_worker_help(tmp_path: Path) -> None:
    out = _ok(_encours(tmp_path, "worker", "--help"))
    assert out.startswith("Usage: encours worker [OPTIONS]")
    assert "--once" in out


def test_worker_with_a_bad_smtp_url_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'encours.sqlite3'}"
    _ok(_encours(tmp_path, "db", "upgrade", ENCOURS_DATABASE_URL=url))
    result = _encours(tmp_path, "worker", "--once", ENCOURS_DATABASE_URL=url, ENCOURS_SMTP_URL="http://mail.example.com")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "encours: error: ENCOURS_SMTP_URL must start with smtp:// or smtps://, got 'http'"
    ]


# --- in process ---


def _settings(db_url: str, smtp_url: str) -> Settings:
    return load_settings(
        {
            "ENCOURS_DATABASE_URL": db_url,
            "ENCOURS_SECRET_KEY": TEST_SECRET,
            "ENCOURS_SMTP_URL": smtp_url,
            "ENCOURS_MAIL_FROM": "relances@durand.test",
        }
    )


def _queue(session: Session) -> None:
    session.add(OutboxMessage(kind="fresh_link", to_address="compta@client.test", subject="S", body_text="B"))
    session.flush()


def test_run_once_reports_each_kind_of_work(
    db_url: str, session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP
) -> None:
    _queue(session)
    report = worker.run_once(_settings(db_url, smtp_server.url), session_factory)
    assert report.outbox == DeliveryReport(sent=1, retried=0, failed=0)
    assert report.busy
    assert report.lines() == ["outbox: 1 sent, 0 retried, 0 failed"]
    assert not worker.run_once(_settings(db_url, smtp_server.url), session_factory).busy


def test_run_forever_stops_on_sigterm_and_restores_the_handler(
    db_url: str, session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP
) -> None:
    _queue(session)
    reports: list[worker.WorkerReport] = []
    before = signal.getsignal(signal.SIGTERM)

    def on_report(report: worker.WorkerReport) -> None:
        reports.append(report)
        os.kill(os.getpid(), signal.SIGTERM)  # what `kill <pid>` or systemd does

    worker.run_forever(_settings(db_url, smtp_server.url), session_factory, interval=3600, on_report=on_report)

    assert [report.outbox for report in reports] == [DeliveryReport(sent=1, retried=0, failed=0)]
    assert signal.getsignal(signal.SIGTERM) == before


def test_run_forever_outlives_a_failed_run(
    db_url: str, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    calls: list[int] = []
    healthy = worker.WorkerReport(outbox=DeliveryReport())

    def flaky_run_once(settings: Any, sessions: Any, *, deliver: bool = True) -> worker.WorkerReport:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database went away")
        stop.set()
        return healthy

    monkeypatch.setattr(worker, "run_once", flaky_run_once)
    with caplog.at_level(logging.ERROR, logger="encours.worker"):
        worker.run_forever(_settings(db_url, "smtp://127.0.0.1:25"), session_factory, interval=0, stop=stop)
    assert len(calls) == 2
    assert "worker run failed" in caplog.text


def test_run_once_settles_promises_before_planning(session_factory, settings) -> None:  # type: ignore[no-untyped-def]
    from datetime import date, timedelta

    from kernel.clock import clock
    from encours.worker import run_once
    from ledger import disputes
    from ledger.models import PromiseToPay
    from tests import factories

    with session_factory() as session:
        customer = factories.customer(session, factories.company(session))
        invoice = factories.invoice(session, customer, due_date=date(2026, 11, 1))
        promise = disputes.make_promise(session, customer=customer, contact=customer.primary_contact,
                                        invoice_ids=[invoice.id], promised_for=date(2026, 11, 30))
        session.commit()
        promise_id = promise.id
    clock.set(clock.now() + timedelta(days=10))  # past the date and the 3-day grace
    from dataclasses import replace

    report = run_once(replace(settings, smtp_url="smtp://127.0.0.1:9"), session_factory)
    assert report.promises_broken == 1 and "promises: 0 kept, 1 broken" in report.lines()
    with session_factory() as session:
        assert session.get(PromiseToPay, promise_id).status == "broken"


def test_run_once_moves_the_overdue_sort_keys_to_today(
    db_url: str, session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP
) -> None:
    """The customers list and the dashboard's top overdue read keys counted as of one day: the
    worker moves them when the day changes, so the first page of the day does not."""
    from datetime import date

    from ledger.models import BalanceState, CustomerBalance
    from tests import factories

    customer = factories.customer(session, factories.company(session))
    factories.invoice(session, customer, 120_00, due_date=date(2026, 11, 24))  # a day late on the 25th
    session.commit()
    worker.run_once(_settings(db_url, smtp_server.url), session_factory)
    session.expire_all()
    assert session.get(BalanceState, 1).as_of == date(2026, 11, 25)
    assert session.get(CustomerBalance, customer.id).overdue_minor == 120_00


def test_run_once_expires_bank_transfers_that_received_nothing(session_factory, settings) -> None:  # type: ignore[no-untyped-def]
    """A transfer awaited past its company's delay frees its invoices and reserved credit."""
    from dataclasses import replace
    from datetime import date, timedelta

    from kernel.clock import clock
    from ledger.models import Checkout, InvoiceKind
    from payments.bank_transfer import BankTransferProvider
    from payments.checkout import create_checkout, reserved_credit
    from tests import factories

    with session_factory() as session:
        company = factories.company(session, iban="FR7630006000011234567890189")
        company.transfer_expiry_days = 3
        customer = factories.customer(session, company)
        invoice = factories.invoice(session, customer, total_minor=500_00, due_date=date(2026, 11, 1))
        factories.invoice(session, customer, total_minor=50_00, number="AV-1", kind=InvoiceKind.credit_note)
        checkout = create_checkout(session, customer=customer, contact=None, selection={invoice.id: None},
                                   method="bank_transfer", today=date(2026, 11, 25))
        BankTransferProvider().start(session, checkout, settings, "")
        session.commit()
        checkout_id, customer_id = checkout.id, customer.id
    no_smtp = replace(settings, smtp_url="smtp://127.0.0.1:9")
    clock.set(clock.now() + timedelta(days=2))
    assert run_once_expired(no_smtp, session_factory) == 0
    clock.set(clock.now() + timedelta(days=1))
    report = worker.run_once(no_smtp, session_factory)
    assert report.transfers_expired == 1 and "bank transfers expired: 1" in report.lines()
    with session_factory() as session:
        expired = session.get(Checkout, checkout_id)
        assert expired is not None and (expired.status, expired.failure_code) == ("cancelled", "expired")
        assert reserved_credit(session, customer_id, "EUR") == 0


def run_once_expired(settings: Settings, session_factory: sessionmaker[Session]) -> int:
    return worker.run_once(settings, session_factory).transfers_expired


def test_run_once_purges_personal_data_past_its_retention_once_a_day(session_factory, settings) -> None:  # type: ignore[no-untyped-def]
    """A link opened 14 months ago loses its IP address and browser at the day's first run, not
    at every run: the purge is a daily job."""
    from dataclasses import replace
    from datetime import timedelta

    from kernel.clock import clock
    from ledger.models import LinkOpen
    from tests import factories

    with session_factory() as session:
        customer = factories.customer(session, factories.company(session))
        session.add(LinkOpen(contact_id=customer.primary_contact.id, ip="203.0.113.9", user_agent="Firefox",
                             opened_at=clock.now() - timedelta(days=420)))
        session.commit()
    no_smtp = replace(settings, smtp_url="smtp://127.0.0.1:9")
    worker._last_purge.clear()
    report = worker.run_once(no_smtp, session_factory)
    assert report.purged.link_opens == 1 and "retention: 1 link opens, 0 email bodies, 0 webhook bodies purged" \
        in report.lines()
    with session_factory() as session:
        session.add(LinkOpen(contact_id=customer.primary_contact.id, ip="203.0.113.10", user_agent="Firefox",
                             opened_at=clock.now() - timedelta(days=420)))
        session.commit()
    assert worker.run_once(no_smtp, session_factory).purged.link_opens == 0  # the same day: not again
    clock.set(clock.now() + timedelta(days=1))
    assert worker.run_once(no_smtp, session_factory).purged.link_opens == 1
