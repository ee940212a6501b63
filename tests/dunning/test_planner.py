"""The daily plan: which step each customer gets, grouped, once; skips; catch-up; overlapping runs."""

from __future__ import annotations

import re
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from dunning.planner import UnknownCompany, plan, preview, run
from dunning.scenarios import ensure_default_scenario
from kernel.clock import clock
from kernel.db import make_engine, make_sessionmaker, upgrade
from kernel.settings import Settings
from ledger.models import (
    AuditEvent,
    Company,
    Contact,
    Customer,
    Dispute,
    Invoice,
    InvoiceKind,
    OutboxMessage,
    PromiseToPay,
    Reminder,
    ReminderRun,
    Scenario,
    ScenarioStep,
    reminder_invoices,
)
from links import tokens
from tests import factories
from tests.conftest import TEST_SECRET
from tests.databases import pg_migrated_copy, sqlite_migrated_copy

TODAY = date(2026, 11, 25)


def days(n: int) -> date:
    return TODAY + timedelta(days=n)


def _company(session: Session, **fields: Any) -> Company:
    company = factories.company(session, **fields)
    ensure_default_scenario(session, company)
    return company


def _run(session_factory: sessionmaker[Session], settings: Settings, company: Company, today: date = TODAY,
         dry_run: bool = False) -> Any:
    [report] = run(session_factory, settings, today, company.code, dry_run=dry_run)
    return report


def _reminders(session: Session, customer: Customer) -> list[tuple[int, list[str]]]:
    """(step offset, invoice numbers) of every reminder queued for the customer, oldest first."""
    rows = []
    for reminder in session.scalars(select(Reminder).where(Reminder.customer_id == customer.id).order_by(Reminder.id)):
        step = session.get_one(ScenarioStep, reminder.step_id)
        numbers = sorted(session.scalars(
            select(Invoice.number).join(reminder_invoices, reminder_invoices.c.invoice_id == Invoice.id)
            .where(reminder_invoices.c.reminder_id == reminder.id)))
        rows.append((step.offset_days, numbers))
    return rows


