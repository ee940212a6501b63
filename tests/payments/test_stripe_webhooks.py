"""POST /webhooks/stripe: payloads signed exactly as Stripe signs them (t=..., v1=HMAC-SHA256)."""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel import sqlite_writer
from kernel.settings import Settings, load_settings
from ledger.models import Allocation, AuditEvent, Checkout, Customer, Invoice, Payment, WebhookEvent
from payments.checkout import create_checkout
from sandbox.localstripe_server import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET
from tests.conftest import TEST_SECRET
from tests.fakes.localstripe_server import event_payload, sign
from tests.payments.test_webhooks import statements  # noqa: F401 - fixture

TODAY = date(2026, 11, 25)
INTENT = "pi_encours_test_0001"
CHARGE = "ch_encours_test_0001"


@pytest.fixture
def settings(db_url: str) -> Settings:
    # Nothing here calls Stripe's API: the webhook only verifies and applies.
    return load_settings({
        "ENCOURS_DATABASE_URL": db_url,
        "ENCOURS_SECRET_KEY": TEST_SECRET,
        "ENCOURS_BASE_URL": "http://testserver",
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # never reached
    })


@pytest.fixture
def checkout(session: Session, customer: Customer, invoices: list[Invoice]) -> Checkout:
    """A card checkout of the overdue invoice and the discounted one, its PaymentIntent created."""
    checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                               selection={invoices[0].id: None, invoices[1].id: None}, method="card", today=TODAY)
    checkout.provider, checkout.provider_ref = "stripe", INTENT
    session.commit()
    return checkout


def intent(checkout: Checkout, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": INTENT, "object": "payment_intent", "amount": checkout.amount_minor,
            "amount_received": checkout.amount_minor if status == "succeeded" else 0, "currency": "eur",
            "metadata": {"checkout_id": str(checkout.id)}, "status": status, **extra}


def charge(checkout: Checkout, **extra: Any) -> dict[str, Any]:
    return {"id": CHARGE, "object": "charge", "amount": checkout.amount_minor, "currency": "eur",
            "payment_intent": INTENT, "metadata": {}, **extra}


def deliver(client: TestClient, payload: bytes, signature: str | None = "sign") -> Any:
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        headers["Stripe-Signature"] = sign(payload)
    elif signature is not None:
        headers["Stripe-Signature"] = signature
    return client.post("/webhooks/stripe", content=payload, headers=headers)


def state(session: Session, invoices: list[Invoice]) -> tuple[list[tuple[str, int]], list[str], int]:
    session.expire_all()
    return (
        [(invoice.status, invoice.open_minor) for invoice in invoices[:2]],
        list(session.scalars(select(Payment.status).order_by(Payment.id))),
        session.scalar(select(func.count()).select_from(Allocation)) or 0,
    )


PAID = [("paid", 0), ("paid", 0)]
OPEN = [("open", 1234_56), ("open", 500_00)]


def test_succeeded_pays_the_invoices_with_the_locked_discount(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    response = deliver(client, event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_ok"))
    assert response.status_code == 200 and response.json()["outcomes"][0] == "processed"
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    discounts = session.scalars(select(Allocation.discount_minor).order_by(Allocation.id)).all()
    assert discounts == [0, 10_00]
    stored = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "evt_ok"))
    assert stored is not None and stored.provider == "stripe" and stored.processed_at is not None
    assert stored.event_type == "payment_intent.succeeded" and json.loads(stored.body)["id"] == "evt_ok"
    assert "stripe-signature" in stored.headers
    session.refresh(checkout)
    assert checkout.status == "succeeded"


