"""`encours remind`: the console script on a SQLite file, killed mid-run; and the worker's daily plan."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from dunning.scenarios import ensure_default_scenario
from encours import worker
from kernel.clock import clock
from kernel.db import make_engine, upgrade
from kernel.settings import Settings, load_settings
from ledger.models import Contact, OutboxMessage, Reminder, ReminderRun
from tests import factories
from tests.conftest import TEST_SECRET
from tests.dunning.test_planner import _bulk_book
from tests.fakes.smtp import CapturingSMTP

ENCOURS = Path(sys.executable).with_name("encours")
SECRET = "remind-test-secret-0123456789abc"


def _environ(url: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_"))}
    environ.update(ENCOURS_SECRET_KEY=SECRET, ENCOURS_DATABASE_URL=url, ENCOURS_BASE_URL="http://encours.test",
                   PYTHONUNBUFFERED="1")
    return environ


def _encours(cwd: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ENCOURS), *args], cwd=cwd, env=_environ(url), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def book(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A migrated SQLite file with company DURAND: C-LATE (two invoices), C-PAUSED, C-NOMAIL."""
    url = f"sqlite:///{tmp_path / 'encours.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        company = factories.company(session, code="DURAND", name="Durand Industrie SAS")
        ensure_default_scenario(session, company)
        late = factories.customer(session, company, ref="C-LATE", email="compta@late.test")
        factories.invoice(session, late, 1234_56, number="F-1", due_date=date(2026, 11, 10))
        factories.invoice(session, late, 100_00, number="F-2", due_date=date(2026, 11, 20))
        paused = factories.customer(session, company, ref="C-PAUSED", reminders_paused=True)
        factories.invoice(session, paused, number="F-3", due_date=date(2026, 11, 10))
        nomail = factories.customer(session, company, ref="C-NOMAIL", email="compta at nomail")
        factories.invoice(session, nomail, number="F-4", due_date=date(2026, 11, 10))
        session.commit()
    yield url, engine
    engine.dispose()


def test_remind_dry_run_says_what_would_go_and_why(tmp_path: Path, book: tuple[str, Engine]) -> None:
    url, engine = book
    result = _encours(tmp_path, url, "remind", "--date", "2026-11-25", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "DURAND 2026-11-25 (dry run): 1 would be sent, 2 skipped, nothing queued",
        "  would send C-LATE -> compta@late.test (fr): step D+15 [firm], 2 invoice(s) F-1, F-2; totals 1334.56 EUR",
        "  skipped C-NOMAIL: contact email 'compta at nomail' is not valid",
        "  skipped C-PAUSED: reminders paused by staff",
        "  problem: C-NOMAIL: contact email 'compta at nomail' is not valid; step D+15 not sent",
    ]
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        assert session.scalars(select(ReminderRun.dry_run)).all() == [True]


def test_remind_queues_once_and_prints_a_summary(tmp_path: Path, book: tuple[str, Engine]) -> None:
    url, engine = book
    result = _encours(tmp_path, url, "remind", "--date", "2026-11-25", "--company", "DURAND")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "DURAND 2026-11-25: 1 planned, 1 queued, 0 already queued, 2 skipped"
    again = _encours(tmp_path, url, "remind", "--date", "2026-11-25")
    assert again.stdout.splitlines()[0] == "DURAND 2026-11-25: 0 planned, 0 queued, 0 already queued, 2 skipped"
    with Session(engine) as session:
        [message] = session.scalars(select(OutboxMessage)).all()
        assert message.to_address == "compta@late.test" and "http://encours.test/p/" in message.body_text
        runs = session.scalars(select(ReminderRun).order_by(ReminderRun.id)).all()
        assert [(r.planned, r.queued, r.skipped, r.dry_run) for r in runs] == [(1, 1, 2, False), (0, 0, 2, False)]


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--date", "25/11/2026"], 2, "encours: error: Invalid value for '--date': '25/11/2026' does not match "
                                      "the format '%Y-%m-%d'. (see 'encours remind --help')"),
        (["--company", "NOPE"], 1, "encours: error: unknown company 'NOPE'"),
    ],
)
def test_remind_bad_arguments_say_so_in_one_line(tmp_path: Path, book: tuple[str, Engine], args: list[str],
                                                 code: int, error: str) -> None:
    url, _ = book
    result = _encours(tmp_path, url, "remind", *args)
    assert (result.returncode, result.stdout, result.stderr.splitlines()) == (code, "", [error])


def test_remind_help(tmp_path: Path, book: tuple[str, Engine]) -> None:
    result = _encours(tmp_path, book[0], "remind", "--help")
    assert result.returncode == 0
    assert "--dry-run" in result.stdout and "--date" in result.stdout and "--company" in result.stdout


