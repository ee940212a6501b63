"""Admins manage the ERP's API keys from the back-office: a key is shown once (on the page the
POST redirects to: a reload creates nothing and shows it no more) and works on the API, a revoked
key stops working, every change is audited; other roles cannot see the page."""

from __future__ import annotations

import re
from base64 import b64decode

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import ApiKey, ApiKeyReveal, AuditEvent
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user

KEY_SHOWN = re.compile(r'id="new-api-key" data-value="([^"]+)"')


def _post(client: TestClient, path: str, data: dict):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get("/admin/api-keys").text)
    return client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


def test_a_key_is_shown_once_works_on_the_api_and_stops_when_revoked(admin: TestClient, session: Session) -> None:
    made = _post(admin, "/admin/api-keys", {"company": "NORTH", "name": "Sage X3", "read_only": "1"})
    assert made.status_code == 303 and made.headers["location"] == "/admin/api-keys"
    page = admin.get("/admin/api-keys")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    key = KEY_SHOWN.search(page.text).group(1)  # type: ignore[union-attr]
    assert key.startswith("enc_live_") and 'data-copy="new-api-key"' in page.text
    row = session.scalar(select(ApiKey).where(ApiKey.name == "Sage X3"))
    assert row is not None and row.read_only and row.created_by == "root@x.test"
    assert key not in admin.get("/admin/api-keys").text  # only once

    assert admin.get("/api/v1/customers", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listing = admin.get("/admin/api-keys").text
    line = listing.split("Sage X3")[1].split("</tr>")[0]
    assert "NORTH" in line and "Read only" in line and "Never" not in line  # last used is shown

    confirm = admin.get(f"/admin/api-keys/{row.id}/revoke")
    assert "Revoke the key Sage X3 of NORTH?" in confirm.text
    assert _post(admin, f"/admin/api-keys/{row.id}/revoke", {}).status_code == 400  # not confirmed
    done = _post(admin, f"/admin/api-keys/{row.id}/revoke", {"confirm": "1"})
    assert done.status_code == 303 and done.headers["location"] == "/admin/api-keys?done=revoked"
    assert admin.get("/api/v1/customers", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert "Revoked" in admin.get("/admin/api-keys").text.split("Sage X3")[1].split("</tr>")[0]
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "api_key")
                              .order_by(AuditEvent.id)).all()
    assert actions == ["api_key.created", "api_key.revoked"]
    assert set(session.scalars(select(AuditEvent.actor).where(AuditEvent.entity_type == "api_key"))) == {
        "root@x.test"}


def test_reloading_after_creating_a_key_creates_nothing_says_nothing_wrong_and_shows_the_key_no_more(
        admin: TestClient, session: Session) -> None:
    made = _post(admin, "/admin/api-keys", {"company": "NORTH", "name": "Cegid"})
    assert made.status_code == 303
    # Neither the address nor the cookie carries the key, even encoded: only the reveal row's id.
    cookie = made.headers["set-cookie"].split("=", 1)[1].split(";", 1)[0]
    payload = b64decode(cookie.split(".", 1)[0] + "==")
    reveal = session.scalars(select(ApiKeyReveal)).one()
    assert b'"api_key_reveal": %d' % reveal.id in payload
    shown = admin.get(made.headers["location"])
    key = KEY_SHOWN.search(shown.text).group(1)  # type: ignore[union-attr]
    assert key not in made.headers["location"] and key.encode() not in payload and "enc_live_" not in cookie
    assert key.encode() not in reveal.sealed  # the row held it sealed, and is gone once shown
    session.expire_all()
    assert session.scalars(select(ApiKeyReveal)).all() == []
    again = admin.get("/admin/api-keys")  # the reload: a GET, nothing posted again
    assert again.status_code == 200 and 'id="new-api-key"' not in again.text and key not in again.text
    assert "alert-error" not in again.text and "already has a key" not in again.text
    assert len(session.scalars(select(ApiKey)).all()) == 1


def test_a_bad_key_request_says_why_and_creates_nothing(admin: TestClient, session: Session) -> None:
    _post(admin, "/admin/api-keys", {"company": "NORTH", "name": "erp"})
    again = _post(admin, "/admin/api-keys", {"company": "NORTH", "name": "erp"})
    assert again.status_code == 400 and "company NORTH already has a key named &#39;erp&#39;" in again.text
    assert 'value="erp"' in again.text  # what was typed is kept
    assert _post(admin, "/admin/api-keys", {"company": "NOPE", "name": "x"}).status_code == 400
    assert _post(admin, "/admin/api-keys", {"company": "NORTH", "name": " "}).status_code == 400
    assert len(session.scalars(select(ApiKey)).all()) == 1


def test_the_page_is_in_french_for_a_french_admin(admin: TestClient) -> None:
    admin.headers["Accept-Language"] = "fr"
    page = admin.get("/admin/api-keys")
    assert "Clés d’API de l’ERP" in page.text and "Créer la clé" in page.text


@pytest.mark.parametrize("role", ["manager", "collector", "viewer"])
def test_only_admins_see_the_page_or_the_menu_entry(client: TestClient, session: Session, role: str) -> None:
    factories.company(session, code="NORTH")
    make_user(session, "someone@north.test", role, ["NORTH"])
    assert login(client, "someone@north.test").status_code == 303
    assert client.get("/admin/api-keys").status_code == 403
    assert "/admin/api-keys" not in client.get("/admin").text
    token = csrf_from(client.get("/admin/password").text)
    refused = client.post("/admin/api-keys", data={"csrf_token": token, "company": "NORTH", "name": "x"})
    assert refused.status_code == 403
    assert session.scalars(select(ApiKey)).all() == []
