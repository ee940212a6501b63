"""Staff find customers, open one, and act on it: notes, collector, pause, links, a reminder by hand."""

from __future__ import annotations

import re
from datetime import date
from html import unescape

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from dunning import planner
from dunning.scenarios import ensure_default_scenario
from ledger.models import (
    AuditEvent,
    Customer,
    CustomerNote,
    Dispute,
    Invoice,
    OutboxMessage,
    Reminder,
    ScenarioStep,
)
from links import tokens
from tests import factories
from tests.admin.conftest import make_user
from tests.admin.staff_book import TODAY, book, post, signed_in  # noqa: F401 - fixtures
from tests.conftest import TEST_SECRET

ROLES = ("admin@x.test", "boss@north.test", "boss@south.test", "anne@north.test", "bob@north.test",
         "reader@north.test")


VISIBLE = {
    "admin@x.test": {"mine", "other", "far"},
    "boss@north.test": {"mine", "other"},
    "boss@south.test": {"far"},
    "anne@north.test": {"mine"},
    "bob@north.test": set(),
    "reader@north.test": {"mine", "other"},
}


def test_each_role_sees_its_customers_and_no_other(new_client, book) -> None:  # type: ignore[no-untyped-def]
    for email in ROLES:
        client = signed_in(new_client, email)
        listing = client.get("/admin/customers")
        assert listing.status_code == 200
        shown = {name for name, customer in book.items() if name != "anne" and f">{customer.name}<" in listing.text}
        assert shown == VISIBLE[email], email
        for name in ("mine", "other", "far"):
            expected = 200 if name in VISIBLE[email] else 404
            assert client.get(f"/admin/customers/{book[name].id}").status_code == expected, (email, name)


def test_signed_out_goes_to_login(client: TestClient, book) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/admin/customers", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/admin/login")


ACTIONS = [("notes", {"note": "hello"}), ("pause", {"paused": "1"}), ("send-link", {}), ("revoke-links", {}),
           ("remind", {})]


def test_a_viewer_reads_but_never_acts(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    reader = signed_in(new_client, "reader@north.test")
    page = reader.get(f"/admin/customers/{book['mine'].id}")
    assert page.status_code == 200 and "Send a reminder now" not in page.text
    for action, data in ACTIONS + [("collector", {"collector": ""})]:
        assert post(reader, book["mine"], action, data).status_code == 403, action
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.actor == "reader@north.test")) == 0


