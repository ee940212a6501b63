from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.settings import Settings
from ledger.models import Checkout, Company, Customer, Invoice, InvoiceKind
from payments import rf
from payments.settlement import apply_payment_status, record_bank_transfer
from tests import factories
from tests.portal.conftest import csrf_from, login

HTMX = {"HX-Request": "true"}


def _nbsp(text: str) -> str:
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def _form(token: str, invoices: list[Invoice], **extra: str) -> dict[str, object]:
    return {"csrf_token": token, "invoice": [str(invoice.id) for invoice in invoices], **extra}


def test_statement_is_a_pay_form(client: TestClient, customer: Customer, invoices: list[Invoice],
                                 session: Session) -> None:
    disputed = factories.invoice(session, customer, total_minor=99_00, number="F-DISPUTED", status="disputed")
    login(client, customer)
    html = client.get("/portal").text
    assert 'action="/portal/pay"' in html and 'hx-post="/portal/pay/summary"' in html
    for invoice in invoices:
        assert re.search(rf'value="{invoice.id}" id="pay-{invoice.id}" checked', html)
    assert re.search(rf'value="{disputed.id}" id="pay-{disputed.id}">', html)  # disputed: not ticked
    overdue_only = client.get("/portal?select=overdue&currency=EUR").text
    assert re.search(rf'id="pay-{invoices[0].id}" checked', overdue_only)
    assert not re.search(rf'id="pay-{invoices[1].id}" checked', overdue_only)
    assert 'name="amount-' not in html  # no partial amounts unless the company allows them


def test_summary_fragment_shows_discount_and_amount_charged(client: TestClient, customer: Customer,
                                                            invoices: list[Invoice]) -> None:
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    response = client.post("/portal/pay/summary", data=_form(token, invoices[:2]), headers=HTMX)
    assert response.status_code == 200
    html = _nbsp(response.text)
    assert "<html" not in html  # the block alone
    assert "1 734,56 €" in html  # subtotal
    assert "Payez avant le 12 décembre et économisez 10,00 €" in html
    assert "1 724,56 €" in html  # charged
    assert 'name="method" id="method-bank_transfer" value="bank_transfer" checked' in html
    assert "<legend>" in html


def test_summary_refuses_mixed_currencies(client: TestClient, customer: Customer, invoices: list[Invoice],
                                          session: Session) -> None:
    dollars = factories.invoice(session, customer, currency="USD")
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    html = client.post("/portal/pay/summary", data=_form(token, [invoices[0], dollars]), headers=HTMX).text
    assert "une devise à la fois" in html
    assert 'name="method"' not in html