@pytest.mark.parametrize("more_contacts", [False, True], ids=["one-contact", "several-contacts"])
def test_a_run_killed_half_way_then_rerun_queues_every_message_exactly_once(tmp_path: Path,
                                                                            more_contacts: bool) -> None:
    customers = 3000
    url = f"sqlite:///{tmp_path / 'crash.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            company = factories.company(session, code="CRASH")
            ensure_default_scenario(session, company)
            session.commit()
            company_id = company.id
        _bulk_book(engine, company_id, customers, more_contacts=more_contacts)
        expected = customers + (len(range(0, customers, 5)) if more_contacts else 0)

        process = subprocess.Popen([str(ENCOURS), "remind", "--date", "2026-11-25"], cwd=tmp_path,
                                   env=_environ(url), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while _count(engine, OutboxMessage) == 0:  # wait for the first committed batch
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the run queued nothing in 120 s"
                time.sleep(0.02)
            time.sleep(random.uniform(0, 0.3))  # then anywhere in the next batches
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == -signal.SIGKILL

        killed_at = _count(engine, OutboxMessage)
        assert 0 < killed_at < expected, "the run was not killed half way"
        _assert_pairs(engine)
        with Session(engine) as session:
            assert session.scalars(select(ReminderRun.finished_at)).all() == [None]

        rerun = _encours(tmp_path, url, "remind", "--date", "2026-11-25")
        assert rerun.returncode == 0, rerun.stderr
        assert rerun.stdout.startswith(
            f"CRASH 2026-11-25: {expected - killed_at} planned, {expected - killed_at} queued, 0 already queued")
        _assert_pairs(engine)
        assert _count(engine, OutboxMessage) == expected
        with Session(engine) as session:
            per_contact = session.execute(
                select(OutboxMessage.contact_id, func.count()).group_by(OutboxMessage.contact_id)).all()
            assert len(per_contact) == expected and {n for _, n in per_contact} == {1}
    finally:
        engine.dispose()


def _count(engine: Engine, model: Any) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _assert_pairs(engine: Engine) -> None:
    """Every reminder has its outbox message and every queued reminder email its Reminder; a
    customer is done whole (each of its receiving contacts) or not at all."""
    with Session(engine) as session:
        reminders = session.execute(select(Reminder.outbox_id)).scalars().all()
        outbox = session.scalars(select(OutboxMessage.id).where(OutboxMessage.kind == "reminder")).all()
        assert None not in reminders
        assert sorted(reminders) == sorted(outbox)
        receiving = dict(session.execute(select(Contact.customer_id, func.count())
                                         .where(Contact.receives_reminders.is_(True))
                                         .group_by(Contact.customer_id)).all())
        done = session.execute(select(Reminder.customer_id, func.count()).group_by(Reminder.customer_id)).all()
        assert all(count == receiving[customer_id] for customer_id, count in done)


# --- the worker runs the daily plan at each company's local hour ---------------------------------


def _settings(db_url: str, smtp_url: str) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_SMTP_URL": smtp_url, "ENCOURS_BASE_URL": "http://testserver"})


def test_worker_runs_the_plan_once_per_local_day_after_the_reminder_hour(
    db_url: str, session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP
) -> None:
    company = factories.company(session, code="PARIS", timezone="Europe/Paris", reminder_hour=9)
    ensure_default_scenario(session, company)
    customer = factories.customer(session, company)
    factories.invoice(session, customer, number="F-1", due_date=date(2026, 11, 22))
    settings = _settings(db_url, smtp_server.url)

    clock.set(datetime(2026, 11, 25, 7, 59, tzinfo=timezone.utc))  # 08:59 in Paris
    assert worker.run_once(settings, session_factory).reminders == ()

    clock.set(datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc))  # 09:00 in Paris
    report = worker.run_once(settings, session_factory)
    assert [(r.company_code, r.run_date, r.queued) for r in report.reminders] == [("PARIS", date(2026, 11, 25), 1)]
    assert report.lines() == ["reminders: PARIS 2026-11-25: 1 planned, 1 queued, 0 already queued, 0 skipped",
                              "outbox: 1 sent, 0 retried, 0 failed"]
    assert len(smtp_server.messages) == 1

    clock.set(datetime(2026, 11, 25, 16, 0, tzinfo=timezone.utc))
    assert worker.run_once(settings, session_factory).reminders == ()  # today's run happened

    # Down from the 26th, back on 8 December at noon: one run, today's, with the latest step only
    # (the invoice is 16 days late: D+15, never D+3 then D+15).
    clock.set(datetime(2026, 12, 8, 11, 0, tzinfo=timezone.utc))
    report = worker.run_once(settings, session_factory)
    assert [(r.run_date, [m.step.offset_days for m in r.messages]) for r in report.reminders] == [
        (date(2026, 12, 8), [15])
    ]
    assert worker.run_once(settings, session_factory).reminders == ()


def test_each_company_runs_at_its_own_local_hour(
    db_url: str, session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP
) -> None:
    paris = factories.company(session, code="PARIS", timezone="Europe/Paris", reminder_hour=9)
    york = factories.company(session, code="NYC", timezone="America/New_York", reminder_hour=9)
    clock.set(datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc))  # 14:00 Paris, 08:00 New York
    assert [company_id for company_id, _ in worker.due_reminder_runs(session_factory)] == [paris.id]
    clock.set(datetime(2026, 11, 26, 4, 30, tzinfo=timezone.utc))  # 05:30 Paris, 23:30 on the 25th in New York
    assert worker.due_reminder_runs(session_factory) == [(york.id, date(2026, 11, 25))]


def test_a_dry_run_does_not_count_as_the_days_run(
    db_url: str, session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP
) -> None:
    company = factories.company(session, code="PARIS", timezone="Europe/Paris", reminder_hour=9)
    session.add(ReminderRun(company_id=company.id, run_date=date(2026, 11, 25), dry_run=True,
                            finished_at=datetime(2026, 11, 25, 8, tzinfo=timezone.utc)))
    session.add(ReminderRun(company_id=company.id, run_date=date(2026, 11, 25), dry_run=False, finished_at=None))
    session.flush()
    clock.set(datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc))
    assert worker.due_reminder_runs(session_factory) == [(company.id, date(2026, 11, 25))]
