"""`encours remind`: the console script on a SQLite file, killed mid-run; and the worker's daily plan."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from dunning.scenarios import ensure_default_scenario
from encours import worker
from kernel.clock import clock
from kernel.db import make_engine
from kernel.settings import Settings, load_settings
from ledger.models import Contact, Customer, OutboxMessage, Reminder, ReminderRun, ScenarioStep
from mail import outbox
from tests import factories
from tests.conftest import TEST_SECRET
from tests.databases import sqlite_migrated_copy
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
def book(tmp_path: Path, sqlite_migrated_template: Path) -> Iterator[tuple[str, Engine]]:
    """A migrated SQLite file with company DURAND: C-LATE (two invoices), C-PAUSED, C-NOMAIL."""
    url = sqlite_migrated_copy(sqlite_migrated_template, tmp_path / "encours.sqlite3")
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
        "  would send C-LATE -> compta@late.test (fr): step D+3 [courteous], 2 invoice(s) F-1, F-2; totals 1334.56 EUR",
        "  skipped C-NOMAIL: contact email 'compta at nomail' is not valid",
        "  skipped C-PAUSED: reminders paused by staff",
        "  problem: C-NOMAIL: contact email 'compta at nomail' is not valid; step D+3 not sent",
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
    # F-1 has reached D+15 but the customer heard from us today: it waits for the company's gap.
    assert again.stdout.splitlines()[:2] == ["DURAND 2026-11-25: 0 planned, 0 queued, 0 already queued, 3 skipped",
                                             "  skipped C-LATE: last reminder 0 day(s) ago; the company waits 7 days"]
    with Session(engine) as session:
        [message] = session.scalars(select(OutboxMessage)).all()
        assert message.to_address == "compta@late.test" and "http://encours.test/p/" in message.body_text
        runs = session.scalars(select(ReminderRun).order_by(ReminderRun.id)).all()
        assert [(r.planned, r.queued, r.skipped, r.dry_run) for r in runs] == [(1, 1, 2, False), (0, 0, 3, False)]


# --- a company set up as production does: CLI, CSV imports ----------------------------------------

NEW_CUSTOMERS = 20
RUN_DAY = date(2026, 11, 25)


def _new_company(tmp_path: Path, url: str, code: str = "ACME") -> None:
    """A company created by `encours company create` with 20 new customers imported from CSV files:
    customer n has one invoice due (n * 3 - 10) days before RUN_DAY (from 10 days ahead to 47 late)."""
    created = _encours(tmp_path, url, "company", "create", code, "--name", "Acme SAS", "--currency", "EUR")
    assert created.returncode == 0, created.stderr
    customers = tmp_path / "customers.csv"
    invoices = tmp_path / "invoices.csv"
    customers.write_text("company,customer_ref,name,email,language,phone,segment\n" + "".join(
        f"{code},N-{n:02d},Client {n},ap{n}@client{n}.test,{'en' if n % 4 == 0 else 'fr'},,\n"
        for n in range(NEW_CUSTOMERS)), encoding="utf-8")
    invoices.write_text(
        "company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until\n"
        + "".join(f"{code},N-{n:02d},F-{n:02d},2026-08-01,{RUN_DAY - timedelta(days=n * 3 - 10)},EUR,1200.00,,\n"
                  for n in range(NEW_CUSTOMERS)), encoding="utf-8")
    for kind, path in (("customers", customers), ("invoices", invoices)):
        imported = _encours(tmp_path, url, "import", kind, str(path))
        assert imported.returncode == 0, imported.stderr


def _sent(engine: Engine) -> list[tuple[str, str, str]]:
    """(customer ref, step, subject) of every reminder queued, in order."""
    with Session(engine) as session:
        return [(ref, f"D{offset:+d}", subject) for ref, offset, subject in session.execute(
            select(Customer.ref, ScenarioStep.offset_days, OutboxMessage.subject)
            .join(Reminder, Reminder.customer_id == Customer.id)
            .join(ScenarioStep, ScenarioStep.id == Reminder.step_id)
            .join(OutboxMessage, OutboxMessage.id == Reminder.outbox_id)
            .order_by(Reminder.id))]


@pytest.fixture
def empty_book(tmp_path: Path, sqlite_migrated_template: Path) -> Iterator[tuple[str, Engine]]:
    url = sqlite_migrated_copy(sqlite_migrated_template, tmp_path / "new.sqlite3")
    engine = make_engine(url)
    yield url, engine
    engine.dispose()


def test_a_new_company_sends_no_reminder_until_someone_switches_them_on(
    tmp_path: Path, empty_book: tuple[str, Engine]
) -> None:
    url, engine = empty_book
    _new_company(tmp_path, url)
    off = _encours(tmp_path, url, "remind", "--date", RUN_DAY.isoformat())
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines() == [
        "ACME 2026-11-25: reminders are off for this company, nothing planned "
        "(switch them on: encours company reminders ACME on)"]
    assert _count(engine, OutboxMessage) == 0 and _count(engine, ReminderRun) == 0
    # Neither does the worker plan its day.
    clock.set(datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc))
    assert worker.due_reminder_runs(sessionmaker(engine)) == []
    # A dry run still shows what would go.
    dry = _encours(tmp_path, url, "remind", "--date", RUN_DAY.isoformat(), "--dry-run")
    assert dry.stdout.startswith("ACME 2026-11-25 (dry run): 17 would be sent")

    switched = _encours(tmp_path, url, "company", "reminders", "ACME", "on")
    assert (switched.returncode, switched.stdout) == (0, "reminders of ACME are on\n")
    assert [company_id for company_id, _ in worker.due_reminder_runs(sessionmaker(engine))] != []
    on = _encours(tmp_path, url, "remind", "--date", RUN_DAY.isoformat())
    assert on.stdout.splitlines()[0] == "ACME 2026-11-25: 17 planned, 17 queued, 0 already queued, 0 skipped"
    assert _encours(tmp_path, url, "company", "reminders", "ACME", "off").stdout == "reminders of ACME are off\n"
    bad = _encours(tmp_path, url, "company", "reminders", "NOPE", "on")
    assert (bad.returncode, bad.stderr) == (1, "encours: error: unknown company 'NOPE'\n")


def test_twenty_new_customers_get_a_first_reminder_never_a_formal_notice(
    tmp_path: Path, empty_book: tuple[str, Engine]
) -> None:
    # Seen: after importing 20 new customers, 14 of 21 emails were the D+30 formal notice.
    url, engine = empty_book
    _new_company(tmp_path, url)
    _encours(tmp_path, url, "company", "reminders", "ACME", "on")
    result = _encours(tmp_path, url, "remind", "--date", RUN_DAY.isoformat())
    assert result.returncode == 0, result.stderr
    sent = _sent(engine)
    # 2 falling due within 5 days (D-5), 15 at least 3 days late (D+3); 3 have reached no step yet.
    assert len(sent) == 17
    steps = {ref: step for ref, step, _ in sent}
    for n in range(NEW_CUSTOMERS):
        late = n * 3 - 10
        expected = "D+3" if late >= 3 else "D-5" if -5 <= late <= 0 else None
        assert steps.get(f"N-{n:02d}") == expected, n
    assert not any("Mise en demeure" in subject or "Formal notice" in subject for _, _, subject in sent)
    with Session(engine) as session:
        bodies = session.scalars(select(OutboxMessage.body_text)).all()
    assert not any("Malgré" in body or "Despite" in body for body in bodies)

    # The next days: only customers reaching their first step hear from us; the others wait
    # for the company's 7-day gap.
    for later in (2, 6):
        day = (RUN_DAY + timedelta(days=later)).isoformat()
        assert _encours(tmp_path, url, "remind", "--date", day).returncode == 0
    firsts = _sent(engine)[len(sent):]
    assert not {ref for ref, _, _ in firsts} & set(steps)
    sent = sent + firsts
    week = RUN_DAY + timedelta(days=7)
    _encours(tmp_path, url, "remind", "--date", week.isoformat())
    second = _sent(engine)[len(sent):]
    # A week on: the customers first reminded move on (to D+15, or to the formal notice when they
    # reached it: the standard D+15 may be skipped); the D-5 ones, now overdue, get their first reminder.
    assert {step for _, step, _ in second} <= {"D+3", "D+15", "D+30"}
    assert all(step != "D+3" for ref, step, _ in second if steps.get(ref) == "D+3")
    assert any(step == "D+15" for _, step, _ in second)
    for ref, step, _ in second:
        if step == "D+30":  # a formal notice only after a reminder
            assert steps[ref] == "D+3"
    # And never a formal notice to a customer no reminder reached before.
    fortnight = RUN_DAY + timedelta(days=14)
    _encours(tmp_path, url, "remind", "--date", fortnight.isoformat())
    everything = _sent(engine)
    for index, (ref, step, _) in enumerate(everything):
        if step == "D+30":
            assert any(r == ref and s in ("D+3", "D+15") for r, s, _ in everything[:index]), ref


def test_approval_holds_the_days_run_until_a_manager_sends_it(
    tmp_path: Path, empty_book: tuple[str, Engine], smtp_server: CapturingSMTP
) -> None:
    url, engine = empty_book
    _new_company(tmp_path, url)
    switched = _encours(tmp_path, url, "company", "reminders", "ACME", "on", "--approval")
    assert switched.stdout == "reminders of ACME are on (held for approval)\n"
    result = _encours(tmp_path, url, "remind", "--date", RUN_DAY.isoformat())
    assert result.stdout.splitlines()[0] == ("ACME 2026-11-25: 17 planned, 17 queued (waiting for approval: "
                                             "encours remind --approve), 0 already queued, 0 skipped")
    with Session(engine) as session:
        assert set(session.scalars(select(OutboxMessage.status))) == {"held"}
    settings = _settings(url, smtp_server.url)
    sessions = sessionmaker(engine)
    clock.set(datetime.now(timezone.utc))  # the CLI's runs queued on the real clock: deliver what is due now
    assert worker.deliver_outbox(settings, sessions, outbox.parse_smtp_url(smtp_server.url))[0].sent == 0
    # The same run again adds nothing: held messages count as chased.
    again = _encours(tmp_path, url, "remind", "--date", RUN_DAY.isoformat())
    assert again.stdout.startswith("ACME 2026-11-25: 0 planned")

    approved = _encours(tmp_path, url, "remind", "--approve")
    assert (approved.returncode, approved.stdout) == (0, "ACME: 17 reminder(s) approved and queued for sending\n")
    clock.set(datetime.now(timezone.utc))
    assert worker.deliver_outbox(settings, sessions, outbox.parse_smtp_url(smtp_server.url))[0].sent == 17
    assert len(smtp_server.messages) == 17
    assert _encours(tmp_path, url, "remind", "--approve").stdout == (
        "ACME: 0 reminder(s) approved and queued for sending\n")
    refused = _encours(tmp_path, url, "remind", "--approve", "--dry-run")
    assert refused.returncode == 2 and "--approve" in refused.stderr


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
def test_a_run_killed_half_way_then_rerun_queues_every_message_exactly_once(
    tmp_path: Path, sqlite_migrated_template: Path, more_contacts: bool
) -> None:
    customers = 3000
    url = sqlite_migrated_copy(sqlite_migrated_template, tmp_path / "crash.sqlite3")
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
