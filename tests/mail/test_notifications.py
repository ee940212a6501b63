"""Promise-to-pay emails: the debtor's confirmation and staff's notices, delivered over real SMTP."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, timedelta
from typing import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from mail import outbox
from encours.app import create_app
from kernel.clock import clock
from kernel.settings import Settings
from admin.staff_accounts import create_user
from encours.worker import run_once
from ledger import disputes
from ledger.models import OutboxMessage
from links import tokens
from tests import factories
from tests.conftest import TEST_SECRET
from tests.fakes.smtp import CapturingSMTP, Received
from tests.portal.conftest import csrf_from, login

TODAY = date(2026, 11, 25)


def _plain(text: str) -> str:
    return text.replace("\u202f", " ").replace("\xa0", " ")


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, sessions=session_factory), base_url="http://testserver") as client:
        yield client


def _deliver(session_factory: sessionmaker[Session], smtp_server: CapturingSMTP) -> list[Received]:
    before = len(smtp_server.messages)
    outbox.deliver_due(session_factory, outbox.parse_smtp_url(smtp_server.url), "Encours <no-reply@encours.test>")
    return smtp_server.messages[before:]


def test_a_promise_made_in_the_portal_is_confirmed_to_the_debtor_and_told_to_the_collector(
    session: Session, session_factory: sessionmaker[Session], client: TestClient, smtp_server: CapturingSMTP
) -> None:
    company = factories.company(session, name="Durand Industrie SAS")
    collector = create_user(session, email="claire@durand.test", role="collector", password="x" * 16,
                            company_codes=[company.code])
    customer = factories.customer(session, company, language="en", email="ap@globex.test", collector_id=collector.id)
    first = factories.invoice(session, customer, 1000_00, number="F-1", due_date=date(2026, 11, 1))
    second = factories.invoice(session, customer, 234_56, number="F-2", due_date=date(2026, 11, 10))
    session.commit()

    login(client, customer)
    form = client.get("/portal/promises/new")
    day = TODAY + timedelta(days=10)
    response = client.post("/portal/promises/new", data={"csrf_token": csrf_from(form.text), "date": day.isoformat(),
                                                          "invoice": [str(first.id), str(second.id)]},
                           follow_redirects=False)
    assert response.status_code == 303, response.text

    sent = {m.rcpt_tos[0]: m for m in _deliver(session_factory, smtp_server)}
    assert set(sent) == {"ap@globex.test", "claire@durand.test"}
    debtor = sent["ap@globex.test"]
    assert debtor.message["Subject"] == "Your promise to pay €1,234.56 by 5 Dec 2026 is recorded"
    assert debtor.message.is_multipart() and debtor.html() is not None
    text = debtor.text()
    assert "F-1: €1,000.00" in text and "F-2: €234.56" in text
    link = re.search(r"http://testserver/p/(\S+)", text)
    assert link is not None
    checked = tokens.verify(session, TEST_SECRET, link.group(1))
    assert checked.ok and checked.contact is not None and checked.contact.customer_id == customer.id
    assert "<li>F-1: €1,000.00</li>" in (debtor.html() or "")
    # Staff write in French for a French company.
    staff = sent["claire@durand.test"]
    assert staff.message["Subject"] == f"Promesse de paiement de {customer.name}"
    assert (f"{customer.name} ({customer.ref}) a promis de régler 1 234,56 € au plus tard le 5 déc. 2026 "
            "pour F-1, F-2.") in _plain(staff.text())
    assert "http://testserver/admin/promises" in staff.text() and staff.html() is not None


def test_a_broken_promise_is_told_to_the_company_address_once(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, smtp_server: CapturingSMTP
) -> None:
    company = factories.company(session, collections_email="recouvrement@durand.test", promise_grace_days=3)
    customer = factories.customer(session, company)  # no collector: the company's address hears of it
    invoice = factories.invoice(session, customer, 500_00, number="F-9", due_date=date(2026, 11, 1))
    disputes.make_promise(session, customer=customer, contact=customer.primary_contact, invoice_ids=[invoice.id],
                          promised_for=TODAY + timedelta(days=2))
    session.commit()
    config = replace(settings, smtp_url=smtp_server.url)
    clock.set(clock.now() + timedelta(days=4))
    assert run_once(config, session_factory).promises_broken == 0  # within the grace days
    assert [m.rcpt_tos for m in smtp_server.messages if "romesse" in str(m.message["Subject"])] == []

    clock.set(clock.now() + timedelta(days=2))
    report = run_once(config, session_factory)
    assert report.promises_broken == 1
    broken = [m for m in smtp_server.messages if m.rcpt_tos == ["recouvrement@durand.test"]]
    assert len(broken) == 1
    assert broken[0].message["Subject"] == f"Promesse de paiement non tenue : {customer.name}"
    assert (f"{customer.name} ({customer.ref}) n'a pas tenu sa promesse de régler 500,00 € au plus tard le "
            "27 nov. 2026 pour F-9. Les relances de ces factures reprennent.") in _plain(broken[0].text())
    # The reminder that followed in the same run says so to the debtor.
    [reminder] = [m for m in smtp_server.messages if m.rcpt_tos == [customer.primary_contact.email]]
    assert "Vous vous étiez engagé à régler 500,00 €" in _plain(reminder.text())
    run_once(config, session_factory)
    assert len([m for m in smtp_server.messages if m.rcpt_tos == ["recouvrement@durand.test"]]) == 1


def test_without_any_staff_address_only_the_debtor_hears(session: Session) -> None:
    from kernel.templating import Templates
    from mail import notifications

    company = factories.company(session)
    customer = factories.customer(session, company)
    invoice = factories.invoice(session, customer)
    promise = disputes.make_promise(session, customer=customer, contact=None, invoice_ids=[invoice.id],
                                    promised_for=TODAY)
    queued = notifications.notify_promise_made(session, promise, secret=TEST_SECRET, base_url="http://x",
                                               templates=Templates())
    assert [(m.kind, m.to_address) for m in queued] == [("promise_confirmation", customer.primary_contact.email)]
    assert queued[0].subject.startswith("Votre promesse de paiement")
    assert notifications.notify_promise_broken(session, promise, base_url="http://x", templates=Templates()) is None
    assert session.scalars(select(OutboxMessage)).all() == queued
