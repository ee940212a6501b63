"""Fixtures giving a test localstripe (`sandbox.localstripe_server`), and what tests do that Stripe
itself would: sign an event, shape one, pay an intent as Stripe.js would."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any, Iterator

import pytest

from sandbox.localstripe_server import WEBHOOK_SECRET, LocalStripe, start_localstripe, stop_localstripe


@pytest.fixture(scope="session")
def localstripe_server() -> Iterator[LocalStripe]:
    """One localstripe per test session (per xdist worker)."""
    process, url, (workdir, log) = start_localstripe()
    try:
        yield LocalStripe(url=url)
    finally:
        stop_localstripe(process, workdir, log)


@pytest.fixture
def localstripe(localstripe_server: LocalStripe) -> LocalStripe:
    """localstripe, emptied before the test."""
    localstripe_server.reset()
    return localstripe_server


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header exactly as Stripe computes it: HMAC-SHA256 of `t.body`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event_payload(event_type: str, obj: dict[str, Any], event_id: str | None = None,
                  created: int | None = None) -> bytes:
    """A v1 snapshot event body shaped as Stripe sends it."""
    created = int(time.time()) if created is None else created
    return json.dumps({
        "id": event_id or f"evt_{os.urandom(12).hex()}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created,
        "type": event_type,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": obj},
    }).encode()


def pay_intent(server: LocalStripe, intent_id: str, number: str = "4242424242424242") -> dict[str, Any]:
    """What Stripe.js does with a card on real Stripe, done with the secret key: localstripe's
    `confirmCardPayment` stand-in never reads the Card Element (see tests/e2e/test_card_browser.py)."""
    method = server.api("POST", "/v1/payment_methods", {
        "type": "card", "card": {"number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"},
    })
    server.api("POST", f"/v1/payment_intents/{intent_id}", {"payment_method": method["id"]})
    return server.api("POST", f"/v1/payment_intents/{intent_id}/confirm", {})
