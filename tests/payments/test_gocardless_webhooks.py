"""POST /webhooks/gocardless with events made and signed by the stand-in, as GoCardless sends them."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from kernel.clock import clock
from kernel.settings import Settings, load_settings
from ledger.models import Allocation, Checkout, Customer, Invoice, OutboxMessage, Payment, WebhookEvent
from payments import collections
from payments import gocardless as gc
from payments import webhooks
from payments.checkout import create_checkout
from sandbox.gocardless_server import GoCardlessStandIn, sign
from tests.conftest import TEST_SECRET
from tests.fakes.gocardless_server import gocardless, gocardless_server  # noqa: F401
from tests.payments.test_webhooks import statements  # noqa: F401 - fixture

TODAY = date(2026, 11, 25)
PAID = [("paid", 0), ("paid", 0)]
OPEN = [("open", 1234_56), ("open", 500_00)]


@pytest.fixture
def settings(db_url: str, gocardless: GoCardlessStandIn) -> Settings:  # noqa: F811
    return load_settings({
        "ENCOURS_DATABASE_URL": db_url,
        "ENCOURS_SECRET_KEY": TEST_SECRET,
        "ENCOURS_BASE_URL": "http://testserver",
        **gocardless.settings(),
    })


def post_to(client: TestClient) -> Any:
    return lambda body, headers: client.post("/webhooks/gocardless", content=body, headers=headers).status_code


def deliver(client: TestClient, standin: GoCardlessStandIn, **options: Any) -> list[int | None]:
    return [delivery.status for delivery in standin.flush_webhooks(post=post_to(client), **options)]


def state(session: Session, invoices: list[Invoice]) -> tuple[list[tuple[str, int]], list[str], int]:
    session.expire_all()
    return (
        [(invoice.status, invoice.open_minor) for invoice in invoices[:2]],
        list(session.scalars(select(Payment.status).order_by(Payment.id))),
        session.scalar(select(func.count()).select_from(Allocation)) or 0,
    )


def started(session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
            method: str = "instant_transfer", instant_first: bool = False) -> tuple[Checkout, str]:
    """A checkout of the overdue invoice and the discounted one, started; its flow id."""
    checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                               selection={invoices[0].id: None, invoices[1].id: None}, method=method, today=TODAY)
    checkout.instant_first_payment = instant_first
    provider = gc.InstantBankPayProvider() if method == "instant_transfer" else gc.DirectDebitProvider()
    result = provider.start(session, checkout, settings, settings.base_url)
    session.commit()
    assert result.redirect_url
    return checkout, result.redirect_url.rsplit("/", 1)[1]


def payment_of(standin: GoCardlessStandIn) -> str:
    [payment] = standin.all("payments")
    return str(payment["id"])


def test_an_instant_payment_is_processing_then_settled_by_confirmed(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    assert deliver(client, gocardless) == [200]  # payments.created + billing_requests.fulfilled, one request
    assert state(session, invoices) == (OPEN, ["processing"], 0)
    session.refresh(checkout)
    assert checkout.status == "processing"

    gocardless.move_payment(payment_of(gocardless), "confirmed")
    gocardless.move_payment(payment_of(gocardless), "paid_out")
    assert deliver(client, gocardless) == [200]
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    assert session.scalars(select(Allocation.discount_minor).order_by(Allocation.id)).all() == [0, 10_00]
    session.refresh(checkout)
    assert checkout.status == "succeeded"
    stored = session.scalars(select(WebhookEvent.event_type).where(WebhookEvent.provider == "gocardless")
                             .order_by(WebhookEvent.id)).all()
    assert stored == ["payments.created", "billing_requests.fulfilled", "payments.confirmed", "payments.paid_out"]
    assert session.scalar(select(OutboxMessage.kind).where(OutboxMessage.customer_id == customer.id)) == "receipt"


def test_a_request_of_n_events_stores_n_and_a_duplicate_stores_nothing(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn, statements: list[str],  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    gocardless.move_payment(payment_of(gocardless), "confirmed")
    [delivery] = gocardless.flush_webhooks(post=post_to(client), batch_size=10)
    assert len(json.loads(delivery.body)["events"]) == 3
    headers = {"Content-Type": "application/json", "Webhook-Signature": sign(delivery.body)}
    stored = session.scalar(select(func.count()).select_from(WebhookEvent))
    assert stored == 3
    statements.clear()
    again = client.post("/webhooks/gocardless", content=delivery.body, headers=headers)  # GoCardless retries
    assert again.status_code == 200 and again.json() == {"received": 3, "outcomes": ["duplicate"] * 3}
    if session.get_bind().dialect.name == "sqlite":
        # One read of the three ids tells it, on the event loop: no write, no wait for the writer.
        assert len(statements) == 1 and statements[0].startswith("SELECT webhook_events.event_id FROM webhook_events")
    else:
        # One conflicting insert per event, nothing read, nothing applied.
        assert len(statements) == 3 and all(s.startswith("INSERT INTO webhook_events") for s in statements)
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 3
    assert state(session, invoices) == (PAID, ["succeeded"], 2)


@pytest.mark.parametrize("signature", [None, "", "deadbeef", "sha256=0000"])
def test_a_missing_or_bad_signature_answers_498_and_stores_nothing(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn, signature: str | None,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    gocardless.move_payment(payment_of(gocardless), "confirmed")
    body = gocardless.webhook_body(gocardless.pending)
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Webhook-Signature"] = signature
    assert client.post("/webhooks/gocardless", content=body, headers=headers).status_code == 498
    tampered = body.replace(b'"confirmed"', b'"paid_out"')
    assert client.post("/webhooks/gocardless", content=tampered,
                       headers={"Webhook-Signature": sign(body)}).status_code == 498
    forged = client.post("/webhooks/gocardless", content=body, headers={"Webhook-Signature": sign(body, "other")})
    assert forged.status_code == 498
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
    assert state(session, invoices) == (OPEN, [], 0)


def test_a_signed_body_that_is_no_webhook_is_refused(client: TestClient, session: Session) -> None:
    for body in (b"not json", b'{"no_events": []}', b'{"events": [{"id": "EV1"}]}'):
        assert client.post("/webhooks/gocardless", content=body,
                           headers={"Webhook-Signature": sign(body)}).status_code == 498
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


@pytest.mark.parametrize("order", ["reversed", "paid_out_first"])
def test_events_out_of_order_end_settled(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn, order: str,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    payment = payment_of(gocardless)
    gocardless.move_payment(payment, "submitted")
    gocardless.move_payment(payment, "confirmed")
    gocardless.move_payment(payment, "paid_out")
    if order == "reversed":  # paid_out, confirmed, submitted, fulfilled, created: one event per request
        statuses = deliver(client, gocardless, order=lambda events: events[::-1], batch_size=1)
    else:  # paid_out alone first (its payment unknown to us yet: GoCardless is asked), the rest later
        events = list(gocardless.pending)
        gocardless.pending[:] = [events[-1]]
        statuses = deliver(client, gocardless)
        gocardless.pending[:] = events[:-1]
        statuses += deliver(client, gocardless)
    assert set(statuses) == {200}
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    session.refresh(checkout)
    assert checkout.status == "succeeded"
    assert session.scalar(select(func.count()).select_from(WebhookEvent).where(WebhookEvent.error.is_not(None))) == 0


@pytest.mark.parametrize("failure", ["failed", "cancelled"])
def test_a_failed_payment_leaves_the_invoices_open_and_tells_the_debtor(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn, failure: str,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    gocardless.move_payment(payment_of(gocardless), failure, cause="insufficient_funds",
                            description="The customer's account had insufficient funds to make this payment.")
    deliver(client, gocardless)
    assert state(session, invoices) == (OPEN, ["failed"], 0)
    assert session.scalar(select(Payment.failure_reason)) == \
        "The customer's account had insufficient funds to make this payment."
    session.refresh(checkout)
    assert checkout.status == "failed"
    email = session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "payment_failed"))
    assert email is not None and "/p/" in email.body_text  # a fresh link to pay again
    # A late "confirmed" never brings a failed payment back.
    gocardless.move_payment(payment_of(gocardless), "confirmed")
    deliver(client, gocardless)
    assert state(session, invoices) == (OPEN, ["failed"], 0)


def test_a_failure_gocardless_will_retry_is_not_final(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    payment = payment_of(gocardless)
    gocardless.move_payment(payment, "failed", cause="insufficient_funds", will_attempt_retry=True)
    gocardless.move_payment(payment, "resubmission_requested")
    gocardless.move_payment(payment, "confirmed")
    # The failed attempt arrives last, after the retry was confirmed: it changes nothing.
    deliver(client, gocardless, order=lambda events: events[:2] + events[3:] + events[2:3])
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    assert session.scalar(select(func.count()).select_from(OutboxMessage)
                          .where(OutboxMessage.kind == "payment_failed")) == 0


def test_a_mandate_that_ended_before_its_fulfilled_event_leaves_nothing_waiting(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices, method="direct_debit")
    gocardless.fulfil(flow)
    gocardless.move_mandate(gocardless.all("mandates")[0]["id"], "failed", cause="invalid_bank_details")
    deliver(client, gocardless, order=lambda events: events[::-1], batch_size=1)
    session.refresh(customer)
    session.refresh(checkout)
    assert (customer.gocardless_mandate_status, checkout.status) == ("failed", "failed")


@pytest.mark.parametrize("undo", ["late_failure", "charged_back"])
def test_a_late_failure_or_chargeback_reverses_a_settled_payment(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn, undo: str,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    gocardless.move_payment(payment_of(gocardless), "confirmed")
    deliver(client, gocardless)
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    gocardless.move_payment(payment_of(gocardless), undo, cause="refer_to_payer")
    deliver(client, gocardless)
    assert state(session, invoices) == (OPEN, ["failed" if undo == "late_failure" else "charged_back"], 0)
    kinds = session.scalars(select(OutboxMessage.kind).order_by(OutboxMessage.id)).all()
    assert kinds == ["receipt", "payment_failed"]


def test_a_direct_debit_mandate_moves_forward_only(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices, method="direct_debit")
    gocardless.fulfil(flow)
    [mandate] = gocardless.all("mandates")
    gocardless.move_mandate(mandate["id"], "submitted")
    gocardless.move_mandate(mandate["id"], "active")
    # active arrives before created and submitted: it stays active.
    deliver(client, gocardless, order=lambda events: events[::-1], batch_size=1)
    session.refresh(customer)
    assert (customer.gocardless_mandate_id, customer.gocardless_mandate_status, customer.gocardless_mandate_scheme) \
        == (mandate["id"], "active", "sepa_core")
    session.refresh(checkout)
    assert checkout.status == "processing"  # waiting for the worker to debit it
    gocardless.move_mandate(mandate["id"], "cancelled", cause="bank_account_closed")
    gocardless.move_mandate(mandate["id"], "submitted")  # stale
    deliver(client, gocardless)
    session.refresh(customer)
    assert customer.gocardless_mandate_status == "cancelled"
    session.refresh(checkout)
    assert checkout.status == "failed"  # its mandate ended before it was debited: the invoices are open to pay


@pytest.mark.parametrize("action", ["failed", "expired"])
def test_a_mandate_that_fails_or_expires_is_recorded(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn, action: str,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices, method="direct_debit")
    gocardless.fulfil(flow)
    gocardless.move_mandate(gocardless.all("mandates")[0]["id"], action)
    deliver(client, gocardless)
    session.refresh(customer)
    assert customer.gocardless_mandate_status == action


def test_an_instant_first_payment_and_its_mandate(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices, method="direct_debit", instant_first=True)
    gocardless.fulfil(flow)
    gocardless.move_payment(payment_of(gocardless), "confirmed")
    gocardless.move_mandate(gocardless.all("mandates")[0]["id"], "active")
    deliver(client, gocardless)
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    assert session.scalar(select(Payment.method)) == "instant_transfer"  # the first payment did not wait
    session.refresh(customer)
    assert customer.gocardless_mandate_status == "active"

    # Later, an instant payment from a customer with that mandate asks for no second mandate.
    later = create_checkout(session, customer=customer, contact=None, selection={invoices[2].id: None},
                            method="direct_debit", today=TODAY)
    later.instant_first_payment = True
    gc.DirectDebitProvider().start(session, later, settings, settings.base_url)
    request = gocardless.get("billing_requests", later.provider_ref or "")
    assert request["mandate_request"] is None and request["payment_request"]["amount"] == 318_40


def test_an_event_naming_nothing_of_ours_is_not_ours_and_a_stored_one_of_ours_is_applied_by_the_worker(
    client: TestClient, session: Session, session_factory: sessionmaker[Session], settings: Settings,
    customer: Customer, invoices: list[Invoice], gocardless: GoCardlessStandIn,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stray = gocardless.emit("payments", "confirmed", {"payment": "PM0000UNKNOWN"})
    assert deliver(client, gocardless) == [200]
    stored = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == stray["id"]))
    assert stored is not None and stored.processed_at is not None and stored.attempts == 1
    assert stored.outcome == "not_ours" and stored.next_attempt_at is None  # never retried
    assert "not on our GoCardless account" in (stored.note or "")  # GoCardless was asked, and knows no such payment

    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    event = gocardless.move_payment(payment_of(gocardless), "confirmed")
    gocardless.pending.clear()
    body = gocardless.webhook_body([event])
    with session_factory() as writer:  # stored but never processed (a crash between the two)
        webhooks.store_event(writer, "gocardless", event["id"], "payments.confirmed",
                             json.dumps(event), {})
        writer.commit()
    clock.set(clock.now() + webhooks.RETRY.backoff(1) * 2)
    report = webhooks.retry_due(session_factory, webhooks.registered_handlers(settings))
    assert (report.processed, report.failed) == (1, 0)  # ours applied; the stray one is done with
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    assert body  # the request itself would have been signed as usual


def test_payments_and_mandates_made_by_something_else_are_ignored(
    client: TestClient, session: Session, settings: Settings, gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    gocardless.resources["payments"] = {"PM0001OTHER": {"id": "PM0001OTHER", "metadata": {}, "links": {}}}
    gocardless.resources["mandates"] = {"MD0001OTHER": {"id": "MD0001OTHER", "metadata": {}, "links": {}}}
    gocardless.move_payment("PM0001OTHER", "confirmed")
    gocardless.move_mandate("MD0001OTHER", "active")
    [delivery] = gocardless.flush_webhooks(post=lambda body, headers: client.post(
        "/webhooks/gocardless", content=body, headers=headers).status_code)
    assert delivery.status == 200
    stored = session.scalars(select(WebhookEvent).where(WebhookEvent.provider == "gocardless")).all()
    assert len(stored) == 2 and all(event.processed_at is not None and event.error is None for event in stored)
    assert [event.outcome for event in stored] == ["not_ours", "not_ours"]
    assert all(event.next_attempt_at is None for event in stored)
    assert session.scalar(select(func.count()).select_from(Payment)) == 0


def settings_env(settings: Settings) -> dict[str, str]:
    return {
        "ENCOURS_SECRET_KEY": TEST_SECRET,
        "ENCOURS_BASE_URL": settings.base_url,
        "GOCARDLESS_ACCESS_TOKEN": str(settings.gocardless_access_token),
        "GOCARDLESS_WEBHOOK_SECRET": str(settings.gocardless_webhook_secret),
        "GOCARDLESS_BASE_URL": str(settings.gocardless_base_url),
    }


# --- collecting on mandates (the worker) ---


def with_active_mandate(session: Session, standin: GoCardlessStandIn, customer: Customer) -> str:
    mandate_id = "MD0009ACTIVE"
    standin.resources.setdefault("mandates", {})[mandate_id] = {
        "id": mandate_id, "scheme": "sepa_core", "status": "active", "metadata": {}, "links": {}}
    customer.gocardless_mandate_id, customer.gocardless_mandate_status = mandate_id, "active"
    customer.gocardless_mandate_scheme = "sepa_core"
    session.commit()
    return mandate_id


def test_the_worker_collects_due_invoices_once_even_run_twice(
    client: TestClient, session: Session, session_factory: sessionmaker[Session], settings: Settings,
    customer: Customer, invoices: list[Invoice], gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    from encours import worker

    with_active_mandate(session, gocardless, customer)
    customer.company.disabled_methods = ["direct_debit"]
    session.commit()
    assert gc.collect_due(settings, session_factory).created == 0  # turned off by the company
    customer.company.disabled_methods = []
    session.commit()
    report = worker.run_once(settings, session_factory)  # `encours worker`'s step
    assert (report.collections.created, report.collections.failed) == (1, 0)  # only F-1 is due (1 November)
    assert "direct debits: 1 created, 0 failed" in report.lines()
    again = gc.collect_due(settings, session_factory)
    assert (again.created, again.failed) == (0, 0)
    [payment] = gocardless.all("payments")
    assert (payment["amount"], payment["currency"], payment["links"]["mandate"]) == (1234_56, "EUR", "MD0009ACTIVE")
    keys = [headers["idempotency-key"] for method, path, headers in gocardless.requests if path == "/payments"]
    assert keys == [f"collect-{invoices[0].id}-{1234_56}"]

    # The mandate's payment goes through: the invoice is paid, the others wait for their due date.
    gocardless.move_payment(payment["id"], "confirmed")
    deliver(client, gocardless)
    session.expire_all()
    assert [(invoice.status, invoice.open_minor) for invoice in invoices] == \
        [("paid", 0), ("open", 500_00), ("open", 318_40)]
    assert collections.next_collections(session, customer, TODAY) == \
        [(date(2026, 12, 20), invoices[1].open), (date(2026, 12, 24), invoices[2].open)]

    # On 20 December (Paris time) F-2 falls due and is collected, F-3 not yet.
    clock.set(datetime(2026, 12, 19, 23, 30, tzinfo=timezone.utc))  # 00:30 on the 20th in Paris
    assert gc.collect_due(settings, session_factory).created == 1
    assert sorted(p["amount"] for p in gocardless.all("payments")) == [500_00, 1234_56]


def test_a_collection_lost_after_gocardless_made_it_is_not_made_twice(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, customer: Customer,
    invoices: list[Invoice], gocardless: GoCardlessStandIn, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    with_active_mandate(session, gocardless, customer)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise gc.GoCardlessUnavailable("the database went away after GoCardless answered")

    from payments import settlement

    monkeypatch.setattr(settlement, "apply_payment_status", crash)
    assert gc.collect_due(settings, session_factory).failed == 1
    monkeypatch.undo()
    assert len(gocardless.all("payments")) == 1 and session.scalar(select(func.count()).select_from(Payment)) == 0
    assert gc.collect_due(settings, session_factory).created == 1  # the same key: GoCardless's first payment
    assert len(gocardless.all("payments")) == 1
    assert session.scalar(select(Payment.provider_ref)) == gocardless.all("payments")[0]["id"]


def test_a_mandate_set_up_for_a_checkout_debits_that_checkout(
    client: TestClient, session: Session, session_factory: sessionmaker[Session], settings: Settings,
    customer: Customer, invoices: list[Invoice], gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices, method="direct_debit")
    gocardless.fulfil(flow)
    gocardless.move_mandate(gocardless.all("mandates")[0]["id"], "active")
    deliver(client, gocardless)
    report = gc.collect_due(settings, session_factory)
    assert report.created == 1  # the checkout (F-1 and F-2 with its discount); nothing else is due
    [payment] = gocardless.all("payments")
    assert payment["amount"] == checkout.amount_minor == 1234_56 + 490_00
    gocardless.move_payment(payment["id"], "confirmed")
    deliver(client, gocardless)
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    assert gc.collect_due(settings, session_factory).created == 0


def test_the_return_page_asks_gocardless_and_shows_processing(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    from tests.portal.conftest import login

    checkout, flow = started(session, settings, customer, invoices)
    login(client, customer)
    back = client.get(f"/portal/pay/{checkout.id}/gocardless/return", follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == f"/portal/pay/{checkout.id}"
    session.refresh(checkout)
    assert checkout.status == "open"  # the debtor left without authorising
    gocardless.fulfil(flow)
    client.get(f"/portal/pay/{checkout.id}/gocardless/return")
    session.refresh(checkout)
    assert checkout.status == "processing"
    page = client.get(f"/portal/pay/{checkout.id}")
    assert "Paiement en cours" in page.text or "processing" in page.text.lower()
    assert client.get(f"/portal/pay/{checkout.id + 1000}/gocardless/return").status_code == 404


def outcome_of(session: Session, event: dict[str, Any]) -> WebhookEvent:
    session.expire_all()
    stored = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event["id"]))
    assert stored is not None and stored.processed_at is not None and stored.error is None
    return stored


def test_a_second_payment_naming_a_paid_checkout_is_not_ours(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    gocardless.move_payment(payment_of(gocardless), "confirmed")
    deliver(client, gocardless)
    assert state(session, invoices) == (PAID, ["succeeded"], 2)
    # Another integration on the account makes a payment naming our (paid) checkout in its metadata.
    gocardless.resources["payments"]["PM0009OTHER"] = {
        "id": "PM0009OTHER", "amount": 5_00, "currency": "EUR", "status": "confirmed",
        "metadata": {"checkout_id": str(checkout.id)}, "links": {"creditor": "CR0000STANDIN"}}
    other = gocardless.move_payment("PM0009OTHER", "confirmed")
    assert deliver(client, gocardless) == [200]
    assert outcome_of(session, other).outcome == "not_ours"
    assert state(session, invoices) == (PAID, ["succeeded"], 2)  # no second payment, no credit made up


def test_the_amount_is_the_payments_own(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices)
    gocardless.fulfil(flow)
    deliver(client, gocardless)
    payment = gocardless.get("payments", payment_of(gocardless))
    payment["amount"] = 1_00  # GoCardless collected another amount than the checkout's
    confirmed = gocardless.move_payment(payment["id"], "confirmed")
    assert deliver(client, gocardless) == [200]
    assert outcome_of(session, confirmed).outcome == "not_ours"
    assert state(session, invoices) == (OPEN, ["processing"], 0)


def test_a_mandate_made_elsewhere_naming_our_customer_is_not_ours(
    client: TestClient, session: Session, settings: Settings, customer: Customer, gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    gocardless.resources["mandates"] = {"MD0009OTHER": {
        "id": "MD0009OTHER", "scheme": "sepa_core", "status": "active",
        "metadata": {"customer_id": str(customer.id)}, "links": {}}}
    active = gocardless.move_mandate("MD0009OTHER", "active")
    assert deliver(client, gocardless) == [200]
    assert outcome_of(session, active).outcome == "not_ours"
    session.refresh(customer)
    assert (customer.gocardless_mandate_id, customer.gocardless_mandate_status) == (None, None)


def test_a_mandate_of_our_billing_request_is_ours_even_before_its_fulfilled_event(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout, flow = started(session, settings, customer, invoices, method="direct_debit")
    gocardless.fulfil(flow)
    [mandate] = gocardless.all("mandates")
    gocardless.move_mandate(mandate["id"], "active")
    # The mandate's events come first; the billing request's fulfilled event comes last.
    assert deliver(client, gocardless, batch_size=1, order=lambda events: sorted(
        events, key=lambda event: event["resource_type"] == "billing_requests")) == [200, 200, 200]
    session.refresh(customer)
    assert (customer.gocardless_mandate_id, customer.gocardless_mandate_status) == (mandate["id"], "active")


def test_a_non_ascii_signature_answers_498(client: TestClient, session: Session) -> None:
    response = client.post("/webhooks/gocardless", content=b'{"events": []}',
                           headers={"Content-Type": "application/json", "Webhook-Signature": "\u00e9".encode("utf-8")})
    assert response.status_code == 498
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
