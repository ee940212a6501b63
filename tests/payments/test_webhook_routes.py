"""POST /webhooks/{provider}: the one intake of every provider, against a real SQLite file and the
GoCardless stand-in, with deliveries arriving while another is still being applied."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from starlette.requests import Request
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.db import unit_of_work
from kernel.settings import Settings, load_settings
from ledger.models import Checkout, Invoice, Payment, WebhookEvent
from payments import gocardless as gc
from payments.base import ProviderEvent, Triage
from payments.checkout import create_checkout
from payments.stripe import StripeProvider
from payments.webhook_routes import NOT_TRIAGED, _intake
from sandbox.gocardless_server import GoCardlessStandIn
from sandbox.gocardless_server import sign as gocardless_sign
from sandbox.localstripe_server import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET
from tests import factories
from tests.conftest import TEST_SECRET
from tests.databases import sqlite_migrated_copy
from tests.fakes.gocardless_server import gocardless, gocardless_server  # noqa: F401
from tests.fakes.localstripe_server import event_payload
from tests.fakes.localstripe_server import sign as stripe_sign

TODAY = date(2026, 11, 25)


@pytest.fixture
def both(tmp_path: Path, gocardless: GoCardlessStandIn, sqlite_migrated_template: Path) -> Settings:  # noqa: F811
    """Stripe and GoCardless configured, on a database file of the test's own (real locks)."""
    url = sqlite_migrated_copy(sqlite_migrated_template, tmp_path / "intake.sqlite3")
    return load_settings({
        "ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": TEST_SECRET, "ENCOURS_BASE_URL": "http://testserver",
        "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_BASE": "http://127.0.0.1:9",  # never reached
        **gocardless.settings(),
    })


