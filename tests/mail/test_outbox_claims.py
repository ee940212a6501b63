"""The outbox claims one message at a time and writes its outcome, with the next claim, as
soon as the server answered: each message goes out once, a message a worker dropped comes
back after the lease, and every outcome of a run is its own."""

from __future__ import annotations

import smtplib
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Callable

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from mail.outbox import (
    LEASE,
    MAX_ATTEMPTS,
    ClaimedMessage,
    DeliveryReport,
    SMTPConfig,
    _build_email,
    _claim_next,
    _email_bytes,
    deliver_due,
    parse_smtp_url,
)
from kernel.clock import clock
from kernel.db import make_sessionmaker, unit_of_work, write_connection
from ledger.models import OutboxMessage
from tests.databases import together
from tests.fakes.smtp import CapturingSMTP

MAIL_FROM = "Durand Industrie <relances@durand.test>"
RUN = 50  # messages per deliver_due call in these tests


def _queue(session: Session, **fields: Any) -> OutboxMessage:
    values: dict[str, Any] = {
        "kind": "reminder",
        "to_address": "compta@client.test",
        "subject": "Relance — factures impayées",
        "body_text": "Bonjour,\n\nMerci de régler vos factures.\n",
        "body_html": "<p>Bonjour,</p><p>Merci de régler vos factures.</p>",
    }
    values.update(fields)
    message = OutboxMessage(**values)
    session.add(message)
    session.flush()
    return message


def _state(session: Session, message: OutboxMessage) -> tuple[str, int, str | None]:
    session.refresh(message)
    return message.status, message.attempts, message.last_error


@pytest.fixture
def smtp(smtp_server: CapturingSMTP) -> SMTPConfig:
    return parse_smtp_url(smtp_server.url)


# --- one run, many outcomes ---------------------------------------------------------------------


