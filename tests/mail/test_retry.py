"""Failed messages sent again once the cause is fixed; a refused address marks the contact failing,
and the reminders skip it and say so. Against the real SMTP server of tests/fakes/smtp.py."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dunning.planner import run
from dunning.scenarios import ensure_default_scenario
from kernel.settings import Settings
from ledger.models import AuditEvent, Contact, OutboxMessage, Reminder
from mail.outbox import deliver_due, parse_smtp_url
from mail.retry import failed_messages, retry_failed
from tests import factories
from tests.fakes.smtp import CapturingSMTP

TODAY = date(2026, 11, 25)


def test_a_refused_address_fails_marks_the_contact_and_a_retry_sends_it_once_fixed(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, smtp_server: CapturingSMTP
) -> None:
    company = factories.company(session, code="RETRY")
    ensure_default_scenario(session, company)
    customer = factories.customer(session, company, ref="C-BOUNCE", email="ap@bounce.test")
    factories.invoice(session, customer, number="F-1", due_date=date(2026, 11, 20))
    run(session_factory, settings, TODAY, "RETRY")
    smtp = parse_smtp_url(smtp_server.url)

    smtp_server.fail_rcpt("550 5.1.1 <ap@bounce.test>: no such user")
    report = deliver_due(session_factory, smtp, "Encours <relances@encours.test>")
    assert (report.sent, report.failed) == (0, 1) and smtp_server.messages == []
    session.expire_all()
    message = session.scalars(select(OutboxMessage)).one()
    assert message.status == "failed" and "550 5.1.1" in (message.last_error or "")
    contact = session.scalars(select(Contact).where(Contact.customer_id == customer.id)).one()
    assert contact.email_failing_since is not None and "no such user" in (contact.email_failure or "")
    assert failed_messages(session, [company.id])[0] == 1

    # The next run does not write to a failing address, and says why.
    factories.invoice(session, customer, number="F-2", due_date=date(2026, 11, 28))
    [later] = run(session_factory, settings, date(2026, 12, 3), "RETRY")
    assert later.messages == []
    assert later.problems == ["C-BOUNCE: contact email 'ap@bounce.test' is failing "
                              "(550 5.1.1 <ap@bounce.test>: no such user); step D+3 not sent"]

    # The mailbox exists again: staff send the failed message again, once.
    done = retry_failed(session, [message.id, 999_999], actor="boss@x.test")
    assert (done.requeued, done.not_failed) == (1, 1)
    session.expire_all()
    assert (message.status, message.attempts, message.last_error) == ("queued", 0, None)
    assert contact.email_failing_since is None
    assert retry_failed(session, [message.id]).requeued == 0  # queued, not failed: left alone
    session.commit()
    report = deliver_due(session_factory, smtp, "Encours <relances@encours.test>")
    assert report.sent == 1 and [m.rcpt_tos for m in smtp_server.messages] == [["ap@bounce.test"]]
    session.expire_all()
    assert message.status == "sent" and failed_messages(session, [company.id]) == (0, [])
    # Still the same single reminder; the retry is on the customer's timeline.
    assert len(session.scalars(select(Reminder).where(Reminder.customer_id == customer.id)).all()) == 1
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "email.retried")).one()
    assert event.customer_id == customer.id and event.actor == "boss@x.test"


def test_a_refusal_after_the_address_is_no_bounce(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, smtp_server: CapturingSMTP
) -> None:
    company = factories.company(session, code="DATA")
    ensure_default_scenario(session, company)
    customer = factories.customer(session, company, email="ap@data.test")
    factories.invoice(session, customer, due_date=date(2026, 11, 20))
    run(session_factory, settings, TODAY, "DATA")
    smtp_server.fail_data("554 5.7.1 message content rejected")
    report = deliver_due(session_factory, parse_smtp_url(smtp_server.url), "Encours <relances@encours.test>")
    assert report.failed == 1
    session.expire_all()
    # The message failed for good, but the address itself was accepted: the contact is not marked.
    assert session.scalars(select(Contact.email_failing_since).where(Contact.customer_id == customer.id)).one() is None
