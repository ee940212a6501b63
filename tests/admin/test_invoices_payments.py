"""Staff list invoices and payments with filters and pages, and read one payment's story."""

from __future__ import annotations

import json
import re
from datetime import date
from html import unescape

import pytest
from sqlalchemy.orm import Session

from ledger.models import Customer, Invoice, Payment, WebhookEvent
from payments.checkout import create_checkout
from kernel.settings import load_settings
from payments.stripe import StripeProvider
from payments.webhooks import ProviderHandler
from payments.webhooks import process_event, store_event
from tests import factories
from tests.admin.staff_book import TODAY, book, signed_in, worker_env  # noqa: F401 - fixtures

INTENT = "pi_admin_test_0001"


def numbers(html: str) -> list[str]:
    return [n.split(" (")[0] for n in re.findall(r'<th scope="row">([^<]+)</th>', html)]


def stripe_event(event_id: str, kind: str, checkout_id: int, intent_id: str, amount: int) -> str:
    return json.dumps({"id": event_id, "object": "event", "type": kind, "created": 1795600000, "data": {"object": {
        "id": intent_id, "object": "payment_intent", "amount": amount, "amount_received": amount, "currency": "eur",
        "metadata": {"checkout_id": str(checkout_id)}, "status": "succeeded"}}})


def stripe_handler() -> ProviderHandler:
    """Stripe's handler as the worker has it (settings from the environment worker_env sets)."""
    return ProviderHandler(StripeProvider(), load_settings())


def paid_by_card(session: Session, session_factory, customer: Customer, invoice: Invoice,  # type: ignore[no-untyped-def]
                 intent_id: str = INTENT, event_id: str = "evt_paid_1") -> tuple[Payment, WebhookEvent]:
    checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                               selection={invoice.id: None}, method="card", today=TODAY)
    checkout.provider, checkout.provider_ref = "stripe", intent_id
    event, _ = store_event(session, "stripe", event_id, "payment_intent.succeeded",
                           stripe_event(event_id, "payment_intent.succeeded", checkout.id, intent_id,
                                        checkout.amount_minor), {"content-type": "application/json"})
    session.commit()
    assert process_event(session_factory, event.id, stripe_handler())
    session.expire_all()
    payment = session.query(Payment).filter_by(provider_ref=intent_id).one()
    return payment, event


VISIBLE = {
    "admin@x.test": {"N-1", "N-2", "S-1"},
    "boss@north.test": {"N-1", "N-2"},
    "boss@south.test": {"S-1"},
    "anne@north.test": {"N-1"},
    "bob@north.test": set(),
    "reader@north.test": {"N-1", "N-2"},
}


def test_invoices_list_by_role(new_client, book) -> None:  # type: ignore[no-untyped-def]
    for email, expected in VISIBLE.items():
        client = signed_in(new_client, email)
        response = client.get("/admin/invoices")
        assert response.status_code == 200
        assert set(numbers(response.text)) == expected, email


def test_payments_and_payment_page_by_role(new_client, session: Session, session_factory, book) -> None:  # type: ignore[no-untyped-def]
    invoice = session.query(Invoice).filter_by(number="N-1").one()
    payment, event = paid_by_card(session, session_factory, book["mine"], invoice)
    for email, seen in VISIBLE.items():
        client = signed_in(new_client, email)
        listing = client.get("/admin/payments")
        assert listing.status_code == 200
        assert (f"/admin/payments/{payment.id}" in listing.text) == ("N-1" in seen), email
        page = client.get(f"/admin/payments/{payment.id}")
        assert page.status_code == (200 if "N-1" in seen else 404), email
    page = signed_in(new_client, "boss@north.test", "fr").get(f"/admin/payments/{payment.id}").text
    assert "1\u202f200,00\u00a0€" in page and "Affectations aux factures" in page
    assert "N-1" in page and INTENT in page and "evt_paid_1" in page and f"/admin/webhooks/{event.id}" in page
    assert "payment_intent.succeeded" in page