def test_pay_by_bank_transfer_end_to_end(client: TestClient, session: Session, settings: Settings,
                                         customer: Customer, invoices: list[Invoice]) -> None:
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    response = client.post("/portal/pay", data=_form(token, invoices[:2], method="bank_transfer", action="pay"),
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/portal/pay/(\d+)/transfer", response.headers["location"])
    assert match
    checkout = session.get(Checkout, int(match.group(1)))
    assert checkout is not None and checkout.status == "open" and checkout.amount_minor == 1724_56
    assert checkout.reference and rf.is_valid(checkout.reference)
    # A double click gives the same checkout.
    again = client.post("/portal/pay", data=_form(token, invoices[:2], method="bank_transfer", action="pay"),
                        follow_redirects=False)
    assert again.headers["location"] == response.headers["location"]

    page = client.get(response.headers["location"])
    html = _nbsp(page.text)
    assert page.status_code == 200
    assert rf.pretty(checkout.reference) in html
    assert "FR76 3000 6000 0112 3456 7890 189" in html and "AGRIFRPPXXX" in html
    assert "1 724,56 €" in html
    assert '<script src="/static/js/copy.js" defer></script>' in html and "<script>" not in html
    pdf = client.get(f"/portal/pay/{checkout.id}/transfer.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    waiting = _nbsp(client.post("/portal/pay/summary", data=_form(token, invoices[2:]), headers=HTMX).text)
    assert "1 724,56 € : en attente de votre virement" in waiting and f'href="/portal/pay/{checkout.id}"' in waiting

    status = _nbsp(client.get(f"/portal/pay/{checkout.id}").text)
    assert "Nous attendons votre virement" in status

    record_bank_transfer(session, checkout, checkout.amount_minor, invoices[0].due_date, settings=settings)
    session.flush()
    receipt = _nbsp(client.get(f"/portal/pay/{checkout.id}").text)
    assert "Paiement reçu" in receipt and "1 724,56 €" in receipt
    statement = _nbsp(client.get("/portal").text)
    assert "F-1" not in statement and "F-2" not in statement and "318,40 €" in statement


def test_without_javascript_the_form_goes_through_a_review_page(client: TestClient, session: Session,
                                                                customer: Customer, invoices: list[Invoice]) -> None:
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    review = client.post("/portal/pay", data=_form(token, invoices[2:], action="review"))
    assert review.status_code == 200
    html = _nbsp(review.text)
    assert "<html" in html and "318,40 €" in html
    assert f'name="minor-{invoices[2].id}" value="31840"' in html
    response = client.post("/portal/pay", data={**_form(csrf_from(review.text), invoices[2:]),
                                                f"minor-{invoices[2].id}": "31840",
                                                "method": "bank_transfer", "action": "pay"},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].endswith("/transfer")


def test_partial_amounts_where_allowed(client: TestClient, company: Company, customer: Customer,
                                       invoices: list[Invoice], session: Session) -> None:
    company.allow_partial_payments = True
    session.flush()
    login(client, customer)
    html = client.get("/portal").text
    assert f'name="amount-{invoices[0].id}"' in html
    token = csrf_from(html)
    summary = _nbsp(client.post("/portal/pay/summary", data=_form(token, invoices[:1], **{
        f"amount-{invoices[0].id}": "200,50"}), headers=HTMX).text)
    assert "200,50 €" in summary
    too_much = _nbsp(client.post("/portal/pay", data=_form(token, invoices[:1], **{
        f"amount-{invoices[0].id}": "5000", "method": "bank_transfer", "action": "pay"})).text)
    assert "F-1" in too_much and "montant" in too_much


def test_errors_without_a_method_or_a_selection(client: TestClient, customer: Customer,
                                                invoices: list[Invoice]) -> None:
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    assert client.post("/portal/pay", data=_form(token, [], action="pay")).status_code == 422
    no_method = client.post("/portal/pay", data=_form(token, invoices[:1], method="cash", action="pay"))
    assert no_method.status_code == 422 and "moyen de paiement" in no_method.text


def test_another_customers_checkout_is_not_found(client: TestClient, session: Session, company: Company,
                                                 customer: Customer, invoices: list[Invoice]) -> None:
    other = factories.customer(session, company)
    theirs = factories.invoice(session, other)
    login(client, other)
    token = csrf_from(client.get("/portal").text)
    response = client.post("/portal/pay", data=_form(token, [theirs], method="bank_transfer", action="pay"),
                           follow_redirects=False)
    checkout_path = response.headers["location"].removesuffix("/transfer")
    # Someone else's invoice in the selection reads as unknown.
    mine = client.post("/portal/pay/summary", data=_form(token, invoices[:1]), headers=HTMX)
    assert "inconnue" in mine.text
    client.cookies.clear()
    login(client, customer)
    for path in (checkout_path, f"{checkout_path}/transfer", f"{checkout_path}/transfer.pdf"):
        assert client.get(path).status_code == 404, path


def test_pay_needs_csrf_and_a_session(client: TestClient, customer: Customer, invoices: list[Invoice]) -> None:
    login(client, customer)
    client.get("/portal")
    refused = client.post("/portal/pay", data={"invoice": [str(invoices[0].id)], "method": "bank_transfer",
                                               "action": "pay"}, follow_redirects=False)
    assert refused.status_code == 403
    client.cookies.clear()
    assert client.get("/portal/pay/1").status_code == 401


def test_processing_and_failed_pages(client: TestClient, session: Session, settings: Settings,
                                     customer: Customer, invoices: list[Invoice]) -> None:
    from payments.checkout import create_checkout
    from datetime import date

    checkout = create_checkout(session, customer=customer, contact=None, selection={invoices[0].id: None},
                               method="card", today=date(2026, 11, 25))
    apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref="pi_page", method="card",
                         status="processing", amount_minor=checkout.amount_minor, currency="EUR", settings=settings)
    session.flush()
    login(client, customer)
    assert "Paiement en cours" in client.get(f"/portal/pay/{checkout.id}").text
    apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref="pi_page", method="card",
                         status="failed", amount_minor=checkout.amount_minor, currency="EUR",
                         reason="card_declined", settings=settings)
    session.flush()
    assert checkout.failure_code == "card_declined"
    html = _nbsp(client.get(f"/portal/pay/{checkout.id}").text)
    # One sentence in the debtor's language, never the provider's code or text; then what next.
    assert "Votre banque a refusé la carte. Aucun montant n’a été débité." in html
    assert "card_declined" not in html
    assert "Réessayer" in html and "Choisir un autre moyen de paiement" in html


