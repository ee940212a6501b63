"""An admin exports and erases a customer's personal data from the customer page."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import AuditEvent, Contact
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user

EMAIL = "paul.martin@cycles-martin.test"


def _world(session: Session):  # type: ignore[no-untyped-def]
    company = factories.company(session, code="NORTH", name="North SAS")
    customer = factories.customer(session, company, ref="C-77", email=EMAIL)
    make_user(session, "root@x.test", "admin")
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    session.commit()
    return customer


def test_an_admin_downloads_then_erases_a_customers_personal_data(client: TestClient, session: Session) -> None:
    customer = _world(session)
    assert login(client, "root@x.test").status_code == 303
    page = client.get(f"/admin/customers/{customer.id}")
    assert f'href="/admin/customers/{customer.id}/personal-data"' in page.text

    download = client.get(f"/admin/customers/{customer.id}/personal-data.json")
    assert download.status_code == 200 and download.headers["content-type"].startswith("application/json")
    assert 'filename="personal-data-C-77.json"' in download.headers["content-disposition"]
    assert json.loads(download.text)["contacts"][0]["email"] == EMAIL

    form = client.get(f"/admin/customers/{customer.id}/personal-data")
    wrong = client.post(f"/admin/customers/{customer.id}/personal-data/erase",
                        data={"csrf_token": csrf_from(form.text), "confirm_ref": "C-7", "contact": ""})
    assert wrong.status_code == 400 and "rien n&#39;a été effacé" in wrong.text
    session.expire_all()
    assert session.scalars(select(Contact.email)).one() == EMAIL

    done = client.post(f"/admin/customers/{customer.id}/personal-data/erase",
                       data={"csrf_token": csrf_from(form.text), "confirm_ref": "C-77", "contact": ""},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].endswith("?erased=customer")
    session.expire_all()
    assert session.scalars(select(Contact.email)).one() != EMAIL
    actions = list(session.scalars(select(AuditEvent.action).where(AuditEvent.customer_id == customer.id)))
    assert "personal_data.exported" in actions and "personal_data.erased" in actions


def test_a_manager_has_no_personal_data_button_nor_page(client: TestClient, session: Session) -> None:
    customer = _world(session)
    assert login(client, "boss@north.test").status_code == 303
    assert "/personal-data" not in client.get(f"/admin/customers/{customer.id}").text
    assert client.get(f"/admin/customers/{customer.id}/personal-data.json").status_code == 403
