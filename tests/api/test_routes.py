from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.clock import clock
from ledger.allocation import invariant_violations
from ledger.api_keys import create_key, revoke_key
from ledger.companies import create_company
from ledger.models import AuditEvent, Invoice
from tests.api.conftest import CUSTOMER, invoice_body

PROBLEM = "application/problem+json"


def _customer(client, auth, ref: str = "C001") -> None:
    assert client.put(f"/api/v1/customers/{ref}", json=CUSTOMER, headers=auth).status_code in (200, 201)


def test_customer_is_created_then_updated_by_its_reference_and_audited_under_the_key(client, auth, session: Session):
    first = client.put("/api/v1/customers/C001", json=CUSTOMER, headers=auth)
    assert first.status_code == 201
    assert first.json()["contacts"][0]["email"] == "compta@dupont.example"
    second = client.put("/api/v1/customers/C001", json={**CUSTOMER, "name": "Dupont SAS"}, headers=auth)
    assert second.status_code == 200 and second.json()["name"] == "Dupont SAS"
    assert client.get("/api/v1/customers/C001", headers=auth).json()["name"] == "Dupont SAS"
    actors = set(session.execute(select(AuditEvent.actor_type, AuditEvent.actor)
                                 .where(AuditEvent.action == "customer.updated")).all())
    assert actors == {("api", "sage-x3")}
    # no session cookie is set on the API
    assert "set-cookie" not in first.headers


def test_customers_are_paged_with_a_cursor(client, auth):
    for n in range(5):
        _customer(client, auth, f"C{n:03d}")
    page = client.get("/api/v1/customers?limit=2", headers=auth).json()
    refs = [c["ref"] for c in page["items"]]
    while page["next_cursor"]:
        page = client.get(f"/api/v1/customers?limit=2&cursor={page['next_cursor']}", headers=auth).json()
        refs += [c["ref"] for c in page["items"]]
    assert refs == ["C000", "C001", "C002", "C003", "C004"]


