"""POST /api/v1/payments and /payments/{id}/cancel: the back-office's own service for payments
recorded by hand, audited under the key's name, published in the events feed and the webhooks."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.schemas import PaymentIn
from ledger.allocation import invariant_violations
from ledger.api_keys import create_key
from ledger.companies import create_company
from ledger.models import STAFF_METHODS, AuditEvent, Invoice, Payment, WebhookDelivery
from ledger.webhook_endpoints import add_endpoint
from payments import manual
from tests.api.conftest import CUSTOMER, invoice_body

PROBLEM = "application/problem+json"


def _book(client, auth) -> None:  # type: ignore[no-untyped-def]
    assert client.put("/api/v1/customers/C001", json=CUSTOMER, headers=auth).status_code in (200, 201)
    assert client.put("/api/v1/customers/C002", json=CUSTOMER, headers=auth).status_code in (200, 201)
    for number, due in (("F-1", "2026-11-10"), ("F-2", "2026-11-20")):
        answer = client.put(f"/api/v1/invoices/{number}", json=invoice_body(amount="300.00", due_date=due),
                            headers=auth)
        assert answer.status_code == 201, answer.text
    other = invoice_body(customer_ref="C002", amount="50.00")
    assert client.put("/api/v1/invoices/G-1", json=other, headers=auth).status_code == 201
    usd = invoice_body(currency="USD", amount="80.00")
    assert client.put("/api/v1/invoices/U-1", json=usd, headers=auth).status_code == 201


def _payment(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"customer_ref": "C001", "amount": "400.00", "currency": "EUR",
                               "received_on": "2026-11-24", "method": "cheque", "reference": "CHQ 0012"}
    body.update(changes)
    return body


def _open(session: Session) -> dict[str, str]:
    session.expire_all()
    return {i.number: f"{i.open_minor} {i.status}" for i in session.scalars(select(Invoice).order_by(Invoice.number))}


def test_the_api_methods_are_the_back_offices(client, auth) -> None:
    assert set(PaymentIn.model_fields["method"].annotation.__args__) == {m.value for m in STAFF_METHODS}


def test_a_payment_is_recorded_oldest_first_listed_audited_under_the_key_and_published(client, auth,
                                                                                       session: Session) -> None:
    _book(client, auth)
    add_endpoint(session, "ACME", "http://127.0.0.1:9/hook", ["payment.succeeded", "payment.cancelled"],
                 allow_private=True)
    session.commit()
    answer = client.post("/api/v1/payments", json=_payment(), headers=auth)
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert (created["provider"], created["method"], created["status"], created["amount"]) == (
        "manual", "cheque", "succeeded", "400.00")
    assert created["allocations"] == [{"invoice_number": "F-1", "amount": "300.00", "discount": "0.00"},
                                      {"invoice_number": "F-2", "amount": "100.00", "discount": "0.00"}]
    listed = client.get("/api/v1/payments", headers=auth).json()["items"]
    assert listed == [created]
    assert _open(session)["F-1"] == "0 paid" and _open(session)["F-2"] == "20000 partially_paid"
    audited = session.execute(select(AuditEvent.actor_type, AuditEvent.actor)
                              .where(AuditEvent.action == "payment.recorded")).all()
    assert audited == [("api", "sage-x3")]
    events = client.get("/api/v1/events", headers=auth).json()["items"]
    assert [(e["type"], e["record_id"]) for e in events if e["record"] == "payment"] == [
        ("payment.succeeded", created["id"])]

    cancelled = client.post(f"/api/v1/payments/{created['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["allocations"] == []
    assert _open(session)["F-1"] == "30000 open" and _open(session)["F-2"] == "30000 open"
    again = client.post(f"/api/v1/payments/{created['id']}/cancel", headers=auth)
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
    events = client.get("/api/v1/events", headers=auth).json()["items"]
    assert [e["type"] for e in events if e["record"] == "payment"] == ["payment.succeeded", "payment.cancelled"]
    session.expire_all()
    deliveries = session.execute(select(AuditEvent.action).join(WebhookDelivery, WebhookDelivery.audit_event_id
                                                                == AuditEvent.id).order_by(WebhookDelivery.id))
    assert list(deliveries.scalars()) == ["payment.recorded", "payment.cancelled"]
    assert invariant_violations(session) == []


def test_allocations_to_named_invoices_leave_the_rest_as_credit_and_replay_with_the_idempotency_key(
        client, auth, session: Session) -> None:
    _book(client, auth)
    body = _payment(amount="250.00", method="bank_transfer", reference="VIR 9",
                    allocations=[{"invoice_number": "F-2", "amount": "200.00"}])
    headers = {**auth, "Idempotency-Key": "pay-1"}
    first = client.post("/api/v1/payments", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["allocations"] == [{"invoice_number": "F-2", "amount": "200.00", "discount": "0.00"}]
    replay = client.post("/api/v1/payments", json=body, headers=headers)
    assert replay.status_code == 201 and replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(client.get("/api/v1/payments", headers=auth).json()["items"]) == 1
    assert _open(session)["F-1"] == "30000 open" and _open(session)["F-2"] == "10000 partially_paid"


def test_bad_payments_are_refused_naming_the_field_and_nothing_is_written(client, auth, session: Session) -> None:
    _book(client, auth)
    other = create_company(session, code="BETA", name="Beta SA", currency="EUR")
    session.commit()
    _, beta_key = create_key(session, "BETA", "beta-erp")
    session.commit()
    beta = {"Authorization": f"Bearer {beta_key}"}
    assert other.id
    assert client.put("/api/v1/customers/C001", json=CUSTOMER, headers=beta).status_code == 201
    assert client.put("/api/v1/invoices/B-1", json=invoice_body(), headers=beta).status_code == 201
    cases = [
        (_payment(customer_ref="NOPE"), "customer_ref"),
        (_payment(allocations=[{"invoice_number": "G-1", "amount": "10.00"}]), "allocations[0].invoice_number"),
        (_payment(allocations=[{"invoice_number": "B-1", "amount": "10.00"}]), "allocations[0].invoice_number"),
        (_payment(allocations=[{"invoice_number": "F-1", "amount": "350.00"}]), "allocations[0].amount"),
        (_payment(amount="100.00", allocations=[{"invoice_number": "F-1", "amount": "60.00"},
                                                {"invoice_number": "F-2", "amount": "60.00"}]), "allocations"),
        (_payment(amount="400.001"), "amount"),
        (_payment(currency="JPY", amount="400.50"), "amount"),
        (_payment(allocations=[{"invoice_number": "F-1", "amount": "10.001"}]), "allocations[0].amount"),
        (_payment(allocations=[{"invoice_number": "U-1", "amount": "10.00"}]), "allocations[0].invoice_number"),
        (_payment(currency="XYZ"), "currency"),
        (_payment(method="card"), "method"),
        (_payment(reference=""), "reference"),
        (_payment(received_on="2026-12-31"), "received_on"),
        (_payment(amount="0.00"), "amount"),
        (_payment(colour="blue"), "colour"),
    ]
    for body, field in cases:
        answer = client.post("/api/v1/payments", json=body, headers=auth)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        assert field in [e["field"] for e in answer.json()["errors"]], (body, answer.json())
    assert client.get("/api/v1/payments", headers=auth).json()["items"] == []
    assert session.scalar(select(AuditEvent.id).where(AuditEvent.action == "payment.recorded")) is None


# Refusals of the back-office's payment service (payments.manual), each with the one field it is about.
SERVICE_REFUSALS = [
    (_payment(reference=""), "reference"),
    (_payment(received_on="2026-12-31"), "received_on"),
    (_payment(amount="0.00"), "amount"),
    (_payment(allocations=[{"invoice_number": "F-1", "amount": "10.00"},
                           {"invoice_number": "F-1", "amount": "10.00"}]), "allocations"),
    (_payment(allocations=[{"invoice_number": "F-2", "amount": "10.00"},
                           {"invoice_number": "U-1", "amount": "10.00"}]), "allocations[1].invoice_number"),
    (_payment(allocations=[{"invoice_number": "F-1", "amount": "10.00"},
                           {"invoice_number": "F-2", "amount": "300.01"}]), "allocations[1].amount"),
    (_payment(allocations=[{"invoice_number": "F-2", "amount": "350.00"}]), "allocations[0].amount"),
    (_payment(amount="100.00", allocations=[{"invoice_number": "F-1", "amount": "60.00"},
                                            {"invoice_number": "F-2", "amount": "60.00"}]), "allocations"),
]


@pytest.mark.parametrize("reworded", [False, True], ids=["as-written", "message-ids-reworded"])
def test_each_refusal_of_the_payment_service_names_its_own_field_whatever_its_wording(
        client, auth, session: Session, monkeypatch: pytest.MonkeyPatch, reworded: bool) -> None:
    """The field comes from the service's error (`UserError.at(field=...)`), not from its English
    message id: rewording every message of payments.manual leaves each field where it was."""
    _book(client, auth)
    if reworded:
        monkeypatch.setattr(manual, "N_", lambda message_id: f"Reworded: {message_id}")
    for body, field in SERVICE_REFUSALS:
        answer = client.post("/api/v1/payments", json=body, headers=auth)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        problem = answer.json()
        assert [e["field"] for e in problem["errors"]] == [field], (body, problem)
        assert problem["errors"][0]["message"].startswith("Reworded: ") == reworded, problem
    assert client.get("/api/v1/payments", headers=auth).json()["items"] == []


def test_a_read_only_key_another_companys_payment_and_a_provider_payment_are_refused(client, auth,
                                                                                   session: Session) -> None:
    _book(client, auth)
    _, reader = create_key(session, "ACME", "reporting", read_only=True)
    session.commit()
    refused = client.post("/api/v1/payments", json=_payment(), headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    created = client.post("/api/v1/payments", json=_payment(), headers=auth).json()
    create_company(session, code="BETA", name="Beta SA", currency="EUR")
    session.commit()
    _, beta_key = create_key(session, "BETA", "beta-erp")
    session.commit()
    assert client.post(f"/api/v1/payments/{created['id']}/cancel",
                       headers={"Authorization": f"Bearer {beta_key}"}).status_code == 404
    assert client.post(f"/api/v1/payments/{created['id']}/cancel",
                       headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    assert client.post("/api/v1/payments/abc/cancel", headers=auth).status_code == 404
    assert client.post("/api/v1/payments/99999999999999999999/cancel", headers=auth).status_code == 404
    customer_id = session.scalar(select(Invoice.customer_id).where(Invoice.number == "F-1"))
    card = Payment(customer_id=customer_id, provider="stripe", provider_ref="pi_1", method="card",
                   amount_minor=10_00, currency="EUR", status="succeeded")
    session.add(card)
    session.commit()
    answer = client.post(f"/api/v1/payments/{card.id}/cancel", headers=auth)
    assert answer.status_code == 409 and "by hand" in answer.json()["detail"]
