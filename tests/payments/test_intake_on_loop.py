"""POST /webhooks/stripe on PostgreSQL with the read and the write on the event loop's own
connections (payments.webhooks.intake_on_loop): every event leaves the rows and the answer the
thread pool's path leaves, an event told by the read reaches neither the thread pool nor the app's
pool, and a write whose outcome is unknown (its connection killed mid-write, or timed out) is
answered 500 and applied once when the provider sends it again."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Iterator

import psycopg
import pytest
from sqlalchemy import Engine, event, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.db import make_engine, make_sessionmaker, upgrade
from kernel.settings import load_settings
from ledger.models import Base, Checkout, Payment, WebhookEvent
from payments.checkout import create_checkout
from sandbox.localstripe_server import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET
from tests import factories
from tests.conftest import TEST_SECRET
from tests.fakes.localstripe_server import event_payload, sign
from tests.payments.test_stripe_webhooks import INTENT, TODAY, charge, intent

pytestmark = pytest.mark.postgres

# Rows the paths insert get ids of their own (sequences do not roll back): compared without them.
NEW_ROWS = {"audit_events", WebhookEvent.__tablename__}
DECLINED = {"last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}
EXPIRED = {"last_payment_error": {"code": "expired_card"}}
FUNDS = {"last_payment_error": {"message": "Your card has insufficient funds."}}
CARD = {"id": "pm_1", "object": "payment_method", "card": {"brand": "visa", "last4": "4242"}}
FAILED = "payment_intent.payment_failed"


def _book(url: str) -> Checkout:
    """A card checkout of two invoices, its PaymentIntent created, committed."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            company = factories.company(session, name="Durand Industrie SAS", iban="FR7630006000011234567890189",
                                        bic="AGRIFRPPXXX")
            customer = factories.customer(session, company, language="fr")
            invoices = [factories.invoice(session, customer, total_minor=1234_56, number="F-1"),
                        factories.invoice(session, customer, total_minor=500_00, number="F-2")]
            checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                                       selection={invoices[0].id: None, invoices[1].id: None}, method="card",
                                       today=TODAY)
            checkout.provider, checkout.provider_ref = "stripe", INTENT
            session.commit()
            session.refresh(checkout)
            session.expunge(checkout)
            return checkout
    finally:
        engine.dispose()


def _app(url: str) -> Starlette:
    return create_app(load_settings({
        "ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": TEST_SECRET, "ENCOURS_BASE_URL": "http://testserver",
        "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_BASE": "http://127.0.0.1:9",  # never reached
    }))


