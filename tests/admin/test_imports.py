"""Admins and managers upload the ERP's CSV files: all-or-nothing, every bad line reported,
a manager only into its own companies, audited and on the customers' timelines."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import AuditEvent, Customer, Invoice
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user

CUSTOMERS = (
    "company,customer_ref,name,email,language,phone,segment\n"
    "NORTH,C001,Alpha SARL,ap@alpha.test,fr,,\n"
    "NORTH,C002,Beta SAS,ap@beta.test,en,,\n"
)


@pytest.fixture
def book(session: Session) -> None:
    factories.company(session, code="NORTH", name="North SAS")
    factories.company(session, code="SOUTH", name="South SAS")
    make_user(session, "root@x.test", "admin")
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    make_user(session, "reader@north.test", "viewer", ["NORTH"])
    make_user(session, "anne@north.test", "collector", ["NORTH"])
    session.commit()


def _as(client: TestClient, email: str) -> TestClient:
    client.headers["Accept-Language"] = "en"
    assert login(client, email).status_code == 303
    return client


def upload(client: TestClient, kind: str, content: bytes | str, name: str = "export.csv", token: str | None = None):  # type: ignore[no-untyped-def]
    if token is None:
        token = csrf_from(client.get("/admin/password").text)
    raw = content.encode() if isinstance(content, str) else content
    return client.post("/admin/imports", data={"csrf_token": token, "kind": kind},
                       files={"file": (name, raw, "text/csv")}, follow_redirects=False)


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_admin_imports_customers_then_invoices_and_the_same_file_changes_nothing(
        client: TestClient, session: Session, book: None) -> None:
    _as(client, "root@x.test")
    done = upload(client, "customers", CUSTOMERS)
    assert done.status_code == 200
    assert "export.csv imported." in done.text and "2 created" in done.text
    invoices = ("company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until\n"
                "NORTH,C001,F-1,2026-10-01,2026-10-31,EUR,\"1 200,50\",,\n"
                "NORTH,C002,F-2,2026-10-01,2026-10-31,EUR,99.90,2,2026-10-10\n")
    assert "2 created" in upload(client, "invoices", invoices).text
    again = upload(client, "invoices", invoices)
    assert "0 created" in again.text and "2 unchanged" in again.text
    assert count(session, Invoice) == 2
    alpha = session.scalar(select(Customer).where(Customer.ref == "C001"))
    assert alpha is not None
    # the customer's timeline: its creation and its invoice, by whom, from which file
    timeline = session.scalars(select(AuditEvent).where(AuditEvent.customer_id == alpha.id)
                               .order_by(AuditEvent.id)).all()
    assert [(e.action, e.actor) for e in timeline] == [("import.customers", "root@x.test"),
                                                       ("import.invoices", "root@x.test")]
    assert timeline[1].after["created"] == {"count": 1, "items": ["F-1"]}
    assert timeline[1].after["file"] == "export.csv"
    company_events = session.scalars(select(AuditEvent).where(AuditEvent.entity_type == "company")).all()
    assert {e.action for e in company_events} == {"import.customers", "import.invoices"}


def test_a_bad_file_imports_nothing_and_lists_every_bad_line(client: TestClient, session: Session,
                                                              book: None) -> None:
    _as(client, "root@x.test")
    bad = (
        "company,customer_ref,name,email,language,phone,segment\n"
        "NORTH,C001,Alpha SARL,ap@alpha.test,fr,,\n"
        "NORTH,C002,,not-an-email,de,,\n"
        "NOPE,C003,Gamma,ap@gamma.test,fr,,\n"
    )
    response = upload(client, "customers", bad)
    assert response.status_code == 400
    assert "nothing imported, 2 bad lines" in response.text
    assert "name is empty" in response.text and "language &#39;de&#39; must be fr or en" in response.text
    assert "unknown company &#39;NOPE&#39;" in response.text
    assert '<th scope="row" class="num">3</th>' in response.text and '<th scope="row" class="num">4</th>' in response.text
    assert count(session, Customer) == 0
    assert count(session, AuditEvent) == 4  # the four accounts' creation, nothing from the import


def test_a_french_reader_gets_the_reasons_in_french(client: TestClient, session: Session, book: None) -> None:
    client.headers["Accept-Language"] = "fr"  # the demo's users, and the default
    assert login(client, "boss@north.test").status_code == 303
    bad = (
        "company,customer_ref,name,email,language,phone,segment\n"
        "NORTH,C001,Alpha SARL,ap@alpha.test,fr,,\n"
        "NORTH,C002,,not-an-email,de,,\n"
        "SOUTH,C003,Gamma,ap@gamma.test,fr,,\n"
        "NORTH,C001,Alpha SA,ap@alpha.test,fr,,\n"
    )
    response = upload(client, "customers", bad)
    assert response.status_code == 400
    assert ('<th scope="row" class="num">3</th><td>name est vide ; email &#39;not-an-email&#39; n’est pas une '
            'adresse e-mail (une seule adresse par ligne) ; language &#39;de&#39; doit valoir fr ou en</td>') \
        in response.text
    assert "vous ne pouvez pas importer dans la société &#39;SOUTH&#39;" in response.text
    assert "le client &#39;C001&#39; figure déjà ligne 2 avec d’autres valeurs" in response.text
    assert "is empty" not in response.text and "must be fr or en" not in response.text
    assert count(session, Customer) == 0
    unreadable = upload(client, "invoices", b"company;customer_ref\nNORTH;C1\n")
    assert "colonne(s) manquante(s) number, issue_date" in unreadable.text


@pytest.mark.parametrize("content,message", [
    (b"\xff\xfe\x00garbage", "is not UTF-8 text"),
    ("", "the file is empty"),
    ("just,some,columns\n1,2,3\n", "unknown column"),
    ("company,customer_ref,name,email,language,phone,segment\n", "has a header but no data lines"),
])
def test_malformed_files_get_a_clear_message(client: TestClient, session: Session, book: None,
                                             content: bytes | str, message: str) -> None:
    _as(client, "root@x.test")
    response = upload(client, "customers", content)
    assert response.status_code == 400
    assert message in response.text
    assert count(session, Customer) == 0


def test_no_file_chosen(client: TestClient, book: None) -> None:
    _as(client, "root@x.test")
    token = csrf_from(client.get("/admin/imports").text)
    response = client.post("/admin/imports", data={"csrf_token": token, "kind": "customers"})
    assert response.status_code == 400 and "Choose a CSV file to import." in response.text


def test_a_manager_imports_into_its_companies_only(client: TestClient, session: Session, book: None) -> None:
    _as(client, "boss@north.test")
    assert "You may import into these companies only: NORTH." in client.get("/admin/imports").text
    mixed = CUSTOMERS + "SOUTH,S001,Far Away,ap@far.test,fr,,\nELSEWHERE,X1,Ghost,ap@ghost.test,fr,,\n"
    response = upload(client, "customers", mixed)
    assert response.status_code == 400
    assert "you may not import into company &#39;SOUTH&#39;" in response.text
    # a company that does not exist reads the same as another's: nothing is learnt about others
    assert "you may not import into company &#39;ELSEWHERE&#39;" in response.text
    assert count(session, Customer) == 0
    assert "2 created" in upload(client, "customers", CUSTOMERS).text
    event = session.scalar(select(AuditEvent).where(AuditEvent.entity_type == "company"))
    assert event is not None and event.actor == "boss@north.test"


def test_a_manager_cannot_add_invoices_to_another_companys_customer(client: TestClient, session: Session,
                                                                    book: None) -> None:
    south = session.scalar(select(factories.Company).where(factories.Company.code == "SOUTH"))
    factories.customer(session, south, ref="S001")
    session.commit()
    _as(client, "boss@north.test")
    invoices = ("company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until\n"
                "SOUTH,S001,F-9,2026-10-01,2026-10-31,EUR,10,,\n")
    response = upload(client, "invoices", invoices)
    assert response.status_code == 400 and "you may not import into company &#39;SOUTH&#39;" in response.text
    assert count(session, Invoice) == 0


@pytest.mark.parametrize("email", ["reader@north.test", "anne@north.test"])
def test_viewers_and_collectors_do_not_import(client: TestClient, session: Session, book: None, email: str) -> None:
    _as(client, email)
    assert client.get("/admin/imports").status_code == 403
    assert upload(client, "customers", CUSTOMERS).status_code == 403
    assert count(session, Customer) == 0


def test_without_csrf_nothing_is_imported(client: TestClient, session: Session, book: None) -> None:
    _as(client, "root@x.test")
    response = client.post("/admin/imports", data={"kind": "customers"},
                           files={"file": ("x.csv", CUSTOMERS.encode(), "text/csv")}, follow_redirects=False)
    assert response.status_code == 403
    assert count(session, Customer) == 0
