"""Every back-office route against every role, discovered from the app itself.

Each route under /admin registered in `create_app` is checked, so pages other branches add
are covered once merged:
- anonymous: a GET goes to the login page, a POST without a CSRF token is refused (403);
- a viewer's POST is refused (403); a non-admin on an `admin_only` page gets 403;
- on a record page (a path parameter naming a company's record), a manager of another company
  and a collector of that company who is not assigned the customer get 404, while the admin
  and the company's own manager see it (so the 404 is about scope, not a wrong id).

Path parameters are filled from RECORD_PARAMS (records of a NORTH customer), COMPANY_PARAMS
(records of company NORTH itself) and OTHER_PARAMS (records that belong to no company). A route
with a parameter in none of them fails, naming the parameter: extend the tables below.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.settings import Settings, load_settings
from ledger import audit, disputes
from ledger.api_keys import create_key
from ledger.webhook_endpoints import add_endpoint
from ledger.disputes import Upload
from dunning.scenarios import ensure_default_scenario
from ledger.models import BankEntry, Payment, ReminderRun, WebhookDelivery, WebhookEvent
from ledger.storage import FileStorage
from admin.bulk_service import save_view
from admin.customers_service import add_note
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user
from tests.conftest import TEST_SECRET
from tests.reconciliation.bank_world import camt, credit
from reconciliation.accounts import add_account
from reconciliation.booking import new_match
from reconciliation.imports import import_statement_file

NORTH_IBAN = "FR7630006000011234567890189"

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

# Pages anyone reaches signed out, and actions every signed-in role may take on its own account.
SIGNED_OUT_PAGES = {"/admin/login"}
OWN_ACCOUNT = {"/admin/login", "/admin/logout", "/admin/password"}


@dataclass
class Book:
    records: dict[str, Any]


# Path parameter -> the id of a record of company NORTH (hidden from SOUTH's manager and from a
# NORTH collector not assigned to the customer).
RECORD_PARAMS: dict[str, Callable[[Book], object]] = {
    "customer_id": lambda b: b.records["customer"].id,
    "invoice_id": lambda b: b.records["invoice"].id,
    "payment_id": lambda b: b.records["payment"].id,
    "case_id": lambda b: b.records["case"].id,
    "file_id": lambda b: b.records["file"].id,
    "contact_id": lambda b: b.records["contact"].id,
    "note_id": lambda b: b.records["note"].id,
}
# Path parameter -> a record of company NORTH itself (its scenarios, its reminder runs): hidden from
# SOUTH's manager (404), readable by NORTH's staff whatever customers they are assigned.
COMPANY_PARAMS: dict[str, Callable[[Book], object]] = {
    "scenario_id": lambda b: b.records["scenario"].id,
    "run_id": lambda b: b.records["run"].id,
    "event_id": lambda b: b.records["webhook_event"].id,  # a provider event naming NORTH's payment
    "entry_id": lambda b: b.records["bank_entry"].id,
    "match_id": lambda b: b.records["bank_match"].id,
    "account_id": lambda b: b.records["bank_account"].id,
}
# Path parameter -> a record that belongs to no company's customers (admin pages, global logs):
# only the anonymous, viewer and admin-only checks apply.
OTHER_PARAMS: dict[str, Callable[[Book], object]] = {
    "user_id": lambda b: b.records["user"].id,
    "code": lambda b: "NORTH",
    "key_id": lambda b: b.records["api_key"].id,  # the ERP pages are admin only
    "endpoint_id": lambda b: b.records["webhook_endpoint"].id,
    "delivery_id": lambda b: b.records["webhook_delivery"].id,
    "view_id": lambda b: b.records["view"].id,  # a user's saved view of the customers list
    "list": lambda b: "customers",  # /admin/exports/{list}.{format}: a list, scoped as its page
    "format": lambda b: "csv",
}


def _settings(storage_dir: str = "/nonexistent") -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": "sqlite://", "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver", "ENCOURS_STORAGE_DIR": storage_dir})


def _admin_routes() -> list[tuple[str, str, Route]]:
    app = create_app(_settings(), sessions=sessionmaker())
    found = []
    for prefix, route in _walk(app.routes):
        if isinstance(route, Route) and (prefix + route.path).startswith("/admin"):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                found.append((method, prefix + route.path_format, route))
    return found


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every route with the path it is mounted under (the packages mount theirs: /admin, ...)."""
    for route in routes:
        if isinstance(route, Mount) and not isinstance(route.app, StaticFiles):
            yield from _walk(route.routes, prefix + route.path)
        else:
            yield prefix, route


