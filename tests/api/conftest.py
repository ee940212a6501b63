from __future__ import annotations

from typing import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.settings import Settings
from ledger.api_keys import create_key
from ledger.companies import create_company


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]):
    return create_app(settings, sessions=session_factory)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def acme(session: Session):
    company = create_company(session, code="ACME", name="Acme SA", currency="EUR")
    session.commit()
    return company


@pytest.fixture
def key(session: Session, acme) -> str:
    _, key = create_key(session, "ACME", "sage-x3")
    session.commit()
    return key


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CUSTOMER = {"name": "Dupont SARL", "email": "compta@dupont.example", "language": "fr"}


def invoice_body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"customer_ref": "C001", "issue_date": "2026-11-01", "due_date": "2026-11-30",
                               "currency": "EUR", "amount": "1200.00"}
    body.update(changes)
    return body