def post_in_background(app: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[threading.Event, dict[str, Any], threading.Thread]:
    """POST through the ASGI app in a thread of its own; `answered` is set once the whole answer
    was sent (before the request's background work, which the thread still runs)."""
    answered = threading.Event()
    result: dict[str, Any] = {}

    async def call() -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()]
            + [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        }
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            while not answered.is_set():
                await asyncio.sleep(0.01)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                result["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        await app(scope, receive, send)

    thread = threading.Thread(target=lambda: asyncio.run(call()), daemon=True)
    thread.start()
    return answered, result, thread


def test_a_slow_provider_holds_neither_its_answer_nor_other_deliveries(
    both: Settings, gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    app = create_app(both)
    sessions = app.state.sessions
    with unit_of_work(sessions) as session:
        company = factories.company(session, iban="FR7630006000011234567890189")
        customer = factories.customer(session, company)
        f1 = factories.invoice(session, customer, total_minor=1234_56, number="F-1", due_date=date(2026, 11, 1))
        f2 = factories.invoice(session, customer, total_minor=318_40, number="F-2", due_date=date(2026, 12, 24))
        instant = create_checkout(session, customer=customer, contact=None, selection={f1.id: None},
                                  method="instant_transfer", today=TODAY)
        flow = gc.GoCardlessProvider().start(session, instant, both, both.base_url).location.rsplit("/", 1)[1]
        card = create_checkout(session, customer=customer, contact=None, selection={f2.id: None}, method="card",
                               today=TODAY)
        card.provider, card.provider_ref = "stripe", "pi_slow_test"
        ids = instant.id, card.id, f1.id, f2.id
    gocardless.fulfil(flow)
    with TestClient(app) as client:
        assert [d.status for d in gocardless.flush_webhooks(
            post=lambda body, headers: client.post("/webhooks/gocardless", content=body, headers=headers).status_code)] \
            == [200]
        [payment] = gocardless.all("payments")
        confirmed = gocardless.move_payment(payment["id"], "confirmed")
        gocardless.pending.clear()
        body = gocardless.webhook_body([confirmed])

        gocardless.hold_reads = True  # GoCardless now answers only when the test says so
        answered, result, thread = post_in_background(
            app, "/webhooks/gocardless", body, {"Content-Type": "application/json", "Webhook-Signature": gocardless_sign(body)})
        assert gocardless.held.wait(timeout=30)  # the payment is being asked of GoCardless...
        assert answered.is_set() and result["status"] == 200  # ...after GoCardless had its answer

        # Meanwhile another provider's delivery is applied at once: nothing holds the writer.
        intent = {"id": "pi_slow_test", "object": "payment_intent", "amount": 318_40, "amount_received": 318_40,
                  "currency": "eur", "metadata": {"checkout_id": str(ids[1])}, "status": "succeeded"}
        stripe_body = event_payload("payment_intent.succeeded", intent, "evt_meanwhile")
        response = client.post("/webhooks/stripe", content=stripe_body,
                               headers={"Content-Type": "application/json", "Stripe-Signature": stripe_sign(stripe_body)})
        assert response.status_code == 200 and response.json()["outcomes"] == ["processed"]
        with sessions() as session:
            assert session.get_one(Invoice, ids[3]).status == "paid"
            assert session.get_one(Invoice, ids[2]).status == "open"  # still waiting for GoCardless

        gocardless.release.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
    with sessions() as session:
        assert session.get_one(Invoice, ids[2]).status == "paid"
        assert session.get_one(Checkout, ids[0]).status == "succeeded"
        assert sorted(session.scalars(select(Payment.status))) == ["succeeded", "succeeded"]
    app.state.sessions.kw["bind"].dispose()


def test_an_unknown_provider_is_404(client: TestClient) -> None:
    assert client.post("/webhooks/paypal", content=b"{}").status_code == 404
    assert client.post("/webhooks/bank_transfer", content=b"{}").status_code == 404


def test_intake_acts_on_the_triage_it_is_given(both: Settings) -> None:
    """`_intake` after a read told an event (the event loop's, on PostgreSQL) goes on from what it
    told, with no read of its own: a Triage is stored as told, None goes to the handler; an event
    not triaged yet is read first. One code path after the read, whoever read."""
    app = create_app(both)
    with unit_of_work(app.state.sessions) as session:
        customer = factories.customer(session, factories.company(session))
        invoice = factories.invoice(session, customer, total_minor=318_40, number="F-1")
        card = create_checkout(session, customer=customer, contact=None, selection={invoice.id: None},
                               method="card", today=TODAY)
        card.provider, card.provider_ref = "stripe", "pi_told"
        checkout_id = card.id
    declined = {"id": "pi_told", "object": "payment_intent", "amount": 318_40, "amount_received": 0, "currency": "eur",
                "metadata": {"checkout_id": str(checkout_id)}, "status": "requires_payment_method",
                "last_payment_error": {"code": "card_declined"}}
    provider = StripeProvider()
    statements: list[str] = []
    for bind in {app.state.sessions.kw["bind"], app.state.read_sessions.kw["bind"]}:
        event.listen(bind, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def intake(n: int, told: Any) -> tuple[list[str], bool, bool]:
        """The outcomes, whether the triage's read ran (the payment joined to its checkout), and
        whether the handler ran (it looks the checkout up by its intent)."""
        body = event_payload("payment_intent.payment_failed", declined, f"evt_told{n}")
        verified = ProviderEvent(id=f"evt_told{n}", type="payment_intent.payment_failed", payload=json.loads(body),
                                 body=body.decode())
        request = Request({"type": "http", "app": app, "headers": [(b"content-type", b"application/json")]})
        statements.clear()
        outcomes, deferred = _intake(request, provider, [verified], True, told)
        assert deferred == []
        read = any(re.search(r"FROM payments JOIN checkouts", sql) for sql in statements)
        return outcomes, read, any(re.search(r"FROM checkouts\s+WHERE checkouts.provider =", sql) for sql in statements)

    with TestClient(app):
        assert intake(0, NOT_TRIAGED) == (["processed"], True, True)  # read: no payment yet, the handler creates it
        assert intake(1, NOT_TRIAGED) == (["processed"], True, False)  # read: unchanged, stored as told
        assert intake(2, Triage("told elsewhere")) == (["processed"], False, False)  # stored as told, unread
        assert intake(3, None) == (["processed"], False, True)  # the handler's, with no read before it
    with app.state.sessions() as session:
        stored = session.execute(select(WebhookEvent.event_id, WebhookEvent.processed_at.is_not(None))
                                 .order_by(WebhookEvent.id)).all()
        assert [tuple(row) for row in stored] == [(f"evt_told{n}", True) for n in range(4)]
    app.state.sessions.kw["bind"].dispose()
