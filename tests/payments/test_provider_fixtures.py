"""The providers' own example payloads, signed and delivered as the providers would: every one is
answered 2xx and stored once; those about objects we did not create are marked "not ours", never
retried, and no money moves. (Sources and licences: tests/payments/fixtures/SOURCES.md.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.settings import Settings, load_settings
from ledger.models import Allocation, Invoice, Payment, WebhookEvent
from sandbox.gocardless_server import GoCardlessStandIn
from sandbox.gocardless_server import sign as gocardless_sign
from sandbox.localstripe_server import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET
from tests.conftest import TEST_SECRET
from tests.fakes.gocardless_server import gocardless, gocardless_server  # noqa: F401
from tests.fakes.localstripe_server import sign as stripe_sign

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def settings(db_url: str, gocardless: GoCardlessStandIn) -> Settings:  # noqa: F811
    return load_settings({
        "ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET, "ENCOURS_BASE_URL": "http://testserver",
        "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_BASE": "http://127.0.0.1:9",  # never reached
        **gocardless.settings(),
    })


def stripe_event(event_type: str, resource: str, **changes: Any) -> dict[str, Any]:
    """Stripe's example event, carrying Stripe's example `resource` as its object."""
    envelope = fixture("stripe/event.json")
    obj = {**fixture(f"stripe/{resource}.json"), **changes}
    return {**envelope, "id": f"{envelope['id']}_{event_type}", "type": event_type, "data": {"object": obj}}


STRIPE_EVENTS = [
    # (type, resource, changes, outcome): None = applied or ignored, "not_ours" = about nothing of ours
    ("payment_intent.succeeded", "payment_intent", {"status": "succeeded", "amount_received": 1099}, "not_ours"),
    ("payment_intent.processing", "payment_intent", {"status": "processing"}, "not_ours"),
    ("payment_intent.payment_failed", "payment_intent", {}, "not_ours"),
    ("charge.refunded", "charge", {"refunded": True, "amount_refunded": 100}, "not_ours"),
    ("charge.refunded", "charge", {"amount_refunded": 50, "payment_intent": "pi_1PgafyB7WZ01zgkWSjxsAJo3"}, "not_ours"),
    ("charge.dispute.created", "dispute", {}, "not_ours"),
    ("charge.dispute.closed", "dispute", {"status": "lost"}, "not_ours"),
    ("charge.refund.updated", "refund", {}, None),
    ("plan.created", "event", {}, None),
]


@pytest.mark.parametrize(("event_type", "resource", "changes", "outcome"), STRIPE_EVENTS)
def test_stripe_examples_are_answered_stored_and_move_no_money(
    client: TestClient, session: Session, event_type: str, resource: str, changes: dict[str, Any],
    outcome: str | None,
) -> None:
    body = json.dumps(stripe_event(event_type, resource, **changes)).encode()
    response = client.post("/webhooks/stripe", content=body,
                           headers={"Content-Type": "application/json", "Stripe-Signature": stripe_sign(body)})
    assert response.status_code == 200
    [stored] = session.scalars(select(WebhookEvent)).all()
    assert (stored.event_type, stored.processed_at is not None, stored.error) == (event_type, True, None)
    assert (stored.outcome, stored.next_attempt_at) == (outcome, None)
    assert session.scalar(select(func.count()).select_from(Payment)) == 0


def test_a_stripe_v2_thin_event_is_stored_and_ignored(client: TestClient, session: Session) -> None:
    body = (FIXTURES / "stripe/v2_thin_event.json").read_bytes()
    response = client.post("/webhooks/stripe", content=body,
                           headers={"Content-Type": "application/json", "Stripe-Signature": stripe_sign(body)})
    assert response.status_code == 200 and response.json()["outcomes"] == ["processed"]
    [stored] = session.scalars(select(WebhookEvent)).all()
    assert stored.event_id == "evt_234" and stored.processed_at is not None and stored.error is None


def test_gocardless_examples_are_answered_stored_and_move_no_money(
    client: TestClient, session: Session, invoices: list[Invoice],
) -> None:
    event = fixture("gocardless/event.json")  # mandates.cancelled, with links to a payment and more
    as_payment = {**event, "id": "EV124", "resource_type": "payments", "action": "confirmed"}
    body = json.dumps({"events": [*fixture("gocardless/webhook_body.json")["events"], event, as_payment],
                       "meta": {"webhook_id": "WB123"}}).encode()
    response = client.post("/webhooks/gocardless", content=body,
                           headers={"Content-Type": "application/json", "Webhook-Signature": gocardless_sign(body)})
    assert response.status_code == 200 and response.json()["received"] == 4
    session.expire_all()
    stored = {event.event_type: event for event in session.scalars(select(WebhookEvent))}
    assert set(stored) == {"subscriptions.created", "mandates.created", "mandates.cancelled", "payments.confirmed"}
    assert all(event.processed_at is not None and event.error is None and event.next_attempt_at is None
               for event in stored.values())
    assert {name: event.outcome for name, event in stored.items()} == {
        "subscriptions.created": None,  # not a resource we follow: ignored
        "mandates.created": "not_ours", "mandates.cancelled": "not_ours", "payments.confirmed": "not_ours",
    }
    assert session.scalar(select(func.count()).select_from(Payment)) == 0
    assert session.scalar(select(func.count()).select_from(Allocation)) == 0
    assert [(invoice.status, invoice.open_minor) for invoice in invoices] == \
        [("open", 1234_56), ("open", 500_00), ("open", 318_40)]
