"""'Email me a fresh link', end to end: expired link → form → outbox → SMTP → the new link opens the portal."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from mail.outbox import DeliveryReport, deliver_due, parse_smtp_url
from kernel.clock import clock
from ledger.models import Contact, OutboxMessage
from links import tokens
from mail.renewal import RENEWALS_PER_HOUR
from tests import factories
from tests.conftest import TEST_SECRET
from tests.fakes.smtp import CapturingSMTP
from tests.portal.conftest import csrf_from

MAIL_FROM = "Durand Industrie <relances@durand.test>"
EMAIL = "compta@client.test"
LINK = re.compile(r"http://testserver/p/([A-Za-z0-9_.\-]+)")


def _contact(session: Session, *, lifetime_days: int = 30, language: str = "fr") -> Contact:
    """A French-speaking contact at an English-speaking customer: emails must follow the contact."""
    company = factories.company(session, name="Durand Industrie SAS", link_lifetime_days=lifetime_days)
    customer = factories.customer(session, company, language="en", email=EMAIL)
    contact = customer.primary_contact
    assert contact is not None
    contact.language = language
    session.flush()
    return contact


def _expired_link_page(client: TestClient, token: str) -> str:
    page = client.get(f"/p/{token}", follow_redirects=False)
    assert page.status_code == 410, page.text
    return page.text


def _deliver(session_factory: sessionmaker[Session], smtp_server: CapturingSMTP) -> DeliveryReport:
    return deliver_due(session_factory, parse_smtp_url(smtp_server.url), MAIL_FROM)


def _queued_for(session: Session, contact: Contact) -> int:
    query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.contact_id == contact.id)
    return session.scalar(query) or 0


def test_an_expired_link_gets_a_fresh_one_by_email_that_opens_the_portal(
    session: Session,
    session_factory: sessionmaker[Session],
    client: TestClient,
    smtp_server: CapturingSMTP,
) -> None:
    contact = _contact(session, lifetime_days=30)
    old = tokens.make_token(TEST_SECRET, contact)
    clock.set(clock.now() + timedelta(days=30, minutes=1))

    page = _expired_link_page(client, old)
    assert '<html lang="fr">' in page
    assert "Ce lien a expiré" in page
    assert 'action="/p/renew"' in page and f'name="token" value="{old}"' in page
    assert EMAIL not in page  # the address on file is never shown

    done = client.post("/p/renew", data={"token": old, "csrf_token": csrf_from(page)})
    assert done.status_code == 200
    assert "Consultez votre messagerie" in done.text
    assert EMAIL not in done.text

    clock.set(clock.now() + timedelta(minutes=2))  # the worker's next run
    assert _deliver(session_factory, smtp_server) == DeliveryReport(sent=1, retried=0, failed=0)
    [received] = smtp_server.messages
    assert received.rcpt_tos == [EMAIL]
    assert received.message["To"] == EMAIL
    assert received.message["From"] == MAIL_FROM
    assert received.message["Subject"] == "Votre nouveau lien vers votre compte chez Durand Industrie SAS"
    text = received.text()
    assert text.startswith("Bonjour,")
    [fresh] = set(LINK.findall(text))
    assert fresh != old
    assert f'href="http://testserver/p/{fresh}"' in (received.html() or "")

    opened = client.get(f"/p/{fresh}", follow_redirects=False)
    assert opened.status_code == 303
    assert opened.headers["location"] == "/portal"
    statement = client.get("/portal")
    assert statement.status_code == 200
    assert contact.customer.name in statement.text
    assert client.get(f"/p/{old}", follow_redirects=False).status_code == 410  # the old one stays dead


def test_the_email_speaks_the_contacts_language(
    session: Session,
    session_factory: sessionmaker[Session],
    client: TestClient,
    smtp_server: CapturingSMTP,
) -> None:
    contact = _contact(session, language="en")
    old = tokens.make_token(TEST_SECRET, contact)
    clock.set(clock.now() + timedelta(days=31))
    page = _expired_link_page(client, old)
    assert "This link has expired" in page
    client.post("/p/renew", data={"token": old, "csrf_token": csrf_from(page)})
    _deliver(session_factory, smtp_server)
    [received] = smtp_server.messages
    assert received.message["Subject"] == "Your new link to your account with Durand Industrie SAS"
    assert received.text().startswith("Hello,")


def test_the_french_email_says_how_long_the_link_lasts_in_french(
    session: Session,
    session_factory: sessionmaker[Session],
    client: TestClient,
    smtp_server: CapturingSMTP,
) -> None:
    contact = _contact(session, lifetime_days=30)
    old = tokens.make_token(TEST_SECRET, contact)
    clock.set(clock.now() + timedelta(days=31))
    client.post("/p/renew", data={"token": old, "csrf_token": csrf_from(_expired_link_page(client, old))})
    _deliver(session_factory, smtp_server)
    [received] = smtp_server.messages
    assert "It stays valid" not in received.text()
    assert "Il reste valable 30 jours.\nSi vous ne l’avez pas demandé" in received.text()
    assert "Il reste valable 30 jours." in (received.html() or "")


def _tampered(token: str) -> str:
    head, _, signature = token.rpartition(".")
    return f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"


@pytest.mark.parametrize("kind", ["tampered", "not ours", "revoked", "still valid", "garbage"])
def test_only_an_expired_link_of_ours_sends_anything_and_every_answer_looks_alike(
    session: Session,
    session_factory: sessionmaker[Session],
    client: TestClient,
    smtp_server: CapturingSMTP,
    kind: str,
) -> None:
    contact = _contact(session)
    expired = tokens.make_token(TEST_SECRET, contact)
    clock.set(clock.now() + timedelta(days=31))
    csrf = csrf_from(_expired_link_page(client, expired))
    if kind == "tampered":
        token = _tampered(expired)
    elif kind == "not ours":
        token = URLSafeTimedSerializer("someone-else-0123456789abcdef", salt="portal-link").dumps(
            {"c": contact.id, "v": contact.link_version}
        )
    elif kind == "revoked":
        token = expired
        tokens.revoke_all(session, contact.customer)
        session.flush()
    elif kind == "still valid":
        token = tokens.make_token(TEST_SECRET, contact)
    else:
        token = "not-a-token"
    headers = {"Accept-Language": "fr"}  # so a page for an unknown visitor is in the same language

    answer = client.post("/p/renew", data={"token": token, "csrf_token": csrf}, headers=headers)

    assert answer.status_code == 200
    assert "Consultez votre messagerie" in answer.text
    assert _queued_for(session, contact) == 0
    assert _deliver(session_factory, smtp_server) == DeliveryReport(0, 0, 0)
    assert smtp_server.messages == []
    if kind != "revoked":
        genuine = client.post("/p/renew", data={"token": expired, "csrf_token": csrf}, headers=headers)
        assert genuine.text == answer.text  # nothing tells a real link from a forged one
        assert _deliver(session_factory, smtp_server) == DeliveryReport(1, 0, 0)


def test_renewal_without_the_csrf_token_is_refused(
    session: Session,
    session_factory: sessionmaker[Session],
    client: TestClient,
    smtp_server: CapturingSMTP,
) -> None:
    contact = _contact(session)
    old = tokens.make_token(TEST_SECRET, contact)
    clock.set(clock.now() + timedelta(days=31))
    _expired_link_page(client, old)  # the visitor has a session and a CSRF token, but does not send it

    assert client.post("/p/renew", data={"token": old}).status_code == 403
    assert client.post("/p/renew", data={"token": old, "csrf_token": "forged"}).status_code == 403
    assert _queued_for(session, contact) == 0
    assert _deliver(session_factory, smtp_server) == DeliveryReport(0, 0, 0)


def test_at_most_three_fresh_links_an_hour_per_contact(
    session: Session,
    session_factory: sessionmaker[Session],
    client: TestClient,
    smtp_server: CapturingSMTP,
) -> None:
    assert RENEWALS_PER_HOUR == 3
    contact = _contact(session)
    old = tokens.make_token(TEST_SECRET, contact)
    clock.set(clock.now() + timedelta(days=31))
    start = clock.now()
    csrf = csrf_from(_expired_link_page(client, old))

    answers = set()
    for minute in range(6):
        clock.set(start + timedelta(minutes=minute * 10))
        answer = client.post("/p/renew", data={"token": old, "csrf_token": csrf})
        assert answer.status_code == 200
        answers.add(answer.text)
    assert len(answers) == 1  # being throttled looks like success: no oracle for an attacker

    assert _queued_for(session, contact) == 3
    assert _deliver(session_factory, smtp_server) == DeliveryReport(sent=3, retried=0, failed=0)
    assert [m.rcpt_tos for m in smtp_server.messages] == [[EMAIL]] * 3

    clock.set(start + timedelta(hours=1, minutes=1))
    client.post("/p/renew", data={"token": old, "csrf_token": csrf})
    assert _queued_for(session, contact) == 4  # a new hour, a new allowance


def test_a_dead_link_page_carries_the_companys_brand_and_asks_for_a_new_link_by_address(
    session: Session,
    session_factory: sessionmaker[Session],
    client: TestClient,
    smtp_server: CapturingSMTP,
) -> None:
    contact = _contact(session)
    company = contact.customer.company
    company.support_email = "recouvrement@durand.test"
    session.commit()
    old = tokens.make_token(TEST_SECRET, contact)
    clock.set(clock.now() + timedelta(days=31))
    page = _expired_link_page(client, old)
    assert f'href="/brand/{company.code}.css"' in page and "Durand Industrie SAS" in page
    assert "recouvrement@durand.test" in page and 'name="email"' in page

    # A known address and an unknown one get the same page, and each one email through the outbox.
    answers = []
    for address in (EMAIL.upper(), "inconnu@ailleurs.test"):
        answer = client.post("/p/renew", data={"email": address, "company": company.code,
                                               "csrf_token": csrf_from(page)})
        assert answer.status_code == 200
        answers.append(answer.text.replace(address, "ADDRESS"))
    assert answers[0] == answers[1] and "Si cette adresse figure dans nos fichiers" in answers[0]
    assert EMAIL not in answers[0]
    clock.set(clock.now() + timedelta(minutes=2))
    assert _deliver(session_factory, smtp_server).sent == 2
    by_address = {message.rcpt_tos[0]: message for message in smtp_server.messages}
    [fresh] = set(LINK.findall(by_address[EMAIL].text()))  # to the address on file, as it is written there
    assert client.get(f"/p/{fresh}", follow_redirects=False).status_code == 303
    assert "ne figure pas dans nos fichiers" in by_address["inconnu@ailleurs.test"].text()
    assert not LINK.findall(by_address["inconnu@ailleurs.test"].text())


def test_asking_for_a_link_by_address_is_capped_and_a_bad_address_is_named(
    session: Session, client: TestClient
) -> None:
    contact = _contact(session)
    session.commit()
    page = client.get("/portal").text  # no session: the page asks for the link, or an address
    assert 'name="email"' in page
    csrf = csrf_from(page)
    bad = client.post("/p/renew", data={"email": "pas une adresse", "csrf_token": csrf})
    assert bad.status_code == 422 and "« pas une adresse » n’est pas une adresse e-mail." in bad.text
    for _ in range(RENEWALS_PER_HOUR + 2):
        assert client.post("/p/renew", data={"email": EMAIL, "csrf_token": csrf}).status_code == 200
    session.expire_all()
    assert _queued_for(session, contact) == RENEWALS_PER_HOUR
