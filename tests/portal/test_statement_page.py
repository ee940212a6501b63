from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import InvoiceKind
from tests import factories
from tests.portal.conftest import login


def _nbsp(text: str) -> str:
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def test_french_statement_shows_lines_totals_and_overdue(session: Session, client: TestClient) -> None:
    company = factories.company(session, name="Durand Industrie SAS")
    customer = factories.customer(session, company, language="fr")
    factories.invoice(session, customer, total_minor=1234_56, number="F-2026-001", due_date=date(2026, 11, 1))
    factories.invoice(session, customer, total_minor=500_00, number="F-2026-002", due_date=date(2026, 12, 20),
                      discount_bps=200, discount_until=date(2026, 12, 12))
    factories.invoice(session, customer, total_minor=100_00, number="AV-2026-001", kind=InvoiceKind.credit_note)
    login(client, customer)
    page = client.get("/portal")
    assert page.status_code == 200
    html = _nbsp(page.text)
    assert '<html lang="fr">' in html
    assert "F-2026-001" in html and "F-2026-002" in html and "AV-2026-001" in html
    assert "1 234,56 €" in html
    assert "1 734,56 €" in html  # open invoices
    assert "1 634,56 €" in html  # total due after the credit note
    assert "Payez avant le 12 décembre et économisez 10,00 €" in html
    assert ">24<" in html  # days overdue of F-2026-001 on 25 November


def test_english_statement_formats_pounds(session: Session, client: TestClient) -> None:
    company = factories.company(session, base_currency="GBP", country="GB", timezone="Europe/London")
    customer = factories.customer(session, company, language="en")
    factories.invoice(session, customer, total_minor=1234_56, currency="GBP")
    login(client, customer)
    html = _nbsp(client.get("/portal").text)
    assert '<html lang="en">' in html
    assert "£1,234.56" in html


def test_portal_without_session_asks_for_the_link(client: TestClient) -> None:
    response = client.get("/portal")
    assert response.status_code == 401
