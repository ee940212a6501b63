"""The debtor's pay pages around a payment in progress: shown, locked, refused, cancelled,
expired; credit reserved rather than consumed; a failure that says why in the debtor's language."""

from __future__ import annotations

import re
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.clock import clock
from kernel.settings import Settings
from ledger.models import Checkout, Company, Customer, Invoice, InvoiceKind
from payments.bank_transfer import account_for
from payments.checkout import create_checkout, expire_transfers
from payments.settlement import apply_payment_status
from tests import factories
from tests.portal.conftest import csrf_from, login

HTMX = {"HX-Request": "true"}


def _nbsp(text: str) -> str:
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def _form(token: str, invoices: list[Invoice], **extra: str) -> dict[str, object]:
    return {"csrf_token": token, "invoice": [str(invoice.id) for invoice in invoices], **extra}


def _transfer(client: TestClient, session: Session, invoices: list[Invoice]) -> Checkout:
    token = csrf_from(client.get("/portal").text)
    response = client.post("/portal/pay", data=_form(token, invoices, method="bank_transfer", action="pay"),
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/portal/pay/(\d+)/transfer", response.headers["location"])
    assert match
    checkout = session.get(Checkout, int(match.group(1)))
    assert checkout is not None
    return checkout


def test_invoices_of_a_transfer_awaited_are_shown_in_progress_and_cannot_be_paid_again(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    login(client, customer)
    checkout = _transfer(client, session, invoices[:2])
    # Back on the statement: in progress, with method and date, not ticked, no checkbox at all.
    statement = _nbsp(client.get("/portal").text)
    for invoice in invoices[:2]:
        assert f'id="pay-{invoice.id}"' not in statement
    assert re.search(rf'id="pay-{invoices[2].id}" checked', statement)
    assert statement.count(f'href="/portal/pay/{checkout.id}">Virement du 25 novembre attendu</a>') == 2
    assert "Paiement en cours" in statement
    # The invoice page says so too.
    page = _nbsp(client.get(f"/portal/invoices/{invoices[0].id}").text)
    assert "Paiement en cours" in page and "Virement du 25 novembre attendu" in page
    # Whatever the form posts, the pay service refuses them, by card as by transfer, whole or in part.
    token = csrf_from(statement)
    for selection in (invoices[:1], [invoices[1], invoices[2]], invoices):
        refused = client.post("/portal/pay", data=_form(token, selection, method="bank_transfer", action="pay"))
        assert refused.status_code == 422
        assert "a déjà un paiement en cours" in _nbsp(refused.text)
    summary = client.post("/portal/pay/summary", data=_form(token, [invoices[0], invoices[2]]), headers=HTMX)
    assert "La facture F-1 a déjà un paiement en cours" in _nbsp(summary.text)
    assert session.scalars(select(Checkout)).all() == [checkout]
    # The same selection again (a double click) is the same checkout, not a refusal.
    again = client.post("/portal/pay", data=_form(token, invoices[:2], method="bank_transfer", action="pay"),
                        follow_redirects=False)
    assert again.headers["location"] == f"/portal/pay/{checkout.id}/transfer"


def test_the_debtor_cancels_a_transfer_awaited_and_pays_another_way(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    login(client, customer)
    checkout = _transfer(client, session, invoices[:2])
    transfer = client.get(f"/portal/pay/{checkout.id}/transfer").text
    assert "Je paierai autrement" in transfer
    cancelled = client.post(f"/portal/pay/{checkout.id}/cancel", data={"csrf_token": csrf_from(transfer)},
                            follow_redirects=False)
    assert cancelled.status_code == 303 and cancelled.headers["location"] == "/portal?cancelled=1"
    session.expire_all()
    assert (checkout.status, checkout.failure_code) == ("cancelled", "debtor_cancelled")
    statement = _nbsp(client.get(cancelled.headers["location"]).text)
    assert "Le paiement a été annulé" in statement
    assert re.search(rf'id="pay-{invoices[0].id}" checked', statement)
    # Its details no longer hold: the page says so and leads back to the statement; no PDF of them.
    page = _nbsp(client.get(f"/portal/pay/{checkout.id}/transfer").text)
    assert "Ces coordonnées de virement ne sont plus valables" in page and 'href="/portal"' in page
    assert checkout.reference not in page.replace(" ", "")
    assert client.get(f"/portal/pay/{checkout.id}/transfer.pdf", follow_redirects=False).status_code == 303
    # Free to pay another way.
    other = _transfer(client, session, invoices[:1])
    assert other.id != checkout.id


def test_a_payment_already_on_its_way_cannot_be_cancelled(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    checkout = create_checkout(session, customer=customer, contact=None, selection={invoices[0].id: None},
                               method="direct_debit", today=date(2026, 11, 25))
    apply_payment_status(session, checkout=checkout, provider="gocardless", provider_ref="PM1", method="direct_debit",
                         status="processing", amount_minor=checkout.amount_minor, currency="EUR", settings=settings)
    session.flush()
    login(client, customer)
    page = client.get(f"/portal/pay/{checkout.id}").text
    assert "/cancel" not in page
    refused = client.post(f"/portal/pay/{checkout.id}/cancel", data={"csrf_token": csrf_from(page)})
    assert refused.status_code == 409 and "ne peut plus être annulé" in _nbsp(refused.text)
    session.expire_all()
    assert checkout.status == "processing"
    statement = _nbsp(client.get("/portal").text)
    assert "Prélèvement du 25 novembre en cours" in statement and f'id="pay-{invoices[0].id}"' not in statement


def test_another_customers_checkout_cannot_be_cancelled(
    client: TestClient, session: Session, company: Company, customer: Customer, invoices: list[Invoice]
) -> None:
    login(client, customer)
    checkout = _transfer(client, session, invoices[:1])
    other = factories.customer(session, company)
    client.cookies.clear()
    login(client, other)
    token = csrf_from(client.get("/portal").text)
    assert client.post(f"/portal/pay/{checkout.id}/cancel", data={"csrf_token": token}).status_code == 404
    session.expire_all()
    assert checkout.status == "open"


def test_a_transfer_that_receives_nothing_expires_after_the_company_delay(
    client: TestClient, session: Session, company: Company, customer: Customer, invoices: list[Invoice]
) -> None:
    company.transfer_expiry_days = 10
    login(client, customer)
    checkout = _transfer(client, session, invoices[:1])
    assert expire_transfers(session, clock.now() + timedelta(days=9)) == 0
    assert expire_transfers(session, clock.now() + timedelta(days=10)) == 1
    session.flush()
    assert (checkout.status, checkout.failure_code) == ("cancelled", "expired")
    page = _nbsp(client.get(f"/portal/pay/{checkout.id}/transfer").text)
    assert "Ces coordonnées de virement ne sont plus valables" in page
    assert "Ce paiement a expiré" in page
    assert re.search(rf'id="pay-{invoices[0].id}" checked', client.get("/portal").text)


def test_credit_is_reserved_on_the_statement_and_itemised_on_the_transfer(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    note = factories.invoice(session, customer, total_minor=102_00, number="AV-1", kind=InvoiceKind.credit_note)
    login(client, customer)
    checkout = _transfer(client, session, invoices[:1])
    assert checkout.amount_minor == 1234_56 - 102_00
    session.expire_all()
    assert note.open_minor == 102_00 and invoices[0].open_minor == 1234_56  # nothing moved yet
    statement = _nbsp(client.get("/portal").text)
    assert "Avoir AV-1" in statement  # still there, not gone
    assert "Réservé pour votre paiement du 25 novembre" in statement and "102,00 €" in statement
    assert "1 234,56 €" in statement  # the invoice's open amount did not drop
    transfer = _nbsp(client.get(f"/portal/pay/{checkout.id}/transfer").text)
    assert re.search(r"Facture F-1</th><td class=\"num\">1 234,56 €", transfer)
    assert "Votre crédit déduit (avoirs, paiements non encore imputés)</th><td class=\"num\">-102,00 €" in transfer
    assert "1 132,56 €" in transfer
    # Cancelled: the credit is free again.
    client.post(f"/portal/pay/{checkout.id}/cancel", data={"csrf_token": csrf_from(transfer)})
    assert "Réservé pour votre paiement" not in _nbsp(client.get("/portal").text)


def test_bank_transfer_is_offered_only_in_a_currency_the_company_has_an_account_for(
    client: TestClient, session: Session, company: Company, customer: Customer, invoices: list[Invoice]
) -> None:
    assert account_for(company, "EUR") is not None and account_for(company, "USD") is None
    dollars = factories.invoice(session, customer, currency="USD", number="F-USD")
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    euros = client.post("/portal/pay/summary", data=_form(token, invoices[:1]), headers=HTMX).text
    assert 'value="bank_transfer"' in euros
    usd = client.post("/portal/pay/summary", data=_form(token, [dollars]), headers=HTMX).text
    assert 'value="bank_transfer"' not in usd
    refused = client.post("/portal/pay", data=_form(token, [dollars], method="bank_transfer", action="pay"))
    assert refused.status_code == 422