ROUTES = _admin_routes()


def _unknown_params(route: Route) -> list[str]:
    return sorted(set(route.param_convertors) - set(RECORD_PARAMS) - set(COMPANY_PARAMS) - set(OTHER_PARAMS))


UNFILLED = {f"{method} {path}": _unknown_params(route) for method, path, route in ROUTES if _unknown_params(route)}


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver", "ENCOURS_STORAGE_DIR": str(tmp_path / "files")})


@pytest.fixture
def book(session: Session, settings: Settings) -> Book:
    north = factories.company(session, code="NORTH", name="North SAS")
    factories.company(session, code="SOUTH", name="South SAS")
    users = {
        "admin": make_user(session, "root@x.test", "admin"),
        "manager": make_user(session, "boss@north.test", "manager", ["NORTH"]),
        "outsider": make_user(session, "boss@south.test", "manager", ["SOUTH"]),
        "viewer": make_user(session, "reader@north.test", "viewer", ["NORTH"]),
        "collector": make_user(session, "anne@north.test", "collector", ["NORTH"]),
        "unassigned": make_user(session, "zoe@north.test", "collector", ["NORTH"]),
    }
    customer = factories.customer(session, north, ref="C-NORTH", collector_id=users["collector"].id)
    invoice = factories.invoice(session, customer, number="F-NORTH")
    payment = Payment(customer_id=customer.id, provider="bank_transfer", method="bank_transfer",
                      amount_minor=100_00, currency="EUR", status="succeeded", provider_ref="BT-MATRIX")
    session.add(payment)
    case = disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[invoice.id],
                              reason_code="quality", message="wrong", uploads=[Upload("proof.pdf", PDF)],
                              storage=FileStorage(settings.storage_dir))
    event = WebhookEvent(provider="stripe", event_id="evt_matrix", event_type="payment_intent.succeeded",
                         body='{"data": {"object": {"id": "BT-MATRIX"}}}')
    session.add(event)
    scenario = ensure_default_scenario(session, north)
    run = ReminderRun(company_id=north.id, run_date=date(2026, 11, 25), finished_at=datetime(2026, 11, 25, 8, tzinfo=timezone.utc))
    session.add(run)
    account = add_account(session, "NORTH", iban=NORTH_IBAN)
    import_statement_file(session, camt(credit("42.00", ref="M1", text="virement"), iban=NORTH_IBAN), "north.xml")
    bank_entry = session.scalars(select(BankEntry)).one()
    bank_match = new_match(session, bank_entry, evidence="amount", reason="matrix", score=50,
                           lines=[(customer.id, invoice.id, 42_00, 0, 0)])
    api_key, _ = create_key(session, "NORTH", "erp")
    endpoint, _ = add_endpoint(session, "NORTH", "http://127.0.0.1:9/hook", ["*"], allow_private=True)
    audit.record(session, actor_type="system", action="payment.succeeded", entity_type="payment",
                 entity_id=payment.id, customer_id=customer.id)
    session.flush()
    delivery = session.scalars(select(WebhookDelivery)).one()
    note = add_note(session, customer, users["collector"], "call back", next_action_on=date(2026, 11, 26))
    view = save_view(session, users["manager"], "Late", "overdue=1", shared=False)
    session.flush()
    records = {"customer": customer, "contact": customer.primary_contact, "note": note, "view": view,
               "invoice": invoice, "payment": payment, "case": case,
               "file": case.messages[0].attachments[0], "user": users["collector"], "webhook_event": event,
               "scenario": scenario, "run": run, "bank_account": account, "bank_entry": bank_entry,
               "bank_match": bank_match, "api_key": api_key, "webhook_endpoint": endpoint,
               "webhook_delivery": delivery}
    session.commit()
    return Book(records={**records, **{f"as:{k}": v for k, v in users.items()}})