@pytest.mark.parametrize("signature", [
    None,  # missing
    "",
    "t=1,v1=deadbeef",  # malformed and stale
    "garbage",
])
def test_a_missing_or_bad_signature_changes_nothing(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice], signature: str | None
) -> None:
    payload = event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_bad")
    response = deliver(client, payload, signature)
    assert response.status_code == 400
    assert state(session, invoices) == (OPEN, [], 0)
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def test_a_tampered_body_or_another_secret_changes_nothing(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    honest = event_payload("payment_intent.processing", intent(checkout, "processing"), "evt_t")
    tampered = honest.replace(b"payment_intent.processing", b"payment_intent.succeeded")
    assert deliver(client, tampered, sign(honest)).status_code == 400
    forged = event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_f")
    assert deliver(client, forged, sign(forged, secret="whsec_someone_else")).status_code == 400
    stale = int(time.time()) - 3600  # a replay from an hour ago: outside Stripe's 5-minute tolerance
    assert deliver(client, forged, sign(forged, timestamp=stale)).status_code == 400
    assert state(session, invoices) == (OPEN, [], 0)
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def test_a_duplicate_delivery_is_a_no_op(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    payload = event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_dup")
    assert deliver(client, payload).json()["outcomes"][0] == "processed"
    again = deliver(client, payload)  # Stripe retries with a fresh signature
    assert again.status_code == 200 and again.json()["outcomes"][0] == "duplicate"
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1


def test_a_duplicate_delivery_runs_one_read_and_leaves_the_stored_event_untouched(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice],
    statements: list[str],  # noqa: F811
) -> None:
    payload = event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_dup")
    assert deliver(client, payload).json()["outcomes"][0] == "processed"
    stored = session.scalars(select(WebhookEvent)).one()
    before = (stored.body, stored.headers, stored.received_at, stored.attempts, stored.processed_at)
    audits = session.scalar(select(func.count()).select_from(AuditEvent))
    statements.clear()
    # The same id with another body (a later state of the intent): still the stored event's delivery.
    other = event_payload("payment_intent.payment_failed", intent(checkout, "requires_payment_method"), "evt_dup")
    again = deliver(client, other)
    assert again.status_code == 200 and again.json()["outcomes"][0] == "duplicate"
    # One indexed read tells it: no write (on SQLite no wait for the writer), no apply.
    assert len(statements) == 1 and statements[0].startswith("SELECT webhook_events.event_id FROM webhook_events")
    session.expire_all()
    stored = session.scalars(select(WebhookEvent)).one()
    assert (stored.body, stored.headers, stored.received_at, stored.attempts, stored.processed_at) == before
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == audits


def test_a_duplicate_is_answered_while_another_delivery_holds_the_writer(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On SQLite a duplicate is told by a read, so it never queues behind the one writer (a new
    event still does, for as long as the writer's wait allows)."""
    payload = event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_dup")
    assert deliver(client, payload).json()["outcomes"] == ["processed"]
    monkeypatch.setattr(sqlite_writer, "WRITER_WAIT", 0)
    sessions = client.app.state.sessions  # type: ignore[attr-defined]
    with sqlite_writer.one_writer(sessions):  # a writer holding it, as a slow apply would
        again = deliver(client, payload)
        assert again.status_code == 200 and again.json()["outcomes"] == ["duplicate"]
        if session.get_bind().dialect.name == "sqlite":
            with pytest.raises(TimeoutError):
                deliver(client, event_payload("payment_intent.processing", intent(checkout, "processing"), "evt_new"))
    assert state(session, invoices) == (PAID, ["succeeded"], 2)


def test_a_new_event_is_applied_from_the_verified_payload_without_reading_it_back(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice],
    statements: list[str],  # noqa: F811
) -> None:
    payload = event_payload("payment_intent.payment_failed", intent(
        checkout, "requires_payment_method", last_payment_error={"code": "card_declined"}), "evt_new")
    assert deliver(client, payload).json()["outcomes"][0] == "processed"
    # Whether it is stored already (one read), whether it changes nothing (one read: it does, the
    # first decline), then stored already marked processed and applied in the same transaction:
    # no claim to write afterwards, the stored row never read back.
    assert statements[0].startswith("SELECT webhook_events.event_id FROM webhook_events")
    assert statements[1].startswith("SELECT checkouts.id") and "FROM payments JOIN checkouts" in statements[1]
    assert statements[2].startswith("INSERT INTO webhook_events")
    assert not any(s.startswith("UPDATE webhook_events") for s in statements)
    assert not any(s.startswith("SELECT") and "FROM webhook_events" in s for s in statements[1:])
    stored = session.scalars(select(WebhookEvent)).one()
    assert stored.processed_at is not None and stored.attempts == 1 and json.loads(stored.body)["id"] == "evt_new"
    assert session.scalars(select(Payment.failure_reason)).one() == "card_declined"


def test_an_event_that_changes_nothing_is_stored_processed_after_one_read(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice],
    statements: list[str],  # noqa: F811
) -> None:
    declined = intent(checkout, "requires_payment_method", last_payment_error={"code": "card_declined"})
    assert deliver(client, event_payload("payment_intent.payment_failed", declined, "evt_1")).json()["outcomes"] \
        == ["processed"]
    statements.clear()
    # The same decline told again under a new event id: nothing to change.
    assert deliver(client, event_payload("payment_intent.payment_failed", declined, "evt_2")).json()["outcomes"] \
        == ["processed"]
    assert [s.split(None, 3)[:3] for s in statements] == [["SELECT", "webhook_events.event_id", "FROM"],
                                                          ["SELECT", "checkouts.id,", "checkouts.provider,"],
                                                          ["INSERT", "INTO", "webhook_events"]]
    stored = session.scalars(select(WebhookEvent).where(WebhookEvent.event_id == "evt_2")).one()
    assert (stored.processed_at, stored.attempts, stored.next_attempt_at, stored.error, stored.outcome) == (
        stored.received_at, 1, None, None, None)
    assert session.scalars(select(Payment.failure_reason)).one() == "card_declined"
    # A decline with another reason changes something: applied through the handler.
    other = intent(checkout, "requires_payment_method", last_payment_error={"code": "insufficient_funds"})
    assert deliver(client, event_payload("payment_intent.payment_failed", other, "evt_3")).json()["outcomes"] \
        == ["processed"]
    session.expire_all()
    assert session.scalars(select(Payment.failure_reason)).one() == "insufficient_funds"


def test_a_success_reads_its_customer_company_and_invoices_once(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice],
    statements: list[str],  # noqa: F811
) -> None:
    """The local day, the audit row and the receipt all use them: loaded once, held to the end."""
    payload = event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_ok")
    assert deliver(client, payload).json()["outcomes"][0] == "processed"
    reads = [s.split(" FROM ", 1)[1].split()[0] for s in statements if s.startswith("SELECT ") and " FROM " in s]
    assert (reads.count("customers"), reads.count("companies"), reads.count("invoices")) == (1, 1, 1)
    # Its new state in one UPDATE; then, last, the company's receipt counter and the number it gave.
    writes = [s.split(" WHERE ")[0] for s in statements if s.startswith(("UPDATE payments", "UPDATE companies"))]
    assert [w.split(" SET ")[0] for w in writes] == ["UPDATE payments", "UPDATE companies", "UPDATE payments"]
    assert "status=" in writes[0] and "receipt_number" not in writes[0] and "receipt_number=" in writes[2]
    assert not any(s.startswith(("UPDATE", "INSERT", "DELETE")) for s in statements[statements.index(
        next(s for s in statements if s.startswith("UPDATE companies"))) + 2:] if "webhook_events" not in s)
    assert state(session, invoices) == (PAID, ["succeeded"], 2)


