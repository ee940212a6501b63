"""Admins register the ERP's webhook endpoints from the back-office (secret shown once), read
the delivery log and send a delivery again; other roles cannot see the page."""

from __future__ import annotations

import re
from base64 import b64decode
from html import unescape
from typing import Iterator

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from api import webhooks
from encours.app import SESSION_COOKIE, create_app
from kernel.settings import Settings, load_settings
from ledger import audit
from ledger.models import AuditEvent, Company, WebhookDelivery, WebhookEndpoint
from ledger.webhook_endpoints import PAGE_SIZE, EndpointError, add_endpoint, delivery_page
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user
from tests.conftest import TEST_SECRET
from tests.fakes.receiver import Receiver, serve

SECRET_SHOWN = re.compile(r'id="new-webhook-secret" data-value="([^"]+)"')


@pytest.fixture
def settings(db_url: str) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver", "ENCOURS_WEBHOOK_ALLOW_PRIVATE": "true",
                          "ENCOURS_WEBHOOK_TIMEOUT": "2", "ENCOURS_WEBHOOK_MAX_ATTEMPTS": "1"})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


def _post(client: TestClient, path: str, data: dict):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get("/admin/webhooks/endpoints").text)
    return client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


def test_an_endpoint_added_in_the_back_office_is_sent_its_events_and_failures_can_be_sent_again(
        admin: TestClient, session: Session, session_factory: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    assert 'value="payment.cancelled"' in admin.get("/admin/webhooks/endpoints").text  # offered in the form
    added = _post(admin, "/admin/webhooks/endpoints", {"company": "NORTH", "url": receiver.url + "/erp",
                                                       "events": ["payment.succeeded", "dispute.opened"]})
    assert added.status_code == 303 and added.headers["location"] == "/admin/webhooks/endpoints"
    page = admin.get("/admin/webhooks/endpoints")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    secret = SECRET_SHOWN.search(page.text).group(1)  # type: ignore[union-attr]
    assert secret.startswith("whsec_")
    endpoint = session.scalar(select(WebhookEndpoint))
    assert endpoint is not None and endpoint.event_types == ["dispute.opened", "payment.succeeded"]
    assert secret not in admin.get("/admin/webhooks/endpoints").text  # only once

    north = session.scalar(select(Company).where(Company.code == "NORTH"))
    receiver.statuses["/erp"] = [503, 200]
    audit.record(session, actor_type="provider", actor="stripe", action="payment.succeeded", entity_type="payment",
                 entity_id=7, company_id=north.id)
    session.commit()
    assert webhooks.deliver_due(session_factory, settings).failed == 1  # one attempt allowed here
    log = admin.get("/admin/webhooks/endpoints?status=failed").text
    row = log.split('id="deliveries"')[1].split("<tbody>")[1].split("</tr>")[0]
    assert "payment.succeeded" in row and "Failed" in row and "503" in row and "HTTP 503" in row
    delivery = session.scalar(select(WebhookDelivery))
    done = _post(admin, f"/admin/webhooks/deliveries/{delivery.id}/resend", {})
    assert done.status_code == 303 and done.headers["location"] == "/admin/webhooks/endpoints?done=resent"
    assert webhooks.deliver_due(session_factory, settings).sent == 1
    assert len(receiver.on("/erp")) == 2
    assert "Sent" in admin.get("/admin/webhooks/endpoints?status=sent").text.split('id="deliveries"')[1]
    assert _post(admin, "/admin/webhooks/deliveries/999999/resend", {}).status_code == 404

    assert "Remove the endpoint" in admin.get(f"/admin/webhooks/endpoints/{endpoint.id}/remove").text
    removed = _post(admin, f"/admin/webhooks/endpoints/{endpoint.id}/remove", {"confirm": "1"})
    assert removed.status_code == 303
    session.expire_all()
    assert session.scalars(select(WebhookEndpoint)).all() == []
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.actor == "root@x.test")
                              .order_by(AuditEvent.id)).all()
    assert actions == ["webhook_endpoint.added", "webhook_endpoint.secret_shown", "webhook_delivery.resent",
                       "webhook_endpoint.removed"]