def test_an_unreachable_provider_gives_a_clear_message_and_a_retry(session: Session, settings: Settings,
                                                                   session_factory, customer: Customer,  # type: ignore[no-untyped-def]
                                                                   invoices: list[Invoice]) -> None:
    from dataclasses import replace

    from starlette.datastructures import Secret

    from encours.app import create_app

    closed_port = replace(settings, stripe_secret_key=Secret("sk_test_unreachable"), stripe_publishable_key="pk_test_x",
                          stripe_webhook_secret=Secret("whsec_test"), stripe_api_base="http://127.0.0.1:9")
    with TestClient(create_app(closed_port, sessions=session_factory), base_url="http://testserver") as client:
        login(client, customer)
        token = csrf_from(client.get("/portal").text)
        response = client.post("/portal/pay", data=_form(token, invoices[:1], method="card", action="pay"),
                               follow_redirects=False)
    assert response.status_code == 503
    assert "Le service de paiement ne répond pas" in response.text
    checkout = session.scalar(select(Checkout).where(Checkout.customer_id == customer.id))
    assert checkout is not None and checkout.status == "open"  # the same one is reused on retry


def test_credit_notes_are_deducted_on_the_pay_page(client: TestClient, session: Session, customer: Customer,
                                                   invoices: list[Invoice]) -> None:
    factories.invoice(session, customer, total_minor=102_00, number="AV-1", kind=InvoiceKind.credit_note)
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    html = _nbsp(client.post("/portal/pay/summary", data=_form(token, invoices[:2]), headers=HTMX).text)
    assert "Votre crédit (avoirs, paiements non encore imputés)" in html and "-102,00 €" in html
    assert "Payer 1 622,56 €" in html  # 1 734,56 − 10,00 discount − 102,00 credit


def test_a_selection_the_credit_covers_is_settled_without_a_provider(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice]
) -> None:
    factories.invoice(session, customer, total_minor=2000_00, number="AV-BIG", kind=InvoiceKind.credit_note)
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    html = _nbsp(client.post("/portal/pay/summary", data=_form(token, invoices[:1]), headers=HTMX).text)
    assert "Votre crédit couvre cette sélection" in html and 'name="method" id="method-' not in html
    response = client.post("/portal/pay", data=_form(token, invoices[:1], action="pay", method="credit"),
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/portal?settled=credit"
    session.expire_all()
    assert session.get(Invoice, invoices[0].id).open_minor == 0  # type: ignore[union-attr]
    assert session.scalar(select(Checkout.id)) is None  # nothing charged, no checkout
    assert "Réglé avec votre crédit" in client.get("/portal?settled=credit").text
