"""The webhooks log: who reads it, failed events, the raw body, and replay (fixing a failure;
a processed event replayed changes no money)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import Allocation, AuditEvent, Checkout, Invoice, OutboxMessage, Payment, WebhookEvent
from payments.checkout import create_checkout
from payments.webhooks import process_event, store_event
from tests import factories
from tests.admin.conftest import csrf_from
from tests.admin.staff_book import TODAY, book, signed_in, worker_env  # noqa: F401 - fixtures
from tests.admin.test_invoices_payments import paid_by_card, stripe_event, stripe_handler

import pytest

LATE_INTENT = "pi_arrives_before_checkout"


@pytest.fixture(autouse=True)
def _env(worker_env) -> None:  # type: ignore[no-untyped-def]
    pass


@pytest.fixture
def failed_event(session: Session, session_factory, book) -> tuple[WebhookEvent, Invoice]:  # type: ignore[no-untyped-def]
    """A payment_intent.succeeded naming our card checkout before its PaymentIntent is recorded: it
    fails, its error kept (an intent naming no checkout of ours is "not ours", never a failure)."""
    invoice = session.scalar(select(Invoice).where(Invoice.number == "N-1"))
    assert invoice is not None
    checkout = create_checkout(session, customer=book["mine"], contact=book["mine"].primary_contact,
                               selection={invoice.id: None}, method="card", today=TODAY)
    body = stripe_event("evt_early", "payment_intent.succeeded", checkout.id, LATE_INTENT, invoice.total_minor)
    event, _ = store_event(session, "stripe", "evt_early", "payment_intent.succeeded", body,
                           {"content-type": "application/json", "stripe-signature": "t=1,v1=abc"})
    session.commit()
    assert not process_event(session_factory, event.id, stripe_handler())
    session.expire_all()
    assert event.error and "is not recorded yet" in event.error
    return event, invoice


def replay(client: TestClient, event: WebhookEvent):  # type: ignore[no-untyped-def]
    page = client.get(f"/admin/webhooks/{event.id}")
    return client.post(f"/admin/webhooks/{event.id}/replay", data={"csrf_token": csrf_from(page.text)},
                       follow_redirects=False)


def money_state(session: Session) -> tuple:  # type: ignore[type-arg]
    session.expire_all()
    return (
        list(session.execute(select(Payment.provider_ref, Payment.status, Payment.amount_minor).order_by(Payment.id))),
        list(session.execute(select(Allocation.invoice_id, Allocation.amount_minor, Allocation.discount_minor)
                             .order_by(Allocation.id))),
        list(session.execute(select(Invoice.number, Invoice.open_minor, Invoice.status).order_by(Invoice.id))),
        session.scalar(select(func.count()).select_from(OutboxMessage)),
        session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action.like("payment.%"))),
    )


def test_who_reads_the_log_and_who_replays(new_client, session: Session, session_factory, book) -> None:  # type: ignore[no-untyped-def]
    invoice = session.scalar(select(Invoice).where(Invoice.number == "N-1"))
    assert invoice is not None
    _, event = paid_by_card(session, session_factory, book["mine"], invoice, "pi_north")
    for email, reads, replays in (("admin@x.test", 200, True), ("boss@north.test", 200, True),
                                  ("reader@north.test", 200, False), ("anne@north.test", 403, False)):
        client = signed_in(new_client, email)
        assert client.get("/admin/webhooks").status_code == reads, email
        detail = client.get(f"/admin/webhooks/{event.id}")
        assert detail.status_code == reads, email
        if reads == 200:
            assert ("Replay this event" in detail.text) == replays, email
    reader = signed_in(new_client, "reader@north.test")
    page = reader.get("/admin/disputes")
    response = reader.post(f"/admin/webhooks/{event.id}/replay", data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 403
    anne = signed_in(new_client, "anne@north.test")
    response = anne.post(f"/admin/webhooks/{event.id}/replay", data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 403
    assert signed_in(new_client, "admin@x.test").get("/admin/webhooks/999999").status_code == 404


def test_the_log_shows_failures_and_filters_them(new_client, session: Session, session_factory, failed_event) -> None:  # type: ignore[no-untyped-def]
    done, _ = store_event(session, "stripe", "evt_other", "customer.created", '{"id": "evt_other", "type": "customer.created"}', {})
    session.commit()
    assert process_event(session_factory, done.id, stripe_handler())
    client = signed_in(new_client, "admin@x.test")
    everything = client.get("/admin/webhooks").text
    assert "evt_early" in everything and "evt_other" in everything
    assert "1 event failed and is not processed." in everything
    failed = client.get("/admin/webhooks", params={"state": "failed"}).text
    assert "evt_early" in failed and "evt_other" not in failed and "StripeEventError" in failed
    processed = client.get("/admin/webhooks", params={"state": "processed"}).text
    assert "evt_other" in processed and "evt_early" not in processed
    fragment = client.get("/admin/webhooks", params={"state": "failed"}, headers={"HX-Request": "true"})
    assert "<html" not in fragment.text and "evt_early" in fragment.text


def test_the_detail_pretty_prints_the_raw_body(new_client, failed_event) -> None:  # type: ignore[no-untyped-def]
    event, _ = failed_event
    page = signed_in(new_client, "admin@x.test").get(f"/admin/webhooks/{event.id}").text
    assert "\n  &#34;data&#34;: {" in page or '\n  "data": {' in page
    assert LATE_INTENT in page and "stripe-signature" in page and "is not recorded yet" in page


def test_replay_of_a_failed_event_succeeds_once_the_cause_is_fixed(new_client, session: Session, failed_event,  # type: ignore[no-untyped-def]
                                                                   book) -> None:
    event, invoice = failed_event
    client = signed_in(new_client, "admin@x.test")
    still = replay(client, event)
    assert still.status_code == 200 and "failed again" in still.text
    session.expire_all()
    assert event.processed_at is None and session.scalar(select(func.count()).select_from(Payment)) == 0
    # The cause: the checkout was not known yet. Now it is.
    checkout = create_checkout(session, customer=book["mine"], contact=book["mine"].primary_contact,
                               selection={invoice.id: None}, method="card", today=TODAY)
    checkout.provider, checkout.provider_ref = "stripe", LATE_INTENT
    session.commit()
    fixed = replay(client, event)
    assert fixed.status_code == 200 and "the event was applied and is now processed" in fixed.text
    session.expire_all()
    assert event.processed_at is not None and event.error is None
    payment = session.scalar(select(Payment).where(Payment.provider_ref == LATE_INTENT))
    assert payment is not None and payment.status == "succeeded"
    assert (invoice.status, invoice.open_minor) == ("paid", 0)
    replayed = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "webhook.replayed")
                                    .order_by(AuditEvent.id)))
    assert [(e.actor, (e.after or {}).get("outcome")) for e in replayed] == [
        ("admin@x.test", "failed"), ("admin@x.test", "processed")]


def test_replaying_a_processed_event_changes_no_money(new_client, session: Session, session_factory, book) -> None:  # type: ignore[no-untyped-def]
    invoice = session.scalar(select(Invoice).where(Invoice.number == "N-1"))
    assert invoice is not None
    checkout = create_checkout(session, customer=book["mine"], contact=book["mine"].primary_contact,
                               selection={invoice.id: None}, method="card", today=TODAY)
    checkout.provider, checkout.provider_ref = "stripe", "pi_done"
    event, _ = store_event(session, "stripe", "evt_done", "payment_intent.succeeded",
                           stripe_event("evt_done", "payment_intent.succeeded", checkout.id, "pi_done",
                                        checkout.amount_minor), {})
    session.commit()
    assert process_event(session_factory, event.id, stripe_handler())
    before = money_state(session)
    assert before[0] == [("pi_done", "succeeded", invoice.total_minor)] and len(before[1]) == 1
    client = signed_in(new_client, "admin@x.test")
    for _ in range(2):
        response = replay(client, event)
        assert response.status_code == 200 and "running it again changed nothing" in response.text
    assert money_state(session) == before
    session.expire_all()
    assert session.get_one(Checkout, checkout.id).status == "succeeded"


def test_replay_needs_the_csrf_token(new_client, session: Session, failed_event) -> None:  # type: ignore[no-untyped-def]
    event, _ = failed_event
    client = signed_in(new_client, "admin@x.test")
    assert client.post(f"/admin/webhooks/{event.id}/replay", data={}).status_code == 403
    session.expire_all()
    assert event.attempts == 1


def test_the_log_and_replay_stay_within_the_users_companies(new_client, session: Session, session_factory, book,  # type: ignore[no-untyped-def]
                                                            failed_event) -> None:
    early, _ = failed_event  # names North's card checkout before its intent is recorded: North's
    north_invoice = session.scalar(select(Invoice).where(Invoice.number == "N-1"))
    south_invoice = factories.invoice(session, book["far"], total_minor=80_00, number="S-2", due_date=TODAY)
    session.commit()
    assert north_invoice is not None
    _, north = paid_by_card(session, session_factory, book["mine"], north_invoice, "pi_north", "evt_north")
    _, south = paid_by_card(session, session_factory, book["far"], south_invoice, "pi_south", "evt_south")
    seen = {"admin@x.test": {"evt_early", "evt_north", "evt_south"}, "boss@north.test": {"evt_early", "evt_north"},
            "reader@north.test": {"evt_early", "evt_north"}, "boss@south.test": {"evt_south"}}
    events = {"evt_early": early, "evt_north": north, "evt_south": south}
    for email, visible in seen.items():
        client = signed_in(new_client, email)
        log = client.get("/admin/webhooks").text
        for name, event in events.items():
            assert (name in log) == (name in visible), (email, name)
            assert client.get(f"/admin/webhooks/{event.id}").status_code == (200 if name in visible else 404)
        assert ("1 event failed" in log) == ("evt_early" in visible), email
    south_boss = signed_in(new_client, "boss@south.test")
    for event in (north, early):
        assert replay(south_boss, event).status_code == 404
    session.expire_all()
    assert north.attempts == 1 and early.attempts == 1
    assert session.scalar(select(func.count()).select_from(AuditEvent)
                          .where(AuditEvent.action == "webhook.replayed")) == 0


def test_an_event_not_ours_is_shown_as_such_and_filtered(new_client, session: Session, session_factory, book) -> None:  # type: ignore[no-untyped-def]
    invoice = session.scalar(select(Invoice).where(Invoice.number == "N-1"))
    assert invoice is not None
    # Another integration's intent, naming a checkout id it made up.
    body = stripe_event("evt_stranger", "payment_intent.succeeded", 424242, "pi_stranger", invoice.total_minor)
    event, _ = store_event(session, "stripe", "evt_stranger", "payment_intent.succeeded", body, {})
    session.commit()
    assert process_event(session_factory, event.id, stripe_handler())
    client = signed_in(new_client, "admin@x.test")
    listed = client.get("/admin/webhooks", params={"state": "not_ours"}).text
    assert "evt_stranger" in listed and "not ours" in listed and "pi_stranger is none of ours" in listed
    assert "evt_stranger" not in client.get("/admin/webhooks", params={"state": "failed"}).text
    detail = client.get(f"/admin/webhooks/{event.id}").text
    assert "it is about nothing we created, and changed no balance" in detail
    replayed = replay(client, event)
    assert replayed.status_code == 200 and "the event is about nothing we created" in replayed.text
    assert money_state(session)[0] == []
