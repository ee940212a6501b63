"""Admins manage staff accounts: create with a generated password shown once, change role and
companies, deactivate (sessions end) and reactivate, reset a password; never lock themselves out."""

from __future__ import annotations

import re

import argon2
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from admin.staff_accounts import check_password
from ledger.models import AuditEvent, User
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user
from tests.conftest import PRODUCTION_PASSWORD_HASHER

PASSWORD_SHOWN = re.compile(r'id="new-password">([^<]+)<')


def _post(client: TestClient, path: str, data: dict):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get("/admin/users").text)
    return client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


def _admin(session: Session, client: TestClient) -> User:
    admin = make_user(session, "root@x.test", "admin")
    client.headers["Accept-Language"] = "en"
    assert login(client, "root@x.test").status_code == 303
    return admin


def test_admin_creates_a_user_whose_password_is_shown_once_and_works(
        client: TestClient, new_client, session: Session) -> None:  # type: ignore[no-untyped-def]
    factories.company(session, code="NORTH")
    session.commit()
    _admin(session, client)
    page = _post(client, "/admin/users", {"email": "Anne@North.test", "role": "manager", "companies": ["NORTH"]})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    password = PASSWORD_SHOWN.search(page.text).group(1)  # type: ignore[union-attr]
    created = session.scalar(select(User).where(User.email == "anne@north.test"))
    assert created is not None and created.role == "manager" and [c.code for c in created.companies] == ["NORTH"]
    assert check_password(created, password)
    assert password not in client.get("/admin/users").text  # only once
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "user.created",
                                                    AuditEvent.entity_id == created.id))
    assert event is not None and event.actor == "root@x.test" and event.after["companies"] == ["NORTH"]
    other = new_client()
    assert login(other, "anne@north.test", password).status_code == 303
    session.expire_all()
    listing = client.get("/admin/users").text
    assert "anne@north.test" in listing and "Never" not in listing.split("anne@north.test")[1].split("</tr>")[0]


def test_bad_new_user_is_refused_with_a_clear_message(client: TestClient, session: Session) -> None:
    _admin(session, client)
    cases = [
        ({"email": "not-an-email", "role": "admin"}, "is not an email address"),
        ({"email": "a@x.test", "role": "collector"}, "needs at least one --company"),
        ({"email": "a@x.test", "role": "manager", "companies": ["NOPE"]}, "unknown company"),
        ({"email": "a@x.test", "role": "god"}, "unknown role"),
        ({"email": "ROOT@x.test", "role": "admin"}, "already exists"),
    ]
    for data, message in cases:
        response = _post(client, "/admin/users", data)
        assert response.status_code == 400, data
        assert message in response.text, data
    assert session.scalar(select(User).where(User.email == "a@x.test")) is None


def test_messages_are_french_for_a_french_admin(client: TestClient, session: Session) -> None:
    _admin(session, client)
    client.headers["Accept-Language"] = "fr"
    response = _post(client, "/admin/users", {"email": "a@x.test", "role": "viewer"})
    assert response.status_code == 400
    assert "a besoin d" in response.text


def test_deactivating_a_user_ends_its_sessions_and_reactivating_lets_it_back(
        client: TestClient, new_client, session: Session) -> None:  # type: ignore[no-untyped-def]
    factories.company(session, code="NORTH")
    session.commit()
    _admin(session, client)
    anne = make_user(session, "anne@north.test", "collector", ["NORTH"])
    other = new_client()
    assert login(other, "anne@north.test").status_code == 303
    assert other.get("/admin", follow_redirects=False).status_code == 200
    assert _post(client, f"/admin/users/{anne.id}/active", {"active": "0"}).status_code == 303
    assert other.get("/admin", follow_redirects=False).status_code == 303  # back to the login page
    assert login(new_client(), "anne@north.test").status_code == 401
    assert _post(client, f"/admin/users/{anne.id}/active", {"active": "1"}).status_code == 303
    assert login(new_client(), "anne@north.test").status_code == 303
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "user",
                                                              AuditEvent.entity_id == anne.id)).all()
    assert {"user.deactivated", "user.activated"} <= set(actions)


