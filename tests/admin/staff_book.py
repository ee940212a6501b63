"""A small book shared by the back-office list and customer tests: two companies, users of every role."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import Customer
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user

TODAY = date(2026, 11, 25)


@pytest.fixture
def book(session: Session):  # type: ignore[no-untyped-def]
    """NORTH: Anne's customer (overdue), an unassigned one; SOUTH: one customer. Users of every role."""
    north = factories.company(session, code="NORTH", name="North SAS")
    south = factories.company(session, code="SOUTH", name="South SAS")
    make_user(session, "admin@x.test", "admin")
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    make_user(session, "boss@south.test", "manager", ["SOUTH"])
    anne = make_user(session, "anne@north.test", "collector", ["NORTH"])
    make_user(session, "bob@north.test", "collector", ["NORTH"])
    make_user(session, "reader@north.test", "viewer", ["NORTH"])
    mine = factories.customer(session, north, ref="MINE", email="ap@mine.test", collector_id=anne.id)
    mine.name = "Mine Industries"
    other = factories.customer(session, north, ref="OTHER")
    other.name = "Other Trading"
    far = factories.customer(session, south, ref="FAR")
    far.name = "Far Away Ltd"
    factories.invoice(session, mine, total_minor=1200_00, number="N-1", due_date=date(2026, 10, 31))
    factories.invoice(session, other, total_minor=300_00, number="N-2", due_date=date(2026, 12, 31))
    factories.invoice(session, far, total_minor=50_00, currency="GBP", number="S-1", due_date=date(2026, 11, 1))
    session.commit()
    return {"mine": mine, "other": other, "far": far, "anne": anne}


def signed_in(new_client, email: str, language: str = "en") -> TestClient:  # type: ignore[no-untyped-def]
    client = new_client()
    client.headers["Accept-Language"] = language
    assert login(client, email).status_code == 303
    return client


def post(client: TestClient, customer: Customer, action: str, data: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    page = client.get("/admin/customers")
    return client.post(f"/admin/customers/{customer.id}/{action}",
                       data={"csrf_token": csrf_from(page.text), **(data or {})}, follow_redirects=False)


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the webhook handlers read from the environment, as the worker would have it."""
    from tests.conftest import TEST_SECRET

    monkeypatch.setenv("ENCOURS_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("ENCOURS_BASE_URL", "http://testserver")
