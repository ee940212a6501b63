"""A secret the back-office creates is shown once, the same way on both pages that create one
(`admin.reveal`): the ERP API keys and the ERP webhook endpoints. The page after the POST shows
it, in the reader's language; a reload, the session cookie sent again (a second tab, a restored
browser), or an htmx request of the page first: none shows it again or loses it, none creates
anything."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.clock import clock
from kernel.settings import Settings, load_settings
from ledger.api_keys import REVEAL_WITHIN
from ledger.models import ApiKey, AuditEvent, WebhookEndpoint
from tests.admin.conftest import csrf_from
from tests.conftest import TEST_SECRET


@dataclass(frozen=True)
class Creating:
    path: str
    form: dict[str, object]
    shown: re.Pattern[str]
    model: type[ApiKey] | type[WebhookEndpoint]
    english: str
    french: str


PAGES = [
    Creating("/admin/api-keys", {"company": "NORTH", "name": "Sage X3"}, re.compile(r'id="new-api-key" data-value="([^"]+)"'),
             ApiKey, "Key Sage X3 created for NORTH. It is shown only now", "Clé Sage X3 créée pour NORTH."),
    Creating("/admin/webhooks/endpoints", {"company": "NORTH", "url": "http://127.0.0.1:9/erp", "events": ["*"]},
             re.compile(r'id="new-webhook-secret" data-value="([^"]+)"'), WebhookEndpoint,
             "Endpoint http://127.0.0.1:9/erp added for NORTH. Its signing secret is shown only now",
             "Adresse http://127.0.0.1:9/erp ajoutée pour NORTH."),
]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver", "ENCOURS_WEBHOOK_ALLOW_PRIVATE": "true"})


def _create(client: TestClient, page: Creating) -> str:
    """POST the form; the session cookie the redirect left (what would show the secret)."""
    token = csrf_from(client.get(page.path).text)
    made = client.post(page.path, data={"csrf_token": token, **page.form}, follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"] == page.path
    return dict(client.cookies.items())["encours_session"]


def _count(session: Session, page: Creating) -> int:
    return int(session.scalar(select(func.count()).select_from(page.model)) or 0)


@pytest.mark.parametrize("page", PAGES, ids=["api_key", "erp_webhook"])
def test_the_secret_is_shown_once_even_to_the_same_cookie_sent_again(admin: TestClient, session: Session,
                                                                     page: Creating) -> None:
    held = _create(admin, page)
    shown = admin.get(page.path)
    secret = page.shown.search(shown.text).group(1)  # type: ignore[union-attr]
    assert page.english in unescape(shown.text) and shown.headers["cache-control"] == "no-store"
    assert page.shown.search(admin.get(page.path).text) is None  # a reload
    again = admin.get(page.path, headers={"Cookie": f"encours_session={held}"})  # the cookie that held it, sent again
    assert again.status_code == 200 and secret not in again.text and page.shown.search(again.text) is None
    assert _count(session, page) == 1


@pytest.mark.parametrize("page", PAGES, ids=["api_key", "erp_webhook"])
def test_an_htmx_request_of_the_page_leaves_the_secret_for_the_page(admin: TestClient, page: Creating) -> None:
    _create(admin, page)
    part = admin.get(page.path, headers={"HX-Request": "true"})
    assert part.status_code == 200 and page.shown.search(part.text) is None
    assert page.shown.search(admin.get(page.path).text) is not None


@pytest.mark.parametrize("page", PAGES, ids=["api_key", "erp_webhook"])
def test_the_secret_is_shown_in_french_to_a_french_reader(admin: TestClient, page: Creating) -> None:
    _create(admin, page)
    admin.headers["Accept-Language"] = "fr"
    shown = unescape(admin.get(page.path).text)
    assert page.french in shown and "Copier" in shown and page.shown.search(shown) is not None


@pytest.mark.parametrize("page", PAGES, ids=["api_key", "erp_webhook"])
def test_a_secret_not_shown_in_time_is_not_shown_later(admin: TestClient, page: Creating) -> None:
    _create(admin, page)
    clock.set(clock.now() + REVEAL_WITHIN + timedelta(seconds=1))
    assert page.shown.search(admin.get(page.path).text) is None


def test_showing_an_endpoints_secret_is_in_the_audit_trail(admin: TestClient, session: Session) -> None:
    _create(admin, PAGES[1])
    admin.get(PAGES[1].path)
    shown = session.scalars(select(AuditEvent.actor).where(AuditEvent.action == "webhook_endpoint.secret_shown")).all()
    assert shown == ["root@x.test"]
