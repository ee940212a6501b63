"""Outgoing ERP webhooks, sent by the worker's code to real local HTTP receivers: signed, the
feed's own event objects, retried after a 500, a timeout retried then failed without holding up
another endpoint, private addresses refused unless allowed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import webhooks
from encours import worker
from kernel.clock import clock
from kernel.settings import Settings, load_settings
from ledger.models import ApiIdempotency, Customer, WebhookDelivery
from ledger.webhook_endpoints import add_endpoint, send_again
from links import tokens
from tests.api.conftest import CUSTOMER, invoice_body
from tests.conftest import TEST_SECRET
from tests.fakes.receiver import Receiver, serve


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    return both_databases_session_factory


@pytest.fixture
def settings(db_url: str) -> Settings:
    # The receivers listen on 127.0.0.1: the tests allow private addresses, as an ERP on the LAN would.
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver", "ENCOURS_WEBHOOK_ALLOW_PRIVATE": "true",
                          "ENCOURS_WEBHOOK_TIMEOUT": "1", "ENCOURS_WEBHOOK_MAX_ATTEMPTS": "3"})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


def _endpoint(session: Session, url: str, types: list[str] | None = None) -> str:
    _, secret = add_endpoint(session, "ACME", url, types or ["invoice.voided"], allow_private=True)
    session.commit()
    return secret


def _void(client, auth, *numbers: str) -> None:  # type: ignore[no-untyped-def]
    assert client.put("/api/v1/customers/C001", json=CUSTOMER, headers=auth).status_code in (200, 201)
    for number in numbers:
        assert client.put(f"/api/v1/invoices/{number}", json=invoice_body(), headers=auth).status_code == 201
        assert client.post(f"/api/v1/invoices/{number}/void", headers=auth).status_code == 200


def _deliveries(session: Session) -> list[WebhookDelivery]:
    session.expire_all()
    return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_a_delivery_is_the_feeds_event_signed_with_the_endpoints_secret(
        client, auth, session: Session, session_factory: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    secret = _endpoint(session, receiver.url + "/erp/hooks?src=encours")
    _endpoint(session, receiver.url + "/payments-only", ["payment.succeeded"])
    _void(client, auth, "F-1")

    report = worker.run_once(settings, session_factory).outgoing
    assert (report.sent, report.retried, report.failed) == (1, 0, 0)
    [request] = receiver.received
    assert request.path == "/erp/hooks?src=encours"
    timestamp, v1 = (part.split("=", 1)[1] for part in request.headers["encours-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected)
    assert int(timestamp) == int(clock.now().timestamp())
    event = json.loads(request.body)
    feed = client.get("/api/v1/events", headers=auth).json()["items"]
    assert [item for item in feed if item["type"] == "invoice.voided"] == [event]
    assert request.headers["encours-event-id"] == str(event["id"])
    assert request.headers["content-type"] == "application/json"
    [delivery] = _deliveries(session)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("sent", 1, 200)
    assert delivery.latency_ms is not None
    # Nothing is sent twice.
    assert webhooks.deliver_due(session_factory, settings).busy is False
    assert len(receiver.received) == 1


def test_a_500_is_retried_after_its_backoff_and_sent_again_keeps_the_event_id(
        client, auth, session: Session, session_factory: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    receiver.statuses["/flaky"] = [500, 200]
    _endpoint(session, receiver.url + "/flaky")
    _void(client, auth, "F-1")

    assert webhooks.deliver_due(session_factory, settings).retried == 1
    [delivery] = _deliveries(session)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("queued", 1, 500)
    assert delivery.last_error.startswith("HTTP 500")
    assert webhooks.deliver_due(session_factory, settings).busy is False  # not due yet: no retry storm
    clock.set(clock.now() + timedelta(minutes=2))
    assert webhooks.deliver_due(session_factory, settings).sent == 1
    [delivery] = _deliveries(session)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("sent", 2, 200)
    first, second = receiver.on("/flaky")
    assert first.headers["encours-event-id"] == second.headers["encours-event-id"]
    assert first.body == second.body

    assert send_again(session, delivery.id, actor="admin@example.com")
    session.commit()
    assert webhooks.deliver_due(session_factory, settings).sent == 1
    assert [r.headers["encours-event-id"] for r in receiver.on("/flaky")] == [first.headers["encours-event-id"]] * 3


def test_an_endpoint_that_times_out_is_retried_then_failed_and_never_holds_up_another(
        client, auth, session: Session, session_factory: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    receiver.delays["/slow"] = 3  # the timeout is 1 s
    _endpoint(session, receiver.url + "/slow")
    _endpoint(session, receiver.url + "/fast")
    _void(client, auth, "F-1", "F-2")

    first = webhooks.deliver_due(session_factory, settings)
    assert len(receiver.on("/fast")) == 2
    # The slow endpoint's first delivery timed out; its second was not even tried this run.
    assert len(receiver.on("/slow")) == 1
    assert (first.sent, first.retried, first.failed) == (2, 2, 0)
    slow = [d for d in _deliveries(session) if d.status != "sent"]
    assert [(d.attempts, d.last_error) for d in slow] == [
        (1, "timed out"), (0, "not tried: the endpoint could not be reached earlier in this run")]

    for _ in range(20):
        clock.set(clock.now() + timedelta(days=1))
        webhooks.deliver_due(session_factory, settings)
        if all(d.status == "failed" for d in _deliveries(session) if d.status != "sent"):
            break
    failed = [d for d in _deliveries(session) if d.status != "sent"]
    assert [(d.status, d.attempts, d.last_error) for d in failed] == [("failed", 3, "timed out")] * 2
    assert [d.status for d in _deliveries(session)].count("sent") == 2


def test_a_private_address_is_refused_at_sending_unless_allowed(
        client, auth, session: Session, session_factory: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    _endpoint(session, receiver.url + "/erp")  # registered while allowed
    _void(client, auth, "F-1")
    strict = load_settings({"ENCOURS_DATABASE_URL": settings.database_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                            "ENCOURS_BASE_URL": "http://testserver"})
    assert webhooks.deliver_due(session_factory, strict).retried == 1
    assert receiver.received == []
    [delivery] = _deliveries(session)
    assert "private or local address (127.0.0.1)" in delivery.last_error


def test_a_link_opened_is_an_event_of_the_feed_and_a_webhook(
        client, auth, session: Session, session_factory: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    _endpoint(session, receiver.url + "/opens", ["link.opened"])
    _void(client, auth, "F-1")
    customer = session.scalar(select(Customer).where(Customer.ref == "C001"))
    token = tokens.make_token(TEST_SECRET, customer.primary_contact)
    assert client.get(f"/p/{token}", follow_redirects=False).status_code in (302, 303)

    feed = client.get("/api/v1/events", headers=auth).json()["items"]
    opened = [item for item in feed if item["type"] == "link.opened"]
    assert [(e["customer_ref"], e["record"], e["data"]) for e in opened] == [
        ("C001", "contact", {"contact_email": CUSTOMER["email"]})]
    assert webhooks.deliver_due(session_factory, settings).sent == 1
    [request] = receiver.on("/opens")
    assert json.loads(request.body) == opened[0]


def test_idempotency_replies_are_forgotten_by_the_worker_after_a_day(
        client, auth, session: Session, session_factory: sessionmaker[Session], settings: Settings) -> None:
    headers = {**auth, "Idempotency-Key": "put-C001"}
    assert client.put("/api/v1/customers/C001", json=CUSTOMER, headers=headers).status_code == 201
    replay = client.put("/api/v1/customers/C001", json=CUSTOMER, headers=headers)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    clock.set(clock.now() + timedelta(hours=23))
    assert worker.run_once(settings, session_factory).idempotency_purged == 0
    clock.set(clock.now() + timedelta(hours=2))
    assert worker.run_once(settings, session_factory).idempotency_purged == 1
    session.expire_all()
    assert session.scalars(select(ApiIdempotency)).all() == []
    again = client.put("/api/v1/customers/C001", json=CUSTOMER, headers=headers)
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_receiver_verifies_real_deliveries_and_rejects_forged_ones(
        client, auth, session: Session, session_factory: sessionmaker[Session], settings: Settings,
        tmp_path: Path) -> None:
    example = re.search(r"<!-- webhook-receiver-example[^>]*-->\n```python\n(.*?)```", README.read_text(), re.S)
    assert example, "the README's webhook receiver example is gone"
    assert len(example.group(1).strip().splitlines()) <= 10
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}/"
    _, secret = add_endpoint(session, "ACME", url, ["invoice.voided"], allow_private=True)
    session.commit()
    env = {**os.environ, "ENCOURS_WEBHOOK_SECRET": secret, "PORT": str(port)}
    receiver = subprocess.Popen([sys.executable, "-c", example.group(1)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    try:
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert receiver.poll() is None, "the README's receiver exited"
            threading.Event().wait(0.05)  # it is starting: wait for its socket
        clock.reset()  # the receiver compares the signature's time with its own clock
        _void(client, auth, "F-1")
        assert webhooks.deliver_due(session_factory, settings).sent == 1
        [delivery] = _deliveries(session)
        assert delivery.response_code == 204
        assert receiver.stdout is not None
        assert receiver.stdout.readline().split() == [str(delivery.audit_event_id), "invoice.voided"]
        body = b'{"id": 1, "type": "payment.succeeded"}'
        forged = httpx.post(url, content=body, headers={"Encours-Event-Id": "1", "Encours-Signature":
                                                        webhooks.signature("whsec_wrong", int(time.time()), body)})
        assert forged.status_code == 400
        assert receiver.stdout.readline().split() == ["1", "rejected"]
    finally:
        receiver.kill()
        receiver.wait()


def test_the_lease_is_the_endpoint_timeout_plus_the_margin_from_settings(db_url: str) -> None:
    settings = load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                              "ENCOURS_WEBHOOK_TIMEOUT": "20", "ENCOURS_WEBHOOK_LEASE_MARGIN": "45"})
    assert webhooks.lease(settings) == timedelta(seconds=65)
    assert webhooks.lease(load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET})) \
        == timedelta(seconds=40)


def test_a_delivery_claimed_by_a_worker_that_died_is_sent_once_by_another_after_the_lease(
        client, auth, session: Session, session_factory: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    _endpoint(session, receiver.url + "/erp")
    _void(client, auth, "F-1")
    start = clock.now()
    lease = webhooks.lease(settings)
    # A worker claims it and dies before sending (or mid-send): nothing recorded.
    [claimed] = webhooks.claim_due(session_factory, webhooks.BATCH, lease)
    [delivery] = _deliveries(session)
    assert (delivery.status, delivery.attempts) == ("queued", 1)

    for moment in (start, start + lease / 2, start + lease - timedelta(seconds=1)):
        clock.set(moment)
        assert webhooks.deliver_due(session_factory, settings).busy is False  # the claim holds
    assert receiver.received == []

    clock.set(start + lease)
    assert webhooks.deliver_due(session_factory, settings).sent == 1
    [delivery] = _deliveries(session)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("sent", 2, 200)
    assert [r.headers["encours-event-id"] for r in receiver.on("/erp")] == [str(claimed.event_id)]
    # The dead worker coming back with its outcome changes nothing: the claim it had is gone.
    outcome = webhooks.Outcome(claimed.delivery_id, claimed.attempts, ok=False, response_code=500, error="HTTP 500")
    assert webhooks.record_outcomes(session_factory, [outcome], settings.webhook_max_attempts).retried == 1
    [delivery] = _deliveries(session)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 2, None)
    clock.set(start + lease * 3)
    assert webhooks.deliver_due(session_factory, settings).busy is False
    assert len(receiver.on("/erp")) == 1


def test_a_worker_starts_no_attempt_it_could_not_finish_inside_its_lease(
        client, auth, session: Session, session_factory: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    _endpoint(session, receiver.url + "/erp")
    _void(client, auth, "F-1", "F-2")
    claimed = webhooks.claim_due(session_factory, webhooks.BATCH, webhooks.lease(settings))
    assert len(claimed) == 2
    # Its time to start attempts is over (the pool kept it waiting, say): both are handed back.
    outcomes = webhooks.send_batch(claimed, settings, last_start=time.monotonic() - 1)
    assert receiver.received == [] and all(o.put_off for o in outcomes)
    report = webhooks.record_outcomes(session_factory, outcomes, settings.webhook_max_attempts)
    assert (report.sent, report.retried) == (0, 2)
    assert [(d.status, d.attempts) for d in _deliveries(session)] == [("queued", 0), ("queued", 0)]
    # With time left, both go.
    clock.set(clock.now() + timedelta(minutes=2))
    claimed = webhooks.claim_due(session_factory, webhooks.BATCH, webhooks.lease(settings))
    outcomes = webhooks.send_batch(claimed, settings, last_start=time.monotonic() + 60)
    assert [(o.ok, o.put_off) for o in outcomes] == [(True, False), (True, False)]
    assert len(receiver.on("/erp")) == 2