def test_reloading_after_adding_an_endpoint_adds_no_second_one_and_the_secret_is_shown_once(
        admin: TestClient, session: Session) -> None:
    """Post/redirect/get: the POST answers a redirect (no secret in its address nor in the session
    cookie); the page after it shows the secret; reloading that page posts nothing again."""
    added = _post(admin, "/admin/webhooks/endpoints", {"company": "NORTH", "url": "http://127.0.0.1:9/erp",
                                                       "events": ["*"]})
    assert added.status_code == 303 and added.headers["location"] == "/admin/webhooks/endpoints"
    [endpoint] = session.scalars(select(WebhookEndpoint)).all()
    cookie = admin.cookies[SESSION_COOKIE]  # a missing cookie fails here, not silently
    assert endpoint.secret not in b64decode(cookie.split(".")[0] + "==").decode()  # the session holds its id
    shown = admin.get(added.headers["location"])
    assert SECRET_SHOWN.search(shown.text).group(1) == endpoint.secret  # type: ignore[union-attr]
    assert "Endpoint http://127.0.0.1:9/erp added for NORTH" in unescape(shown.text)
    reloaded = admin.get("/admin/webhooks/endpoints")
    assert reloaded.status_code == 200 and endpoint.secret not in reloaded.text
    assert SECRET_SHOWN.search(reloaded.text) is None
    assert len(session.scalars(select(WebhookEndpoint)).all()) == 1


def test_a_refused_endpoint_says_why_and_keeps_what_was_typed(
        client: TestClient, session: Session, db_url: str, session_factory: sessionmaker[Session]) -> None:
    strict = load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                            "ENCOURS_BASE_URL": "http://testserver"})
    factories.company(session, code="NORTH", name="North SAS")
    make_user(session, "root@x.test", "admin")
    with TestClient(create_app(strict, sessions=session_factory), base_url="http://testserver") as admin:
        admin.headers["Accept-Language"] = "en"
        assert login(admin, "root@x.test").status_code == 303
        page = _post(admin, "/admin/webhooks/endpoints", {"company": "NORTH", "url": "http://10.0.0.7/hook",
                                                          "events": ["*"]})
        assert page.status_code == 400
        assert "This URL cannot receive webhooks: the host 10.0.0.7 is a private or local address" in page.text
        assert 'value="http://10.0.0.7/hook"' in page.text
        none = _post(admin, "/admin/webhooks/endpoints", {"company": "NORTH", "url": "http://10.0.0.7/hook"})
        assert none.status_code == 400 and "Choose at least one event type." in none.text
        admin.headers["Accept-Language"] = "fr"
        french = _post(admin, "/admin/webhooks/endpoints", {"company": "NORTH", "url": "http://10.0.0.7/hook"})
        assert "Choisissez au moins un type d’événement." in french.text
    assert session.scalars(select(WebhookEndpoint)).all() == []


@pytest.mark.parametrize("role", ["manager", "collector", "viewer"])
def test_only_admins_see_the_page(client: TestClient, session: Session, role: str) -> None:
    factories.company(session, code="NORTH")
    make_user(session, "someone@north.test", role, ["NORTH"])
    assert login(client, "someone@north.test").status_code == 303
    assert client.get("/admin/webhooks/endpoints").status_code == 403
    assert "/admin/webhooks/endpoints" not in client.get("/admin").text


HTMX = {"HX-Request": "true"}
ROW = re.compile(r'id="delivery-(\d+)"')


def _ids(html: str) -> list[int]:
    return [int(found) for found in ROW.findall(html)]


def _link(html: str, rel: str) -> str | None:
    found = re.search(rf'rel="{rel}" href="([^"]+)"', html)
    return unescape(found.group(1)) if found else None