def test_an_admin_cannot_lock_itself_out(client: TestClient, session: Session) -> None:
    factories.company(session, code="NORTH")
    session.commit()
    admin = _admin(session, client)
    refused = _post(client, f"/admin/users/{admin.id}/active", {"active": "0"})
    assert refused.status_code == 400 and "cannot deactivate your own account" in refused.text
    refused = _post(client, f"/admin/users/{admin.id}", {"role": "manager", "companies": ["NORTH"]})
    assert refused.status_code == 400 and "administrator role from yourself" in refused.text
    session.expire_all()
    assert admin.active and admin.role == "admin" and admin.companies == []


def test_the_last_active_admin_stays(client: TestClient, session: Session) -> None:
    """Another admin may not demote or deactivate the last active admin either."""
    factories.company(session, code="NORTH")
    session.commit()
    _admin(session, client)
    other = make_user(session, "other@x.test", "admin")
    assert _post(client, f"/admin/users/{other.id}/active", {"active": "0"}).status_code == 303
    # root is now the only active admin; demoting the deactivated one is fine, root itself is refused
    assert _post(client, f"/admin/users/{other.id}", {"role": "viewer", "companies": ["NORTH"]}).status_code == 303


def test_role_and_companies_change_and_are_audited(client: TestClient, session: Session) -> None:
    factories.company(session, code="NORTH")
    factories.company(session, code="SOUTH")
    session.commit()
    _admin(session, client)
    anne = make_user(session, "anne@north.test", "collector", ["NORTH"])
    done = _post(client, f"/admin/users/{anne.id}", {"role": "manager", "companies": ["NORTH", "SOUTH"]})
    assert done.status_code == 303 and done.headers["location"].endswith("done=saved")
    session.expire_all()
    assert anne.role == "manager" and sorted(c.code for c in anne.companies) == ["NORTH", "SOUTH"]
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "user.updated"))
    assert event is not None
    assert event.before == {"role": "collector", "companies": ["NORTH"]}
    assert event.after == {"role": "manager", "companies": ["NORTH", "SOUTH"]}


def test_password_reset_shows_a_new_password_once_and_ends_sessions(
        client: TestClient, new_client, session: Session) -> None:  # type: ignore[no-untyped-def]
    factories.company(session, code="NORTH")
    session.commit()
    _admin(session, client)
    anne = make_user(session, "anne@north.test", "viewer", ["NORTH"])
    other = new_client()
    assert login(other, "anne@north.test").status_code == 303
    page = _post(client, f"/admin/users/{anne.id}/password", {})
    assert page.status_code == 200
    password = PASSWORD_SHOWN.search(page.text).group(1)  # type: ignore[union-attr]
    assert other.get("/admin", follow_redirects=False).status_code == 303
    assert login(new_client(), "anne@north.test", password).status_code == 303
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "user.password_reset"))
    assert event is not None and event.before is None and event.after is None  # never the hash


def test_without_csrf_nothing_changes(client: TestClient, session: Session) -> None:
    _admin(session, client)
    response = client.post("/admin/users", data={"email": "a@x.test", "role": "admin"}, follow_redirects=False)
    assert response.status_code == 403
    assert session.scalar(select(User).where(User.email == "a@x.test")) is None


def test_only_admins_manage_users(client: TestClient, session: Session) -> None:
    factories.company(session, code="NORTH")
    session.commit()
    boss = make_user(session, "boss@north.test", "manager", ["NORTH"])
    assert login(client, "boss@north.test").status_code == 303
    assert client.get("/admin/users").status_code == 403
    assert client.get(f"/admin/users/{boss.id}").status_code == 403
    token = csrf_from(client.get("/admin/password").text)
    response = client.post("/admin/users", data={"csrf_token": token, "email": "x@x.test", "role": "admin"})
    assert response.status_code == 403
    assert session.scalar(select(User).where(User.email == "x@x.test")) is None


def test_outside_the_tests_passwords_are_hashed_at_argon2s_recommended_cost() -> None:
    # The tests hash at the smallest cost (tests/conftest.py): this is what production pays.
    hashed = PRODUCTION_PASSWORD_HASHER.hash("a staff password")
    assert argon2.extract_parameters(hashed) == argon2.profiles.RFC_9106_LOW_MEMORY
    assert PRODUCTION_PASSWORD_HASHER.verify(hashed, "a staff password")
