"""payments.settlement.triage (through `triage_event` and the Stripe provider's `triage_update`): an event it tells
unchanged (a Triage without writes) is one the full handler applies without changing a single
row, and every event the handler would change something for is left to the handler or given its
writes. Events of every kind, in and out of order, wrong amounts and currencies, on both engines."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.settings import Settings
from ledger.models import Base, Checkout, Invoice, WebhookEvent
from payments.base import ProviderEvent
from payments.settlement import triage_event
from payments.stripe import StripeProvider, apply_event
from tests.fakes.localstripe_server import event_payload
from tests.payments.test_stripe_webhooks import INTENT, charge, checkout, intent, settings  # noqa: F401 - fixtures

UNTOUCHED = {WebhookEvent.__tablename__}


def _snapshot(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (the webhook events aside), in a stable order."""
    session.flush()
    return {table.name: sorted((tuple(row) for row in session.execute(select(table)).all()), key=repr)
            for table in Base.metadata.sorted_tables if table.name not in UNTOUCHED}


def _apply(session: Session, settings: Settings, payload: bytes) -> str:
    """The full handler's outcome: what it reported, or the exception it raised."""
    try:
        with session.begin_nested():
            return apply_event(session, json.loads(payload), settings)
    except Exception as error:  # noqa: BLE001 - the outcome is compared, whatever it is
        return f"raised {type(error).__name__}"


def test_unchanged_only_for_what_the_handler_leaves_as_it_is(
    session: Session, checkout: Checkout, invoices: list[Invoice], settings: Settings,  # noqa: F811
) -> None:
    amount = checkout.amount_minor
    card = {"id": "pm_1", "object": "payment_method", "card": {"brand": "visa", "last4": "4242"}}
    declined = {"last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}
    steps: list[tuple[str, dict[str, Any], bool]] = [  # (type, object, expected unchanged)
        ("payment_intent.payment_failed", intent(checkout, "requires_payment_method", **declined), False),
        ("payment_intent.payment_failed", intent(checkout, "requires_payment_method", **declined), True),
        ("payment_intent.payment_failed", intent(checkout, "requires_payment_method",
                                                 last_payment_error={"code": "expired_card"}), False),
        ("payment_intent.payment_failed", intent(checkout, "requires_payment_method",
                                                 last_payment_error={"code": "expired_card"}), True),
        ("payment_intent.processing", intent(checkout, "processing"), False),
        ("payment_intent.processing", intent(checkout, "processing"), True),
        ("payment_intent.payment_failed", intent(checkout, "requires_payment_method", **declined), True),
        ("payment_intent.processing", intent(checkout, "processing", amount=amount + 1), False),
        ("payment_intent.processing", {**intent(checkout, "processing"), "currency": "usd"}, False),
        ("payment_intent.processing", {**intent(checkout, "processing"), "id": "pi_someone_else"}, False),
        ("payment_intent.processing", intent(checkout, "processing", payment_method=card), False),
        ("payment_intent.processing", intent(checkout, "processing", payment_method=card), True),
        ("payment_intent.succeeded", intent(checkout, "succeeded", amount_received=amount - 1), False),
        ("payment_intent.succeeded", intent(checkout, "succeeded"), False),
        ("payment_intent.succeeded", intent(checkout, "succeeded"), True),
        ("payment_intent.processing", intent(checkout, "processing"), True),
        ("payment_intent.payment_failed", intent(checkout, "requires_payment_method", **declined), True),
        ("charge.dispute.created", charge(checkout, id="dp_1", reason="fraudulent"), False),
        ("charge.refunded", charge(checkout, refunded=True, amount_refunded=amount), False),
        ("payment_intent.succeeded", intent(checkout, "succeeded"), True),
    ]
    provider = StripeProvider()
    for n, (kind, obj, expected) in enumerate(steps):
        payload = event_payload(kind, obj, f"evt_{n}")
        event = ProviderEvent(id=f"evt_{n}", type=kind, payload=json.loads(payload), body=payload.decode())
        told = triage_event(session.connection(), provider, event)
        unchanged = told is not None and told.writes is None
        assert unchanged == expected, (n, kind, told)
        before = _snapshot(session)
        outcome = _apply(session, settings, payload)
        after = _snapshot(session)
        if unchanged:
            assert told is not None
            # Told unchanged: the handler applies it without raising and without changing a row.
            assert not outcome.startswith("raised"), (n, outcome)
            assert told.outcome == outcome.split(":")[0]
            assert after == before, (n, kind, [name for name in before if before[name] != after[name]])
        else:
            # Left to the handler, or given writes: it changes something, or refuses the event (not
            # ours, retried).
            assert outcome.startswith("raised") or after != before or kind.startswith("charge."), (n, kind, outcome)