def test_the_delivery_log_is_paged_newest_first_by_cursor_and_filtered_by_endpoint_and_state(
        admin: TestClient, session: Session) -> None:
    north = session.scalar(select(Company).where(Company.code == "NORTH"))
    first, _ = add_endpoint(session, "NORTH", "http://127.0.0.1/first", ["*"], allow_private=True)
    second, _ = add_endpoint(session, "NORTH", "http://127.0.0.1/second", ["payment.succeeded"], allow_private=True)
    for n in range(40):  # 40 to each endpoint, 40 more to the first: 120, more than two pages
        audit.record(session, actor_type="provider", actor="stripe", action="payment.succeeded",
                     entity_type="payment", entity_id=n, company_id=north.id)
        audit.record(session, actor_type="system", action="dispute.opened", entity_type="dispute", entity_id=n,
                     company_id=north.id)
    session.flush()
    every = list(session.scalars(select(WebhookDelivery.id).order_by(WebhookDelivery.id.desc())))
    assert len(every) == 120
    failed = every[5::7]
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(failed)).values(status="failed"))
    session.commit()

    page = admin.get("/admin/webhooks/endpoints")
    assert page.status_code == 200 and "HX-Request" in page.headers["vary"]
    assert _ids(page.text) == every[:PAGE_SIZE]
    assert _link(page.text, "prev") is None
    seen, html, pages = _ids(page.text), page.text, 1
    while (target := _link(html, "next")) is not None:
        assert "after=" in target
        fragment = admin.get(target, headers=HTMX)
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert fragment.text.lstrip().startswith('<div id="delivery-results"')
        html, pages = fragment.text, pages + 1
        seen += _ids(html)
    assert pages == 3 and seen == every  # newest first, each once
    back = _link(html, "prev")
    assert back is not None and "before=" in back and "page=2" in back
    assert _ids(admin.get(back, headers=HTMX).text) == every[PAGE_SIZE:2 * PAGE_SIZE]
    assert _ids(admin.get("/admin/webhooks/endpoints?page=2", headers=HTMX).text) == every[PAGE_SIZE:2 * PAGE_SIZE]

    mine = list(session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == second.id)
                                .order_by(WebhookDelivery.id.desc())))
    only = admin.get(f"/admin/webhooks/endpoints?endpoint={second.id}", headers=HTMX).text
    assert _ids(only) == mine and len(mine) == 40 and _link(only, "next") is None
    by_state = admin.get("/admin/webhooks/endpoints?status=failed").text
    assert _ids(by_state) == failed and "Failed" in by_state
    both = admin.get(f"/admin/webhooks/endpoints?status=queued&endpoint={first.id}").text
    wanted = [i for i in every if i not in failed and i not in mine]
    assert _ids(both) == wanted[:PAGE_SIZE]
    following = _link(both, "next")
    assert following is not None and "status=queued" in following and f"endpoint={first.id}" in following
    assert _ids(admin.get(following, headers=HTMX).text) == wanted[PAGE_SIZE:2 * PAGE_SIZE]
    # Nonsense in the address reads as no filter, never an error.
    assert _ids(admin.get("/admin/webhooks/endpoints?status=lost&endpoint=x&after=y").text) == every[:PAGE_SIZE]


def test_a_delivery_page_found_by_cursor_is_the_page_counted_to(session: Session) -> None:
    north = factories.company(session, code="NORTH", name="North SAS")
    add_endpoint(session, "NORTH", "http://127.0.0.1/hook", ["*"], allow_private=True)
    for n in range(7):
        audit.record(session, actor_type="system", action="payment.succeeded", entity_type="payment", entity_id=n,
                     company_id=north.id)
    session.flush()
    pages = [delivery_page(session, page=n, size=3) for n in (1, 2, 3)]
    assert [len(p.rows) for p in pages] == [3, 3, 1] and [p.has_next for p in pages] == [True, True, False]
    assert delivery_page(session, page=2, after=pages[0].last_id, size=3).rows == pages[1].rows
    assert delivery_page(session, page=3, after=pages[1].last_id, size=3).rows == pages[2].rows
    back = delivery_page(session, page=2, before=pages[2].first_id, size=3)
    assert back.rows == pages[1].rows and back.page == 2
    top = delivery_page(session, page=2, before=pages[1].first_id, size=3)
    assert top.rows == pages[0].rows and top.page == 1
    assert delivery_page(session, [north.id + 1], size=3).rows == []
    with pytest.raises(EndpointError, match="Unknown delivery state"):
        delivery_page(session, status="pending")
