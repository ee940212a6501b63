"""The audit trail: searchable by record, actor, action and dates; paged; scoped by role."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from admin import audit_service
from kernel.clock import clock
from ledger import audit
from tests import factories
from tests.admin.conftest import login, make_user


@pytest.fixture
def trail(session: Session):  # type: ignore[no-untyped-def]
    north = factories.company(session, code="NORTH", name="North SAS")
    south = factories.company(session, code="SOUTH", name="South SAS")
    anne = make_user(session, "anne@north.test", "collector", ["NORTH"])
    make_user(session, "root@x.test", "admin")
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    make_user(session, "reader@south.test", "viewer", ["SOUTH"])
    mine = factories.customer(session, north, ref="MINE", collector_id=anne.id)
    other = factories.customer(session, north, ref="OTHER")
    far = factories.customer(session, south, ref="FAR")
    invoice = factories.invoice(session, mine, number="F-77")
    audit.record(session, actor_type="user", actor="boss@north.test", action="customer.paused",
                 entity_type="customer", entity_id=mine.id, customer_id=mine.id,
                 before={"reminders_paused": False}, after={"reminders_paused": True})
    audit.record(session, actor_type="provider", actor="stripe", action="payment.succeeded",
                 entity_type="invoice", entity_id=invoice.id, customer_id=mine.id)
    audit.record(session, actor_type="contact", actor="ap@other.test", action="dispute.opened",
                 entity_type="dispute", entity_id=1, customer_id=other.id)
    session.flush()
    clock.set(datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc))
    audit.record(session, actor_type="system", actor="reminders", action="reminder.queued",
                 entity_type="reminder", entity_id=5, customer_id=far.id)
    session.flush()  # created_at is taken when the row is written
    clock.set(datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc))
    session.commit()
    return {"mine": mine, "other": other, "far": far, "invoice": invoice}


def _as(client: TestClient, email: str) -> TestClient:
    client.headers["Accept-Language"] = "en"
    assert login(client, email).status_code == 303
    return client


def _actions(client: TestClient, query: str = "") -> set[str]:
    html = client.get(f"/admin/audit{query}").text
    known = ("customer.paused", "payment.succeeded", "dispute.opened", "reminder.queued", "user.created")
    return {a for a in known if f'data-action="{a}"' in html}


def test_each_role_reads_its_own_part(client: TestClient, new_client, trail) -> None:  # type: ignore[no-untyped-def]
    everything = {"customer.paused", "payment.succeeded", "dispute.opened", "reminder.queued", "user.created"}
    assert _actions(_as(client, "root@x.test")) == everything
    assert _actions(_as(new_client(), "boss@north.test")) == {"customer.paused", "payment.succeeded", "dispute.opened"}
    assert _actions(_as(new_client(), "reader@south.test")) == {"reminder.queued"}
    assert _actions(_as(new_client(), "anne@north.test")) == {"customer.paused", "payment.succeeded"}


def test_search_by_record_actor_action_and_dates(client: TestClient, trail) -> None:  # type: ignore[no-untyped-def]
    _as(client, "root@x.test")
    assert _actions(client, "?record=MINE") == {"customer.paused", "payment.succeeded"}
    assert _actions(client, "?record=F-77") == {"payment.succeeded"}
    assert _actions(client, f"?type=invoice&record={trail['invoice'].id}") == {"payment.succeeded"}
    assert _actions(client, "?actor=debtor") == {"dispute.opened"}
    assert _actions(client, "?actor=system") >= {"reminder.queued"}
    assert _actions(client, "?actor=stripe") == {"payment.succeeded"}
    assert _actions(client, "?actor=boss@north") == {"customer.paused"}
    assert _actions(client, "?action=dispute") == {"dispute.opened"}
    assert _actions(client, "?from=2026-11-01&to=2026-11-01") == {"reminder.queued"}
    assert "reminder.queued" not in _actions(client, "?from=2026-11-02")
    bad = client.get("/admin/audit?from=yesterday").text
    assert "is not a date (YYYY-MM-DD); it was ignored." in bad


def test_actions_read_as_labels_in_the_staff_language_with_their_code(client: TestClient,
                                                                      trail) -> None:  # type: ignore[no-untyped-def]
    _as(client, "root@x.test")
    english = client.get("/admin/audit?action=payment").text
    assert ('<th scope="row" data-action="payment.succeeded">Payment received<br>'
            '<small class="code" title="Action code">payment.succeeded</small></th>') in english
    client.headers["Accept-Language"] = "fr"
    french = client.get("/admin/audit").text
    assert "Paiement reçu<br>" in french and "Litige ouvert<br>" in french and "Relance mise en file d’envoi" in french
    assert '<small class="code" title="Code de l’action">dispute.opened</small>' in french
    # a code no release wrote reads as itself, once
    assert '<th scope="row" data-action="customer.paused">customer.paused</th>' in french
    # the search box suggests every known code with its label
    assert '<option value="reminder.queued" label="Relance mise en file d’envoi">' in french


def test_before_and_after_are_readable(client: TestClient, trail) -> None:  # type: ignore[no-untyped-def]
    _as(client, "root@x.test")
    html = client.get("/admin/audit?action=customer.paused").text
    assert "<strong>reminders_paused</strong>" in html
    assert '<del><span class="visually-hidden">before </span>✗</del> → <ins><span class="visually-hidden">after ' \
           '</span>✓</ins>' in html


def test_pages_come_as_htmx_fragments(client: TestClient, session: Session, trail) -> None:  # type: ignore[no-untyped-def]
    for n in range(audit_service.PAGE_SIZE + 5):
        audit.record(session, actor_type="system", actor="bulk", action=f"bulk.{n:03d}", entity_type="thing",
                     entity_id=n)
        session.flush()
        clock.set(clock.now() + timedelta(seconds=1))
    session.commit()
    _as(client, "root@x.test")
    first = client.get("/admin/audit?actor=bulk")
    assert "<html" in first.text and "Older events" in first.text
    fragment = client.get("/admin/audit?actor=bulk&page=2", headers={"HX-Request": "true"})
    assert "<html" not in fragment.text and "Newer events" in fragment.text
    assert fragment.text.count('data-action="bulk.') == 5 and "bulk.000" in fragment.text  # oldest last
    assert "HX-Request" in fragment.headers["vary"]


def test_anonymous_goes_to_login(client: TestClient) -> None:
    response = client.get("/admin/audit", follow_redirects=False)
    assert response.status_code == 303 and "/admin/login" in response.headers["location"]