def test_payment_page_lists_only_its_own_events(new_client, session: Session, session_factory, book) -> None:  # type: ignore[no-untyped-def]
    first = session.query(Invoice).filter_by(number="N-1").one()
    second = factories.invoice(session, book["mine"], total_minor=80_00, number="N-9")
    session.commit()
    payment, _ = paid_by_card(session, session_factory, book["mine"], first)
    # A reference that merely contains ours names another payment.
    other, _ = paid_by_card(session, session_factory, book["mine"], second, intent_id=INTENT + "9",
                            event_id="evt_paid_2")
    page = signed_in(new_client, "admin@x.test").get(f"/admin/payments/{payment.id}").text
    assert "evt_paid_1" in page and "evt_paid_2" not in page
    other_page = signed_in(new_client, "admin@x.test").get(f"/admin/payments/{other.id}").text
    assert "evt_paid_2" in other_page and "evt_paid_1" not in other_page


@pytest.fixture(autouse=True)
def _env(worker_env) -> None:  # type: ignore[no-untyped-def]
    pass


@pytest.fixture
def invoices(session: Session, book):  # type: ignore[no-untyped-def]
    """60 more invoices of OTHER (NORTH), due one a day from 1 November; I-05 disputed, I-06 paid."""
    made = []
    for i in range(60):
        made.append(factories.invoice(session, book["other"], total_minor=(i + 1) * 100, number=f"I-{i:02d}",
                                      due_date=date.fromordinal(date(2026, 11, 1).toordinal() + i)))
    made[5].status = "disputed"
    made[6].status, made[6].open_minor = "paid", 0
    session.commit()
    return made


def test_invoice_filters(new_client, invoices) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    assert numbers(client.get("/admin/invoices", params={"number": "I-4"}).text) == [
        f"I-4{i}" for i in range(10)]
    assert numbers(client.get("/admin/invoices", params={"status": "disputed"}).text) == ["I-05"]
    assert numbers(client.get("/admin/invoices", params={"disputed": "1"}).text) == ["I-05"]
    assert numbers(client.get("/admin/invoices", params={"status": "paid"}).text) == ["I-06"]
    assert numbers(client.get("/admin/invoices", params={"due_from": "2026-12-01", "due_to": "2026-12-03"}).text) == [
        "I-30", "I-31", "I-32"]
    overdue = numbers(client.get("/admin/invoices", params={"overdue": "1", "company": "NORTH"}).text)
    # Due before 25 November, open, not disputed: N-1 and I-00..I-23 but I-05 and I-06.
    assert overdue == ["N-1"] + [f"I-{i:02d}" for i in range(24) if i not in (5, 6)]
    assert numbers(client.get("/admin/invoices", params={"company": "SOUTH"}).text) == ["S-1"]
    newest = numbers(client.get("/admin/invoices", params={"sort": "-due"}).text)
    assert newest[:2] == ["N-2", "I-59"]


def test_a_bad_date_is_named_and_left_out(new_client, invoices) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    response = client.get("/admin/invoices", params={"due_from": "31/12/2026", "number": "I-01"})
    assert response.status_code == 200
    assert "31/12/2026" in unescape(response.text) and "is not a date" in response.text
    assert numbers(response.text) == ["I-01"]


def test_invoice_paging_with_htmx(new_client, invoices) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@north.test")
    first = client.get("/admin/invoices")
    assert len(numbers(first.text)) == 50
    link = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert link is not None
    second = client.get(unescape(link.group(1)), headers={"HX-Request": "true"})
    assert "<html" not in second.text and len(numbers(second.text)) == 12  # 62 NORTH invoices in all
    assert set(numbers(first.text)).isdisjoint(numbers(second.text))


def test_payment_filters(new_client, session: Session, session_factory, book) -> None:  # type: ignore[no-untyped-def]
    invoice = session.query(Invoice).filter_by(number="N-1").one()
    payment, _ = paid_by_card(session, session_factory, book["mine"], invoice)
    client = signed_in(new_client, "admin@x.test")

    def shown(**params: str) -> bool:
        return f"/admin/payments/{payment.id}" in client.get("/admin/payments", params=params).text

    assert shown(provider="stripe") and shown(method="card") and shown(status="succeeded") and shown(q=INTENT)
    assert not shown(method="bank_transfer") and not shown(status="failed") and not shown(company="SOUTH")
    assert shown(**{"from": "2026-11-25", "to": "2026-11-25"}) and not shown(**{"from": "2026-11-26"})
    assert not shown(to="2026-11-24")
    bad = client.get("/admin/payments", params={"from": "yesterday"})
    assert bad.status_code == 200 and "is not a date" in bad.text