def _plain(text: str) -> str:
    """Babel's narrow and no-break spaces as plain ones."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


def _outbox(session: Session, customer: Customer) -> list[OutboxMessage]:
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.customer_id == customer.id)
                                .order_by(OutboxMessage.id)))


def test_one_message_per_customer_lists_every_invoice_with_totals_per_currency(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company, email="compta@client.test")
    factories.invoice(session, customer, 1234_56, number="F-1", due_date=days(-20))
    factories.invoice(session, customer, 100_00, number="F-2", due_date=days(-4))
    factories.invoice(session, customer, 50_00, currency="USD", number="F-3", due_date=days(-16))
    factories.invoice(session, customer, 70_00, number="F-4", due_date=days(20))  # not reached any step yet

    report = _run(session_factory, settings, company)

    assert (report.planned, report.queued, report.already_queued, report.skipped) == (1, 1, 0, [])
    [message] = report.messages
    assert message.step.offset_days == 3  # never reminded: the first reminder, however late
    assert [i.number for i in message.invoices] == ["F-1", "F-2", "F-3"]
    assert message.totals == {"EUR": 1334_56, "USD": 50_00}
    assert _reminders(session, customer) == [(3, ["F-1", "F-2", "F-3"])]
    [queued] = _outbox(session, customer)
    assert queued.kind == "reminder" and queued.to_address == "compta@client.test"
    assert "F-1" in queued.body_text and "F-3" in queued.body_text and "F-4" not in queued.body_text
    assert "1 334,56 €" in _plain(queued.body_text) and "50,00 $US" in _plain(queued.body_text)
    assert queued.body_html and "<table" in queued.body_html
    [event] = session.scalars(select(AuditEvent).where(AuditEvent.customer_id == customer.id)).all()
    assert (event.action, event.entity_type) == ("reminder.queued", "reminder")
    assert event.after == {"step": "D+3", "to": "compta@client.test", "outbox_id": queued.id,
                           "subject": queued.subject, "invoices": ["F-1", "F-2", "F-3"],
                           "totals": {"EUR": 1334_56, "USD": 50_00}}


def test_link_in_the_message_opens_that_contacts_portal(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company, language="en")
    factories.invoice(session, customer, due_date=days(-3))
    _run(session_factory, settings, company)
    [queued] = _outbox(session, customer)
    assert queued.subject.endswith("reminder of overdue invoices")
    token = re.search(r"http://testserver/p/(\S+)", queued.body_text)
    assert token is not None
    check = tokens.verify(session, TEST_SECRET, token.group(1))
    assert check.ok and check.contact is not None and check.contact.customer_id == customer.id
    assert f'href="http://testserver/p/{token.group(1)}"' in (queued.body_html or "")
    assert "View and pay my invoices" in (queued.body_html or "")


def test_steps_follow_the_scenario_then_stop(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company)
    due = TODAY
    factories.invoice(session, customer, number="F-1", due_date=due)
    sent = []
    for offset in range(-10, 45):
        report = _run(session_factory, settings, company, today=due + timedelta(days=offset))
        sent.extend((offset, m.step.offset_days) for m in report.messages)
    assert sent == [(-5, -5), (3, 3), (15, 15), (30, 30)]
    assert len(_outbox(session, customer)) == 4


def test_after_an_outage_the_customer_gets_its_first_reminder_then_the_next_steps_a_gap_apart(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company)
    factories.invoice(session, customer, number="F-1", due_date=days(-2))
    _run(session_factory, settings, company, today=days(-7))  # D-5 went out
    # Server down for three weeks: the invoice is now at D+20, yet it was never reminded.
    report = _run(session_factory, settings, company, today=days(18))
    assert [m.step.offset_days for m in report.messages] == [3]
    for later in range(19, 25):  # the company waits 7 days between two messages
        assert _run(session_factory, settings, company, today=days(later)).messages == []
    assert [m.step.offset_days for m in _run(session_factory, settings, company, today=days(25)).messages] == [15]
    # D+30 may not be skipped: it comes a gap later, once reached.
    assert [m.step.offset_days for m in _run(session_factory, settings, company, today=days(32)).messages] == [30]
    assert _reminders(session, customer) == [(-5, ["F-1"]), (3, ["F-1"]), (15, ["F-1"]), (30, ["F-1"])]


def test_a_skippable_step_is_jumped_over_when_a_later_one_is_reached(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company)
    factories.invoice(session, customer, number="F-1", due_date=days(-40))
    assert [m.step.offset_days for m in _run(session_factory, settings, company, today=days(-30)).messages] == [3]
    # Next run 20 days later: D+15 (may be skipped) and D+30 are both reached; D+30 goes.
    assert [m.step.offset_days for m in _run(session_factory, settings, company, today=days(-10)).messages] == [30]
    # When the scenario says D+15 may not be skipped, it is sent first.
    other = factories.customer(session, company)
    factories.invoice(session, other, number="F-2", due_date=days(-40))
    step = session.scalars(select(ScenarioStep).join(Scenario).where(Scenario.company_id == company.id,
                                                                      ScenarioStep.offset_days == 15)).one()
    step.may_skip = False
    session.flush()
    _run(session_factory, settings, company, today=days(-30))
    later = _run(session_factory, settings, company, today=days(-10))
    assert [(m.customer_id, m.step.offset_days) for m in later.messages] == [(other.id, 15)]


def test_invoices_never_reminded_start_with_the_first_reminder_then_escalate(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company)
    factories.invoice(session, customer, number="OLD", due_date=days(-15))
    factories.invoice(session, customer, number="NEW", due_date=days(-3))
    report = _run(session_factory, settings, company)
    assert [(m.step.offset_days, [i.number for i in m.invoices]) for m in report.messages] == [(3, ["OLD", "NEW"])]
    assert [i.reminded for i in report.messages[0].invoices] == [False, False]
    report = _run(session_factory, settings, company, today=days(12))
    assert [(m.step.offset_days, [i.number for i in m.invoices]) for m in report.messages] == [(15, ["OLD", "NEW"])]
    assert [i.reminded for i in report.messages[0].invoices] == [True, True]
    [_, second] = _outbox(session, customer)
    assert "Malgré notre précédent rappel" in second.body_text


def test_formal_notice_lists_the_whole_overdue_balance_but_not_yet_due_invoices_keep_their_steps(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company)
    factories.invoice(session, customer, number="A", due_date=days(-40))
    _run(session_factory, settings, company, today=days(-37))  # A at D+3
    _run(session_factory, settings, company, today=days(-25))  # A at D+15
    factories.invoice(session, customer, number="B", due_date=days(-30))
    factories.invoice(session, customer, number="C", due_date=days(5))
    report = _run(session_factory, settings, company)
    # A reached D+30 after two reminders (whole balance): B, overdue, is listed too; C, at D-5,
    # is pending and listed, in its own section.
    assert [(m.step.offset_days, sorted(i.number for i in m.invoices)) for m in report.messages] == [
        (30, ["A", "B", "C"])
    ]
    [*_, notice] = _outbox(session, customer)
    # B was never reminded: the notice does not say "despite our reminders".
    assert "Malgré nos relances" not in notice.body_text and "Mise en demeure" in notice.subject
    # C reaches D+3: it keeps its own steps; A and B were credited with the notice.
    later = _run(session_factory, settings, company, today=days(8))
    assert [(m.step.offset_days, [i.number for i in m.invoices]) for m in later.messages] == [(3, ["C"])]


def test_disputed_and_promised_invoices_are_not_chased(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session, promise_grace_days=3)
    customer = factories.customer(session, company)
    disputed = factories.invoice(session, customer, number="DISPUTED", due_date=days(-20))
    promised = factories.invoice(session, customer, number="PROMISED", due_date=days(-20))
    factories.invoice(session, customer, number="PLAIN", due_date=days(-20))
    closed = factories.invoice(session, customer, number="CLOSED-DISPUTE", due_date=days(-20))
    session.add(Dispute(customer_id=customer.id, status="open", invoices=[disputed]))
    session.add(Dispute(customer_id=customer.id, status="rejected", invoices=[closed]))
    session.add(PromiseToPay(customer_id=customer.id, promised_for=days(-3), currency="EUR", amount_minor=100_00,
                             invoices=[promised]))
    factories.invoice(session, customer, number="PAID", due_date=days(-20), open_minor=0, status="paid")
    factories.invoice(session, customer, number="AV-1", due_date=days(-20), kind=InvoiceKind.credit_note)
    session.flush()

    [message] = _run(session_factory, settings, company).messages
    assert sorted(i.number for i in message.invoices) == ["CLOSED-DISPUTE", "PLAIN"]

    # The promise's date plus 3 grace days has passed: the invoice is chased again (a week on,
    # with the others' next step).
    [message] = _run(session_factory, settings, company, today=days(7)).messages
    assert sorted(i.number for i in message.invoices) == ["CLOSED-DISPUTE", "PLAIN", "PROMISED"]
    assert {i.number: i.reminded for i in message.invoices}["PROMISED"] is False


def test_paused_direct_debit_under_minimum_and_bad_email_are_skipped_and_said(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    scenario = session.scalars(select(Scenario).where(Scenario.company_id == company.id)).one()
    scenario.minimums = {"EUR": 50_00}
    paused = factories.customer(session, company, ref="PAUSED", reminders_paused=True)
    debit = factories.customer(session, company, ref="DEBIT", gocardless_mandate_status="active")
    small = factories.customer(session, company, ref="SMALL")
    bad = factories.customer(session, company, ref="BAD", email="not an email")
    cancelled_mandate = factories.customer(session, company, ref="EX-DEBIT", gocardless_mandate_status="cancelled")
    for customer in (paused, debit, bad, cancelled_mandate):
        factories.invoice(session, customer, 100_00, due_date=days(-3))
    factories.invoice(session, small, 49_99, due_date=days(-3))
    session.flush()

    report = _run(session_factory, settings, company)

    assert [m.customer_ref for m in report.messages] == ["EX-DEBIT"]
    assert {s.customer_ref: s.reason for s in report.skipped} == {
        "PAUSED": "reminders paused by staff",
        "DEBIT": "collected by an active direct-debit mandate",
        "SMALL": "under the scenario's minimum (EUR 4999 < 5000)",
        "BAD": "contact email 'not an email' is not valid",
    }
    assert report.problems == ["BAD: contact email 'not an email' is not valid; step D+3 not sent"]
    recorded = session.get_one(ReminderRun, report.run_id)
    assert (recorded.planned, recorded.queued, recorded.skipped, recorded.dry_run) == (1, 1, 4, False)
    assert recorded.problems == report.problems and recorded.finished_at == clock.now()


def test_a_segment_follows_its_own_scenario(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    vip = Scenario(company_id=company.id, name="Key accounts", segment="key", minimums={})
    vip.steps.append(ScenarioStep(offset_days=10, tone="courteous", subject_fr="Rappel {{ customer.name }}",
                                  body_fr="{{ invoices }}\n{{ link }}", subject_en="Reminder", body_en="{{ invoices }}"))
    session.add(vip)
    key = factories.customer(session, company, segment="key")
    other = factories.customer(session, company, segment="unknown-segment")
    factories.invoice(session, key, due_date=days(-12))
    factories.invoice(session, other, due_date=days(-12))
    session.flush()
    report = _run(session_factory, settings, company)
    assert {m.customer_id: m.step.offset_days for m in report.messages} == {key.id: 10, other.id: 3}
    [queued] = _outbox(session, key)
    assert queued.subject == f"Rappel {key.name}"


def test_a_second_run_the_same_day_queues_nothing(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    for _ in range(3):
        factories.invoice(session, factories.customer(session, company), due_date=days(-3))
    assert _run(session_factory, settings, company).queued == 3
    again = _run(session_factory, settings, company)
    assert (again.planned, again.queued) == (0, 0)
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 3


def test_dry_run_says_what_would_go_and_queues_nothing(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company, ref="C-DRY", email="dry@client.test")
    factories.invoice(session, customer, 250_00, number="F-9", due_date=days(-3))
    report = _run(session_factory, settings, company, dry_run=True)
    assert report.planned == 1 and report.queued == 0
    assert report.messages[0].describe() == (
        "C-DRY -> dry@client.test (fr): step D+3 [courteous], 1 invoice(s) F-9; totals 250.00 EUR"
    )
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert session.scalar(select(func.count()).select_from(Reminder)) == 0
    assert session.get_one(ReminderRun, report.run_id).dry_run is True
    assert _run(session_factory, settings, company).queued == 1  # the dry run changed nothing


def test_a_company_without_scenario_gets_the_default_one(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = factories.company(session)
    factories.invoice(session, factories.customer(session, company), due_date=days(-3))
    assert _run(session_factory, settings, company).queued == 1
    assert session.scalar(select(func.count()).select_from(Scenario).where(Scenario.company_id == company.id)) == 1


def test_unknown_company(session_factory: sessionmaker[Session], settings: Settings) -> None:
    with pytest.raises(UnknownCompany, match="unknown company 'NOPE'"):
        run(session_factory, settings, TODAY, "NOPE")


def test_plan_reads_only(session: Session) -> None:
    company = _company(session)
    factories.invoice(session, factories.customer(session, company), due_date=days(-3))
    assert [m.step.offset_days for m in plan(session, TODAY, company)] == [3]
    assert session.scalar(select(func.count()).select_from(ReminderRun)) == 0


def test_preview_renders_a_step_for_a_real_customer(session: Session) -> None:
    company = _company(session, name="Durand Industrie SAS")
    customer = factories.customer(session, company, language="en")
    factories.invoice(session, customer, 1000_00, number="F-77", due_date=days(-40))
    step = session.scalars(select(ScenarioStep).join(Scenario).where(Scenario.company_id == company.id,
                                                                      ScenarioStep.offset_days == 30)).one()
    rendered = preview(session, step, customer, secret=TEST_SECRET, base_url="http://testserver", today=TODAY)
    assert rendered.subject == "Formal notice to pay — Durand Industrie SAS"
    assert "F-77" in rendered.text and "article L441-10" in rendered.text
    # 1 000,00 € × 12.15 % × 40 / 365 = 13.315… → 13.32
    assert "€13.32" in rendered.text and "€40.00" in rendered.text
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_uk_formal_notice_cites_the_uk_act_not_french_law(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session, country="GB", base_currency="GBP")
    customer = factories.customer(session, company, language="en")
    factories.invoice(session, customer, 1000_00, currency="GBP", due_date=days(-40))
    for day in (-37, -25, 0):
        _run(session_factory, settings, company, today=days(day))
    [*_, queued] = _outbox(session, customer)
    assert queued.subject.startswith("Formal notice")
    assert "L441-10" not in queued.body_text and "Late Payment of Commercial Debts" in queued.body_text
    assert "£70.00" in queued.body_text  # £1,000.00 is in the £1,000-£9,999.99 band


# --- two runs at once ---------------------------------------------------------------------------


def _book(session: Session, customers: int) -> Company:
    company = _company(session, code="OVERLAP")
    for n in range(customers):
        customer = factories.customer(session, company, ref=f"R{n:04d}")
        factories.invoice(session, customer, 100_00 + n, due_date=days(-3 - n % 40))
    return company


def _overlapping_runs(factory: sessionmaker[Session], settings: Settings) -> list[Any]:
    reports: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait()
            reports.extend(run(factory, settings, TODAY, "OVERLAP"))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    return reports


def _assert_each_customer_once(session: Session, customers: int) -> None:
    assert session.scalar(select(func.count()).select_from(Reminder)) == customers
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == customers
    assert session.scalar(select(func.count(func.distinct(OutboxMessage.customer_id)))) == customers
    orphans = session.scalar(
        select(func.count()).select_from(OutboxMessage)
        .where(~OutboxMessage.id.in_(select(Reminder.outbox_id).where(Reminder.outbox_id.is_not(None)))))
    assert orphans == 0


def test_two_overlapping_runs_on_one_sqlite_file_queue_each_message_once(
        tmp_path: Path, settings: Settings, sqlite_migrated_template: Path) -> None:
    url = sqlite_migrated_copy(sqlite_migrated_template, tmp_path / "overlap.sqlite3")
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        with factory() as session:
            _book(session, 120)
            session.commit()
        reports = _overlapping_runs(factory, settings)
        assert sum(r.queued for r in reports) == 120
        assert sum(r.queued + r.already_queued for r in reports) == sum(r.planned for r in reports)
        with factory() as session:
            _assert_each_customer_once(session, 120)
    finally:
        engine.dispose()


def test_two_overlapping_runs_on_postgresql_queue_each_message_once(
        pg_server: Any, settings: Settings, pg_migrated_template: str) -> None:
    url = pg_migrated_copy(pg_server, pg_migrated_template, "overlap")
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        with factory() as session:
            _book(session, 120)
            session.commit()
        reports = _overlapping_runs(factory, settings)
        assert sum(r.queued for r in reports) == 120
        with factory() as session:
            _assert_each_customer_once(session, 120)
    finally:
        engine.dispose()


# --- scale --------------------------------------------------------------------------------------


def test_ten_thousand_customers_each_get_exactly_their_message(tmp_path: Path, settings: Settings) -> None:
    customers = 10_000
    url = f"sqlite:///{tmp_path / 'scale.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        with factory() as session:
            company = _company(session, code="SCALE")
            session.commit()
            company_id = company.id
        _bulk_book(engine, company_id, customers, more_contacts=True)
        # Every fifth customer has a second contact receiving reminders, every seventh one opted out.
        expected = customers + len(range(0, customers, 5))
        [report] = run(factory, settings, TODAY, "SCALE")
        assert (report.planned, report.queued, report.already_queued) == (expected, expected, 0)
        with engine.connect() as connection:
            per_contact = connection.execute(
                select(Reminder.customer_id, Reminder.contact_id, func.count())
                .group_by(Reminder.customer_id, Reminder.contact_id)).all()
            per_customer = dict(connection.execute(
                select(Reminder.customer_id, func.count()).group_by(Reminder.customer_id)).all())
            outbox = dict(connection.execute(
                select(OutboxMessage.customer_id, func.count()).group_by(OutboxMessage.customer_id)).all())
            expected_steps = dict(connection.execute(
                select(Reminder.customer_id, ScenarioStep.offset_days)
                .join(ScenarioStep, ScenarioStep.id == Reminder.step_id)).all())
            customer_ids = list(connection.execute(select(Customer.id).order_by(Customer.id)).scalars())
            opted_out = set(connection.execute(select(Contact.id).where(Contact.receives_reminders.is_(False)))
                            .scalars())
        assert {count for _, _, count in per_contact} == {1} and len(per_contact) == expected
        assert not opted_out & {contact_id for _, contact_id, _ in per_contact} and len(opted_out) > 0
        assert len(per_customer) == customers
        assert [per_customer[cid] for cid in customer_ids] == [2 if n % 5 == 0 else 1 for n in range(customers)]
        assert outbox == per_customer
        # Customer n's invoices are (3 + n % 40) and 1 days late, never reminded: the first reminder, for all.
        assert {expected_steps[customer_id] for customer_id in customer_ids} == {3}
        [again] = run(factory, settings, TODAY, "SCALE")
        assert (again.planned, again.queued) == (0, 0)
    finally:
        engine.dispose()


def _bulk_book(engine: Engine, company_id: int, customers: int, more_contacts: bool = False) -> None:
    """Customers, contacts and two invoices each, with executemany inserts; `more_contacts`: every
    fifth customer has a second contact receiving reminders, every seventh one that opted out."""
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with engine.begin() as connection:
        connection.execute(insert(Customer), [
            {"company_id": company_id, "ref": f"S{n:06d}", "name": f"Customer {n}", "language": "fr" if n % 3 else "en",
             "reminders_paused": False, "created_at": now} for n in range(customers)])
        ids = list(connection.execute(select(Customer.id).where(Customer.company_id == company_id)
                                      .order_by(Customer.id)).scalars())
        connection.execute(insert(Contact), [
            {"customer_id": cid, "email": f"ap{n}@client.test", "language": "fr" if n % 3 else "en",
             "is_primary": True, "link_version": 1, "created_at": now} for n, cid in enumerate(ids)])
        if more_contacts:
            connection.execute(insert(Contact), [
                {"customer_id": cid, "email": f"buyer{n}@client.test", "language": "en", "is_primary": False,
                 "link_version": 1, "created_at": now} for n, cid in enumerate(ids) if n % 5 == 0])
            connection.execute(insert(Contact), [
                {"customer_id": cid, "email": f"sales{n}@client.test", "language": "fr", "is_primary": False,
                 "receives_reminders": False, "link_version": 1, "created_at": now}
                for n, cid in enumerate(ids) if n % 7 == 0])
        rows = []
        for n, cid in enumerate(ids):
            for k, due in enumerate((days(-3 - n % 40), days(-1))):
                rows.append({"company_id": company_id, "customer_id": cid, "kind": "invoice",
                             "number": f"S{n:06d}-{k}", "issue_date": due - timedelta(days=30), "due_date": due,
                             "currency": "EUR", "total_minor": 100_00 + n, "open_minor": 100_00 + n,
                             "status": "open", "created_at": now, "updated_at": now})
        connection.execute(insert(Invoice), rows)


# --- every contact, and a broken promise in mind ------------------------------------------------


def _contact(session: Session, customer: Customer, email: str, language: str = "fr", **fields: Any) -> Contact:
    contact = Contact(customer_id=customer.id, email=email, language=language, **fields)
    session.add(contact)
    session.flush()
    return contact


def test_every_contact_that_receives_reminders_gets_its_own_copy_once(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company, ref="MULTI", email="primary@client.test")
    english = _contact(session, customer, "buyer@client.test", language="en", name="Ann Buyer")
    _contact(session, customer, "sales@client.test", receives_reminders=False)
    _contact(session, customer, "broken address")
    factories.invoice(session, customer, number="F-1", due_date=days(-3))
    session.refresh(customer)

    report = _run(session_factory, settings, company)

    assert [(m.to_address, m.language) for m in report.messages] == [
        ("primary@client.test", "fr"), ("buyer@client.test", "en")]
    assert (report.planned, report.queued, report.skipped) == (2, 2, [])
    assert report.problems == ["MULTI: contact email 'broken address' is not valid; step D+3 not sent"]
    queued = _outbox(session, customer)
    assert [(q.to_address, q.contact_id is not None) for q in queued] == [
        ("primary@client.test", True), ("buyer@client.test", True)]
    assert queued[0].subject.endswith("rappel de factures échues")
    assert queued[1].subject.endswith("reminder of overdue invoices")
    # Each copy carries a link signed for its own contact.
    links = [re.search(r"http://testserver/p/(\S+)", q.body_text) for q in queued]
    checked = [tokens.verify(session, TEST_SECRET, link.group(1)) for link in links if link]
    assert [c.contact.email for c in checked if c.ok and c.contact] == ["primary@client.test", "buyer@client.test"]
    assert queued[1].contact_id == english.id
    assert _reminders(session, customer) == [(3, ["F-1"]), (3, ["F-1"])]
    # Once per (customer, step, invoices, contact): the next runs send nothing more.
    again = _run(session_factory, settings, company)
    assert (again.planned, again.queued) == (0, 0)
    assert len(_outbox(session, customer)) == 2


def test_a_customer_whose_contacts_all_opted_out_is_skipped(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    company = _company(session)
    customer = factories.customer(session, company, ref="QUIET")
    for contact in customer.contacts:
        contact.receives_reminders = False
    factories.invoice(session, customer, due_date=days(-3))
    session.flush()
    report = _run(session_factory, settings, company)
    assert report.messages == [] and report.problems == []
    assert [(s.customer_ref, s.reason) for s in report.skipped] == [("QUIET", "no contact receives reminders")]


def test_a_batch_never_splits_a_customers_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    from dunning import planner

    monkeypatch.setattr(planner, "QUEUE_BATCH", 3)
    fake = [type("M", (), {"customer_id": cid})() for cid in (1, 1, 2, 2, 3, 4, 4, 4, 4)]
    batches = planner._batches(fake)  # type: ignore[arg-type]
    assert [[[m.customer_id for m in group] for group in batch] for batch in batches] == [
        [[1, 1]], [[2, 2], [3]], [[4, 4, 4, 4]]]


def test_after_a_broken_promise_the_next_reminder_says_so(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    from ledger import disputes

    company = _company(session, promise_grace_days=3)
    customer = factories.customer(session, company, language="en")
    _contact(session, customer, "controller@client.test", language="fr")
    promised = factories.invoice(session, customer, 1200_00, number="F-P", due_date=days(-4))
    factories.invoice(session, customer, 300_00, number="F-LATER", due_date=days(40))
    session.refresh(customer)
    _run(session_factory, settings, company, today=days(-1))  # F-P at D+3
    disputes.make_promise(session, customer=customer, contact=customer.primary_contact, invoice_ids=[promised.id],
                          promised_for=days(2))
    session.flush()
    # While the promise is pending, F-P is held; nothing about it is said.
    assert _run(session_factory, settings, company, today=days(4)).messages == []
    # Date + grace passed without payment: settled broken, and F-P reaches D+15 on day 11.
    clock.set(datetime(2026, 12, 6, 10, 0, tzinfo=timezone.utc))
    assert disputes.settle_promises(session) == (0, 1)
    report = _run(session_factory, settings, company, today=days(11))
    assert [(m.to_address, [i.number for i in m.invoices]) for m in report.messages] == [
        (customer.primary_contact.email, ["F-P"]), ("controller@client.test", ["F-P"])]
    english, french = _outbox(session, customer)[-2:]
    assert "You promised to pay €1,200.00 by 27 Nov 2026; we have not received it." in english.body_text
    assert "<strong>You promised to pay €1,200.00 by 27 Nov 2026; we have not received it.</strong>" in (
        english.body_html or "")
    assert ("Vous vous étiez engagé à régler 1 200,00 € au plus tard le 27 nov. 2026 ; nous n'avons pas reçu "
            "ce règlement.") in _plain(french.body_text)
    # A reminder about invoices without a broken promise says nothing of it.
    other = factories.customer(session, company)
    factories.invoice(session, other, due_date=days(-3))
    _run(session_factory, settings, company)
    [plain] = _outbox(session, other)
    assert "promise" not in plain.body_text and "engagé" not in plain.body_text


def test_an_invoice_disputed_in_part_is_chased_for_the_rest_only(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    from ledger import disputes
    from ledger.storage import FileStorage

    company = _company(session)
    customer = factories.customer(session, company)
    part = factories.invoice(session, customer, number="PART", total_minor=1000_00, due_date=days(-20))
    whole = factories.invoice(session, customer, number="WHOLE", total_minor=400_00, due_date=days(-20))
    for invoice, disputed in ((part, 250_00), (whole, None)):
        disputes.open_case(session, customer=customer, contact=None, invoice_ids=[invoice.id], message="Erreur",
                           storage=FileStorage(tmp_path), reason_code="wrong_amount", disputed_minor=disputed)
    session.commit()
    [message] = _run(session_factory, settings, company).messages
    assert [(i.number, i.open_minor) for i in message.invoices] == [("PART", 750_00)]
    [sent] = _outbox(session, customer)
    assert "750,00" in _plain(sent.body_text) and "1 000,00" not in _plain(sent.body_text)


# --- a customer with many overdue invoices ------------------------------------------------------


def test_a_customer_with_hundreds_of_overdue_invoices_is_reminded_once_on_postgresql(
        pg_server: Any, settings: Settings, pg_migrated_template: str) -> None:
    # The joined ids of 600 invoices make an index row PostgreSQL refuses (over 2,704 bytes):
    # the reminder's identity is a digest of them.
    url = pg_migrated_copy(pg_server, pg_migrated_template, "many")
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        with factory() as session:
            company = _company(session, code="MANY")
            customer = factories.customer(session, company, ref="MANY-1")
            for n in range(600):
                factories.invoice(session, customer, 100_00, number=f"F-2026-{n:06d}", due_date=days(-10 - n % 5))
            session.commit()
        first = _run(factory, settings, company)
        again = _run(factory, settings, company)
        assert (first.queued, again.queued) == (1, 0)
        with factory() as session:
            [reminder] = session.scalars(select(Reminder)).all()
            assert len(reminder.invoices) == 600
            assert len(reminder.invoice_key) == 64
    finally:
        engine.dispose()