def _deliver(client: TestClient, payload: bytes, signature: str | None = None) -> Any:
    return client.post("/webhooks/stripe", content=payload,
                       headers={"Content-Type": "application/json", "Stripe-Signature": signature or sign(payload)})


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order; a moment as whether it is set (the two paths
    run at different times)."""
    found = {}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = [column for column in table.columns if not (table.name in NEW_ROWS and column.name == "id")]
            rows = (tuple(value is not None if isinstance(value, datetime) else value for value in row)
                    for row in connection.execute(select(*columns)).all())
            found[table.name] = sorted(rows, key=repr)
    return found


@pytest.fixture
def two_books(pg_server: Any) -> Iterator[tuple[str, str]]:
    urls = []
    for _ in range(2):
        url = pg_server.create_database(f"loop_intake_{len(urls)}_{time.monotonic_ns() % 10**9}")
        upgrade(url)
        urls.append(url)
    yield urls[0], urls[1]


def test_the_loop_leaves_the_rows_and_answers_the_thread_pool_leaves(two_books: tuple[str, str]) -> None:
    on_loop_url, pooled_url = two_books
    start = next(factories._seq)
    factories._seq = itertools.count(start)  # the same names in both books
    checkout = _book(on_loop_url)
    factories._seq = itertools.count(start)
    assert _book(pooled_url).id == checkout.id
    amount = checkout.amount_minor
    # (type, object, what the read tells: "told" (stored or written on the loop) or "handler")
    steps: list[tuple[str, dict[str, Any], str]] = [
        (FAILED, intent(checkout, "requires_payment_method", **DECLINED), "handler"),  # creates the payment
        (FAILED, intent(checkout, "requires_payment_method", **DECLINED), "told"),  # unchanged
        (FAILED, intent(checkout, "requires_payment_method", **EXPIRED), "told"),  # a new reason and code
        (FAILED, intent(checkout, "requires_payment_method", payment_method=CARD, **EXPIRED), "told"),  # a card
        (FAILED, intent(checkout, "requires_payment_method", amount=amount + 1, **FUNDS), "handler"),
        (FAILED, {**intent(checkout, "requires_payment_method", **FUNDS), "id": "pi_someone_else"}, "handler"),
        ("payment_intent.processing", intent(checkout, "processing"), "told"),  # moves, audit row
        ("payment_intent.processing", intent(checkout, "processing"), "told"),  # unchanged
        (FAILED, intent(checkout, "requires_payment_method", **FUNDS), "told"),  # late: processing holds
        ("payment_intent.succeeded", intent(checkout, "succeeded"), "handler"),
        (FAILED, intent(checkout, "requires_payment_method", **FUNDS), "told"),
        ("charge.refunded", charge(checkout, refunded=True, amount_refunded=amount), "handler"),
    ]
    on_loop, pooled = _app(on_loop_url), _app(pooled_url)
    through_pool: list[str] = []
    for bind in {on_loop.state.sessions.kw["bind"], on_loop.state.read_sessions.kw["bind"]}:
        event.listen(bind, "before_cursor_execute", lambda *args: through_pool.append(args[2]))
    with TestClient(on_loop) as loop_client, TestClient(pooled) as pool_client:
        assert on_loop.state.loop_reads is not None
        pooled.state.loop_reads = None  # the thread pool's path, as on a server without the loop's reads
        for n, (kind, obj, expected) in enumerate(steps):
            payload = event_payload(kind, obj, f"evt_loop{n}")
            through_pool.clear()
            signature = sign(payload)  # the same headers stored by both
            answer = _deliver(loop_client, payload, signature)
            assert answer.status_code == 200 and answer.json() == _deliver(pool_client, payload, signature).json(), \
                (n, kind)
            assert answer.json()["outcomes"] == ["processed"], (n, kind)
            assert (not through_pool) == (expected == "told"), (n, kind, through_pool)
            assert _snapshot(on_loop.state.sessions.kw["bind"]) == _snapshot(pooled.state.sessions.kw["bind"]), n
            through_pool.clear()
            again = _deliver(loop_client, payload)  # the provider sends it again: told stored, on the loop
            assert again.json()["outcomes"] == ["duplicate"] and not through_pool, (n, kind)
    assert _snapshot(on_loop.state.sessions.kw["bind"])["webhook_events"] == \
        _snapshot(pooled.state.sessions.kw["bind"])["webhook_events"]


def _waiting_writer(url: str) -> int:
    """The loop connection's backend, once its write waits for a lock."""
    for _ in range(200):
        with psycopg.connect(url, autocommit=True) as watcher:
            found = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%webhook_events%'"
            ).fetchall()
        if found:
            return int(found[0][0])
        time.sleep(0.05)
    raise AssertionError("no write waited for the lock")


@pytest.mark.parametrize("cut_off", ["killed", "timed out"])
def test_a_write_whose_outcome_is_unknown_is_answered_500_then_applied_once(
    pg_fresh_url: str, cut_off: str
) -> None:
    checkout = _book(pg_fresh_url)
    app = _app(pg_fresh_url)
    plain_url = make_engine(pg_fresh_url).url.set(drivername="postgresql").render_as_string(hide_password=False)
    first = event_payload(FAILED, intent(checkout, "requires_payment_method", **DECLINED), "evt_cut0")
    late = event_payload(FAILED, intent(checkout, "requires_payment_method", **EXPIRED), "evt_cut1")
    with TestClient(app, raise_server_exceptions=False) as client, ThreadPoolExecutor(1) as pool:
        assert _deliver(client, first).json()["outcomes"] == ["processed"]  # the handler creates the payment
        if cut_off == "timed out":
            app.state.loop_reads.timeout = 1.0
        holder = psycopg.connect(plain_url)
        try:
            # Another transaction holds the payment: the write's FOR UPDATE waits for it.
            holder.execute("SELECT 1 FROM payments WHERE provider_ref = %s FOR UPDATE", [INTENT])
            sent = pool.submit(_deliver, client, late)
            writer = _waiting_writer(plain_url)
            if cut_off == "killed":
                with psycopg.connect(plain_url, autocommit=True) as killer:
                    killer.execute("SELECT pg_terminate_backend(%s)", [writer])
            answer = sent.result(timeout=30)
        finally:
            holder.rollback()
            holder.close()
        assert answer.status_code == 500  # the provider sends the event again
        app.state.loop_reads.timeout = 10.0
        again = _deliver(client, late)
        assert again.status_code == 200 and again.json()["outcomes"] in (["processed"], ["duplicate"])
        assert _deliver(client, late).json()["outcomes"] == ["duplicate"]
    engine = make_engine(pg_fresh_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(select(WebhookEvent.event_id, WebhookEvent.processed_at.is_not(None))
                                        .order_by(WebhookEvent.id)).all()
            payment = connection.execute(select(Payment.status, Payment.failure_reason)).one()
            checkout_row = connection.execute(select(Checkout.status, Checkout.failure_code)).one()
    finally:
        engine.dispose()
    assert [tuple(row) for row in stored] == [("evt_cut0", True), ("evt_cut1", True)]  # once, applied
    assert tuple(payment) == ("pending", "expired_card")
    assert checkout_row[0] == "open"
