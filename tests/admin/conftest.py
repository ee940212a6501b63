from __future__ import annotations

import re
from typing import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.settings import Settings
from admin.staff_accounts import create_user
from ledger.models import User
from tests import factories

PASSWORD = "correct horse battery"


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]):
    return create_app(settings, sessions=session_factory)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def new_client(app):
    """Another browser on the same app."""
    clients: list[TestClient] = []

    def make(ip: str = "testclient") -> TestClient:
        c = TestClient(app, base_url="http://testserver", client=(ip, 50000))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def make_user(session: Session, email: str = "admin@example.com", role: str = "admin",
              companies: list[str] | None = None, password: str = PASSWORD) -> User:
    user = create_user(session, email=email, role=role, password=password, company_codes=companies or [])
    session.commit()
    return user


def login(client: TestClient, email: str, password: str = PASSWORD, next_path: str | None = None):
    page = client.get("/admin/login")
    data = {"csrf_token": csrf_from(page.text), "email": email, "password": password}
    if next_path is not None:
        data["next"] = next_path
    return client.post("/admin/login", data=data, follow_redirects=False)


@pytest.fixture
def admin(client: TestClient, session: Session) -> TestClient:
    """The browser of an admin of company NORTH, signed in, reading English."""
    factories.company(session, code="NORTH", name="North SAS")
    make_user(session, "root@x.test", "admin")
    client.headers["Accept-Language"] = "en"
    assert login(client, "root@x.test").status_code == 303
    return client
