"""Bounces after delivery: a DSN the relay posts to /webhooks/bounces (or a pipe feeds to
`encours mail bounce`) marks the message it names failed and the contact's address failing.

The DSNs are in tests/mail/dsn/ (their README cites RFC 3464's sample DSNs, which they follow);
what they return is the email our outbox really sent through the SMTP server of tests/fakes."""

from __future__ import annotations

import os
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.db import make_engine, make_sessionmaker, upgrade
from kernel.settings import load_settings
from ledger.models import Contact, OutboxMessage
from mail import bounces
from mail.outbox import deliver_due, parse_smtp_url
from tests import factories
from tests.conftest import TEST_SECRET
from tests.fakes.smtp import CapturingSMTP

DSN = Path(__file__).with_name("dsn")
TOKEN = "bounce-token-0123456789abcdef"
MAIL_FROM = "Durand <relances@durand.test>"
ENCOURS = str(Path(sys.executable).with_name("encours"))


def _dsn(name: str, recipient: str, returned: bytes, headers_only: bool = False) -> bytes:
    if headers_only:
        returned = returned.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    template = (DSN / name).read_bytes()
    return template.replace(b"{recipient}", recipient.encode()).replace(b"{returned}",
                                                                        returned.replace(b"\r\n", b"\n"))


def _send_one(session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP,
              email: str = "compta@client.test") -> tuple[OutboxMessage, bytes]:
    """A reminder-like message to a debtor's contact, delivered for real; its bytes as sent."""
    customer = factories.customer(session, factories.company(session), email=email)
    message = OutboxMessage(kind="reminder", customer_id=customer.id, contact_id=customer.primary_contact.id,
                            to_address=email, subject="Relance", body_text="Bonjour")
    session.add(message)
    session.commit()
    before = len(smtp_server.messages)
    assert deliver_due(session_factory, parse_smtp_url(smtp_server.url), MAIL_FROM).sent == 1
    session.refresh(message)
    assert message.status == "sent"
    return message, smtp_server.messages[before].message.as_bytes(policy=policy.SMTP)


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    return both_databases_session_factory


@pytest.fixture
def client(db_url: str, session_factory: sessionmaker[Session]):  # type: ignore[no-untyped-def]
    settings = load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                              "ENCOURS_BOUNCE_TOKEN": TOKEN})
    with TestClient(create_app(settings, sessions=session_factory)) as client:
        yield client


def _post(client: TestClient, raw: bytes, token: str | None = TOKEN):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "message/rfc822"} | ({"Authorization": f"Bearer {token}"} if token else {})
    return client.post("/webhooks/bounces", content=raw, headers=headers)


@pytest.mark.parametrize(("sample", "headers_only", "status"), [
    ("simple_failed.eml", False, "bounced: 5.1.1 550 5.1.1 <compta@client.test>... User unknown"),
    ("headers_only_failed.eml", True, "bounced: 5.2.2 552 5.2.2 Mailbox full"),
    ("multi_recipient.eml", False, "bounced: 5.7.1 550 5.7.1 rejected by recipient's policy"),
])
def test_a_permanent_failure_marks_the_message_and_the_address(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, client: TestClient,
    sample: str, headers_only: bool, status: str,
) -> None:
    message, sent = _send_one(session, session_factory, smtp_server)
    raw = _dsn(sample, message.to_address, sent, headers_only)
    response = _post(client, raw)
    assert response.status_code == 200, response.text
    ignored = 2 if sample == "multi_recipient.eml" else 0  # the other recipients are not this message's
    assert response.json() == {"bounced": 1, "already": 0, "ignored": ignored}
    session.expire_all()
    assert (message.status, message.last_error) == ("failed", status)
    contact = session.get(Contact, message.contact_id)
    assert contact is not None and contact.email_failing_since is not None and contact.email_failure == status
    # The relay may post the same report twice: nothing changes.
    assert _post(client, raw).json() == {"bounced": 0, "already": 1, "ignored": ignored}


