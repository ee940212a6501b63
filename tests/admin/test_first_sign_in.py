"""A password someone else chose (an admin creating or resetting an account) works once: its
owner chooses its own before any other page opens, then lands where it was going."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import User
from tests.admin.conftest import PASSWORD, csrf_from, login
from tests.admin.staff_book import book, signed_in  # noqa: F401 - fixtures

NEW = "my very own passphrase"


def create_account(admin: TestClient, email: str, role: str = "collector") -> str:
    """The admin creates the account on the users page; the password shown once."""
    page = admin.get("/admin/users")
    created = admin.post("/admin/users", data={"csrf_token": csrf_from(page.text), "email": email, "role": role,
                                               "companies": "NORTH"})
    assert created.status_code == 200, created.text
    shown = re.search(r'id="new-password">([^<]+)<', created.text)
    assert shown
    return shown.group(1)


def change(client: TestClient, current: str, new: str = NEW, next_path: str | None = None):  # type: ignore[no-untyped-def]
    page = client.get("/admin/password" + (f"?next={next_path}" if next_path else ""))
    form = {"csrf_token": csrf_from(page.text), "current_password": current, "new_password": new,
            "confirm_password": new}
    hidden = re.search(r'name="next" value="([^"]*)"', page.text)
    if hidden:
        form["next"] = hidden.group(1)
    return client.post("/admin/password", data=form, follow_redirects=False)


def test_a_new_account_changes_its_password_before_anything_else(new_client, book, session: Session) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in(new_client, "admin@x.test")
    one_time = create_account(admin, "new@north.test")
    client = new_client()
    assert login(client, "new@north.test", one_time, next_path="/admin/customers").status_code == 303
    for path in ("/admin", "/admin/customers", "/admin/invoices?overdue=1", "/admin/audit"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/admin/password?next="), path
    page = client.get("/admin/password?next=/admin/customers")
    assert 'id="password-forced"' in page.text  # "You were given a one-time password…"
    nav = re.search(r"<nav.*?</nav>", page.text, re.S)
    assert nav and "/admin/customers" not in nav.group(0)  # nothing but the password and signing out
    # An action is refused the same way, nothing done.
    posted = client.post("/admin/customers/1/notes", data={"csrf_token": csrf_from(page.text), "note": "x"},
                         follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"].startswith("/admin/password")
    assert change(client, "wrong one-time").status_code == 400
    done = change(client, one_time, next_path="/admin/customers")
    assert done.status_code == 303 and done.headers["location"] == "/admin/customers"
    assert client.get("/admin/customers").status_code == 200
    session.expire_all()
    assert not session.query(User).filter_by(email="new@north.test").one().must_change_password
    # The one-time password is spent; the chosen one works.
    again = new_client()
    assert login(again, "new@north.test", one_time).status_code == 401
    assert login(again, "new@north.test", NEW).status_code == 303
    assert again.get("/admin", follow_redirects=False).status_code == 200


def test_a_reset_password_is_one_time_too(new_client, book, session: Session) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in(new_client, "admin@x.test")
    anne = session.query(User).filter_by(email="anne@north.test").one()
    page = admin.get(f"/admin/users/{anne.id}")
    reset = admin.post(f"/admin/users/{anne.id}/password", data={"csrf_token": csrf_from(page.text)})
    shown = re.search(r'id="new-password">([^<]+)<', reset.text)
    assert shown
    client = new_client()
    assert login(client, "anne@north.test", shown.group(1)).status_code == 303
    assert client.get("/admin/customers", follow_redirects=False).headers["location"].startswith("/admin/password")
    assert change(client, shown.group(1)).headers["location"] == "/admin"


def test_an_own_password_is_not_one_time(new_client, book) -> None:  # type: ignore[no-untyped-def]
    client = new_client()
    assert login(client, "anne@north.test", PASSWORD).status_code == 303
    assert client.get("/admin/customers", follow_redirects=False).status_code == 200
    assert change(client, PASSWORD).headers["location"] == "/admin/password?changed=1"