@pytest.fixture
def signed_in(app, book: Book):  # type: ignore[no-untyped-def]
    clients: dict[str, TestClient] = {}

    def get(role: str) -> TestClient:
        if role not in clients:
            client = TestClient(app, base_url="http://testserver")
            client.__enter__()
            if role != "anonymous":
                assert login(client, book.records[f"as:{role}"].email).status_code == 303
            clients[role] = client
        return clients[role]

    yield get
    for client in clients.values():
        client.__exit__(None, None, None)


def _path(path_format: str, route: Route, book: Book) -> str:
    fill = {**RECORD_PARAMS, **COMPANY_PARAMS, **OTHER_PARAMS}
    return path_format.format(**{name: fill[name](book) for name in route.param_convertors})


def _post(client: TestClient, path: str) -> Any:
    token = csrf_from(client.get("/admin/password").text)
    return client.post(path, data={"csrf_token": token}, follow_redirects=False)


def _call(client: TestClient, method: str, path: str) -> Any:
    return client.get(path, follow_redirects=False) if method == "GET" else _post(client, path)


def test_the_matrix_covers_the_back_office() -> None:
    paths = {path for _, path, _ in ROUTES}
    assert {"/admin", "/admin/users", "/admin/settings/{code}", "/admin/imports", "/admin/audit",
            "/admin/disputes/{case_id}"} <= paths
    # Routes the matrix cannot fill, listed at once so the reason is plain:
    assert UNFILLED == {}, f"extend RECORD_PARAMS/OTHER_PARAMS for: {UNFILLED}"


@pytest.mark.parametrize("method,path,route", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_route_against_every_role(method: str, path: str, route: Route, book: Book, signed_in) -> None:  # type: ignore[no-untyped-def]
    missing = _unknown_params(route)
    assert not missing, f"no fixture record for path parameter(s) {', '.join(missing)}: extend RECORD_PARAMS"
    url = _path(path, route, book)
    admin_only = getattr(route.endpoint, "admin_only", False)
    scoped = bool(set(route.param_convertors) & set(RECORD_PARAMS))
    company_scoped = bool(set(route.param_convertors) & set(COMPANY_PARAMS))

    anonymous = signed_in("anonymous")
    if method == "GET":
        if path not in SIGNED_OUT_PAGES:
            response = anonymous.get(url, follow_redirects=False)
            assert response.status_code == 303 and response.headers["location"].startswith("/admin/login"), url
    else:
        assert anonymous.post(url, data={}, follow_redirects=False).status_code == 403, url
        if path not in OWN_ACCOUNT:
            assert _post(signed_in("viewer"), url).status_code == 403, f"a viewer acted on {url}"
    if path in OWN_ACCOUNT:
        return

    if admin_only:
        for role in ("manager", "viewer", "collector"):
            assert _call(signed_in(role), method, url).status_code == 403, f"{role} reached admin-only {url}"
    if method == "GET":
        assert _call(signed_in("admin"), method, url).status_code == 200, f"the admin cannot open {url}"
    if scoped and not admin_only:
        for role in ("outsider", "unassigned"):
            assert _call(signed_in(role), method, url).status_code == 404, f"{role} is not told 404 on {url}"
        if method == "GET":
            for role in ("manager", "collector"):
                assert _call(signed_in(role), method, url).status_code == 200, f"{role} cannot open its {url}"
    if company_scoped and not admin_only:
        assert _call(signed_in("outsider"), method, url).status_code == 404, f"outsider is not told 404 on {url}"
        if method == "GET":
            assert _call(signed_in("manager"), method, url).status_code == 200, f"manager cannot open its {url}"
