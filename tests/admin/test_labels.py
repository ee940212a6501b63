"""Staff read words, not codes: providers, statuses and methods in their language, amounts in the
audit trail as money; and every layout names the favicon."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.models import Payment
from tests.admin.staff_book import book, post, signed_in  # noqa: F401 - fixtures
from tests.admin.test_customer_payments import _text
from tests.portal.conftest import login as portal_login


def cells(html: str) -> list[str]:
    return [_text(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


def record_cheque(client, customer) -> None:  # type: ignore[no-untyped-def]
    page = client.get(f"/admin/customers/{customer.id}")
    key = re.search(r'name="key" value="([^"]+)"', page.text)
    assert key
    form = {"key": key.group(1), "amount": "1 234,56", "currency": "EUR", "received_on": "2026-11-24",
            "method": "cheque", "reference": "CHQ 1"}
    assert post(client, customer, "payments", form).status_code == 303


def test_a_payment_recorded_by_hand_reads_in_french(new_client, book, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@north.test", "fr")
    record_cheque(client, book["mine"])
    payment = session.scalars(select(Payment)).one()
    listing = cells(client.get("/admin/payments").text)
    for code in ("manual", "succeeded", "cheque"):
        assert code not in listing
    assert {"Enregistré à la main", "Réussi", "Chèque"} <= set(listing)
    page = _text(client.get(f"/admin/payments/{payment.id}").text)
    assert "Enregistré à la main" in page and " manual " not in f" {page} "
    filters = client.get("/admin/payments").text
    assert re.search(r'<option value="manual"[^>]*>Enregistré à la main</option>', filters)


def test_the_audit_trail_shows_amounts_as_money(new_client, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@north.test", "fr")
    record_cheque(client, book["mine"])
    trail = _text(client.get("/admin/audit?action=payment.recorded").text)
    assert re.search(r"amount : (après )?1 234,56 €", trail), trail
    assert re.search(r"invoices : (après )?N-1 : 1 200,00 €", trail.replace("N-1: ", "N-1 : ")), trail
    assert "123456" not in trail and "120000" not in trail and "amount_minor" not in trail
    assert "Paiement" in trail and " payment " not in f" {trail} "  # the record's type, in words


def test_every_layout_links_the_favicon(new_client, client, book) -> None:  # type: ignore[no-untyped-def]
    icon = '<link rel="icon" href="/static/img/favicon.svg" type="image/svg+xml">'
    assert icon in client.get("/admin/login").text
    staff = signed_in(new_client, "admin@x.test")
    assert icon in staff.get("/admin").text
    served = client.get("/static/img/favicon.svg")
    assert served.status_code == 200 and served.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in served.text
    debtor = new_client()
    portal_login(debtor, book["mine"])  # the debtor's portal, opened the way a reminder's link opens it
    assert icon in debtor.get("/portal").text
