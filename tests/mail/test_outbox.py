"""SMTP delivery of the outbox against a real (aiosmtpd) server."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from mail.outbox import (
    MAX_ATTEMPTS,
    DeliveryReport,
    SMTPConfig,
    SMTPConfigError,
    deliver_due,
    parse_smtp_url,
)
from kernel.clock import clock
from kernel.db import make_engine, make_sessionmaker, upgrade
from ledger.models import OutboxMessage
from tests.fakes.smtp import CapturingSMTP

MAIL_FROM = "Durand Industrie <relances@durand.test>"


def _queue(session: Session, **fields: Any) -> OutboxMessage:
    values: dict[str, Any] = {
        "kind": "fresh_link",
        "to_address": "compta@client.test",
        "subject": "Votre nouveau lien — Société Générale d'Outillage",
        "body_text": "Bonjour,\n\nVoici votre lien : http://testserver/p/abc\n",
        "body_html": "<p>Bonjour,</p><p><a href=\"http://testserver/p/abc\">Ouvrir mon compte</a></p>",
    }
    values.update(fields)
    message = OutboxMessage(**values)
    session.add(message)
    session.flush()
    return message


def _reload(session: Session, message: OutboxMessage) -> OutboxMessage:
    session.refresh(message)
    return message


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp(smtp_server: CapturingSMTP) -> SMTPConfig:
    return parse_smtp_url(smtp_server.url)


def test_delivers_text_and_html_alternatives_with_headers(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    message = _queue(session)

    report = deliver_due(session_factory, smtp, MAIL_FROM)

    assert report == DeliveryReport(sent=1, retried=0, failed=0)
    [received] = smtp_server.messages
    assert received.mail_from == "relances@durand.test"
    assert received.rcpt_tos == ["compta@client.test"]
    email = received.message
    assert email["From"] == MAIL_FROM
    assert email["To"] == "compta@client.test"
    assert email["Subject"] == "Votre nouveau lien — Société Générale d'Outillage"
    assert email["Message-ID"].startswith(f"<encours.outbox.{message.id}.")
    assert email["Message-ID"].endswith("@durand.test>")
    assert parsedate_to_datetime(email["Date"]) == clock.now()
    assert email.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in email.iter_parts()] == ["text/plain", "text/html"]
    assert received.text() == "Bonjour,\n\nVoici votre lien : http://testserver/p/abc\n"
    assert 'href="http://testserver/p/abc"' in (received.html() or "")
    sent = _reload(session, message)
    assert (sent.status, sent.attempts, sent.sent_at, sent.last_error) == ("sent", 1, clock.now(), None)


def test_text_only_message_is_a_single_part(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    _queue(session, body_html=None)
    deliver_due(session_factory, smtp, MAIL_FROM)
    [received] = smtp_server.messages
    assert received.message.get_content_type() == "text/plain"
    assert received.html() is None


def test_temporary_refusal_is_retried_only_after_the_backoff(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    message = _queue(session)
    smtp_server.fail_rcpt("450 4.2.1 Mailbox busy, try later")
    start = clock.now()

    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 1, 0)
    waiting = _reload(session, message)
    assert (waiting.status, waiting.attempts) == ("queued", 1)
    assert waiting.next_attempt_at == start + timedelta(minutes=1)
    assert waiting.last_error == "450 4.2.1 Mailbox busy, try later"

    clock.set(start + timedelta(seconds=59))
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 0, 0)
    assert smtp_server.messages == []

    clock.set(start + timedelta(minutes=1, seconds=1))
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(1, 0, 0)
    assert len(smtp_server.messages) == 1
    sent = _reload(session, message)
    assert (sent.status, sent.attempts, sent.sent_at) == ("sent", 2, clock.now())


def test_backoff_grows_then_gives_up_after_eight_attempts(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    message = _queue(session)
    smtp_server.fail_rcpt("421 4.7.0 Try again later", times=MAX_ATTEMPTS)
    waits = []
    for _ in range(MAX_ATTEMPTS - 1):
        assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 1, 0)
        waiting = _reload(session, message)
        waits.append(waiting.next_attempt_at - clock.now())
        clock.set(waiting.next_attempt_at)
    assert waits[:5] == [
        timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=6)
    ]
    assert waits == sorted(waits)

    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 0, 1)
    given_up = _reload(session, message)
    assert (given_up.status, given_up.attempts) == ("failed", MAX_ATTEMPTS)
    assert given_up.last_error == "gave up after 8 attempts: 421 4.7.0 Try again later"
    clock.set(clock.now() + timedelta(days=30))
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 0, 0)
    assert smtp_server.messages == []


def test_permanent_recipient_refusal_fails_at_once(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    refused = _queue(session, to_address="nobody@client.test")
    accepted = _queue(session, to_address="compta@client.test")
    smtp_server.fail_rcpt("550 5.1.1 No such user here")

    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(sent=1, retried=0, failed=1)
    failed = _reload(session, refused)
    assert (failed.status, failed.attempts, failed.sent_at) == ("failed", 1, None)
    assert failed.last_error == "550 5.1.1 No such user here"
    assert _reload(session, accepted).status == "sent"
    assert [m.rcpt_tos for m in smtp_server.messages] == [["compta@client.test"]]
    assert smtp_server.sessions == 1  # the refusal did not cost the batch its connection
    clock.set(clock.now() + timedelta(days=1))
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 0, 0)


@pytest.mark.parametrize(
    ("reply", "status", "report"),
    [
        ("554 5.6.0 Message rejected as spam", "failed", DeliveryReport(0, 0, 1)),
        ("451 4.3.0 Local error in processing", "queued", DeliveryReport(0, 1, 0)),
    ],
)
def test_refusal_at_data_follows_the_reply_class(
    session: Session,
    session_factory: sessionmaker[Session],
    smtp_server: CapturingSMTP,
    smtp: SMTPConfig,
    reply: str,
    status: str,
    report: DeliveryReport,
) -> None:
    message = _queue(session)
    smtp_server.fail_data(reply)
    assert deliver_due(session_factory, smtp, MAIL_FROM) == report
    after = _reload(session, message)
    assert (after.status, after.last_error) == (status, reply)
    assert smtp_server.messages == []


def test_connection_refused_is_retried_and_the_batch_waits(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    first = _queue(session)
    second = _queue(session)
    port = _closed_port()

    report = deliver_due(session_factory, parse_smtp_url(f"smtp://127.0.0.1:{port}"), MAIL_FROM)

    assert report == DeliveryReport(sent=0, retried=1, failed=0)
    waiting = _reload(session, first)
    assert (waiting.status, waiting.attempts) == ("queued", 1)
    assert waiting.next_attempt_at == clock.now() + timedelta(minutes=1)
    assert f"127.0.0.1:{port}" in (waiting.last_error or "")
    assert "ConnectionRefusedError" in (waiting.last_error or "")
    untouched = _reload(session, second)
    assert (untouched.status, untouched.attempts, untouched.last_error) == ("queued", 0, None)


def test_a_server_that_never_answers_times_out_and_is_retried(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    message = _queue(session)
    with socket.socket() as silent:  # accepts connections (backlog) but never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        report = deliver_due(session_factory, parse_smtp_url(f"smtp://127.0.0.1:{port}?timeout=0.2"), MAIL_FROM)
    assert report == DeliveryReport(0, 1, 0)
    assert "timed out" in (_reload(session, message).last_error or "")


def test_nothing_is_sent_twice_and_one_connection_serves_the_batch(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    for n in range(3):
        _queue(session, to_address=f"ap{n}@client.test")

    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(3, 0, 0)
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 0, 0)
    clock.set(clock.now() + timedelta(days=1))
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 0, 0)

    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [f"ap{n}@client.test" for n in range(3)]
    assert smtp_server.sessions == 1


def test_limit_and_not_yet_due(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    later = _queue(session, next_attempt_at=clock.now() + timedelta(hours=1))
    for _ in range(3):
        _queue(session)
    assert deliver_due(session_factory, smtp, MAIL_FROM, limit=2) == DeliveryReport(2, 0, 0)
    assert deliver_due(session_factory, smtp, MAIL_FROM, limit=2) == DeliveryReport(1, 0, 0)
    assert _reload(session, later).status == "queued"
    clock.set(clock.now() + timedelta(hours=1))
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(1, 0, 0)


def test_a_header_injection_fails_without_reaching_the_server(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    message = _queue(session, to_address="victim@client.test\r\nBcc: everyone@client.test")
    assert deliver_due(session_factory, smtp, MAIL_FROM) == DeliveryReport(0, 0, 1)
    assert (_reload(session, message).last_error or "").startswith("cannot build the email")
    assert smtp_server.messages == [] and smtp_server.sessions == 0


def test_logs_in_with_the_url_decoded_credentials(session: Session, session_factory: sessionmaker[Session]) -> None:
    server = CapturingSMTP(credentials=("relances@durand.test", "p@ss:w/rd%")).start()
    try:
        _queue(session)
        url = f"smtp://relances%40durand.test:p%40ss%3Aw%2Frd%25@127.0.0.1:{server.port}"
        assert deliver_due(session_factory, parse_smtp_url(url), MAIL_FROM) == DeliveryReport(1, 0, 0)
        assert server.logins == ["relances@durand.test"]

        message = _queue(session)
        wrong = f"smtp://relances%40durand.test:nope@127.0.0.1:{server.port}"
        # A refused login is the server's settings, not the message's fault: retried, never failed.
        assert deliver_due(session_factory, parse_smtp_url(wrong), MAIL_FROM) == DeliveryReport(0, 1, 0)
        assert "535" in (_reload(session, message).last_error or "")
    finally:
        server.stop()


# --- two workers at once ---


def test_two_workers_on_one_sqlite_file_never_send_a_message_twice(
    tmp_path: Path, smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    url = f"sqlite:///{tmp_path / 'race.sqlite3'}"
    upgrade(url)
    engines = [make_engine(url), make_engine(url)]
    try:
        with make_sessionmaker(engines[0])() as session:
            for n in range(40):
                _queue(session, to_address=f"ap{n}@client.test")
            session.commit()
        reports: list[DeliveryReport] = []
        barrier = threading.Barrier(2)

        def work(engine: Engine) -> None:
            barrier.wait()
            reports.append(deliver_due(make_sessionmaker(engine), smtp, MAIL_FROM))

        threads = [threading.Thread(target=work, args=(engine,)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sum(report.sent for report in reports) == 40
        recipients = [m.rcpt_tos[0] for m in smtp_server.messages]
        assert sorted(recipients) == sorted(f"ap{n}@client.test" for n in range(40))
        with make_sessionmaker(engines[0])() as session:
            assert set(session.scalars(select(OutboxMessage.attempts))) == {1}
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.postgres
def test_postgresql_skips_a_message_another_worker_holds(
    pg_url: str, pg_engine: Engine, smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    # No waiting on locks here: SKIP LOCKED must pass the held row by, never block on it.
    engine = make_engine(pg_url, connect_args={"options": "-c lock_timeout=5000"})
    factory = make_sessionmaker(engine)
    try:
        with factory() as session:
            held = _queue(session, to_address="held@client.test")
            free = _queue(session, to_address="free@client.test")
            session.commit()
        with engine.connect() as other_worker:
            with other_worker.begin():
                other_worker.execute(text("SELECT id FROM outbox WHERE id = :id FOR UPDATE"), {"id": held.id})
                assert deliver_due(factory, smtp, MAIL_FROM) == DeliveryReport(1, 0, 0)
                assert [m.rcpt_tos for m in smtp_server.messages] == [["free@client.test"]]
        assert deliver_due(factory, smtp, MAIL_FROM) == DeliveryReport(1, 0, 0)
        assert [m.rcpt_tos[0] for m in smtp_server.messages] == ["free@client.test", "held@client.test"]
        with factory() as session:
            statuses = {row.id: row.status for row in session.execute(select(OutboxMessage.id, OutboxMessage.status))}
            assert statuses[held.id] == statuses[free.id] == "sent"
    finally:
        with factory() as session:
            session.execute(delete(OutboxMessage))
            session.commit()
        engine.dispose()


# --- ENCOURS_SMTP_URL ---


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://127.0.0.1:2525", SMTPConfig("smtp", "127.0.0.1", 2525)),
        ("smtp://mail.example.com", SMTPConfig("smtp", "mail.example.com", 25)),
        ("smtp://mail.example.com?starttls=1", SMTPConfig("smtp", "mail.example.com", 587, starttls=True)),
        ("smtps://mail.example.com", SMTPConfig("smtps", "mail.example.com", 465)),
        (
            "smtp://user:pass@smtp.example.com:587?starttls=1",
            SMTPConfig("smtp", "smtp.example.com", 587, "user", "pass", starttls=True),
        ),
        (
            "SMTPS://apikey%40example.com:s%2F3cr%3At%40@smtp.example.com:2465?timeout=7.5",
            SMTPConfig("smtps", "smtp.example.com", 2465, "apikey@example.com", "s/3cr:t@", timeout=7.5),
        ),
        ("smtp://[::1]:2525?starttls=0", SMTPConfig("smtp", "::1", 2525)),
    ],
)
def test_parse_smtp_url(url: str, expected: SMTPConfig) -> None:
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://mail.example.com", "must start with smtp:// or smtps://"),
        ("mail.example.com:25", "must start with smtp:// or smtps://"),
        ("smtp://", "no host"),
        ("smtp://mail.example.com:99999", "invalid port"),
        ("smtp://mail.example.com:abc", "invalid port"),
        ("smtp://mail.example.com?starttls=maybe", "starttls must be 1 or 0"),
        ("smtps://mail.example.com?starttls=1", "already TLS"),
        ("smtp://mail.example.com?timeout=0", "timeout must be a positive number"),
        ("smtp://mail.example.com?timeout=soon", "timeout must be a positive number"),
        ("smtp://mail.example.com?tls=1", "unknown option(s): tls"),
    ],
)
def test_parse_smtp_url_refuses(url: str, complaint: str) -> None:
    with pytest.raises(SMTPConfigError) as raised:
        parse_smtp_url(url)
    assert complaint in str(raised.value)


def test_password_is_kept_out_of_the_repr() -> None:
    assert "hunter2" not in repr(parse_smtp_url("smtp://me:hunter2@mail.example.com"))



def test_mail_to_a_debtor_comes_from_the_companys_reminder_address(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, smtp: SMTPConfig
) -> None:
    from tests import factories

    company = factories.company(session, name="Durand Nord", reminder_from="relances@nord.test")
    customer = factories.customer(session, company)
    _queue(session, customer_id=customer.id, contact_id=customer.primary_contact.id)
    _queue(session, customer_id=customer.id, to_address="anne@durand.test")  # a staff notice: no contact
    deliver_due(session_factory, smtp, MAIL_FROM)
    by_to = {r.rcpt_tos[0]: r for r in smtp_server.messages}
    debtor = by_to["compta@client.test"]
    assert debtor.message["From"] == "Durand Nord <relances@nord.test>"
    assert debtor.mail_from == "relances@durand.test"  # bounces still come to us
    assert by_to["anne@durand.test"].message["From"] == MAIL_FROM


@pytest.mark.parametrize("to_address", ["compta@client.test", "josé@client.test"])  # fast writer, email package
def test_a_debtor_s_reply_goes_to_its_collector_else_the_collections_team(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, to_address: str
) -> None:
    from admin.staff_accounts import create_user
    from tests import factories

    company = factories.company(session, name="Durand Nord", reminder_from="relances@nord.test",
                                collections_email="recouvrement@nord.test")
    followed = factories.customer(session, company, ref="C-1")
    team = factories.customer(session, company, ref="C-2")
    anne = create_user(session, email="anne@nord.test", role="collector", password="long enough password",
                       company_codes=[company.code])
    followed.collector_id = anne.id
    session.flush()
    for customer in (followed, team):
        _queue(session, customer_id=customer.id, contact_id=customer.primary_contact.id, to_address=to_address)
    _queue(session, customer_id=followed.id, to_address="anne@nord.test")  # a staff notice
    smtp_url = parse_smtp_url(smtp_server.url)
    deliver_due(session_factory, smtp_url, MAIL_FROM)
    received = sorted(smtp_server.messages, key=lambda r: r.message["X-Encours-Message"])
    assert len(received) == 3
    debtor_mail = [r.message for r in received if r.rcpt_tos[0] != "anne@nord.test"]
    assert [m["Reply-To"] for m in debtor_mail] == ["anne@nord.test", "recouvrement@nord.test"]
    staff = next(r.message for r in received if r.rcpt_tos[0] == "anne@nord.test")
    assert staff["Reply-To"] is None
    for message in [r.message for r in received]:
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["X-Auto-Response-Suppress"] == "All"
        reference = message["X-Encours-Message"]
        assert message["Message-ID"] == f"<encours.outbox.{reference}@durand.test>"
    # A collector who left (disabled) no longer gets the answers: the team does.
    anne.active = False
    session.flush()
    _queue(session, customer_id=followed.id, contact_id=followed.primary_contact.id, to_address=to_address)
    smtp_server.messages.clear()
    deliver_due(session_factory, smtp_url, MAIL_FROM)
    assert [r.message["Reply-To"] for r in smtp_server.messages] == ["recouvrement@nord.test"]


def test_the_envelope_aligns_with_the_company_s_from_when_asked(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP
) -> None:
    from tests import factories

    company = factories.company(session, name="Durand Nord", reminder_from="relances@nord.test")
    customer = factories.customer(session, company)
    _queue(session, customer_id=customer.id, contact_id=customer.primary_contact.id)
    _queue(session, customer_id=customer.id, to_address="anne@durand.test")  # a staff notice: ours
    deliver_due(session_factory, parse_smtp_url(smtp_server.url + "?align_envelope=1"), MAIL_FROM)
    by_to = {r.rcpt_tos[0]: r for r in smtp_server.messages}
    assert by_to["compta@client.test"].mail_from == "relances@nord.test"  # SPF aligned with From: nord.test
    assert by_to["compta@client.test"].message["From"] == "Durand Nord <relances@nord.test>"
    assert by_to["anne@durand.test"].mail_from == "relances@durand.test"
