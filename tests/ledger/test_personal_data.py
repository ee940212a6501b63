"""A person's data, exported whole, erased without losing the books, and purged when it has done its job.

The debtor leaves its traces the way it does in production: it opens its magic link (IP address
and browser recorded), disputes an invoice with a photo, promises to pay; the company emails it;
a collector writes a note. Then the export must hold all of it, and an erasure must leave
nothing that names or reaches the person, while every amount of the ledger stays.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.clock import clock
from kernel.settings import Settings, load_settings
from ledger import personal_data
from ledger.allocation import invariant_violations
from ledger.models import (
    Attachment, AuditEvent, Base, Contact, Customer, CustomerNote, Invoice, LinkOpen, OutboxMessage, WebhookEvent,
)
from ledger.storage import FileStorage, ObjectMissing
from tests import factories
from tests.conftest import TEST_SECRET
from tests.portal.conftest import csrf_from, login

EMAIL = "marie.lefevre@boulangerie-lefevre.test"
NAME = "Marie Lefèvre"
PHONE = "+33 6 12 34 56 78"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) LefevreBrowser/1.0"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    return both_databases_session_factory


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver", "ENCOURS_STORAGE_DIR": str(tmp_path / "files")})


@pytest.fixture
def debtor_world(session: Session, settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Customer]:
    company = factories.company(session, name="Durand Industrie SAS", collections_email="recouvrement@durand.test")
    customer = factories.customer(session, company, email=EMAIL, language="fr")
    customer.name = "Boulangerie Lefèvre"
    contact = customer.primary_contact
    assert contact is not None
    contact.name, contact.phone = NAME, PHONE
    late = factories.invoice(session, customer, total_minor=1234_56, number="F-1", due_date=date(2026, 11, 1))
    factories.invoice(session, customer, total_minor=500_00, number="F-2", due_date=date(2026, 12, 20))
    session.add(CustomerNote(customer_id=customer.id, body=f"Appelé {NAME} au {PHONE}, rappeler lundi"))
    session.commit()
    with TestClient(create_app(settings, sessions=session_factory), base_url="http://testserver",
                    headers={"User-Agent": BROWSER}) as debtor:
        login(debtor, customer)  # a link open: IP address and browser
        form = debtor.get(f"/portal/requests/new?invoice={late.id}")
        opened = debtor.post("/portal/requests/new", data={
            "csrf_token": csrf_from(form.text), "kind": "dispute", "reason": "quality",
            "message": f"Livraison abîmée, signé {NAME}", "invoice": [str(late.id)]},
            files=[("files", ("photo.png", PNG, "image/png"))], follow_redirects=False)
        assert opened.status_code == 303, opened.text
    session.expire_all()
    yield customer


def _all_text(session: Session) -> str:
    """Every value of every table, as one string: what a database dump would show."""
    chunks = []
    for table in Base.metadata.sorted_tables:
        for row in session.execute(select(table)):
            chunks.extend(json.dumps(value, default=str, ensure_ascii=False) for value in row)
    return "\n".join(chunks)


def test_the_export_holds_every_table_that_belongs_to_the_customer(session: Session, debtor_world: Customer) -> None:
    exported = personal_data.export_customer(session, debtor_world)
    covered = set(exported["tables"])
    for table in personal_data.owned_tables():
        assert table.name in covered, f"{table.name} has customer rows but is not exported"
    text_of_export = json.dumps(exported, ensure_ascii=False)
    for value in (EMAIL, NAME, PHONE, BROWSER, "photo.png", "rappeler lundi", "Livraison abîmée", "F-1"):
        assert value in text_of_export, value
    assert exported["tables"]["link_opens"][0]["user_agent"] == BROWSER
    assert exported["tables"]["attachments"][0]["filename"] == "photo.png"
    json.dumps(exported)  # JSON as it is, nothing left to convert


def test_a_contact_export_holds_that_contact_only(session: Session, debtor_world: Customer) -> None:
    other = Contact(customer_id=debtor_world.id, email="compta@boulangerie-lefevre.test", language="fr")
    session.add(other)
    session.commit()
    exported = personal_data.export_customer(session, debtor_world, contact=other)
    assert [c["email"] for c in exported["contacts"]] == ["compta@boulangerie-lefevre.test"]
    assert EMAIL not in json.dumps(exported) and not exported["tables"]["link_opens"]
    assert not exported["tables"]["dispute_messages"]  # Marie wrote the dispute, not this contact


def test_erasure_leaves_nothing_personal_and_every_amount(session: Session, debtor_world: Customer,
                                                          settings: Settings) -> None:
    customer = debtor_world
    storage = FileStorage(settings.storage_dir)
    key = session.scalars(select(Attachment.storage_key)).one()
    assert storage.read(key) == PNG
    assert session.scalar(select(func.count()).select_from(OutboxMessage).where(
        OutboxMessage.to_address == "recouvrement@durand.test")) == 1  # the team was told of the dispute
    open_before = {i.number: (i.total_minor, i.status) for i in session.scalars(select(Invoice))}
    dumped = _all_text(session)
    assert EMAIL in dumped and NAME in dumped and BROWSER in dumped

    report = personal_data.erase(session, customer, actor="dpo@durand.test", delete_file=storage.delete)
    session.commit()
    session.expire_all()

    dumped = _all_text(session)
    for value in (EMAIL, NAME, PHONE, BROWSER, "Boulangerie Lefèvre", "rappeler lundi", "Livraison abîmée"):
        assert value not in dumped, f"{value!r} is still in the database"
    assert report.contacts == 1 and report.attachments == 1 and report.link_opens == 1
    with pytest.raises(ObjectMissing):
        storage.read(key)
    # The books: every invoice with its amount and status, the ledger invariant.
    assert {i.number: (i.total_minor, i.status) for i in session.scalars(select(Invoice))} == open_before
    assert invariant_violations(session) == []
    erased = session.get(Customer, customer.id)
    assert erased is not None and erased.ref == customer.ref and erased.reminders_paused
    assert session.scalars(select(LinkOpen)).one().ip is None
    assert session.scalars(select(AuditEvent.action).where(AuditEvent.action == "personal_data.erased")).one()


def test_an_erased_contacts_link_no_longer_opens(session: Session, debtor_world: Customer, settings: Settings,
                                                 session_factory: sessionmaker[Session]) -> None:
    from links import tokens

    contact = debtor_world.primary_contact
    assert contact is not None
    token = tokens.make_token(TEST_SECRET, contact)
    personal_data.erase(session, debtor_world, contact=contact, actor="dpo@durand.test",
                        delete_file=FileStorage(settings.storage_dir).delete)
    session.commit()
    with TestClient(create_app(settings, sessions=session_factory), base_url="http://testserver") as debtor:
        assert debtor.get(f"/p/{token}", follow_redirects=False).status_code != 303


def _aged(session: Session, days: int) -> None:
    """Move every timestamp `days` into the past, as time passing would."""
    past = clock.now() - timedelta(days=days)
    for model, column in ((LinkOpen, "opened_at"), (OutboxMessage, "created_at"), (WebhookEvent, "received_at")):
        session.execute(model.__table__.update().values({column: past}))
    session.execute(OutboxMessage.__table__.update().values(status="sent", sent_at=past))


def test_retention_purges_by_products_past_their_time_and_keeps_what_counts(
        session: Session, debtor_world: Customer) -> None:
    session.add(WebhookEvent(provider="stripe", event_id="evt_old", event_type="payment_intent.succeeded",
                             body=json.dumps({"id": "evt_old", "data": {"object": {"receipt_email": EMAIL}}}),
                             headers={"stripe-signature": "t=1,v1=abc"}, processed_at=clock.now()))
    session.commit()
    retention = personal_data.Retention()

    nothing = personal_data.purge(session, retention)  # all of it is fresh
    assert not nothing.busy

    _aged(session, 89)
    assert personal_data.purge(session, retention).email_bodies == 0
    _aged(session, 91)
    report = personal_data.purge(session, retention)
    assert report.email_bodies == 1 and report.link_opens == 0 and report.webhook_bodies == 0
    _aged(session, 401)
    report = personal_data.purge(session, retention)
    assert report.link_opens == 1 and report.webhook_bodies == 1
    session.commit()
    session.expire_all()

    opened = session.scalars(select(LinkOpen)).one()
    assert opened.ip is None and opened.user_agent is None and opened.opened_at is not None  # still counted
    event = session.scalars(select(WebhookEvent)).one()
    assert EMAIL not in event.body and event.event_id == "evt_old" and event.headers == {}  # duplicates still known
    assert session.scalars(select(OutboxMessage.body_text)).one() == ""
    assert not personal_data.purge(session, retention).busy  # purging again finds nothing
    assert not personal_data.purge(session, personal_data.Retention(0, 0, 0)).busy  # 0: kept for ever


def test_retention_settings_are_whole_numbers() -> None:
    from kernel.settings import SettingsError

    base = {"ENCOURS_SECRET_KEY": TEST_SECRET}
    assert load_settings({**base, "ENCOURS_RETAIN_EMAIL_BODIES_DAYS": "30"}).retain_email_bodies_days == 30
    with pytest.raises(SettingsError, match="ENCOURS_RETAIN_LINK_OPENS_DAYS must be a whole number"):
        load_settings({**base, "ENCOURS_RETAIN_LINK_OPENS_DAYS": "13 months"})

