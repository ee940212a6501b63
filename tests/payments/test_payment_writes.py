"""payments.settlement.triage / write_payment (through the Stripe provider's `triage` and
payments.webhooks.store_and_write): an event that moves a payment without settling money,
written with Core statements, leaves every row of every table as the full handler
(`store_and_apply` with `apply_event`) leaves it; each event the fast path does not cover is
left to the handler. Events of every kind, in and out of order, wrong amounts, currencies and
intents, repeated, on both engines."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session, sessionmaker

from kernel.settings import Settings
from ledger.models import Base, Checkout, Invoice, Payment, WebhookEvent
from payments.base import ProviderEvent, Triage
from payments.checkout import ENDED_BY_US
from payments.settlement import triage_event
from payments.stripe import StripeProvider
from payments.webhooks import store_and_apply, store_and_write, store_unchanged
from tests.fakes.localstripe_server import event_payload
from tests.payments.test_stripe_webhooks import INTENT, charge, checkout, intent, settings  # noqa: F401 - fixtures

# Rows these paths insert get ids of their own on each run (PostgreSQL's sequences do not roll
# back): compared without them.
NEW_ROWS = {"audit_events", WebhookEvent.__tablename__}
HEADERS = {"content-type": "application/json", "stripe-signature": "t=1,v1=0"}


def _snapshot(connection: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    found = {}
    for table in Base.metadata.sorted_tables:
        columns = [column for column in table.columns if not (table.name in NEW_ROWS and column.name == "id")]
        found[table.name] = sorted((tuple(row) for row in connection.execute(select(*columns)).all()), key=repr)
    return found


def _handler(factory: sessionmaker[Session], settings: Settings, event: ProviderEvent) -> bool | None:
    """The full path: stored and applied through the ORM handler."""
    provider = StripeProvider()
    return store_and_apply(factory, "stripe", event.id, event.type, event.body, HEADERS,
                           lambda session: provider.apply(session, settings, event, None))


def _fast(factory: sessionmaker[Session], event: ProviderEvent, told: Triage) -> bool | None:
    if told.writes is None:
        return store_unchanged(factory, "stripe", event.id, event.type, event.body, HEADERS)
    return store_and_write(factory, "stripe", event.id, event.type, event.body, HEADERS, told.writes)


def _run(connection: Connection, apply: Callable[[], bool | None]) -> tuple[bool | None, dict[str, Any]]:
    """`apply`'s outcome and every row after it, all rolled back."""
    trial = connection.begin_nested()
    try:
        return apply(), _snapshot(connection)
    finally:
        trial.rollback()


def _event(n: int, kind: str, obj: dict[str, Any]) -> ProviderEvent:
    payload = event_payload(kind, obj, f"evt_w{n}")
    return ProviderEvent(id=f"evt_w{n}", type=kind, payload=json.loads(payload), body=payload.decode())


def _checkout_set(checkout_id: int, **values: Any) -> Callable[[Connection], None]:
    """Something done to the checkout before an event (the debtor, the worker, another attempt)."""
    return lambda connection: connection.execute(update(Checkout).where(Checkout.id == checkout_id).values(**values))


