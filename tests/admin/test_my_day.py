"""My day: a collector's customers to call or chase today, ranked, with why; tasks done leave it."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from admin import my_day_service
from admin.customers_service import add_note
from ledger import fx
from ledger.models import AuditEvent, CustomerNote, Dispute, DisputeMessage, PromiseToPay
from tests import factories
from tests.admin.conftest import make_user
from tests.admin.staff_book import signed_in  # noqa: F401 - fixtures
from tests.admin.conftest import csrf_from


def _world(session: Session) -> dict[str, object]:
    north = factories.company(session, code="NORTH", name="North SAS")
    make_user(session, "admin@x.test", "admin")
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    anne = make_user(session, "anne@north.test", "collector", ["NORTH"])
    bob = make_user(session, "bob@north.test", "collector", ["NORTH"])
    make_user(session, "reader@north.test", "viewer", ["NORTH"])
    fx.set_rate(session, base="EUR", quote="USD", valid_on="2026-11-01", rate="1.25", actor="test")

    def customer(ref: str, collector: object = anne) -> object:
        made = factories.customer(session, north, ref=ref, collector_id=collector.id)  # type: ignore[attr-defined]
        made.name = f"Customer {ref}"
        return made

    small = customer("SMALL")
    factories.invoice(session, small, total_minor=1200_00, number="S-1", due_date=date(2026, 11, 10))
    dollars = customer("DOLLARS")  # 2,500 USD = 2,000 EUR: above SMALL once converted
    factories.invoice(session, dollars, total_minor=2500_00, currency="USD", number="D-1", due_date=date(2026, 11, 20))
    oldest = customer("OLDEST")
    factories.invoice(session, oldest, total_minor=100_00, number="O-1", due_date=date(2026, 8, 1))
    factories.invoice(session, oldest, total_minor=50_00, number="O-2", due_date=date(2026, 12, 20))  # not due
    tasked = customer("TASKED")  # nothing overdue, a task due today
    factories.invoice(session, tasked, total_minor=10_00, number="T-1", due_date=date(2026, 12, 31))
    promised = customer("PROMISED")  # overdue but a promise still within grace: left out
    late = factories.invoice(session, promised, total_minor=900_00, number="P-1", due_date=date(2026, 10, 1))
    session.add(PromiseToPay(customer_id=promised.id, promised_for=date(2026, 11, 24), currency="EUR",  # type: ignore[attr-defined]
                             amount_minor=900_00, status="pending", invoices=[late]))
    broken = customer("BROKEN")
    gone = factories.invoice(session, broken, total_minor=30_00, number="B-1", due_date=date(2026, 10, 1))
    session.add(PromiseToPay(customer_id=broken.id, promised_for=date(2026, 11, 15), currency="EUR",  # type: ignore[attr-defined]
                             amount_minor=30_00, status="broken", invoices=[gone]))
    disputing = customer("DISPUTING")
    contested = factories.invoice(session, disputing, total_minor=70_00, number="X-1", due_date=date(2026, 12, 30))
    dispute = Dispute(customer_id=disputing.id, kind="dispute", status="open", invoices=[contested])  # type: ignore[attr-defined]
    session.add(dispute)
    session.flush()
    session.add(DisputeMessage(dispute_id=dispute.id, author_type="contact", body="Wrong quantity"))
    answered = customer("ANSWERED")  # a dispute the collector already answered: not waiting
    case = Dispute(customer_id=answered.id, kind="dispute", status="open")  # type: ignore[attr-defined]
    session.add(case)
    session.flush()
    session.add(DisputeMessage(dispute_id=case.id, author_type="contact", body="Why?"))
    session.flush()
    session.add(DisputeMessage(dispute_id=case.id, author_type="user", body="Because."))
    bobs = customer("BOBS", bob)
    factories.invoice(session, bobs, total_minor=99_999_00, number="BB-1", due_date=date(2026, 9, 1))
    session.flush()
    add_note(session, tasked, anne, "Call back about the order", next_action_on=date(2026, 11, 25))  # type: ignore[arg-type]
    add_note(session, small, anne, "Chase again next week", next_action_on=date(2026, 12, 2))  # type: ignore[arg-type]
    session.commit()
    return {"north": north, "anne": anne, "bob": bob, "tasked": tasked, "small": small}


def test_the_list_ranks_urgent_reasons_then_converted_overdue(session: Session) -> None:
    world = _world(session)
    day = my_day_service.build_my_day(session, world["anne"].id, [world["north"].id])  # type: ignore[attr-defined]
    refs = [row.ref for row in day.rows]
    # urgent first (task, broken promise, dispute waiting), by amount; then overdue by converted amount
    assert refs[:3] == ["BROKEN", "TASKED", "DISPUTING"]
    assert refs[3:] == ["DOLLARS", "SMALL", "OLDEST"]
    assert "PROMISED" not in refs and "BOBS" not in refs and "ANSWERED" not in refs
    assert day.total == 6
    rows = {row.ref: row for row in day.rows}
    assert rows["DOLLARS"].overdue.converted.minor == 2000_00 and rows["DOLLARS"].overdue.converted.currency == "EUR"
    assert rows["OLDEST"].max_days_overdue == (date(2026, 11, 25) - date(2026, 8, 1)).days
    assert rows["OLDEST"].overdue.converted.minor == 100_00  # the invoice not yet due is not counted
    assert [r.code for r in rows["TASKED"].reasons] == ["task"] and rows["TASKED"].max_days_overdue is None
    assert [r.code for r in rows["BROKEN"].reasons] == ["promise", "overdue"]
    assert [r.code for r in rows["DISPUTING"].reasons] == ["dispute"]
    # columns: last contact (the note), next action (the earliest open task)
    assert rows["SMALL"].last_contact is not None and rows["SMALL"].next_action is not None
    assert rows["SMALL"].next_action.next_action_on == date(2026, 12, 2) and rows["SMALL"].due_tasks == []
    assert rows["OLDEST"].last_contact is None


def test_a_collector_sees_its_day_marks_a_task_done_and_it_leaves(new_client, session: Session) -> None:  # type: ignore[no-untyped-def]
    world = _world(session)
    anne = signed_in(new_client, "anne@north.test")
    page = anne.get("/admin/my-day")
    assert page.status_code == 200
    assert "Next action due on 25 Nov 2026" in page.text and "Promise to pay of 15 Nov 2026 broken" in page.text
    assert "Dispute waiting for an answer since" in page.text and "BOBS" not in page.text
    assert "6 customers to call or chase today." in page.text
    assert 'href="/admin/my-day" aria-current="page"' in page.text
    task = session.scalar(select(CustomerNote).where(CustomerNote.customer_id == world["tasked"].id))  # type: ignore[attr-defined]
    assert task is not None
    done = anne.post(f"/admin/customers/{world['tasked'].id}/notes/{task.id}/done",  # type: ignore[attr-defined]
                     data={"csrf_token": csrf_from(page.text), "next": "/admin/my-day"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/admin/my-day"
    after = anne.get("/admin/my-day")
    assert 'data-customer="TASKED"' not in after.text and "5 customers to call or chase today." in after.text
    session.expire_all()
    assert task.done_at is not None and task.done_by == "anne@north.test"
    assert session.scalar(select(AuditEvent.action).where(AuditEvent.action == "task.done")) == "task.done"


def test_a_manager_picks_a_collector_and_a_viewer_cannot_mark_done(new_client, session: Session) -> None:  # type: ignore[no-untyped-def]
    world = _world(session)
    boss = signed_in(new_client, "boss@north.test")
    first = boss.get("/admin/my-day")
    assert first.status_code == 200 and "Choose a collector to see the customers" in first.text
    assert '<option value="%d">anne@north.test</option>' % world["anne"].id in first.text  # type: ignore[attr-defined]
    bobs_day = boss.get(f"/admin/my-day?collector={world['bob'].id}")  # type: ignore[attr-defined]
    assert 'data-customer="BOBS"' in bobs_day.text and 'data-customer="SMALL"' not in bobs_day.text
    # a collector cannot look at another's day: it always sees its own
    anne = signed_in(new_client, "anne@north.test")
    assert 'data-customer="BOBS"' not in anne.get(f"/admin/my-day?collector={world['bob'].id}").text  # type: ignore[attr-defined]
    reader = signed_in(new_client, "reader@north.test")
    page = reader.get(f"/admin/my-day?collector={world['anne'].id}")  # type: ignore[attr-defined]
    assert page.status_code == 200 and "Mark done" not in page.text
    task = session.scalar(select(CustomerNote).where(CustomerNote.customer_id == world["tasked"].id))  # type: ignore[attr-defined]
    refused = reader.post(f"/admin/customers/{world['tasked'].id}/notes/{task.id}/done",  # type: ignore[attr-defined,union-attr]
                          data={"csrf_token": csrf_from(page.text)}, follow_redirects=False)
    assert refused.status_code == 403


def test_a_note_with_a_next_action_in_the_past_is_refused(new_client, session: Session) -> None:  # type: ignore[no-untyped-def]
    world = _world(session)
    anne = signed_in(new_client, "anne@north.test")
    page = anne.get(f"/admin/customers/{world['small'].id}")  # type: ignore[attr-defined]
    refused = anne.post(f"/admin/customers/{world['small'].id}/notes",  # type: ignore[attr-defined]
                        data={"csrf_token": csrf_from(page.text), "note": "x", "next_action_on": "2026-11-01"})
    assert refused.status_code == 400 and "The next action date 2026-11-01 is in the past." in refused.text
    bad = anne.post(f"/admin/customers/{world['small'].id}/notes",  # type: ignore[attr-defined]
                    data={"csrf_token": csrf_from(page.text), "note": "x", "next_action_on": "tomorrow"})
    assert bad.status_code == 400 and "The next action date tomorrow is not a date." in bad.text
    call = anne.post(f"/admin/customers/{world['small'].id}/notes",  # type: ignore[attr-defined]
                     data={"csrf_token": csrf_from(page.text), "note": "Spoke to AP", "call": "1",
                           "next_action_on": "2026-11-27"}, follow_redirects=False)
    assert call.status_code == 303
    shown = anne.get(call.headers["location"]).text
    assert "Call" in shown and "next action on 27 Nov 2026" in shown and "Mark done" in shown