def test_acting_on_a_hidden_customer_is_404(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    for email, hidden in (("bob@north.test", "mine"), ("anne@north.test", "other"), ("boss@south.test", "mine")):
        client = signed_in(new_client, email)
        for action, data in ACTIONS:
            assert post(client, book[hidden], action, data).status_code == 404, (email, action)
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert not book["mine"].reminders_paused


def test_missing_csrf_token_is_refused(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    response = client.post(f"/admin/customers/{book['mine'].id}/notes", data={"note": "no token"})
    assert response.status_code == 403
    assert session.scalar(select(func.count()).select_from(CustomerNote)) == 0


def test_a_note_is_stored_audited_and_on_the_timeline(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    anne = signed_in(new_client, "anne@north.test")
    response = post(anne, book["mine"], "notes", {"note": "Called Mr Martin: pays Friday."})
    assert response.status_code == 303
    note = session.scalar(select(CustomerNote))
    assert note is not None and note.body == "Called Mr Martin: pays Friday." and note.author_id == book["anne"].id
    page = anne.get(response.headers["location"])
    assert "Note added." in page.text and "Called Mr Martin: pays Friday." in page.text
    assert session.scalar(select(AuditEvent.action).where(AuditEvent.entity_type == "note")) == "note.added"


def test_an_empty_note_is_refused_with_a_message(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    response = post(client, book["mine"], "notes", {"note": "   "})
    assert response.status_code == 400 and "Write the note first." in response.text
    too_long = post(client, book["mine"], "notes", {"note": "x" * 5001})
    assert too_long.status_code == 400 and "at most 5000 characters" in too_long.text
    assert session.scalar(select(func.count()).select_from(CustomerNote)) == 0


def test_pause_and_resume_reminders(new_client, session: Session, book, settings) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "anne@north.test")
    assert post(client, book["mine"], "pause", {"paused": "1"}).status_code == 303
    session.expire_all()
    assert book["mine"].reminders_paused
    ensure_default_scenario(session, book["mine"].company)
    plan = planner.plan_company(session, book["mine"].company, TODAY)
    assert ("MINE", "reminders paused by staff") in {(s.customer_ref, s.reason) for s in plan.skipped}
    page = client.get(f"/admin/customers/{book['mine'].id}")
    assert "Reminders paused" in page.text and "Resume reminders" in page.text
    assert post(client, book["mine"], "pause", {"paused": "0"}).status_code == 303
    session.expire_all()
    assert not book["mine"].reminders_paused
    actions = list(session.scalars(select(AuditEvent.action).where(AuditEvent.customer_id == book["mine"].id,
                                                                  AuditEvent.action.like("reminders.%"))
                                   .order_by(AuditEvent.id)))
    assert actions == ["reminders.paused", "reminders.resumed"]


def test_revoke_invalidates_an_old_link(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    contact = book["mine"].primary_contact
    old = tokens.make_token(TEST_SECRET, contact)
    assert tokens.verify(session, TEST_SECRET, old).ok
    client = signed_in(new_client, "boss@north.test")
    # The button asks first; a post without the confirmation revokes nothing.
    confirm = client.get(f"/admin/customers/{book['mine'].id}/revoke-links")
    assert confirm.status_code == 200 and "Yes, revoke every link" in confirm.text
    assert post(client, book["mine"], "revoke-links").status_code == 400
    session.expire_all()
    assert tokens.verify(session, TEST_SECRET, old).ok
    assert post(client, book["mine"], "revoke-links", {"confirm": "1"}).status_code == 303
    session.expire_all()
    assert tokens.verify(session, TEST_SECRET, old).problem == tokens.LinkProblem.revoked
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "links.revoked"))
    assert event is not None and event.actor == "boss@north.test" and event.actor_type == "user"
    visitor = new_client("10.0.0.9")
    withdrawn = visitor.get(f"/p/{old}", follow_redirects=False)
    assert withdrawn.status_code == 410
    # The debtor is told the link was withdrawn, not that a newer one replaced it.
    assert "withdrawn" in withdrawn.text or "retiré" in withdrawn.text
    assert "newer" not in withdrawn.text and "plus récent" not in withdrawn.text


def test_send_link_queues_one_email_with_a_working_link(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "anne@north.test")
    response = post(client, book["mine"], "send-link")
    assert response.status_code == 303
    assert "A fresh link was queued to ap@mine.test." in client.get(response.headers["location"]).text
    messages = list(session.scalars(select(OutboxMessage)))
    assert [(m.kind, m.to_address) for m in messages] == [("fresh_link", "ap@mine.test")]
    assert "You asked" not in messages[0].body_text
    link = re.search(r"http://testserver(/p/\S+)", messages[0].body_text)
    assert link is not None
    debtor = new_client("10.0.0.7")
    opened = debtor.get(link.group(1), follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/portal"
    portal = debtor.get("/portal")
    assert portal.status_code == 200 and "N-1" in portal.text


def _confirm_reminder(client: TestClient, customer: Customer, step: str | None = None):  # type: ignore[no-untyped-def]
    """Open "send a reminder now" (optionally on another step), then confirm what it shows."""
    preview = client.get(f"/admin/customers/{customer.id}/remind" + (f"?step={step}" if step else ""))
    assert preview.status_code == 200, preview.text
    shown = re.search(r'name="step" value="(\d+)"', preview.text)
    assert shown is not None
    return post(client, customer, "remind", {"step": shown.group(1), "confirm": "1"})


def test_a_reminder_by_hand_is_previewed_confirmed_queued_once_and_marked_manual(
    new_client, session: Session, book  # type: ignore[no-untyped-def]
) -> None:
    client = signed_in(new_client, "anne@north.test")
    preview = client.get(f"/admin/customers/{book['mine'].id}/remind")
    # N-1 is overdue and was never reminded: the first reminder, D+3, is proposed.
    assert "D+3" in preview.text and "ap@mine.test" in preview.text and "N-1" in preview.text
    assert "Confirm and send" in preview.text and "rappel de factures échues" in preview.text
    # The preview shows the message's link masked: a working one would let staff act as the debtor.
    assert tokens.MASKED_LINK in preview.text and not re.search(r"/p/[A-Za-z0-9_\-]+\.", preview.text)
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0  # a preview queues nothing
    unconfirmed = post(client, book["mine"], "remind")
    assert unconfirmed.status_code == 400 and session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    response = _confirm_reminder(client, book["mine"])
    assert response.status_code == 303
    # A double submit of the same step and invoices is refused.
    step_id = re.search(r'name="step" value="(\d+)"', preview.text).group(1)  # type: ignore[union-attr]
    again = post(client, book["mine"], "remind", {"step": step_id, "confirm": "1"})
    assert again.status_code == 400 and "already sent" in again.text
    # Opened again, it proposes the next step and says a message just went out.
    later = client.get(f"/admin/customers/{book['mine'].id}/remind")
    assert "D+15" in later.text and "A reminder went out 0 day(s) ago" in unescape(later.text)
    reminders = list(session.scalars(select(Reminder)))
    assert len(reminders) == 1 and reminders[0].run_id is None
    step = session.get(ScenarioStep, reminders[0].step_id)
    assert step is not None and step.offset_days == 3  # escalation follows what was sent, by hand too
    assert [i.number for i in reminders[0].invoices] == ["N-1"]
    outbox = list(session.scalars(select(OutboxMessage)))
    assert len(outbox) == 1 and outbox[0].kind == "reminder" and outbox[0].to_address == "ap@mine.test"
    assert "N-1" in outbox[0].body_text and "/p/" in outbox[0].body_text
    page = client.get(f"/admin/customers/{book['mine'].id}")
    assert "Reminder sent by hand" in page.text and unescape(outbox[0].subject) in unescape(page.text)


def test_a_reminder_by_hand_needs_something_to_chase(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    invoice = session.scalar(select(Invoice).where(Invoice.number == "N-1"))
    assert invoice is not None
    invoice.open_minor, invoice.status = 0, "paid"
    session.commit()
    client = signed_in(new_client, "admin@x.test")
    response = client.get(f"/admin/customers/{book['mine'].id}/remind")
    assert "Nothing to chase" in response.text and "Confirm and send" not in response.text
    response = post(client, book["mine"], "remind", {"confirm": "1"})
    assert response.status_code == 400 and "Nothing to chase" in response.text
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_collector_assignment_by_managers_only(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    anne = book["anne"]
    boss = signed_in(new_client, "boss@north.test")
    page = boss.get(f"/admin/customers/{book['other'].id}")
    assert "anne@north.test" in page.text and "bob@north.test" in page.text
    assert post(boss, book["other"], "collector", {"collector": str(anne.id)}).status_code == 303
    session.expire_all()
    assert book["other"].collector_id == anne.id
    assert signed_in(new_client, "anne@north.test").get(f"/admin/customers/{book['other'].id}").status_code == 200
    # A collector of another company is refused, nothing changes.
    south_collector = make_user(session, "sue@south.test", "collector", ["SOUTH"])
    refused = post(boss, book["other"], "collector", {"collector": str(south_collector.id)})
    assert refused.status_code == 400 and "Choose a collector of this company." in refused.text
    session.expire_all()
    assert book["other"].collector_id == anne.id
    collector = signed_in(new_client, "anne@north.test")
    assert post(collector, book["mine"], "collector", {"collector": ""}).status_code == 403


def test_the_timeline_shows_a_permanent_failure_plainly(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    assert _confirm_reminder(client, book["mine"]).status_code == 303
    message = session.scalar(select(OutboxMessage))
    assert message is not None
    message.status, message.last_error = "failed", "550 5.1.1 mailbox unavailable"
    session.commit()
    page = client.get(f"/admin/customers/{book['mine'].id}")
    assert "permanent failure" in page.text and "550 5.1.1 mailbox unavailable" in page.text


# --- the list: search, filters, sorting, paging -------------------------------------------------------


@pytest.fixture
def many(session: Session, book):  # type: ignore[no-untyped-def]
    """60 more NORTH customers named Z-00..Z-59, each owing (i+1) x 10 EUR due in December; Z-07 overdue
    since 1 October, Z-08 overdue since 1 November with a bigger amount, Z-09 disputed, Z-10 in segment 'vip'."""
    north = book["mine"].company
    made = []
    for i in range(60):
        customer = factories.customer(session, north, ref=f"Z{i:02d}", email=f"z{i:02d}@zed.test")
        customer.name = f"Zed {i:02d}"
        made.append(customer)
        factories.invoice(session, customer, total_minor=(i + 1) * 10_00, number=f"Z-{i:02d}",
                          due_date=date(2026, 12, 15))
    factories.invoice(session, made[7], total_minor=5_00, number="Z-07-late", due_date=date(2026, 10, 1))
    factories.invoice(session, made[8], total_minor=9000_00, number="Z-08-late", due_date=date(2026, 11, 1))
    disputed = factories.invoice(session, made[9], total_minor=70_00, number="Z-09-disp", status="disputed")
    session.add(Dispute(customer_id=made[9].id, status="open", kind="dispute", invoices=[disputed]))
    made[10].segment = "vip"
    factories.invoice(session, made[11], total_minor=100_00, currency="USD", number="Z-11-usd",
                      due_date=date(2026, 12, 15))
    session.commit()
    return made


def names(html: str) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/admin/customers/\d+">([^<]+)</a>', html)


def test_search_by_ref_name_and_contact_email(new_client, many) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@north.test")
    assert names(client.get("/admin/customers", params={"q": "Z42"}).text) == ["Zed 42"]
    assert names(client.get("/admin/customers", params={"q": "mine indus"}).text) == ["Mine Industries"]
    assert names(client.get("/admin/customers", params={"q": "z05@zed"}).text) == ["Zed 05"]
    assert names(client.get("/admin/customers", params={"q": "50%"}).text) == []
    # Never another company's customer, whatever the search.
    assert names(client.get("/admin/customers", params={"q": "Far"}).text) == []


def test_filters(new_client, many, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    assert names(client.get("/admin/customers", params={"overdue": "1"}).text) == [
        "Far Away Ltd", "Mine Industries", "Zed 07", "Zed 08"]
    assert names(client.get("/admin/customers", params={"disputed": "1"}).text) == ["Zed 09"]
    assert names(client.get("/admin/customers", params={"segment": "vip"}).text) == ["Zed 10"]
    assert names(client.get("/admin/customers", params={"company": "SOUTH"}).text) == ["Far Away Ltd"]
    assert names(client.get("/admin/customers", params={"collector": str(book["anne"].id)}).text) == [
        "Mine Industries"]
    assert names(client.get("/admin/customers", params={"company": "NORTH", "overdue": "1", "q": "zed"}).text) == [
        "Zed 07", "Zed 08"]


def test_sorting(new_client, many) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@north.test")
    by_outstanding = names(client.get("/admin/customers", params={"sort": "outstanding"}).text)
    assert by_outstanding[:4] == ["Zed 08", "Mine Industries", "Zed 59", "Zed 58"]
    by_overdue = names(client.get("/admin/customers", params={"sort": "overdue"}).text)
    assert by_overdue[:3] == ["Zed 08", "Mine Industries", "Zed 07"]
    oldest = names(client.get("/admin/customers", params={"sort": "oldest"}).text)
    assert oldest[:3] == ["Zed 07", "Mine Industries", "Zed 08"]
    # A search sorts its matches the same way (it finds them first, then sorts only those).
    for sort, unsearched in (("outstanding", by_outstanding), ("overdue", by_overdue), ("oldest", oldest)):
        searched = names(client.get("/admin/customers", params={"sort": sort, "q": "zed"}).text)
        assert searched[:3] == [name for name in unsearched if name.startswith("Zed")][:3]
    assert names(client.get("/admin/customers", params={"sort": "name", "q": "zed 1"}).text) == [
        f"Zed {i}" for i in range(10, 20)]


def test_amounts_per_currency_never_added_in_french(new_client, many) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@north.test", "fr")
    page = client.get("/admin/customers", params={"q": "Zed 11"}).text
    assert "120,00\u00a0€" in page and "100,00\u00a0$US" in page
    assert "Encours" in page and "Page suivante" not in page and "Clients, page 1" in page


def test_paging_with_and_without_htmx(new_client, many) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@north.test")
    first = client.get("/admin/customers", params={"q": "zed"})
    assert len(names(first.text)) == 50 and "Previous page" not in first.text
    next_link = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert next_link is not None and "q=zed" in next_link.group(1) and "page=2" in next_link.group(1)
    second = client.get(unescape(next_link.group(1)))
    assert names(second.text) == [f"Zed {i:02d}" for i in range(50, 60)] and "Next page" not in second.text
    assert "<html" in second.text
    fragment = client.get(unescape(next_link.group(1)), headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and fragment.text.lstrip().startswith(
        '<div id="results"')
    assert names(fragment.text) == names(second.text)
    assert "HX-Request" in fragment.headers["vary"]
    restore = client.get(unescape(next_link.group(1)), headers={"HX-Request": "true",
                                                                "HX-History-Restore-Request": "true"})
    assert "<html" in restore.text
    all_names = names(first.text) + names(second.text)
    assert all_names == sorted(all_names)


def test_bad_query_parameters_fall_back_to_defaults(new_client, many) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@north.test")
    for params in ({"sort": "drop table"}, {"page": "-3"}, {"page": "abc"}, {"collector": "x"}):
        response = client.get("/admin/customers", params=params)
        assert response.status_code == 200 and names(response.text)[0] == "Mine Industries"
    assert names(client.get("/admin/customers", params={"page": "99"}).text) == []


@pytest.mark.parametrize("email", ["reader@north.test", "boss@north.test", "admin@x.test"])
def test_the_timeline_never_shows_a_working_magic_link(new_client, session: Session, book, email: str) -> None:  # type: ignore[no-untyped-def]
    assert post(signed_in(new_client, "anne@north.test"), book["mine"], "send-link").status_code == 303
    assert post(signed_in(new_client, "anne@north.test"), book["mine"], "remind", {"confirm": "1"}).status_code == 303
    sent = [re.search(r"/p/(\S+)", m.body_text) for m in session.scalars(select(OutboxMessage))]
    assert len(sent) == 2 and all(sent)
    page = signed_in(new_client, email).get(f"/admin/customers/{book['mine'].id}")
    assert page.status_code == 200
    for link in sent:
        assert link is not None and link.group(1) not in page.text
    assert page.text.count(tokens.MASKED_LINK) == 2


def test_a_manager_views_the_portal_as_the_customer_read_only_and_audited(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    for email, status in (("anne@north.test", 403), ("boss@south.test", 404)):
        assert post(signed_in(new_client, email), book["mine"], "view-as-customer").status_code == status, email
    boss = signed_in(new_client, "boss@north.test")
    assert 'action="/admin/customers/%d/view-as-customer"' % book["mine"].id in boss.get(
        f"/admin/customers/{book['mine'].id}").text
    response = post(boss, book["mine"], "view-as-customer")
    assert response.status_code == 303 and response.headers["location"] == "/portal"
    portal = boss.get("/portal")
    assert portal.status_code == 200 and "N-1" in portal.text and "lecture seule" in portal.text  # the contact's French
    assert boss.get("/admin").status_code == 200  # still signed in to the back-office
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "portal.viewed_as_customer"))
    assert event is not None and event.actor == "boss@north.test" and event.customer_id == book["mine"].id
    token = re.search(r'name="csrf_token" value="([^"]+)"', portal.text)
    assert token is not None
    for path in ("/portal/sign-out", "/portal/requests/new", "/portal/promises/new", "/portal/pay/summary",
                 "/portal/language"):
        refused = boss.post(path, data={"csrf_token": token.group(1), "lang": "en"}, follow_redirects=False)
        assert refused.status_code == 403 and "Read-only view" in refused.text, path  # the reader's language
    assert boss.get("/portal/requests").status_code == 403  # a page that writes as it shows
    assert session.scalar(select(func.count()).select_from(Dispute)) == 0
    boss.post("/admin/logout", data={"csrf_token": token.group(1)})
    assert boss.get("/portal").status_code == 401  # signing out of the back-office ends the view
def test_send_now_lets_staff_choose_the_step_and_warns_before_they_confirm(
    new_client, session: Session, book  # type: ignore[no-untyped-def]
) -> None:
    mine = book["mine"]
    scenario = ensure_default_scenario(session, mine.company)
    steps = {s.offset_days: s.id for s in scenario.steps}
    mine.reminders_paused = True
    session.commit()
    client = signed_in(new_client, "boss@north.test")
    preview = client.get(f"/admin/customers/{mine.id}/remind?step={steps[30]}")
    assert preview.status_code == 200
    assert "Reminders are paused for this customer." in unescape(preview.text)
    assert "a formal notice would be the first message" in unescape(preview.text)
    assert "Mise en demeure" in preview.text
    # The step before the due date fits no overdue invoice: said, and nothing to confirm.
    early = client.get(f"/admin/customers/{mine.id}/remind?step={steps[-5]}")
    assert "No invoice fits step D-5" in early.text and "Confirm and send" not in early.text
    assert _confirm_reminder(client, mine, str(steps[3])).status_code == 303
    # Right after, the preview says a message went out recently.
    again = client.get(f"/admin/customers/{mine.id}/remind?step={steps[15]}")
    assert "A reminder went out 0 day(s) ago" in unescape(again.text)
    assert post(client, mine, "remind", {"step": "999999", "confirm": "1"}).status_code == 400