def test_writes_leave_the_rows_the_handler_leaves(
    session: Session, session_factory: sessionmaker[Session], checkout: Checkout,  # noqa: F811
    invoices: list[Invoice], settings: Settings,  # noqa: F811
) -> None:
    amount = checkout.amount_minor
    card = {"id": "pm_1", "object": "payment_method", "card": {"brand": "visa", "last4": "4242"}}
    other_card = {"id": "pm_2", "object": "payment_method", "card": {"brand": "mastercard", "last4": "4444"}}
    declined = {"last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}
    expired = {"last_payment_error": {"code": "expired_card"}}
    # Another reason of the same catalog code: the payment's reason changes, the checkout does not.
    honour = {"last_payment_error": {"code": "do_not_honor", "message": "Do not honor: the card was declined."}}
    funds = {"last_payment_error": {"message": "Your card has insufficient funds."}}
    failed = "payment_intent.payment_failed"
    # (type, object, expected: "full" handler, "writes" or "unchanged", something done first)
    steps: list[tuple[str, dict[str, Any], str, Callable[[Connection], None] | None]] = [
        (failed, intent(checkout, "requires_payment_method", **declined), "full", None),  # creates the payment
        (failed, intent(checkout, "requires_payment_method", **declined), "unchanged", None),
        (failed, intent(checkout, "requires_payment_method", **expired), "writes", None),
        (failed, intent(checkout, "requires_payment_method", **declined), "writes", None),
        (failed, intent(checkout, "requires_payment_method", **honour), "writes", None),
        (failed, intent(checkout, "requires_payment_method", **honour), "unchanged", None),
        (failed, intent(checkout, "requires_payment_method", payment_method=card, **honour), "writes", None),
        (failed, intent(checkout, "requires_payment_method", payment_method=other_card, **honour), "unchanged",
         None),
        (failed, intent(checkout, "requires_payment_method", amount=amount + 1, **funds), "full", None),
        (failed, {**intent(checkout, "requires_payment_method", **funds), "currency": "usd"}, "full", None),
        (failed, {**intent(checkout, "requires_payment_method", **funds), "id": "pi_someone_else"}, "full", None),
        (failed, intent(checkout, "requires_payment_method", **funds), "writes", None),
        ("payment_intent.processing", intent(checkout, "processing", amount=amount - 1), "full", None),
        ("payment_intent.processing", intent(checkout, "processing"), "writes", None),
        ("payment_intent.processing", intent(checkout, "processing"), "unchanged", None),
        (failed, intent(checkout, "requires_payment_method", **expired), "unchanged", None),  # late: processing holds
        ("payment_intent.succeeded", intent(checkout, "succeeded", amount_received=amount - 1), "full", None),
        ("payment_intent.succeeded", intent(checkout, "succeeded"), "full", None),
        ("payment_intent.processing", intent(checkout, "processing"), "unchanged", None),
        (failed, intent(checkout, "requires_payment_method", **funds), "unchanged", None),
        ("charge.dispute.created", charge(checkout, id="dp_1", reason="fraudulent"), "full", None),
        ("charge.refunded", charge(checkout, refunded=True, amount_refunded=amount), "full", None),
        ("payment_intent.succeeded", intent(checkout, "succeeded"), "unchanged", None),
    ]
    _check(session, session_factory, settings, steps)


@pytest.mark.parametrize("code", ENDED_BY_US)
def test_processing_of_a_checkout_the_debtor_or_we_ended(
    session: Session, session_factory: sessionmaker[Session], checkout: Checkout,  # noqa: F811
    invoices: list[Invoice], settings: Settings, code: str,  # noqa: F811
) -> None:
    """The payment moves and its audit row is written; the checkout stays as it was left."""
    declined = {"last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}
    checkout_id = checkout.id
    steps: list[tuple[str, dict[str, Any], str, Callable[[Connection], None] | None]] = [
        ("payment_intent.payment_failed", intent(checkout, "requires_payment_method", **declined), "full", None),
        ("payment_intent.processing", intent(checkout, "processing"), "writes",
         _checkout_set(checkout_id, status="cancelled", failure_code=code)),
        ("payment_intent.processing", intent(checkout, "processing"), "unchanged", None),
    ]
    _check(session, session_factory, settings, steps)
    assert tuple(session.execute(select(Checkout.status, Checkout.failure_code)
                                 .where(Checkout.id == checkout_id)).one()) == ("cancelled", code)


def test_processing_of_a_checkout_showing_it_already_and_a_card_told_late(
    session: Session, session_factory: sessionmaker[Session], checkout: Checkout,  # noqa: F811
    invoices: list[Invoice], settings: Settings,  # noqa: F811
) -> None:
    """A checkout the card page moved to processing already: the payment moves, the checkout is
    left alone. A card told first by a late decline is recorded, and never replaced."""
    declined = {"last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}
    card = {"id": "pm_1", "object": "payment_method", "card": {"brand": "visa", "last4": "4242"}}
    other_card = {"id": "pm_2", "object": "payment_method", "card": {"brand": "mastercard", "last4": "4444"}}
    failed = "payment_intent.payment_failed"
    steps: list[tuple[str, dict[str, Any], str, Callable[[Connection], None] | None]] = [
        (failed, intent(checkout, "requires_payment_method", **declined), "full", None),
        ("payment_intent.processing", intent(checkout, "processing"), "writes",
         _checkout_set(checkout.id, status="processing")),
        (failed, intent(checkout, "requires_payment_method", payment_method=card, **declined), "writes", None),
        (failed, intent(checkout, "requires_payment_method", payment_method=other_card, **declined), "unchanged",
         None),
        ("payment_intent.processing", intent(checkout, "processing", payment_method=other_card), "unchanged", None),
    ]
    _check(session, session_factory, settings, steps)
    assert tuple(session.execute(select(Payment.status, Payment.card_brand, Payment.card_last4)).one()) == (
        "processing", "visa", "4242")


def test_processing_of_a_payment_that_is_not_its_checkouts_latest(
    session: Session, session_factory: sessionmaker[Session], checkout: Checkout,  # noqa: F811
    invoices: list[Invoice], settings: Settings,  # noqa: F811
) -> None:
    """Another attempt made a newer payment: the older one moves, the checkout keeps showing the newer one."""
    declined = {"last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}
    funds = {"last_payment_error": {"message": "Your card has insufficient funds."}}
    failed = "payment_intent.payment_failed"
    steps: list[tuple[str, dict[str, Any], str, Callable[[Connection], None] | None]] = [
        (failed, intent(checkout, "requires_payment_method", **declined), "full", None),
        (failed, {**intent(checkout, "requires_payment_method", **funds), "id": "pi_second_attempt"}, "full",
         _checkout_set(checkout.id, provider_ref="pi_second_attempt")),
        ("payment_intent.processing", intent(checkout, "processing"), "writes",
         _checkout_set(checkout.id, provider_ref=INTENT)),
    ]
    _check(session, session_factory, settings, steps)
    assert tuple(session.execute(select(Checkout.status, Checkout.failure_code)
                                 .where(Checkout.id == checkout.id)).one()) == ("open", "insufficient_funds")


def _check(session: Session, factory: sessionmaker[Session], settings: Settings,
           steps: list[tuple[str, dict[str, Any], str, Callable[[Connection], None] | None]]) -> None:
    connection = session.connection()
    provider = StripeProvider()
    seen = set()
    for n, (kind, obj, expected, first) in enumerate(steps):
        if first is not None:
            first(connection)
        event = _event(n, kind, obj)
        told = triage_event(connection, provider, event)
        found = "full" if told is None else "unchanged" if told.writes is None else "writes"
        assert found == expected, (n, kind, told)
        seen.add(found)
        handled, by_handler = _run(connection, lambda: _handler(factory, settings, event))
        if told is None:
            assert _handler(factory, settings, event) is not None  # applied for real, by the handler
            continue
        done, written = _run(connection, lambda: _fast(factory, event, told))
        assert done is True and handled is True, (n, kind, done, handled)
        assert written == by_handler, (n, kind, [name for name in written if written[name] != by_handler[name]])
        assert _fast(factory, event, told) is True  # kept
        assert _fast(factory, event, told) is None  # the same event again: a duplicate, nothing written
    assert seen == {"full", "writes", "unchanged"} or len(steps) < 5


def test_a_payment_moved_since_the_read_is_left_to_the_handler(
    session: Session, session_factory: sessionmaker[Session], checkout: Checkout,  # noqa: F811
    invoices: list[Invoice], settings: Settings,  # noqa: F811
) -> None:
    """Between the read and the write another event moved the payment: nothing of the fast path
    is kept (not even the event), and the handler then applies the event from what the payment holds."""
    provider = StripeProvider()
    connection = session.connection()
    declined = {"last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}
    expired = {"last_payment_error": {"code": "expired_card"}}
    assert _handler(session_factory, settings, _event(0, "payment_intent.payment_failed",
                                                      intent(checkout, "requires_payment_method", **declined)))
    late = _event(1, "payment_intent.payment_failed", intent(checkout, "requires_payment_method", **expired))
    told = triage_event(connection, provider, late)
    assert told is not None and told.writes is not None
    assert _handler(session_factory, settings, _event(2, "payment_intent.processing", intent(checkout, "processing")))
    before = _snapshot(connection)
    assert _fast(session_factory, late, told) is False
    assert _snapshot(connection) == before
    assert _handler(session_factory, settings, late) is True
    payment = connection.execute(select(Payment.status, Payment.failure_reason)).one()
    assert tuple(payment) == ("processing", "Your card was declined.")  # never backwards
