from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import audit
from ledger.allocation import allocate
from ledger.models import Customer, Invoice, Payment
from ledger.money import Money
from tests.api.conftest import CUSTOMER, invoice_body


def test_payments_list_their_allocations_and_the_events_feed_pages_by_cursor(client, auth, session: Session):
    client.put("/api/v1/customers/C001", json=CUSTOMER, headers=auth)
    client.put("/api/v1/invoices/F-1", json=invoice_body(amount="300.00"), headers=auth)
    customer = session.scalar(select(Customer).where(Customer.ref == "C001"))
    invoice = session.scalar(select(Invoice).where(Invoice.number == "F-1"))
    payment = Payment(customer_id=customer.id, provider="stripe", provider_ref="pi_1", method="card",
                      amount_minor=100_00, currency="EUR", status="succeeded", received_on=date(2026, 11, 24))
    session.add(payment)
    session.flush()
    allocate(session, invoice, Money(100_00, "EUR"), payment=payment)
    audit.record(session, actor_type="provider", actor="stripe", action="payment.succeeded", entity_type="payment",
                 entity_id=payment.id, customer_id=customer.id)
    session.commit()
    payments = client.get("/api/v1/payments", headers=auth).json()["items"]
    assert [(p["provider_ref"], p["amount"], p["allocations"]) for p in payments] == [
        ("pi_1", "100.00", [{"invoice_number": "F-1", "amount": "100.00", "discount": "0.00"}])]
    first = client.get("/api/v1/events?limit=1", headers=auth).json()
    assert [e["type"] for e in first["items"]] == ["payment.succeeded"]
    assert first["items"][0]["customer_ref"] == "C001"
    after = client.get(f"/api/v1/events?after={first['next_cursor']}", headers=auth).json()
    assert after["items"] == [] and after["next_cursor"] == first["next_cursor"]
    assert client.get("/api/v1/events?after=garbage!", headers=auth).status_code == 422
