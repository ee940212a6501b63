from __future__ import annotations

from datetime import timedelta

import pytest

from sqlalchemy import select

from admin import auth
from ledger.models import OutboxMessage
from kernel.clock import clock
from tests import factories
from tests.admin.conftest import PASSWORD, csrf_from, login, make_user


def test_login_page_is_accessible_html(client):
    page = client.get("/admin/login", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    assert '<label for="email">' in page.text and '<label for="password">' in page.text
    assert "<h1" in page.text and "<script" not in page.text and "style=" not in page.text
    assert 'name="csrf_token"' in page.text


def test_login_success_rotates_session_and_opens_home(session, client):
    make_user(session, "boss@example.com")
    page = client.get("/admin/login")
    before = csrf_from(page.text)
    response = client.post(
        "/admin/login",
        data={"csrf_token": before, "email": "boss@example.com", "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    home = client.get("/admin", headers={"Accept-Language": "en"})
    assert home.status_code == 200
    assert "boss@example.com" in home.text and "Administrator" in home.text and "<h1>Dashboard</h1>" in home.text
    assert csrf_from(home.text) != before  # the session was rotated


@pytest.mark.parametrize(
    "email, password",
    [("boss@example.com", "wrong password"), ("nobody@example.com", PASSWORD), ("boss@example.com", "")],
)
def test_failure_says_the_same_thing_whatever_was_wrong(session, client, email, password):
    make_user(session, "boss@example.com")
    response = login(client, email, password)
    assert response.status_code == 401
    page = client.post(
        "/admin/login",
        data={"csrf_token": csrf_from(response.text), "email": email, "password": password},
        headers={"Accept-Language": "en"},
    )
    assert "Wrong email or password" in page.text
    assert "unknown" not in page.text.lower() and "not found" not in page.text.lower()
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_inactive_user_cannot_log_in(session, client):
    user = make_user(session, "gone@example.com")
    user.active = False
    session.commit()
    response = login(client, "gone@example.com")
    assert response.status_code == 401
    assert client.get("/admin", follow_redirects=False).headers["location"] == "/admin/login?next=/admin"


def test_deactivating_ends_an_open_session(session, client):
    user = make_user(session, "boss@example.com")
    assert login(client, "boss@example.com").status_code == 303
    user.active = False
    session.commit()
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_login_post_without_csrf_is_refused(session, client):
    make_user(session, "boss@example.com")
    client.get("/admin/login")
    response = client.post(
        "/admin/login", data={"email": "boss@example.com", "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 403
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_failures_from_elsewhere_never_lock_the_user_out_and_the_user_is_told(session, new_client):
    make_user(session, "boss@example.com")
    attacker = new_client("203.0.113.5")
    for _ in range(auth.PAIR_FAILURE_LIMIT):
        assert login(attacker, "boss@example.com", "wrong password").status_code == 401
    response = login(attacker, "boss@example.com", PASSWORD)
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= auth.WINDOW_SECONDS + 1
    assert "Too many attempts" in response.text or "Trop de tentatives" in response.text
    assert client_is_out(attacker)
    for n in range(auth.ACCOUNT_CEILING):  # and from many more addresses
        assert login(new_client(f"10.0.0.{n}"), "boss@example.com", "wrong password").status_code == 401
    assert login(new_client("10.0.1.1"), "boss@example.com", PASSWORD).status_code == 303
    alerts = list(session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "login_failures")))
    assert [m.to_address for m in alerts] == ["boss@example.com"]
    assert "203.0.113.5" in alerts[0].body_text and str(auth.ALERT_AT) in alerts[0].body_text
    clock.set(clock.now() + timedelta(seconds=auth.WINDOW_SECONDS + 1))
    assert login(attacker, "boss@example.com", PASSWORD).status_code == 303


def test_throttled_per_ip(session, new_client):
    make_user(session, "boss@example.com")
    attacker = new_client("203.0.113.9")
    for n in range(auth.IP_FAILURE_LIMIT):
        assert login(attacker, f"guess{n}@example.com", "wrong password").status_code == 401
    assert login(attacker, "boss@example.com", PASSWORD).status_code == 429
    assert login(new_client("198.51.100.7"), "boss@example.com", PASSWORD).status_code == 303


def client_is_out(client) -> bool:
    return client.get("/admin", follow_redirects=False).status_code == 303


def test_logout(session, client):
    make_user(session, "boss@example.com")
    login(client, "boss@example.com")
    home = client.get("/admin")
    response = client.post("/admin/logout", data={"csrf_token": csrf_from(home.text)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/login"
    assert client_is_out(client)


def test_logout_ends_the_session_on_the_server_so_a_copied_cookie_stops_working(session, client, new_client):
    make_user(session, "boss@example.com")
    login(client, "boss@example.com")
    thief = new_client("198.51.100.66")
    thief.cookies.update(client.cookies)  # the cookie, copied before the sign-out
    assert thief.get("/admin", follow_redirects=False).status_code == 200
    client.post("/admin/logout", data={"csrf_token": csrf_from(client.get("/admin").text)})
    assert client_is_out(thief)
    assert login(client, "boss@example.com").status_code == 303  # signing in again works


def test_login_required(client):
    for path in ("/admin", "/admin/password"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/admin/login?next={path}"


def test_next_is_followed_within_the_back_office(session, client):
    make_user(session, "boss@example.com")
    response = login(client, "boss@example.com", next_path="/admin/password")
    assert response.headers["location"] == "/admin/password"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/admin", "//evil.example/admin", "/\\evil.example", "/portal", "javascript:alert(1)",
     "/admin/../portal", "/admin/%2e%2e/portal", "http:/admin"],
)
def test_open_redirect_refused(session, client, target):
    make_user(session, "boss@example.com")
    page = client.get("/admin/login", params={"next": target})
    assert "evil" not in page.text
    response = login(client, "boss@example.com", next_path=target)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location == "/admin" or (location.startswith("/admin/") and ".." not in location)


def test_home_shows_only_permitted_companies(session, client):
    a = factories.company(session, "ALPHA", name="Alpha Industries")
    b = factories.company(session, "BETA", name="Beta Holdings")
    today = clock.today("Europe/Paris")
    factories.invoice(session, factories.customer(session, a), 1234_56, due_date=today - timedelta(days=3))
    factories.invoice(session, factories.customer(session, b), 9876_54, due_date=today - timedelta(days=3))
    make_user(session, "m@example.com", "manager", ["ALPHA"])
    login(client, "m@example.com")
    page = client.get("/admin", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    assert "Alpha Industries" in page.text and "€1,234.56" in page.text
    assert "Beta Holdings" not in page.text and "9,876.54" not in page.text and "BETA" not in page.text


def test_admin_sees_every_company_in_french(session, client):
    factories.company(session, "ALPHA", name="Alpha Industries")
    factories.company(session, "BETA", name="Beta Holdings")
    make_user(session, "boss@example.com")
    login(client, "boss@example.com")
    page = client.get("/admin", headers={"Accept-Language": "fr"})
    assert '<html lang="fr">' in page.text
    assert "Alpha Industries" in page.text and "Beta Holdings" in page.text


def test_password_change_ends_other_sessions(session, new_client):
    make_user(session, "boss@example.com")
    laptop, phone = new_client(), new_client()
    login(laptop, "boss@example.com")
    login(phone, "boss@example.com")
    form = laptop.get("/admin/password")
    response = laptop.post(
        "/admin/password",
        data={"csrf_token": csrf_from(form.text), "current_password": PASSWORD,
              "new_password": "a brand new secret", "confirm_password": "a brand new secret"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert laptop.get("/admin").status_code == 200
    assert client_is_out(phone)
    assert login(phone, "boss@example.com").status_code == 401
    assert login(phone, "boss@example.com", "a brand new secret").status_code == 303


def test_password_change_refuses_bad_input(session, client):
    make_user(session, "boss@example.com")
    login(client, "boss@example.com")
    form = client.get("/admin/password")
    response = client.post(
        "/admin/password",
        data={"csrf_token": csrf_from(form.text), "current_password": PASSWORD,
              "new_password": "short", "confirm_password": "short"},
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 400 and "at least 10 characters" in response.text
    assert client.get("/admin").status_code == 200
    response = client.post(
        "/admin/password",
        data={"csrf_token": csrf_from(form.text), "current_password": "not it at all",
              "new_password": "a brand new secret", "confirm_password": "a brand new secret"},
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 400 and "current password is wrong" in response.text


def test_password_post_needs_login_and_csrf(session, client):
    make_user(session, "boss@example.com")
    client.get("/admin/login")
    assert client.post("/admin/password", data={}, follow_redirects=False).status_code == 403


def test_failed_sign_ins_are_in_the_audit_trail_and_successful_ones_are_not(session, client):
    from sqlalchemy import select

    from ledger.models import AuditEvent

    user = make_user(session, "boss@example.com")
    gone = make_user(session, "gone@example.com")
    gone.active = False
    session.commit()
    assert login(client, "boss@example.com", "wrong password").status_code == 401
    assert login(client, "nobody@example.com").status_code == 401
    assert login(client, "gone@example.com").status_code == 401
    assert login(client, "boss@example.com").status_code == 303
    events = session.scalars(select(AuditEvent).where(AuditEvent.action == "user.sign_in_failed")
                             .order_by(AuditEvent.id)).all()
    assert [(e.actor, e.entity_id, e.after["reason"]) for e in events] == [
        ("boss@example.com", user.id, "wrong password"),
        ("nobody@example.com", None, "unknown account"),
        ("gone@example.com", gone.id, "account disabled"),
    ]
    assert all(e.after["ip"] == "testclient" for e in events)
    trail = client.get("/admin/audit", headers={"Accept-Language": "fr"})
    assert trail.status_code == 200 and "Échec de connexion" in trail.text
