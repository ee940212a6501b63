"""The portal's Payments page, receipts and their PDF; paying from the invoice page; what the
statement tells (promises, disputed amounts, a live mandate); a new link asked for by address."""

from __future__ import annotations

import re
import subprocess
from datetime import date

from pathlib import Path

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.settings import load_settings
from ledger import disputes
from ledger.storage import FileStorage
from ledger.models import Customer, Invoice, InvoiceKind, Payment
from payments.checkout import create_checkout
from payments.settlement import apply_payment_status
from payments.base import CardDetails
from tests import factories
from tests.conftest import TEST_SECRET
from tests.portal.conftest import csrf_from, login

TODAY = date(2026, 11, 25)


def _text(html: str) -> str:
    return html.replace("\u202f", " ").replace("\u00a0", " ")


def _customer(session: Session, language: str = "fr", **company: object) -> tuple[Customer, list[Invoice]]:
    durand = factories.company(session, code="DURAND", name="Durand Industrie SAS", support_email="compta@durand.test",
                               address="12 rue des Forges\n69007 Lyon", iban="FR7630006000011234567890189",
                               **company)
    customer = factories.customer(session, durand, language=language, ref="C-MARTIN")
    invoices = [
        factories.invoice(session, customer, total_minor=1234_56, number="F-1", due_date=date(2026, 11, 1)),
        factories.invoice(session, customer, total_minor=500_00, number="F-2", due_date=date(2026, 12, 20),
                          discount_bps=200, discount_until=date(2026, 12, 12)),
        factories.invoice(session, customer, total_minor=150_00, number="AV-1", kind=InvoiceKind.credit_note),
    ]
    return customer, invoices


def _card_payment(session: Session, customer: Customer, invoices: list[Invoice]) -> Payment:
    settings = load_settings({"ENCOURS_DATABASE_URL": "sqlite://", "ENCOURS_SECRET_KEY": TEST_SECRET,
                              "ENCOURS_BASE_URL": "http://testserver"})
    checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                               selection={invoice.id: None for invoice in invoices}, method="card", today=TODAY)
    checkout.provider, checkout.provider_ref = "stripe", f"pi_{checkout.id}"
    session.flush()
    return apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref=f"pi_{checkout.id}",
                                method="card", status="succeeded", amount_minor=checkout.amount_minor,
                                currency="EUR", card=CardDetails(brand="visa", last4="4242"), settings=settings)


def test_the_payments_page_lists_each_payment_with_its_method_and_receipt_in_french(
    client: TestClient, session: Session
) -> None:
    customer, invoices = _customer(session)
    payment = _card_payment(session, customer, invoices[:2])
    session.commit()
    login(client, customer)
    page = _text(client.get("/portal/payments").text)
    assert "<h1>Paiements</h1>" in page
    assert "Carte bancaire · Visa •••• 4242" in page and "F-1, F-2" in page
    assert "1 574,56 €" in page and "Reçu" in page
    assert f'href="/portal/payments/{payment.id}"' in page
    receipt = _text(client.get(f"/portal/payments/{payment.id}").text)
    assert "Reçu DURAND-R000001" in receipt
    assert "Durand Industrie SAS" in receipt and "12 rue des Forges" in receipt
    # Each invoice at its full amount, then the discount and the credit as their own negative lines.
    for line in ("Facture F-1", "1 234,56 €", "Facture F-2", "500,00 €", "Escompte pour paiement anticipé sur la facture F-2",
                 "-10,00 €", "-150,00 €", "1 574,56 €"):
        assert line in receipt, line


def test_the_receipt_pdf_carries_the_number_the_company_and_the_lines_in_english(
    client: TestClient, session: Session, tmp_path: object
) -> None:
    customer, invoices = _customer(session, language="en")
    payment = _card_payment(session, customer, invoices[:2])
    session.commit()
    login(client, customer)
    response = client.get(f"/portal/payments/{payment.id}/receipt.pdf")
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert 'filename="receipt-DURAND-R000001.pdf"' in response.headers["content-disposition"]
    text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=response.content, capture_output=True,
                          check=True).stdout.decode()
    text = _text(text)
    for expected in ("Receipt DURAND-R000001", "Durand Industrie SAS", "Invoice F-1", "€1,234.56",
                     "Early-payment discount on invoice F-2", "-€10.00", "-€150.00", "Amount paid", "€1,574.56",
                     "Visa •••• 4242"):
        assert expected in text, expected


