"""Payments under real concurrency: threads released together behind a barrier, each with an
app (or a worker step) on its own engine, against databases with committed data, so that
what one thread writes is only visible to another through the database, as between two
server or worker processes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any, Callable

import pytest
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.clock import clock
from kernel.db import make_sessionmaker, unit_of_work
from kernel.settings import load_settings
from ledger.allocation import invariant_violations
from ledger.day_totals import drift
from ledger.models import Allocation, Contact, Invoice, InvoiceKind, Payment, WebhookEvent
from payments import settlement, webhooks
from payments.checkout import cancel_checkout, create_checkout
from payments.stripe import StripeProvider
from sandbox.localstripe_server import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET
from tests import factories
from tests.conftest import TEST_SECRET
from tests.databases import together
from tests.fakes.localstripe_server import event_payload, sign

TODAY = date(2026, 11, 25)


def _settings(url: str) -> Any:
    return load_settings({
        "ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": TEST_SECRET, "ENCOURS_BASE_URL": "http://testserver",
        "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_BASE": "http://127.0.0.1:9",  # never reached
    })


def _servers(url: str, count: int) -> list[Any]:
    """`count` apps, each with its own engine and pool: two server processes, as far as the
    database can tell."""
    return [create_app(_settings(url)) for _ in range(count)]


def _post_together(apps: list[Any], payloads: list[bytes]) -> list[Any]:
    """POST payloads[i] to apps[i] at the same moment; the JSON answers."""

    def work(index: int) -> Any:
        with TestClient(apps[index], base_url="http://testserver") as client:
            response = client.post("/webhooks/stripe", content=payloads[index],
                                   headers={"Content-Type": "application/json", "Stripe-Signature": sign(payloads[index])})
            assert response.status_code == 200, response.text
            return response.json()

    return together(len(apps), work)


def _card_checkout(session: Session, customer: Any, contact: Contact, invoices: list[Invoice], intent: str) -> Any:
    checkout = create_checkout(session, customer=customer, contact=contact,
                               selection={invoice.id: None for invoice in invoices}, method="card", today=TODAY)
    checkout.provider, checkout.provider_ref = "stripe", intent
    session.flush()
    return checkout


def _succeeded(checkout_id: int, intent: str, amount: int, event_id: str) -> bytes:
    return event_payload("payment_intent.succeeded", {
        "id": intent, "object": "payment_intent", "amount": amount, "amount_received": amount, "currency": "eur",
        "metadata": {"checkout_id": str(checkout_id)}, "status": "succeeded"}, event_id)


# --- (a) one webhook delivered twice at the same moment, to two servers ------------------------


@pytest.mark.postgres
def test_a_webhook_delivered_twice_at_once_to_two_servers_applies_once(
    fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    factory = make_sessionmaker(engines(fresh_url))
    with unit_of_work(factory) as session:
        customer = factories.customer(session, factories.company(session))
        invoices = [factories.invoice(session, customer, total_minor=1234_56),
                    factories.invoice(session, customer, total_minor=500_00)]
        checkout = _card_checkout(session, customer, customer.primary_contact, invoices, "pi_twice")
        payload = _succeeded(checkout.id, "pi_twice", checkout.amount_minor, "evt_twice")
        invoice_ids = [invoice.id for invoice in invoices]

    rounds = 3  # a few bursts of the same delivery, each on 2 servers at once
    outcomes = []
    for _ in range(rounds):
        outcomes += [answer["outcomes"][0] for answer in _post_together(_servers(fresh_url, 2), [payload, payload])]

    assert sorted(outcomes) == ["duplicate"] * (2 * rounds - 1) + ["processed"]
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
        event = session.scalars(select(WebhookEvent)).one()
        assert event.processed_at is not None and event.attempts == 1
        assert session.execute(select(Payment.status)).scalars().all() == ["succeeded"]
        assert sorted(session.execute(select(Allocation.invoice_id)).scalars()) == sorted(invoice_ids)
        assert [i.open_minor for i in session.scalars(select(Invoice).order_by(Invoice.id))] == [0, 0]
        assert invariant_violations(session) == []


# --- (b) two debtors pay the same invoices at once ---------------------------------------------


@pytest.mark.postgres
def test_two_debtors_paying_the_same_invoices_at_once_leave_a_consistent_ledger(
    fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    """Two contacts of one customer pay, each a selection that shares invoice B with the other's
    (A+B and B+C; the first cancelled before the second started); both cards succeed and
    both webhooks arrive together on two servers. B is settled once, the second payment's B
    part becomes unapplied credit, nothing is lost, nothing deadlocks."""
    factory = make_sessionmaker(engines(fresh_url))
    with unit_of_work(factory) as session:
        customer = factories.customer(session, factories.company(session))
        second = Contact(customer_id=customer.id, email="treasury@example.com", language="fr", is_primary=False)
        session.add(second)
        session.flush()
        a = factories.invoice(session, customer, total_minor=700_00, due_date=date(2026, 10, 1))
        b = factories.invoice(session, customer, total_minor=300_00, due_date=date(2026, 10, 15))
        c = factories.invoice(session, customer, total_minor=250_00, due_date=date(2026, 10, 20))
        first = _card_checkout(session, customer, customer.primary_contact, [a, b], "pi_first")
        # B is locked while the first is in progress: the first contact cancels it (and its card
        # is confirmed in another tab all the same) so the second may pay B.
        cancel_checkout(session, first, contact=customer.primary_contact)
        other = _card_checkout(session, customer, second, [c, b], "pi_second")
        assert first.id != other.id and first.contact_id != other.contact_id
        payloads = [_succeeded(first.id, "pi_first", first.amount_minor, "evt_first"),
                    _succeeded(other.id, "pi_second", other.amount_minor, "evt_second")]
        shared = b.total_minor
        total = a.total_minor + b.total_minor + c.total_minor

    answers = _post_together(_servers(fresh_url, 2), payloads)

    assert [answer["outcomes"][0] for answer in answers] == ["processed", "processed"]
    with factory() as session:
        assert invariant_violations(session) == []
        assert [(i.status, i.open_minor) for i in session.scalars(select(Invoice).order_by(Invoice.id))] == [
            ("paid", 0), ("paid", 0), ("paid", 0)]
        payments = session.scalars(select(Payment)).all()
        assert sorted(p.status for p in payments) == ["succeeded", "succeeded"]
        received = sum(p.amount_minor for p in payments)
        applied = session.scalar(select(func.sum(Allocation.amount_minor))) or 0
        assert received == total + shared and applied == total
        assert received - applied == shared  # B paid twice: the second time is unapplied credit, not lost
        per_invoice = dict(session.execute(
            select(Allocation.invoice_id, func.sum(Allocation.amount_minor)).group_by(Allocation.invoice_id)).all())
        assert sorted(per_invoice.values()) == [250_00, 300_00, 700_00]


# --- (c) two workers retrying webhooks never take one event twice --------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("outcome", ["succeeds", "fails"])
def test_two_workers_retry_each_due_webhook_once(
    fresh_url: str, engines: Callable[[str], Engine], outcome: str
) -> None:
    """Due events are claimed, not just read: of two workers at the same moment each event is
    attempted by one, once, whether the handler succeeds or fails (a failure is rescheduled,
    and the other worker must not try it again in the same pass)."""
    count = 30
    factory = make_sessionmaker(engines(fresh_url))
    with unit_of_work(factory) as session:
        for n in range(count):
            stored, created = webhooks.store_event(session, "stripe", f"evt_{n}", "payment_intent.succeeded",
                                                   "{}", {})
            assert created
    clock.set(clock.now() + webhooks.FIRST_RETRY)  # all due
    calls: list[str] = []
    lock = threading.Lock()
    release = threading.Event()

    def handler(session: Session, event: WebhookEvent) -> None:
        with lock:
            calls.append(event.event_id)
        release.wait(0.01)  # hold the claim a moment, as a real handler does its queries
        if outcome == "fails":
            raise RuntimeError("the provider's object is not there yet")

    def work(index: int) -> webhooks.RetryReport:
        return webhooks.retry_due(make_sessionmaker(engines(fresh_url)), {"stripe": handler}, limit=count)

    reports = together(2, work)

    assert sorted(calls) == sorted(f"evt_{n}" for n in range(count))  # each once
    if outcome == "succeeds":
        assert sum(r.processed for r in reports) == count and sum(r.failed for r in reports) == 0
    else:
        assert sum(r.failed for r in reports) == count and sum(r.processed for r in reports) == 0
    with factory() as session:
        rows = session.execute(select(WebhookEvent.attempts, WebhookEvent.processed_at, WebhookEvent.next_attempt_at)).all()
    assert all(attempts == 1 for attempts, _, _ in rows)
    if outcome == "succeeds":
        assert all(processed is not None and retry is None for _, processed, retry in rows)
    else:
        assert all(processed is None and retry > clock.now() + timedelta(seconds=30) for _, processed, retry in rows)


# --- (d) a card success takes its company's receipt counter as its last write -----------------


def _post(app: Any, payload: bytes) -> Any:
    with TestClient(app, base_url="http://testserver") as client:
        response = client.post("/webhooks/stripe", content=payload,
                               headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)})
        assert response.status_code == 200, response.text
        return response.json()


def _waiting_statements(engine: Engine) -> list[str]:
    """The statements sessions of the test database wait in on a lock, asked until one does (a few
    seconds at most: the other thread's request has to reach it first)."""
    for _ in range(200):
        with engine.connect() as connection:
            waiting = connection.execute(text("SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                                              "AND wait_event_type = 'Lock'")).scalars().all()
        if waiting:
            return list(waiting)
        time.sleep(0.05)
    return []


@pytest.mark.postgres
def test_a_card_success_takes_its_companys_receipt_counter_as_its_last_write(
    pg_fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    """The company's receipt counter is locked from its UPDATE to the commit, and every card success
    of the company takes it. Taken first (succ9, against a deadlock), it made the company's successes
    settle one at a time (bench/RESULTS.md card14); it is now the success's last write: while another
    transaction holds the counter, the success waits there with all the rest written (the reserved
    credit and the allocation: their running totals are held by it). No deadlock: whoever holds the
    counter has moved its running totals already (a success, a payment recorded by hand) or moves
    none (a receipt shown for the first time)."""
    engine = engines(pg_fresh_url)
    factory = make_sessionmaker(engine)
    with unit_of_work(factory) as session:
        company = factories.company(session)
        customer = factories.customer(session, company)
        factories.invoice(session, customer, total_minor=102_00, number="AV-1", kind=InvoiceKind.credit_note,
                          due_date=date(2026, 10, 15))
        invoice = factories.invoice(session, customer, total_minor=1234_56, due_date=date(2026, 10, 1))
        checkout = _card_checkout(session, customer, customer.primary_contact, [invoice], "pi_credit")
        assert checkout.credit_minor == 102_00  # reserved now, applied when the card succeeds
        payload = _succeeded(checkout.id, "pi_credit", checkout.amount_minor, "evt_credit")
        company_id, customer_id, invoice_id, code = company.id, customer.id, invoice.id, company.code
    [app] = _servers(pg_fresh_url, 1)
    with engine.connect() as holder, ThreadPoolExecutor(max_workers=1) as pool:
        # Another transaction of the company holds the counter, as one takes it just before its commit.
        holder.execute(text("UPDATE companies SET receipts_issued = receipts_issued WHERE id = :id"), {"id": company_id})
        answer = pool.submit(_post, app, payload)
        try:
            waiting = _waiting_statements(engine)
            assert len(waiting) == 1 and waiting[0].lstrip().startswith("UPDATE companies SET receipts_issued"), waiting
            with engine.connect() as probe:  # the success has settled: its running totals are its own to the commit
                for total in ("SELECT 1 FROM open_items_by_due WHERE company_id = :id FOR UPDATE NOWAIT",
                              "SELECT 1 FROM customer_balances WHERE customer_id = :customer FOR UPDATE NOWAIT"):
                    with pytest.raises(OperationalError, match="could not obtain lock"):
                        probe.execute(text(total), {"id": company_id, "customer": customer_id})
                    probe.rollback()
        finally:
            holder.rollback()
        assert answer.result(timeout=60)["outcomes"] == ["processed"]
    with factory() as session:
        payment = session.scalars(select(Payment)).one()
        assert payment.status == "succeeded" and payment.receipt_number == f"{code}-R000001"
        assert session.get_one(Invoice, invoice_id).open_minor == 0
        assert invariant_violations(session) == []


@pytest.mark.postgres
def test_card_successes_of_one_company_at_once_get_gapless_receipt_numbers(
    pg_fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    """Six card successes of one company on six servers at once (two of each customer, one of them
    applying reserved credit, each paying two invoices due on days the others share): all are
    processed (no deadlock, no retry), numbered R000001 to R000006 with no gap, and the ledger and
    its running totals agree."""
    engine = engines(pg_fresh_url)
    factory = make_sessionmaker(engine)
    with unit_of_work(factory) as session:
        company = factories.company(session)
        payloads = []
        for c in range(3):
            customer = factories.customer(session, company)
            if c == 0:
                factories.invoice(session, customer, total_minor=50_00, number=f"AV-{c}",
                                  kind=InvoiceKind.credit_note, due_date=date(2026, 10, 15))
            contacts = [customer.primary_contact, Contact(customer_id=customer.id, email=f"ap{c}@example.com",
                                                          language="en", is_primary=False)]
            session.add(contacts[1])
            session.flush()
            for k, contact in enumerate(contacts):
                invoices = [factories.invoice(session, customer, total_minor=(100 + 10 * c + k) * 100,
                                              due_date=date(2026, 10, 1 + 14 * ((c + k + d) % 2)))
                            for d in range(2)]
                intent = f"pi_many_{c}_{k}"
                checkout = _card_checkout(session, customer, contact, invoices, intent)
                payloads.append(_succeeded(checkout.id, intent, checkout.amount_minor, f"evt_many_{c}_{k}"))
        code = company.code

    answers = _post_together(_servers(pg_fresh_url, len(payloads)), payloads)

    assert [answer["outcomes"] for answer in answers] == [["processed"]] * len(payloads)
    with factory() as session:
        payments = session.scalars(select(Payment)).all()
        assert [p.status for p in payments] == ["succeeded"] * len(payloads)
        assert sorted(p.receipt_number or "" for p in payments) == [f"{code}-R{n:06d}"
                                                                    for n in range(1, len(payloads) + 1)]
        assert session.scalars(select(WebhookEvent.error)).all() == [None] * len(payloads)
        assert invariant_violations(session) == []


# --- (e) a card success that fails half-way leaves nothing behind, on the object either -----------


@pytest.mark.postgres
@pytest.mark.parametrize("held", ["invoice", "counter"])
def test_a_card_success_failing_half_way_shows_and_writes_nothing_and_settles_once_later(
    pg_fresh_url: str, engines: Callable[[str], Engine], held: str
) -> None:
    """A stored success applied by the worker's `_attempt` while another transaction holds a row the
    settlement needs: the checkout's invoice (the settlement fails in `_allocate`, the payment's new
    state held back on the object) or the company's receipt counter (it fails in `_write_last`, the
    payment's new state written in the savepoint). Either way the lock times out, the attempt's
    savepoint is rolled back and the attempt is recorded as failed: the payment object the caller's
    session still holds shows the row as it is (processing, no day, no number), nothing else is
    written, and the same event applied once the lock is gone settles it once."""
    engine = engines(pg_fresh_url)
    factory = make_sessionmaker(engine)
    settings = _settings(pg_fresh_url)
    with unit_of_work(factory) as session:
        company = factories.company(session)
        customer = factories.customer(session, company)
        invoice = factories.invoice(session, customer, total_minor=1234_56, due_date=date(2026, 10, 1))
        checkout = _card_checkout(session, customer, customer.primary_contact, [invoice], "pi_held")
        settlement.apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref="pi_held",
                                        method="card", status="processing", amount_minor=checkout.amount_minor,
                                        currency=checkout.currency, settings=settings)
        body = _succeeded(checkout.id, "pi_held", checkout.amount_minor, "evt_held").decode()
        stored, _ = webhooks.store_event(session, "stripe", "evt_held", "payment_intent.succeeded", body, {})
        event_pk, company_id, invoice_id, code = stored.id, company.id, invoice.id, company.code
    handler = webhooks.ProviderHandler(StripeProvider(), settings)
    lock = {"invoice": "SELECT 1 FROM invoices WHERE id = :id FOR UPDATE",
            "counter": "UPDATE companies SET receipts_issued = receipts_issued WHERE id = :id"}[held]

    with engine.connect() as holder:
        holder.execute(text(lock), {"id": invoice_id if held == "invoice" else company_id})
        with unit_of_work(factory) as session:
            session.execute(text("SET LOCAL lock_timeout = '200ms'"))
            payment = session.scalars(select(Payment)).one()  # the object the settlement moves
            event = session.get_one(WebhookEvent, event_pk, with_for_update=True)
            assert not webhooks._attempt(session, event, webhooks.prepared(factory, event_pk, handler))
            assert event.error is not None and "lock timeout" in event.error
            # What protects the caller: rolling back its savepoint expires the whole payment (flushed
            # in it, with nothing to write, while its new state was held back), not the held columns only.
            assert inspect(payment).expired_attributes >= {"status", "received_on", "provider_ref", "customer_id"}
            assert (payment.status, payment.received_on, payment.receipt_number) == ("processing", None, None)
            assert session.scalars(select(Allocation)).all() == []
        holder.rollback()

    with factory() as session:
        assert session.execute(select(Payment.status, Payment.received_on, Payment.receipt_number)).all() == [
            ("processing", None, None)]
        assert session.get_one(Invoice, invoice_id).open_minor == 1234_56
        assert session.scalar(text("SELECT receipts_issued FROM companies WHERE id = :id"), {"id": company_id}) == 0
        assert session.get_one(WebhookEvent, event_pk).attempts == 1
        assert drift(session) == []
    assert webhooks.process_event(factory, event_pk, handler)
    with factory() as session:
        payment = session.scalars(select(Payment)).one()
        assert (payment.status, payment.receipt_number) == ("succeeded", f"{code}-R000001")
        assert payment.received_on is not None
        assert session.execute(select(Allocation.invoice_id, Allocation.amount_minor)).all() == [(invoice_id, 1234_56)]
        assert session.get_one(Invoice, invoice_id).open_minor == 0
        assert session.get_one(WebhookEvent, event_pk).error is None
        assert drift(session) == [] and invariant_violations(session) == []
