from __future__ import annotations

from typing import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.settings import Settings
from links import tokens
from ledger.models import Customer
from tests.conftest import TEST_SECRET


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]):
    return create_app(settings, sessions=session_factory)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def login(client: TestClient, customer: Customer) -> None:
    """Open the customer's magic link, as the debtor would."""
    token = tokens.make_token(TEST_SECRET, customer.primary_contact)
    response = client.get(f"/p/{token}", follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/portal"


def csrf_from(html: str) -> str:
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    """Every test of this package runs on SQLite and on PostgreSQL."""
    return both_databases_session_factory
