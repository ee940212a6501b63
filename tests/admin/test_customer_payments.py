"""Staff record a payment received by hand on the customer page, and cancel it on the payment page."""

from __future__ import annotations

import re
from html import unescape

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.models import AuditEvent, Invoice, Payment
from tests.admin.conftest import csrf_from
from tests.admin.staff_book import book, post, signed_in  # noqa: F401 - fixtures


def _text(html: str) -> str:
    text = unescape(re.sub(r"<[^>]+>", " ", html)).replace("\u202f", " ").replace("\u00a0", " ")
    return " ".join(text.split())


def _invoice(session: Session, number: str) -> Invoice:
    session.expire_all()
    return session.scalars(select(Invoice).where(Invoice.number == number)).one()


def test_record_a_cheque_then_cancel_it(new_client, book, session: Session) -> None:  # type: ignore[no-untyped-def]
    mine = book["mine"]
    client = signed_in(new_client, "anne@north.test", "fr")
    page = client.get(f"/admin/customers/{mine.id}")
    assert "Enregistrer un paiement reçu" in page.text and 'name="alloc-' in page.text
    key = re.search(r'name="key" value="([^"]+)"', page.text)
    assert key
    form = {"key": key.group(1), "amount": "1 500,00", "currency": "EUR", "received_on": "2026-11-24",
            "method": "cheque", "reference": "CHQ 0012345"}
    response = post(client, mine, "payments", form)
    assert response.status_code == 303 and response.headers["location"].endswith("?done=payment#actions")
    assert post(client, mine, "payments", form).status_code == 303  # the same form again: one payment
    payment = session.scalars(select(Payment).where(Payment.customer_id == mine.id)).one()
    assert (payment.method, payment.amount_minor, payment.reference, payment.status) == (
        "cheque", 1500_00, "CHQ 0012345", "succeeded")
    assert _invoice(session, "N-1").status == "paid"

    shown = _text(client.get(f"/admin/customers/{mine.id}?done=payment").text)
    assert "Paiement enregistré." in shown
    assert "Avoirs et crédits 300,00 €" in shown  # the over-payment, on the statement
    assert "Paiement enregistré à la main" in shown  # on the timeline
    payment_page = client.get(f"/admin/payments/{payment.id}")
    assert "Chèque" in payment_page.text and "CHQ 0012345" in payment_page.text
    cancelled = client.post(f"/admin/payments/{payment.id}/cancel",
                            data={"csrf_token": csrf_from(payment_page.text)}, follow_redirects=False)
    assert cancelled.status_code == 303
    after = _text(client.get(cancelled.headers["location"]).text)
    assert "Annulé" in after and "Annuler ce paiement" not in after
    assert _invoice(session, "N-1").open_minor == 1200_00
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "payment")).all()
    assert sorted(actions) == ["payment.cancelled", "payment.recorded"]


def test_bad_input_is_named_and_the_form_kept(new_client, book, session: Session) -> None:  # type: ignore[no-untyped-def]
    mine = book["mine"]
    client = signed_in(new_client, "boss@north.test")
    invoice = _invoice(session, "N-1")
    response = post(client, mine, "payments", {"amount": "100", "currency": "EUR", "received_on": "2026-11-24",
                                               "method": "cash", f"alloc-{invoice.id}": "150", "reference": "R-9"})
    assert response.status_code == 400
    assert "The amounts given to invoices (€150.00) exceed the payment (€100.00)." in unescape(response.text)
    assert 'value="R-9"' in response.text and f'name="alloc-{invoice.id}" id="alloc-{invoice.id}" size="10" ' \
                                              f'value="150"' in response.text
    bad_amount = post(client, mine, "payments", {"amount": "12,345", "currency": "EUR", "received_on": "2026-11-24",
                                                 "method": "cash"})
    assert bad_amount.status_code == 400 and "The amount received 12,345 is not an amount in EUR." in bad_amount.text
    assert session.scalars(select(Payment)).all() == []


def test_who_may_record(new_client, book, session: Session) -> None:  # type: ignore[no-untyped-def]
    form = {"amount": "10", "currency": "EUR", "received_on": "2026-11-24", "method": "cash"}
    viewer = signed_in(new_client, "reader@north.test")
    assert "Record a payment received" not in viewer.get(f"/admin/customers/{book['mine'].id}").text
    assert post(viewer, book["mine"], "payments", form).status_code == 403
    bob = signed_in(new_client, "bob@north.test")  # a collector, not Mine's
    assert post(bob, book["mine"], "payments", form).status_code == 404
    south = signed_in(new_client, "boss@south.test")
    assert post(south, book["mine"], "payments", form).status_code == 404
    assert session.scalars(select(Payment)).all() == []
