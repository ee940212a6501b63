"""Staff add, edit and remove a customer's contacts (with roles), and send a link to the one they choose."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.models import AuditEvent, Contact, OutboxMessage
from links import tokens
from tests.admin.staff_book import book, post, signed_in  # noqa: F401 - fixtures
from tests.conftest import TEST_SECRET

NEW = {"email": "boss@mine.test", "name": "Jeanne Martin", "phone": "+33 1 23 45 67 89", "language": "en",
       "role": "manager", "receives_reminders": "1"}


def _contacts(session: Session, customer_id: int) -> list[Contact]:
    session.expire_all()
    return list(session.scalars(select(Contact).where(Contact.customer_id == customer_id,
                                                      Contact.removed_at.is_(None)).order_by(Contact.id)))


def test_a_collector_adds_a_contact_with_its_role(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    anne = signed_in(new_client, "anne@north.test")
    response = post(anne, book["mine"], "contacts", NEW)
    assert response.status_code == 303
    added = _contacts(session, book["mine"].id)[-1]
    assert (added.email, added.name, added.role, added.language, added.receives_reminders, added.is_primary) == (
        "boss@mine.test", "Jeanne Martin", "manager", "en", True, False)
    page = anne.get(response.headers["location"])
    assert "Contact added." in page.text and "boss@mine.test" in page.text and "Manager" in page.text
    assert session.scalar(select(AuditEvent.action).where(AuditEvent.entity_id == added.id,
                                                          AuditEvent.entity_type == "contact")) == "contact.added"


def test_a_bad_contact_is_refused_naming_the_field_and_nothing_is_added(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    for change, message in (({"email": "not-an-address"}, "not-an-address is not an email address."),
                            ({"role": "boss"}, "Choose the contact&#39;s role."),
                            ({"language": "de"}, "Choose the contact&#39;s language."),
                            ({"email": "AP@mine.test"}, "AP@mine.test is already a contact of this customer.")):
        response = post(client, book["mine"], "contacts", {**NEW, **change, "contact_form": "new"})
        assert response.status_code == 400 and message in response.text, change
        # what was typed is kept in the form
        assert 'value="Jeanne Martin"' in response.text
    assert len(_contacts(session, book["mine"].id)) == 1


def test_editing_a_contact_changes_it_and_a_new_address_ends_old_links(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    contact = book["mine"].primary_contact
    old = tokens.make_token(TEST_SECRET, contact)
    client = signed_in(new_client, "boss@north.test")
    response = post(client, book["mine"], f"contacts/{contact.id}",
                    {**NEW, "email": "ap2@mine.test", "role": "accounts_payable", "receives_reminders": ""})
    assert response.status_code == 303
    (edited,) = _contacts(session, book["mine"].id)
    assert (edited.email, edited.receives_reminders, edited.role) == ("ap2@mine.test", False, "accounts_payable")
    assert tokens.verify(session, TEST_SECRET, old).problem == tokens.LinkProblem.revoked
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "contact.updated"))
    assert event is not None and event.before["email"] == "ap@mine.test" and event.after["email"] == "ap2@mine.test"


def test_removing_the_last_reminder_contact_warns_and_asks(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "anne@north.test")
    assert post(client, book["mine"], "contacts", {**NEW, "receives_reminders": ""}).status_code == 303
    primary = book["mine"].primary_contact
    link = tokens.make_token(TEST_SECRET, primary)
    confirm = client.get(f"/admin/customers/{book['mine'].id}/contacts/{primary.id}/remove")
    assert confirm.status_code == 200 and "last contact of this customer that receives reminders" in confirm.text
    assert post(client, book["mine"], f"contacts/{primary.id}/remove").status_code == 400  # not confirmed
    assert len(_contacts(session, book["mine"].id)) == 2
    assert post(client, book["mine"], f"contacts/{primary.id}/remove", {"confirm": "1"}).status_code == 303
    (left,) = _contacts(session, book["mine"].id)
    assert left.email == "boss@mine.test" and left.is_primary
    assert tokens.verify(session, TEST_SECRET, link).ok is False
    # kept as the record of what it was sent, out of the customer's contacts
    assert session.scalar(select(func.count()).select_from(Contact).where(Contact.id == primary.id)) == 1
    page = client.get(f"/admin/customers/{book['mine'].id}")
    assert "ap@mine.test" not in page.text.split('id="contacts-title"')[1].split('id="actions"')[0]


def test_removing_a_contact_when_another_receives_reminders_does_not_warn(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "anne@north.test")
    post(client, book["mine"], "contacts", NEW)
    added = _contacts(session, book["mine"].id)[-1]
    confirm = client.get(f"/admin/customers/{book['mine'].id}/contacts/{added.id}/remove")
    assert confirm.status_code == 200 and "last contact" not in confirm.text


def test_a_viewer_cannot_change_contacts_and_others_customers_are_404(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    reader = signed_in(new_client, "reader@north.test")
    contact = book["mine"].primary_contact
    assert "Add a contact" not in reader.get(f"/admin/customers/{book['mine'].id}").text
    assert post(reader, book["mine"], "contacts", NEW).status_code == 403
    assert post(reader, book["mine"], f"contacts/{contact.id}", NEW).status_code == 403
    assert post(reader, book["mine"], f"contacts/{contact.id}/remove", {"confirm": "1"}).status_code == 403
    assert reader.get(f"/admin/customers/{book['mine'].id}/contacts/{contact.id}/remove").status_code == 403
    bob = signed_in(new_client, "bob@north.test")
    assert post(bob, book["mine"], "contacts", NEW).status_code == 404
    anne = signed_in(new_client, "anne@north.test")
    # a contact of another customer is not found through this one
    other = book["other"].primary_contact
    assert post(anne, book["mine"], f"contacts/{other.id}", NEW).status_code == 404
    assert len(_contacts(session, book["mine"].id)) == 1


def test_send_a_link_to_the_contact_staff_choose(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "anne@north.test")
    post(client, book["mine"], "contacts", NEW)
    added = _contacts(session, book["mine"].id)[-1]
    page = client.get(f"/admin/customers/{book['mine'].id}")
    assert f'<option value="{added.id}"' in page.text
    response = post(client, book["mine"], "send-link", {"contact": str(added.id)})
    assert response.status_code == 303
    assert "A fresh link was queued to boss@mine.test." in client.get(response.headers["location"]).text
    (message,) = session.scalars(select(OutboxMessage))
    assert message.to_address == "boss@mine.test" and message.contact_id == added.id
    assert re.search(r"http://testserver/p/\S+", message.body_text)
    other = book["other"].primary_contact
    assert post(client, book["mine"], "send-link", {"contact": str(other.id)}).status_code == 400
