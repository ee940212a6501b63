"""Bulk actions on the customers list (assign, pause/resume, send links) and saved views."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.models import AuditEvent, Contact, Customer, OutboxMessage, SavedView
from tests import factories
from tests.admin.conftest import csrf_from
from tests.admin.staff_book import book, signed_in  # noqa: F401 - fixtures


def _bulk(client, data: dict[str, object]):  # type: ignore[no-untyped-def]
    page = client.get("/admin/customers")
    return client.post("/admin/customers/bulk", data={"csrf_token": csrf_from(page.text), **data},
                       follow_redirects=False)


def test_assign_ticked_customers_asks_with_the_count_then_assigns_and_audits(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    boss = signed_in(new_client, "boss@north.test")
    listing = boss.get("/admin/customers")
    assert f'name="ids" value="{book["other"].id}"' in listing.text and "Every customer matching the filters" in listing.text
    chosen = {"action": "assign", "collector": str(book["anne"].id), "ids": [str(book["other"].id), str(book["far"].id)]}
    confirm = _bulk(boss, chosen)
    # FAR is of SOUTH, which this manager cannot see: silently outside the selection, never touched
    assert confirm.status_code == 200 and "Assign 1 customer to anne@north.test?" in confirm.text
    session.expire_all()
    assert book["other"].collector_id is None
    done = _bulk(boss, {**chosen, "confirm": "1"})
    assert done.status_code == 303 and "done=assign" in done.headers["location"]
    assert "Collector saved for 1 customer(s)." in boss.get(done.headers["location"]).text
    session.expire_all()
    assert book["other"].collector_id == book["anne"].id and book["far"].collector_id is None
    actions = set(session.scalars(select(AuditEvent.action).where(AuditEvent.actor == "boss@north.test")))
    assert actions == {"customer.collector_assigned", "customers.bulk_action"}


def test_pause_every_customer_matching_the_filters(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in(new_client, "admin@x.test")
    confirm = _bulk(admin, {"action": "pause", "all": "1", "filters": "company=NORTH"})
    assert confirm.status_code == 200 and "Pause reminders: 2 customers?" in confirm.text
    done = _bulk(admin, {"action": "pause", "all": "1", "filters": "company=NORTH", "confirm": "1"})
    assert done.status_code == 303 and done.headers["location"].startswith("/admin/customers?company=NORTH&")
    session.expire_all()
    assert (book["mine"].reminders_paused, book["other"].reminders_paused, book["far"].reminders_paused) == (
        True, True, False)
    resumed = _bulk(admin, {"action": "resume", "ids": [str(book["mine"].id)], "confirm": "1"})
    assert resumed.status_code == 303
    session.expire_all()
    assert not book["mine"].reminders_paused and book["other"].reminders_paused


def test_send_links_goes_to_each_reminder_contact_through_the_outbox(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    session.add(Contact(customer_id=book["mine"].id, email="second@mine.test", language="en", role="manager"))
    session.add(Contact(customer_id=book["mine"].id, email="quiet@mine.test", language="en",
                        receives_reminders=False))
    for contact in book["other"].contacts:
        contact.receives_reminders = False
    session.commit()
    anne = signed_in(new_client, "boss@north.test")
    done = _bulk(anne, {"action": "send_links", "ids": [str(book["mine"].id), str(book["other"].id)],
                        "confirm": "1"})
    assert done.status_code == 303
    page = anne.get(done.headers["location"])
    assert "2 link email(s) queued for 1 customer(s)." in page.text
    assert "No link sent to OTHER" in page.text
    sent = sorted(session.scalars(select(OutboxMessage.to_address).where(OutboxMessage.kind == "fresh_link")))
    assert sent == [book["mine"].primary_contact.email, "second@mine.test"]
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "link.sent")) == 2


def test_roles_a_viewer_cannot_and_a_collector_cannot_assign(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    reader = signed_in(new_client, "reader@north.test")
    assert 'name="ids"' not in reader.get("/admin/customers").text
    assert _bulk(reader, {"action": "pause", "ids": [str(book["mine"].id)], "confirm": "1"}).status_code == 403
    anne = signed_in(new_client, "anne@north.test")
    refused = _bulk(anne, {"action": "assign", "collector": "", "ids": [str(book["mine"].id)], "confirm": "1"})
    assert refused.status_code == 400 and "A collector cannot assign customers." in refused.text
    # a collector's "all matching" covers its own customers only
    done = _bulk(anne, {"action": "pause", "all": "1", "filters": "", "confirm": "1"})
    assert done.status_code == 303 and "n=1" in done.headers["location"]
    session.expire_all()
    assert book["mine"].reminders_paused and not book["other"].reminders_paused
    nothing = _bulk(anne, {"action": "pause", "ids": [str(book["other"].id)]})
    assert nothing.status_code == 400 and "Tick the customers to act on" in nothing.text


def test_assigning_a_collector_of_another_company_is_refused_whole(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in(new_client, "admin@x.test")
    refused = _bulk(admin, {"action": "assign", "collector": str(book["anne"].id), "confirm": "1",
                            "ids": [str(book["other"].id), str(book["far"].id)]})
    assert refused.status_code == 400 and "does not work for every company" in refused.text
    session.expire_all()
    assert book["other"].collector_id is None  # nothing half-applied


def test_saved_views_are_listed_beside_the_filters_own_and_shared(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    boss = signed_in(new_client, "boss@north.test")
    page = boss.get("/admin/customers?overdue=1&sort=overdue&page=3")
    saved = boss.post("/admin/customers/views", data={"csrf_token": csrf_from(page.text), "name": "  Late  ones ",
                                                       "filters": "overdue=1&sort=overdue&page=3&junk=1"},
                      follow_redirects=False)
    assert saved.status_code == 303
    view = session.scalar(select(SavedView))
    assert view is not None and (view.name, view.query, view.shared) == ("Late ones", "overdue=1&sort=overdue", False)
    listing = boss.get("/admin/customers")
    assert '<a href="/admin/customers?overdue=1&amp;sort=overdue">Late ones</a>' in listing.text
    # not shared: another user does not see it; shared: it does
    other = signed_in(new_client, "admin@x.test")
    assert "Late ones" not in other.get("/admin/customers").text
    boss.post("/admin/customers/views", data={"csrf_token": csrf_from(page.text), "name": "Late ones",
                                              "filters": "overdue=1", "shared": "1"})
    shown = other.get("/admin/customers").text
    assert "Late ones" in shown and "shared by boss@north.test" in shown
    assert session.scalar(select(func.count()).select_from(SavedView)) == 1  # replaced, not doubled
    empty = boss.post("/admin/customers/views", data={"csrf_token": csrf_from(page.text), "name": " ", "filters": ""})
    assert empty.status_code == 400 and "Give the view a name." in empty.text
    # someone else's view cannot be deleted by a manager
    anne = signed_in(new_client, "anne@north.test")
    own_page = anne.get("/admin/customers")
    refused = anne.post(f"/admin/customers/views/{view.id}/delete", data={"csrf_token": csrf_from(own_page.text)})
    assert refused.status_code == 400
    deleted = boss.post(f"/admin/customers/views/{view.id}/delete", data={"csrf_token": csrf_from(page.text)},
                        follow_redirects=False)
    assert deleted.status_code == 303
    assert session.scalar(select(func.count()).select_from(SavedView)) == 0
    assert re.search("View deleted.", boss.get(deleted.headers["location"]).text)


def test_a_bulk_action_over_the_limit_is_refused(new_client, session: Session, book, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from admin import bulk_service

    monkeypatch.setattr(bulk_service, "MAX_CUSTOMERS", 1)
    north = book["mine"].company
    factories.customer(session, north, ref="EXTRA")
    session.commit()
    admin = signed_in(new_client, "admin@x.test")
    refused = _bulk(admin, {"action": "pause", "all": "1", "filters": "company=NORTH", "confirm": "1"})
    assert refused.status_code == 400 and "at most 1 customers" in refused.text
    assert session.scalar(select(func.count()).select_from(Customer).where(Customer.reminders_paused)) == 0