def test_succeeded_before_processing_ends_succeeded(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    deliver(client, event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_2"))
    deliver(client, event_payload("payment_intent.processing", intent(checkout, "processing"), "evt_1"))
    assert state(session, invoices) == (PAID, ["succeeded"], 2)


def test_processing_then_succeeded(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    deliver(client, event_payload("payment_intent.processing", intent(checkout, "processing"), "evt_1"))
    assert state(session, invoices) == (OPEN, ["processing"], 0)
    session.refresh(checkout)
    assert checkout.status == "processing"
    deliver(client, event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_2"))
    assert state(session, invoices) == (PAID, ["succeeded"], 2)


def test_a_declined_attempt_leaves_the_invoices_open_and_retryable(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    failed = intent(checkout, "requires_payment_method",
                    last_payment_error={"code": "card_declined", "message": "Your card was declined."})
    deliver(client, event_payload("payment_intent.payment_failed", failed, "evt_fail"))
    assert state(session, invoices) == (OPEN, ["pending"], 0)
    assert session.scalar(select(Payment.failure_reason)) == "Your card was declined."
    # The debtor tries again with another card on the same intent.
    deliver(client, event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_retry"))
    assert state(session, invoices) == (PAID, ["succeeded"], 2)


def test_a_refund_after_success_reverses_the_allocations(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    deliver(client, event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_ok"))
    partial = charge(checkout, refunded=False, amount_refunded=100_00)
    deliver(client, event_payload("charge.refunded", partial, "evt_partial"))
    # The refunded 100,00 comes back off the latest invoice settled (F-2), which also loses the
    # 10,00 discount it had for paying in full; the payment stands for the rest.
    assert state(session, invoices) == ([("paid", 0), ("partially_paid", 110_00)], ["succeeded"], 2)
    full = charge(checkout, refunded=True, amount_refunded=checkout.amount_minor)
    deliver(client, event_payload("charge.refunded", full, "evt_refund"))
    assert state(session, invoices) == (OPEN, ["refunded"], 0)
    # A late, older success never moves it back.
    deliver(client, event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_late"))
    assert state(session, invoices) == (OPEN, ["refunded"], 0)


def invariant(session: Session, invoices: list[Invoice]) -> None:
    """total = open + Σ allocation.amount + Σ allocation.discount, for every invoice."""
    session.expire_all()
    for invoice in invoices:
        allocated = session.execute(
            select(func.coalesce(func.sum(Allocation.amount_minor), 0), func.coalesce(func.sum(Allocation.discount_minor), 0))
            .where(Allocation.invoice_id == invoice.id)).one()
        assert invoice.total_minor == invoice.open_minor + allocated[0] + allocated[1], invoice.number


def test_partial_refunds_reopen_what_was_refunded_and_nothing_twice(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    deliver(client, event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_ok"))
    first = charge(checkout, refunded=False, amount_refunded=30_00)
    deliver(client, event_payload("charge.refunded", first, "evt_r1"))
    assert state(session, invoices)[0] == [("paid", 0), ("partially_paid", 40_00)]  # 30,00 + the 10,00 discount
    invariant(session, invoices)
    deliver(client, event_payload("charge.refunded", first, "evt_r1_again"))  # the same total again: no change
    second = charge(checkout, refunded=False, amount_refunded=600_00)  # 570,00 more: F-2 its 460,00 left, F-1 110,00
    deliver(client, event_payload("charge.refunded", second, "evt_r2"))
    assert state(session, invoices) == ([("partially_paid", 110_00), ("open", 500_00)], ["succeeded"], 1)
    invariant(session, invoices)
    payment = session.scalars(select(Payment)).one()
    assert (payment.amount_minor, payment.refunded_minor) == (checkout.amount_minor - 600_00, 600_00)
    # Older, smaller totals arriving late change nothing.
    deliver(client, event_payload("charge.refunded", first, "evt_r1_late"))
    assert state(session, invoices)[0] == [("partially_paid", 110_00), ("open", 500_00)]


def test_a_dispute_is_recorded_and_only_a_lost_one_charges_back(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    deliver(client, event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_ok"))
    dispute = {"id": "dp_1", "object": "dispute", "amount": checkout.amount_minor, "currency": "eur",
               "charge": CHARGE, "payment_intent": INTENT, "reason": "fraudulent"}
    deliver(client, event_payload("charge.dispute.created", {**dispute, "status": "needs_response"}, "evt_d1"))
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.actor == "stripe")).all()
    assert "payment.dispute_opened" in actions
    deliver(client, event_payload("charge.dispute.closed", {**dispute, "status": "won"}, "evt_won"))
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    deliver(client, event_payload("charge.dispute.closed", {**dispute, "status": "lost"}, "evt_lost"))
    assert state(session, invoices) == (OPEN, ["charged_back"], 0)


def not_ours(session: Session, event_id: str) -> WebhookEvent:
    """The stored event, checked to be done with as "not ours": processed, no error, no retry."""
    stored = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
    assert stored is not None and stored.processed_at is not None and stored.attempts == 1
    assert stored.outcome == "not_ours" and stored.error is None and stored.next_attempt_at is None
    return stored


def test_an_event_for_an_unknown_checkout_is_kept_as_not_ours_and_never_retried(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    stray = {**intent(checkout, "succeeded"), "id": "pi_not_ours", "metadata": {"checkout_id": "987654"}}
    response = deliver(client, event_payload("payment_intent.succeeded", stray, "evt_stray"))
    assert response.status_code == 200
    stored = not_ours(session, "evt_stray")
    assert "pi_not_ours is none of ours" in (stored.note or "")
    assert state(session, invoices) == (OPEN, [], 0)


def test_an_intent_claiming_another_checkout_is_refused(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    wrong = {**intent(checkout, "succeeded"), "id": "pi_someone_else"}  # our checkout id, another intent
    assert deliver(client, event_payload("payment_intent.succeeded", wrong, "evt_w")).status_code == 200
    not_ours(session, "evt_w")
    assert state(session, invoices) == (OPEN, [], 0)


def test_an_intent_of_someone_else_naming_a_bank_transfer_checkout_pays_nothing(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    from payments.bank_transfer import BankTransferProvider

    transfer = create_checkout(session, customer=customer, contact=customer.primary_contact,
                               selection={invoices[2].id: None}, method="bank_transfer", today=TODAY)
    BankTransferProvider().start(session, transfer, load_settings({"ENCOURS_SECRET_KEY": TEST_SECRET}), "http://x")
    session.commit()
    forged = {"id": "pi_other_integration", "object": "payment_intent", "amount": transfer.amount_minor,
              "amount_received": transfer.amount_minor, "currency": "eur", "status": "succeeded",
              "metadata": {"checkout_id": str(transfer.id)}}
    assert deliver(client, event_payload("payment_intent.succeeded", forged, "evt_forged")).status_code == 200
    not_ours(session, "evt_forged")
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Payment)) == 0
    assert (invoices[2].status, invoices[2].open_minor) == ("open", 318_40)
    assert session.get_one(Checkout, transfer.id).status == "open"


@pytest.mark.parametrize("change", [
    {"amount": 1_00, "amount_received": 1_00},  # another amount than the checkout's
    {"currency": "usd"},  # another currency
    {"amount_received": 5_00},  # captured only in part
])
def test_our_intent_with_another_amount_or_currency_pays_nothing(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice], change: dict[str, Any]
) -> None:
    odd = {**intent(checkout, "succeeded"), **change}
    assert deliver(client, event_payload("payment_intent.succeeded", odd, "evt_odd")).status_code == 200
    not_ours(session, "evt_odd")
    assert state(session, invoices) == (OPEN, [], 0)


def test_a_charge_of_someone_elses_intent_is_not_ours(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    stray = {**charge(checkout), "payment_intent": "pi_elsewhere", "refunded": True}
    assert deliver(client, event_payload("charge.refunded", stray, "evt_cr")).status_code == 200
    not_ours(session, "evt_cr")


def test_other_event_types_are_stored_and_ignored(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    response = deliver(client, event_payload("customer.created", {"id": "cus_1", "object": "customer"}, "evt_c"))
    assert response.status_code == 200 and response.json()["outcomes"][0] == "processed"
    assert state(session, invoices) == (OPEN, [], 0)


def test_a_kept_event_is_applied_by_the_workers_retry(
    client: TestClient, session: Session, session_factory: Any, checkout: Checkout, invoices: list[Invoice],
    settings: Settings,
) -> None:
    from kernel.clock import clock
    from payments import webhooks

    checkout.provider, checkout.provider_ref = None, None  # our side has not recorded its intent yet
    session.commit()
    response = deliver(client, event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_r"))
    assert response.json()["outcomes"][0] == "kept for retry"
    assert state(session, invoices) == (OPEN, [], 0)

    checkout.provider, checkout.provider_ref = "stripe", INTENT
    session.commit()
    clock.set(clock.now() + webhooks.RETRY.backoff(1) * 2)
    report = webhooks.retry_due(session_factory, webhooks.registered_handlers(settings))
    assert (report.processed, report.failed) == (1, 0)
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    stored = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "evt_r"))
    assert stored is not None and stored.processed_at is not None and stored.error is None and stored.attempts == 2


@pytest.mark.parametrize("signature", ["t=1,v1=\u00e9t\u00e9".encode("utf-8"), "t=1,v1=caf\u00e9".encode("latin-1")])
def test_a_non_ascii_signature_is_refused_with_400_not_a_crash(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice], signature: bytes
) -> None:
    payload = event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_accent")
    response = client.post("/webhooks/stripe", content=payload,
                           headers={"Content-Type": "application/json", "Stripe-Signature": signature})
    assert response.status_code == 400
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
    assert state(session, invoices) == (OPEN, [], 0)


@pytest.mark.parametrize("offset", [-3600, 3600])  # an hour old, or dated an hour ahead
def test_a_signature_outside_the_tolerance_on_either_side_is_refused(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice], offset: int
) -> None:
    payload = event_payload("payment_intent.succeeded", intent(checkout, "succeeded"), "evt_when")
    response = deliver(client, payload, sign(payload, timestamp=int(time.time()) + offset))
    assert response.status_code == 400
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
    assert state(session, invoices) == (OPEN, [], 0)


def test_a_v2_thin_event_with_an_iso_date_is_stored_and_ignored(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    thin = json.dumps({
        "id": "evt_test_65R9Ijk8cs7Yd6sTPZ2h8wXfqAtRBPlHxZD5lPTLzmN", "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered", "livemode": False,
        "created": "2024-09-17T06:20:52.246Z",
        "related_object": {"id": "mtr_test_61R9IeFmdP6Ik2cmV41IHHGiUfM5lGpQ", "type": "billing.meter",
                           "url": "/v1/billing/meters/mtr_test_61R9IeFmdP6Ik2cmV41IHHGiUfM5lGpQ"},
    }).encode()
    response = deliver(client, thin)
    assert response.status_code == 200 and response.json()["outcomes"] == ["processed"]
    stored = session.scalar(select(WebhookEvent).where(WebhookEvent.provider == "stripe"))
    assert stored is not None and stored.processed_at is not None and stored.error is None
    assert state(session, invoices) == (OPEN, [], 0)


def test_event_times_are_read_from_unix_and_iso_dates() -> None:
    from datetime import datetime, timezone

    from payments.stripe import event_time

    assert event_time(1795600000) == datetime(2026, 11, 25, 9, 46, 40, tzinfo=timezone.utc)
    assert event_time("2024-09-17T06:20:52.246Z") == datetime(2024, 9, 17, 6, 20, 52, 246000, tzinfo=timezone.utc)
    assert event_time(None) is None and event_time("yesterday") is None


def test_a_rotated_secret_verifies_with_either_signature_in_the_header(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    # While an endpoint's secret is rolled, Stripe signs with the old and the new one: one v1 each.
    for n, order in enumerate(((WEBHOOK_SECRET, "whsec_the_other_one"), ("whsec_the_other_one", WEBHOOK_SECRET))):
        payload = event_payload("payment_intent.processing", intent(checkout, "processing"), f"evt_rolled_{n}")
        at = int(time.time())
        signatures = ",".join(sign(payload, secret, at).split(",")[1] for secret in order)
        response = deliver(client, payload, f"t={at},{signatures}")
        assert response.status_code == 200 and response.json()["outcomes"] == ["processed"], response.text
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 2


@pytest.mark.parametrize("body", [b"{not json", b"", b"[]", b'{"id": "evt_no_type"}', b"\xff\xfe{}"])
def test_a_signed_body_that_is_not_an_event_is_refused_and_not_stored(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice], body: bytes
) -> None:
    response = deliver(client, body)  # signed with our secret: the check passes, the body is no event
    assert response.status_code == 400
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def test_a_duplicate_is_answered_as_before(
    client: TestClient, session: Session, checkout: Checkout, invoices: list[Invoice]
) -> None:
    payload = event_payload("payment_intent.processing", intent(checkout, "processing"), "evt_same_answer")
    assert deliver(client, payload).status_code == 200
    again = deliver(client, payload)
    assert again.status_code == 200 and again.headers["content-type"] == "application/json"
    assert again.content == b'{"received":1,"outcomes":["duplicate"]}'  # what JSONResponse wrote
    assert again.headers["x-request-id"] and again.headers["x-content-type-options"] == "nosniff"


# The signature scheme against the SDK's own: `verify_signature` must accept what Stripe's
# `WebhookSignature.verify_header` accepts, and refuse what it refuses, but for the two stricter
# rules it documents (a time in the future, more than one time).

SECRET = "whsec_sdk_0123456789"
BODY = b'{"id":"evt_sdk","object":"event","type":"payment_intent.succeeded","data":{"object":{}}}'


def _headers(now: int) -> dict[str, str]:
    import stripe

    good = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, timestamp=now)
    digest = good.split("v1=")[1]
    other = stripe.WebhookSignature.generate_signature_header(BODY.decode(), "whsec_other", timestamp=now)
    other_digest = other.split("v1=")[1]
    return {
        "the SDK's": good,
        "rotated, ours second": f"t={now},v1={other_digest},v1={digest}",
        "rotated, ours first": f"t={now},v1={digest},v1={other_digest}",
        "with a v0": f"t={now},v0={other_digest},v1={digest}",
        "the scheme's order reversed": f"v1={digest},t={now}",
        "another secret": other,
        "no v1": f"t={now},v0={digest}",
        "no time": f"v1={digest}",
        "a time that is no number": f"t=soon,v1={digest}",
        "an empty one": "",
        "garbage": "garbage",
        "upper-case hex": f"t={now},v1={digest.upper()}",
        "a digest cut short": f"t={now},v1={digest[:-2]}",
        "stale": stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, timestamp=now - 301),
        "just in time": stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, timestamp=now - 299),
    }


@pytest.mark.parametrize("name", list(_headers(0)))
def test_the_signature_check_agrees_with_the_sdks(name: str) -> None:
    import stripe

    from payments.base import SignatureError
    from payments.stripe import verify_signature

    now = int(time.time())
    header = _headers(now)[name]
    try:
        stripe.WebhookSignature.verify_header(BODY, header, SECRET, tolerance=300)
        sdk = True
    except stripe.SignatureVerificationError:
        sdk = False
    try:
        verify_signature(BODY, header, SECRET, now)
        ours = True
    except SignatureError:
        ours = False
    assert ours == sdk, (name, header)
    if name in ("the SDK's", "rotated, ours second", "rotated, ours first", "with a v0", "just in time"):
        assert ours, name
    tampered = BODY.replace(b"succeeded", b"canceled!")
    with pytest.raises(SignatureError):
        verify_signature(tampered, header, SECRET, now)


def test_the_signature_check_is_stricter_than_the_sdk_on_time() -> None:
    import stripe

    from payments.base import SignatureError
    from payments.stripe import verify_signature

    now = int(time.time())
    ahead = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, timestamp=now + 301)
    stripe.WebhookSignature.verify_header(BODY, ahead, SECRET, tolerance=300)  # the SDK takes it
    with pytest.raises(SignatureError, match="future"):
        verify_signature(BODY, ahead, SECRET, now)
    digest = ahead.split("v1=")[1]
    with pytest.raises(SignatureError, match="single timestamp"):
        verify_signature(BODY, f"t={now + 301},t={now},{'v1=' + digest}", SECRET, now)