def test_another_customers_receipt_is_not_found(client: TestClient, session: Session) -> None:
    customer, invoices = _customer(session)
    stranger = factories.customer(session, customer.company)
    theirs = _card_payment(session, stranger, [factories.invoice(session, stranger)])
    session.commit()
    login(client, customer)
    assert client.get(f"/portal/payments/{theirs.id}").status_code == 404
    assert client.get(f"/portal/payments/{theirs.id}/receipt.pdf").status_code == 404
    assert f"/portal/payments/{theirs.id}" not in client.get("/portal/payments").text


def test_a_cheque_staff_recorded_has_its_receipt_with_its_number(client: TestClient, session: Session) -> None:
    from admin.staff_accounts import create_user
    from ledger.money import Money
    from payments.manual import record_manual_payment

    customer, invoices = _customer(session)
    user = create_user(session, email="compta@durand.test", role="admin", password="Tr3s-long-mot-de-passe!", company_codes=[])
    payment = record_manual_payment(session, customer, Money(200_00, "EUR"), TODAY, "cheque", "1234567",
                                    [(invoices[0].id, Money(200_00, "EUR"))], user)
    assert payment.receipt_number == "DURAND-R000001"
    session.commit()
    login(client, customer)
    receipt = _text(client.get(f"/portal/payments/{payment.id}").text)
    assert "Reçu DURAND-R000001" in receipt and "Chèque · 1234567" in receipt and "Facture F-1" in receipt
    client.get(f"/portal/payments/{payment.id}")
    session.refresh(payment)
    assert payment.receipt_number == "DURAND-R000001"


def test_the_invoice_page_pays_this_invoice_and_a_part_where_the_company_allows_it(
    client: TestClient, session: Session
) -> None:
    customer, invoices = _customer(session, allow_partial_payments=True)
    session.commit()
    login(client, customer)
    page = _text(client.get(f"/portal/invoices/{invoices[0].id}").text)
    assert "Payer cette facture" in page and f'name="amount-{invoices[0].id}"' in page
    token = csrf_from(page)
    review = _text(client.post("/portal/pay", data={"csrf_token": token, "invoice": str(invoices[0].id),
                                                    f"amount-{invoices[0].id}": "400,00", "action": "review"}).text)
    assert "Facture F-1" in review and "sur 1 234,56 €" in review
    # The credit note nets against it: 400,00 - 150,00 charged.
    assert "Payer 250,00 €" in review
    for typed, problem in (("0", "le montant doit être supérieur à zéro"),
                           ("2000", "le montant dépasse ce qui reste à payer"),
                           ("12,345", "n’est pas un montant")):
        refused = client.post("/portal/pay", data={"csrf_token": token, "invoice": str(invoices[0].id),
                                                   f"amount-{invoices[0].id}": typed, "action": "review"})
        assert refused.status_code == 422 and problem in _text(refused.text), (typed, refused.text[-2000:])


def test_without_partial_payments_the_invoice_page_pays_the_whole_invoice(client: TestClient, session: Session) -> None:
    customer, invoices = _customer(session)
    session.commit()
    login(client, customer)
    page = client.get(f"/portal/invoices/{invoices[0].id}").text
    assert "Payer cette facture" in page and f'name="amount-{invoices[0].id}"' not in page
    credit_note = client.get(f"/portal/invoices/{invoices[2].id}").text
    assert "Payer cette facture" not in credit_note


def test_the_statement_shows_promise_dates_and_the_disputed_amount_as_a_line(
    client: TestClient, session: Session, tmp_path: Path
) -> None:
    customer, invoices = _customer(session)
    third = factories.invoice(session, customer, total_minor=318_40, number="F-3", due_date=date(2026, 12, 24))
    disputes.make_promise(session, customer=customer, contact=customer.primary_contact, invoice_ids=[invoices[1].id],
                          promised_for=date(2026, 12, 12))
    reason = disputes.active_reasons(session, customer.company_id)[0]
    disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[third.id],
                       reason_code=reason.code, message="Livraison incomplète", storage=FileStorage(tmp_path))
    session.commit()
    login(client, customer)
    page = _text(client.get("/portal").text)
    assert "Paiement promis pour le 12 déc." in page or "Paiement promis pour le 12 décembre" in page
    # 1 234,56 + 500,00 + 318,40 open; 318,40 set aside; 150,00 of credit: 1 584,56 due.
    assert re.search(r"Factures à régler</dt><dd>2 052,96 €", page)
    assert re.search(r"En litige, mis de côté</dt><dd>-318,40 €", page)
    assert re.search(r'class="grand-total"><dt>Total à régler</dt><dd>1 584,56 €', page)