def test_each_outcome_of_one_run_is_recorded_for_its_own_message(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    start = clock.now()
    # Sent in id order; the fake server answers the next RCPT / DATA with the replies queued.
    refused = _queue(session, to_address="nobody@client.test")
    busy = _queue(session, to_address="busy@client.test")
    exhausted = _queue(session, to_address="tired@client.test", attempts=MAX_ATTEMPTS - 1)
    injected = _queue(session, to_address="victim@client.test\r\nBcc: everyone@client.test")
    spam = _queue(session, to_address="spam@client.test")
    first_ok = _queue(session, to_address="ok1@client.test")
    second_ok = _queue(session, to_address="ok2@client.test", body_html=None)
    smtp_server.fail_rcpt("550 5.1.1 No such user here")
    smtp_server.fail_rcpt("450 4.2.1 Mailbox busy")
    smtp_server.fail_rcpt("452 4.2.2 Over quota")
    smtp_server.fail_data("554 5.6.0 Message rejected as spam")

    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(sent=2, retried=1, failed=4)

    assert _state(session, refused) == ("failed", 1, "550 5.1.1 No such user here")
    assert _state(session, busy) == ("queued", 1, "450 4.2.1 Mailbox busy")
    assert busy.next_attempt_at == start + timedelta(minutes=1)
    assert _state(session, exhausted) == ("failed", MAX_ATTEMPTS, "gave up after 8 attempts: 452 4.2.2 Over quota")
    status, attempts, error = _state(session, injected)
    assert (status, attempts) == ("failed", 1) and (error or "").startswith("cannot build the email")
    assert _state(session, spam) == ("failed", 1, "554 5.6.0 Message rejected as spam")
    for sent in (first_ok, second_ok):
        assert _state(session, sent) == ("sent", 1, None)
        assert sent.sent_at == start
    for not_sent in (refused, busy, exhausted, injected, spam):
        assert not_sent.sent_at is None
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["ok1@client.test", "ok2@client.test"]
    assert smtp_server.sessions == 1

    clock.set(start + timedelta(minutes=1))
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(1, 0, 0)
    assert _state(session, busy) == ("sent", 2, None)


def test_a_closed_connection_leaves_the_messages_after_it_untouched(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    start = clock.now()
    sent = _queue(session, to_address="ok@client.test", next_attempt_at=start - timedelta(hours=2))
    closing = _queue(session, to_address="closing@client.test", next_attempt_at=start - timedelta(hours=1))
    untried = [_queue(session, to_address=f"later{n}@client.test", attempts=2,
                      next_attempt_at=start - timedelta(minutes=30 - n)) for n in range(3)]
    due_before = [message.next_attempt_at for message in untried]
    original = smtplib.SMTP.rcpt
    calls = 0

    def rcpt(self: smtplib.SMTP, recip: str, options: Any = ()) -> tuple[int, bytes]:
        nonlocal calls
        calls += 1
        if calls == 2:  # the server closes the connection: the run stops there
            smtp_server.fail_rcpt("421 4.3.2 Shutting down")
        return original(self, recip, options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(smtplib.SMTP, "rcpt", rcpt)
        assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(sent=1, retried=1, failed=0)

    assert _state(session, sent) == ("sent", 1, None)
    assert _state(session, closing) == ("queued", 1, "421 4.3.2 Shutting down")
    assert closing.next_attempt_at == start + timedelta(minutes=1)
    for message, due in zip(untried, due_before):
        assert _state(session, message) == ("queued", 2, None)  # never claimed
        assert message.next_attempt_at == due
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(3, 0, 0)
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        "ok@client.test", "later0@client.test", "later1@client.test", "later2@client.test"]
    assert smtp_server.sessions == 2


# --- a worker that stops mid-run ----------------------------------------------------------------


def test_a_message_claimed_by_a_worker_that_died_is_sent_after_the_lease_and_only_it_waits(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    messages = [_queue(session, to_address=f"ap{n}@client.test") for n in range(5)]
    start = clock.now()

    # A worker claims a message, then dies before sending it or recording anything.
    with write_connection(session_factory) as connection:
        claimed = _claim_next(connection, postgres=False, lease=LEASE)
    assert claimed is not None and claimed.id == messages[0].id

    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(4, 0, 0)  # the others: at once
    clock.set(start + LEASE - timedelta(seconds=1))
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 0, 0)
    assert len(smtp_server.messages) == 4

    clock.set(start + LEASE)
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(1, 0, 0)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [f"ap{n}@client.test" for n in range(5)]
    assert _state(session, messages[0]) == ("sent", 2, None)  # the dead worker's claim counts as an attempt
    assert [_state(session, m) for m in messages[1:]] == [("sent", 1, None)] * 4


def test_each_outcome_is_written_before_the_next_message_is_sent(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = [_queue(session, to_address=f"ap{n}@client.test") for n in range(4)]
    original = smtplib.SMTP.sendmail
    seen: list[list[tuple[str, int, str | None]]] = []

    def sendmail(self: smtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        seen.append([_state(session, m) for m in messages])  # what a crash now would leave
        return original(self, *args, **kwargs)

    monkeypatch.setattr(smtplib.SMTP, "sendmail", sendmail)
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(4, 0, 0)
    queued, in_flight, sent = ("queued", 0, None), ("queued", 1, None), ("sent", 1, None)
    assert seen == [
        [in_flight, queued, queued, queued],
        [sent, in_flight, queued, queued],
        [sent, sent, in_flight, queued],
        [sent, sent, sent, in_flight],
    ]
    assert [_state(session, m) for m in messages] == [sent] * 4


def test_a_worker_stopped_mid_run_keeps_what_it_sent_and_never_claimed_the_rest(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = [_queue(session, to_address=f"ap{n}@client.test") for n in range(6)]
    start = clock.now()
    original = smtplib.SMTP.sendmail
    calls = 0

    def sendmail(self: smtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise SystemExit("worker stopped")  # as a signal would, mid-send
        return original(self, *args, **kwargs)

    monkeypatch.setattr(smtplib.SMTP, "sendmail", sendmail)
    with pytest.raises(SystemExit):
        deliver_due(session_factory, smtp, MAIL_FROM)
    monkeypatch.undo()

    assert [_state(session, m) for m in messages[:2]] == [("sent", 1, None)] * 2
    in_flight = messages[2]
    assert _state(session, in_flight) == ("queued", 1, None)  # maybe sent: it waits for the lease
    assert in_flight.next_attempt_at == start + LEASE
    assert [_state(session, m) for m in messages[3:]] == [("queued", 0, None)] * 3

    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(3, 0, 0)
    clock.set(start + LEASE)
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(1, 0, 0)
    assert _state(session, in_flight) == ("sent", 2, None)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [f"ap{n}@client.test" for n in range(6)]


def test_a_slow_server_sends_every_message_within_its_own_lease(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = [_queue(session, to_address=f"ap{n}@client.test") for n in range(6)]
    original = smtplib.SMTP.sendmail
    leases: list[datetime] = []

    def slow_sendmail(self: smtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        leases.append(session.scalar(select(OutboxMessage.next_attempt_at).where(
            OutboxMessage.status == "queued", OutboxMessage.attempts == 1)))
        assert clock.now() < leases[-1]
        result = original(self, *args, **kwargs)
        clock.set(clock.now() + timedelta(minutes=4))  # each message takes four minutes
        return result

    monkeypatch.setattr(smtplib.SMTP, "sendmail", slow_sendmail)
    # Claimed one at a time, just before it is sent: no message waits in a claim for the others.
    assert deliver_due(session_factory, smtp, MAIL_FROM, limit=6) == DeliveryReport(6, 0, 0)
    assert [_state(session, m) for m in messages] == [("sent", 1, None)] * 6
    assert len(smtp_server.messages) == 6
    assert [later - earlier for earlier, later in zip(leases, leases[1:])] == [timedelta(minutes=4)] * 5


def test_many_messages_go_out_over_one_connection(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    count = RUN * 2 + 3
    for n in range(count):
        _queue(session, to_address=f"ap{n}@client.test")
    assert deliver_due(session_factory, smtp, MAIL_FROM, limit=count) == DeliveryReport(count, 0, 0)
    assert smtp_server.sessions == 1
    assert len({m.message["Message-ID"] for m in smtp_server.messages}) == count
    assert set(session.scalars(select(OutboxMessage.attempts))) == {1}


# --- two workers at once, on both databases -----------------------------------------------------


@pytest.mark.postgres
def test_two_workers_claiming_at_once_deliver_each_message_exactly_once(
    fresh_url: str, engines: Callable[[str], Engine], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    count = RUN * 5
    with unit_of_work(make_sessionmaker(engines(fresh_url))) as session:
        for n in range(count):
            session.add(OutboxMessage(kind="reminder", to_address=f"ap{n}@client.test", subject=f"Relance {n}",
                                      body_text=f"Message {n}"))

    def work(index: int) -> list[DeliveryReport]:
        factory = make_sessionmaker(engines(fresh_url))  # an engine of its own, as a worker process has
        reports = []
        while True:
            report = deliver_due(factory, smtp, MAIL_FROM, limit=RUN)
            reports.append(report)
            if report.sent == 0:
                return reports

    reports = together(2, work)

    assert sum(r.sent for worker in reports for r in worker) == count
    assert all(r.retried == r.failed == 0 for worker in reports for r in worker)
    subjects = [received.message["Subject"] for received in smtp_server.messages]
    assert len(subjects) == count and len(set(subjects)) == count
    with make_sessionmaker(engines(fresh_url))() as session:
        rows = session.execute(select(OutboxMessage.status, OutboxMessage.attempts)).all()
    assert len(rows) == count and all(row == ("sent", 1) for row in rows)


# --- the email written out directly reads as the one the email package builds --------------------


@pytest.mark.parametrize(
    ("subject", "sender"),
    [
        ("Relance — factures impayées", None),
        ("Reminder: invoices overdue", "Durand UK Ltd <relances@uk.test>"),
        ("Mise en demeure de payer — " + "Société Générale d'Outillage et de Mécanique " * 5 + "🙂", None),
        ("Statement of account " + "for a customer with a very long name " * 6, '"Durand, Fils & Cie" <r@durand.test>'),
        ("Relance", "Société Générale d'Outillage — Nord <relances@sgo.test>"),
        ("Relance", '"Durand \\"Nord\\"" <relances@nord.test>'),
    ],
)
@pytest.mark.parametrize("html", ["<p>Bonjour,</p><p>Réglez vos factures : 1 234,56 €.</p>\n" * 40, None])
def test_the_written_email_reads_like_the_email_package_s(subject: str, sender: str | None, html: str | None) -> None:
    message = ClaimedMessage(
        id=42, attempts=1, to_address="compta@client.test", subject=subject,
        body_text="Bonjour,\n\nRéglez vos factures : 1 234,56 €.\n.\nUne ligne qui commence par un point.\n" * 30,
        body_html=html, created_at=datetime(2026, 11, 1, 8, 0, tzinfo=clock.now().tzinfo), sender=sender,
        reply_to="anne.collector@durand.test" if sender else None,
    )
    raw = _email_bytes(message, MAIL_FROM)
    assert raw is not None
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in raw.split(b"\r\n")), head
    written = _parse(raw)
    built = _parse(_build_email(message, MAIL_FROM).as_bytes(policy=policy.SMTP))
    for header in ("Message-ID", "Date", "From", "To", "Reply-To", "Subject", "MIME-Version", "Auto-Submitted",
                   "X-Auto-Response-Suppress", "X-Encours-Message"):
        assert str(written[header]) == str(built[header]), header
    assert written["Auto-Submitted"] == "auto-generated" and written["X-Encours-Message"] == f"42.{int(message.created_at.timestamp())}"
    assert (written["Reply-To"] is not None) == (sender is not None)
    assert str(written["Subject"]) == subject
    assert written.get_content_type() == built.get_content_type()
    for kind in ("plain", "html"):
        ours, theirs = written.get_body(preferencelist=(kind,)), built.get_body(preferencelist=(kind,))
        assert (ours is None) == (theirs is None)
        if ours is not None and theirs is not None:
            assert ours.get_content() == theirs.get_content()
            assert ours.get_content_charset() == "utf-8"


def test_a_non_ascii_address_is_left_to_the_email_package() -> None:
    message = ClaimedMessage(id=1, attempts=1, to_address="josé@client.test", subject="Relance", body_text="x",
                             body_html=None, created_at=clock.now())
    assert _email_bytes(message, MAIL_FROM) is None


def _parse(raw: bytes) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return parsed