def test_invoice_upsert_open_amount_and_void(client, auth, session: Session):
    _customer(client, auth)
    created = client.put("/api/v1/invoices/F-1", json=invoice_body(), headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["open_amount"] == "1200.00"
    lowered = client.put("/api/v1/invoices/F-1", json=invoice_body(open_amount="200.00"), headers=auth)
    assert lowered.status_code == 200
    body = lowered.json()
    assert (body["open_amount"], body["status"], body["settled_outside_amount"]) == ("200.00", "partially_paid",
                                                                                     "1000.00")
    higher = client.put("/api/v1/invoices/F-1", json=invoice_body(open_amount="500.00"), headers=auth)
    assert higher.status_code == 422 and higher.headers["content-type"] == PROBLEM
    assert higher.json()["errors"][0]["field"] == "open_amount"
    assert invariant_violations(session) == []
    client.put("/api/v1/invoices/F-2", json=invoice_body(), headers=auth)
    voided = client.post("/api/v1/invoices/F-2/void", headers=auth)
    assert voided.status_code == 200 and voided.json()["status"] == "void"
    assert client.post("/api/v1/invoices/F-1/void", headers=auth).status_code == 409
    listed = client.get("/api/v1/invoices?status=void", headers=auth).json()
    assert [i["number"] for i in listed["items"]] == ["F-2"]


def test_wrong_decimals_unknown_fields_wrong_types_and_malformed_json_are_refused_naming_the_field(client, auth):
    _customer(client, auth)
    cases = [
        (invoice_body(amount="12.345"), "amount"),
        (invoice_body(currency="JPY", amount="12.5"), "amount"),
        (invoice_body(colour="blue"), "colour"),
        (invoice_body(amount=12), "amount"),
        (invoice_body(customer_ref="NOPE"), "customer_ref"),
    ]
    for body, field in cases:
        answer = client.put("/api/v1/invoices/F-9", json=body, headers=auth)
        assert answer.status_code == 422, body
        assert answer.headers["content-type"] == PROBLEM
        problem = answer.json()
        assert {"type", "title", "status", "detail", "errors"} <= set(problem)
        assert field in [e["field"] for e in problem["errors"]], problem
    malformed = client.put("/api/v1/invoices/F-9", content=b"{not json", headers={**auth,
                                                                                   "Content-Type": "application/json"})
    assert malformed.status_code == 422 and malformed.headers["content-type"] == PROBLEM
    assert client.get("/api/v1/invoices/F-9", headers=auth).status_code == 404


def test_keys_missing_revoked_other_company_and_read_only(client, auth, session: Session, acme):
    _customer(client, auth)
    assert client.get("/api/v1/customers").status_code == 401
    assert client.get("/api/v1/customers", headers={"Authorization": "Bearer enc_live_nope"}).status_code == 401
    create_company(session, code="OTHER", name="Other", currency="EUR")
    _, other = create_key(session, "OTHER", "other-erp")
    _, reader = create_key(session, "ACME", "bi", read_only=True)
    session.commit()
    assert client.get("/api/v1/customers/C001", headers={"Authorization": f"Bearer {other}"}).status_code == 404
    read_only = {"Authorization": f"Bearer {reader}"}
    assert client.get("/api/v1/customers/C001", headers=read_only).status_code == 200
    refused = client.put("/api/v1/customers/C002", json=CUSTOMER, headers=read_only)
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    revoke_key(session, "ACME", "sage-x3")
    session.commit()
    assert client.get("/api/v1/customers", headers=auth).status_code == 401


def test_oversized_body_is_refused(client, auth):
    answer = client.post("/api/v1/invoices:bulk", content=b"{" + b" " * (6 * 1024 * 1024) + b"}",
                         headers={**auth, "Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.headers["content-type"] == PROBLEM


def test_bulk_is_all_or_nothing_reporting_every_bad_item(client, auth, session: Session):
    _customer(client, auth)
    items = [{**invoice_body(), "number": f"B-{n}"} for n in range(5)]
    items[1]["amount"] = "1.234"
    items[3]["customer_ref"] = "NOPE"
    answer = client.post("/api/v1/invoices:bulk", json={"items": items}, headers=auth)
    assert answer.status_code == 422
    fields = {e["field"] for e in answer.json()["errors"]}
    assert fields == {"items[1].amount", "items[3].customer_ref"}
    assert session.scalar(select(Invoice.id).where(Invoice.number.like("B-%"))) is None
    items[1]["amount"], items[3]["customer_ref"] = "1.23", "C001"
    done = client.post("/api/v1/invoices:bulk", json={"items": items}, headers=auth)
    assert done.json() == {"created": 5, "updated": 0, "unchanged": 0}
    too_many = client.post("/api/v1/invoices:bulk", json={"items": [items[0]] * 1001}, headers=auth)
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["field"] == "items"


def test_bulk_open_amounts_are_applied_to_each_item_of_the_batch(client, auth, session: Session):
    _customer(client, auth)
    items = [{**invoice_body(), "number": f"O-{n}"} for n in range(4)]
    assert client.post("/api/v1/invoices:bulk", json={"items": items}, headers=auth).status_code == 200
    items[1]["open_amount"], items[2]["open_amount"] = "200.00", "0.00"
    items[3]["due_date"] = "2026-12-15"
    done = client.post("/api/v1/invoices:bulk", json={"items": items}, headers=auth)
    assert done.json() == {"created": 0, "updated": 1, "unchanged": 3}
    session.expire_all()
    found = dict(session.execute(select(Invoice.number, Invoice.open_minor).where(Invoice.number.like("O-%"))).all())
    assert found == {"O-0": 1200_00, "O-1": 200_00, "O-2": 0, "O-3": 1200_00}
    items[0]["open_amount"] = "1300.00"
    higher = client.post("/api/v1/invoices:bulk", json={"items": items}, headers=auth)
    assert higher.status_code == 422 and higher.json()["errors"][0]["field"] == "items[0].open_amount"


def test_idempotency_key_replays_the_first_response_and_refuses_another_body(client, auth):
    headers = {**auth, "Idempotency-Key": "abc-1"}
    first = client.put("/api/v1/customers/C001", json=CUSTOMER, headers=headers)
    again = client.put("/api/v1/customers/C001", json=CUSTOMER, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = client.put("/api/v1/customers/C001", json={**CUSTOMER, "name": "X"}, headers=headers)
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"


def test_rate_limit_answers_429_with_retry_after(app, client, auth):
    app.state.settings = app.state.settings.__class__(**{**app.state.settings.__dict__,
                                                          "api_requests_per_minute": 3})
    answers = [client.get("/api/v1/customers", headers=auth) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    clock.set(datetime(2026, 11, 25, 10, 2, tzinfo=timezone.utc))
    assert client.get("/api/v1/customers", headers=auth).status_code == 200


def test_openapi_document_and_docs_page(client):
    spec = client.get("/api/v1/openapi.json").json()
    assert spec["openapi"] == "3.1.0"
    assert "/api/v1/invoices/{number}" in spec["paths"]
    assert spec["components"]["schemas"]["InvoiceIn"]["additionalProperties"] is False
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and "putInvoice" in page.text and "<script" not in page.text
    assert "importBankStatement" in page.text and "recordPayment" in page.text
    upload = spec["paths"]["/api/v1/bank-statements"]["post"]
    assert set(upload["requestBody"]["content"]) >= {"application/octet-stream", "application/xml", "text/csv"}
    assert {"403", "413", "415", "422"} <= set(upload["responses"])
    assert spec["paths"]["/api/v1/payments"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PaymentIn"}


def test_a_refusal_from_a_service_is_a_problem_naming_each_field_it_concerns(client, auth, session: Session):
    _customer(client, auth)
    items = [{**invoice_body(), "number": f"O-{n}"} for n in range(3)]
    assert client.post("/api/v1/invoices:bulk", json={"items": items}, headers=auth).status_code == 200
    items[0]["open_amount"], items[2]["open_amount"] = "1300.00", "1500.00"
    answer = client.post("/api/v1/invoices:bulk", json={"items": items}, headers=auth)
    assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
    assert answer.json()["errors"] == [
        {"field": "items[0].open_amount",
         "message": "1300.00 is more than the 1200.00 open in Encours; an open amount only goes down"},
        {"field": "items[2].open_amount",
         "message": "1500.00 is more than the 1200.00 open in Encours; an open amount only goes down"},
    ]
    assert "nothing was written" in answer.json()["detail"]
    assert {i.open_minor for i in session.scalars(select(Invoice).where(Invoice.number.like("O-%")))} == {120000}