def test_a_delay_changes_nothing(session: Session, session_factory: sessionmaker[Session],
                                 smtp_server: CapturingSMTP, client: TestClient) -> None:
    message, sent = _send_one(session, session_factory, smtp_server)
    response = _post(client, _dsn("delayed.eml", message.to_address, sent, headers_only=True))
    assert response.json() == {"bounced": 0, "already": 0, "ignored": 1}
    session.expire_all()
    assert message.status == "sent" and session.get(Contact, message.contact_id).email_failing_since is None


def test_a_report_naming_no_message_of_ours_changes_nothing(
    session: Session, session_factory: sessionmaker[Session], smtp_server: CapturingSMTP, client: TestClient,
) -> None:
    message, sent = _send_one(session, session_factory, smtp_server)
    reference = f"{message.id}.".encode()
    # Same id, another creation second: a guessed reference is no evidence.
    forged = sent.replace(reference, f"{message.id}.1".encode()[:-1] + b"9", 2)
    forged = forged.replace(f"X-Encours-Message: {message.id}.".encode(), f"X-Encours-Message: {message.id}.1".encode())
    assert _post(client, _dsn("simple_failed.eml", message.to_address, forged)).json()["bounced"] == 0
    # Right message, another recipient: not what we sent.
    assert _post(client, _dsn("simple_failed.eml", "someone@else.test", sent)).json() == {
        "bounced": 0, "already": 0, "ignored": 1}
    session.expire_all()
    assert message.status == "sent"


def test_the_intake_wants_its_token_and_a_dsn(session: Session, session_factory: sessionmaker[Session],
                                              smtp_server: CapturingSMTP, client: TestClient) -> None:
    message, sent = _send_one(session, session_factory, smtp_server)
    raw = _dsn("simple_failed.eml", message.to_address, sent)
    assert _post(client, raw, token=None).status_code == 401
    assert _post(client, raw, token="wrong-token-0123456789abcdef").status_code == 401
    vacation = b"From: compta@client.test\r\nSubject: Absent\r\nAuto-Submitted: auto-replied\r\n\r\nBack Monday.\r\n"
    refused = _post(client, vacation)
    assert refused.status_code == 422 and "not a delivery status notification" in refused.json()["error"]
    session.expire_all()
    assert message.status == "sent"


def test_the_intake_is_off_without_a_token(db_url: str, session_factory: sessionmaker[Session]) -> None:
    settings = load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET})
    with TestClient(create_app(settings, sessions=session_factory)) as client:
        assert _post(client, b"x").status_code == 404


def test_parse_reads_every_recipient_block() -> None:
    returned = b"Message-ID: <encours.outbox.7.1764061200@durand.test>\nSubject: x\n\nbody\n"
    report = bounces.parse_report(_dsn("multi_recipient.eml", "compta@client.test", returned))
    assert report.reference == "7.1764061200"
    assert [(r.recipient, r.action, r.status, r.permanent_failure) for r in report.recipients] == [
        ("someone.else@client.test", "failed", "5.1.1", True),
        ("compta@client.test", "failed", "5.7.1", True),
        ("archive@client.test", "delivered", "2.0.0", False),
    ]


def test_the_cli_feeds_a_dsn_file(tmp_path: Path, smtp_server: CapturingSMTP) -> None:
    url = f"sqlite:///{tmp_path / 'b.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        message, sent = _send_one(session, sessions, smtp_server)
        (tmp_path / "bounce.eml").write_bytes(_dsn("simple_failed.eml", message.to_address, sent))
        (tmp_path / "note.eml").write_bytes(b"Subject: hello\r\n\r\nnot a report\r\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCOURS_")} | {"ENCOURS_DATABASE_URL": url}
    done = subprocess.run([ENCOURS, "mail", "bounce", "bounce.eml", "note.eml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout.strip() == "bounce.eml: 1 bounced, 0 already known, 0 ignored"
    assert done.stderr.strip().splitlines()[-1] == (
        "note.eml: no message/delivery-status part: not a delivery status notification (RFC 3464)")
    assert "message 1 bounced after delivery: bounced: 5.1.1" in done.stderr  # the log line says why
    with sessions() as session:
        assert session.scalar(select(OutboxMessage.status).where(OutboxMessage.id == message.id)) == "failed"
    engine.dispose()
