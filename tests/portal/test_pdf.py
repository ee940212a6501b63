from __future__ import annotations

import shutil
import subprocess
from datetime import date

import pytest
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import InvoiceKind
from tests import factories
from tests.portal.conftest import login


def pdf_text(content: bytes) -> str:
    assert content.startswith(b"%PDF-"), content[:20]
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is missing: `make test` installs poppler-utils")
    result = subprocess.run(["pdftotext", "-layout", "-", "-"], input=content, capture_output=True, check=True)
    return result.stdout.decode().replace("\u202f", " ").replace("\u00a0", " ")


def test_statement_pdf_lists_every_currency_and_total(session: Session, client: TestClient) -> None:
    company = factories.company(session, name="Durand Industrie SAS", iban="FR7630006000011234567890189")
    customer = factories.customer(session, company, language="fr")
    factories.invoice(session, customer, total_minor=1234_56, number="F-100", due_date=date(2026, 11, 1))
    factories.invoice(session, customer, total_minor=990_00, number="F-101", currency="USD")
    factories.invoice(session, customer, total_minor=50_00, number="AV-7", kind=InvoiceKind.credit_note)
    login(client, customer)
    response = client.get("/portal/statement.pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert "attachment" in response.headers["content-disposition"] or "inline" in response.headers["content-disposition"]
    text = pdf_text(response.content)
    for expected in ("Relevé de compte", "Durand Industrie SAS", "F-100", "F-101", "Avoir AV-7",
                     "1 234,56 €", "1 184,56 €", "990,00 $US", "FR7630006000011234567890189"):
        assert expected in text, expected


def test_invoice_pdf_in_english(session: Session, client: TestClient) -> None:
    company = factories.company(session, base_currency="GBP", country="GB", timezone="Europe/London")
    customer = factories.customer(session, company, language="en")
    invoice = factories.invoice(session, customer, total_minor=1234_56, currency="GBP", number="UK-1",
                                discount_bps=200, discount_until=date(2026, 12, 12), due_date=date(2026, 12, 31))
    login(client, customer)
    text = pdf_text(client.get(f"/portal/invoices/{invoice.id}/pdf").content)
    for expected in ("Invoice UK-1", "£1,234.56", "Pay by 12 December and save £24.69"):
        assert expected in text, expected


def test_uploaded_invoice_pdf_is_served_as_is(session: Session, client: TestClient) -> None:
    customer = factories.customer(session, factories.company(session))
    original = b"%PDF-1.4\n% the ERP's own invoice\n"
    invoice = factories.invoice(session, customer, pdf=original)
    login(client, customer)
    assert client.get(f"/portal/invoices/{invoice.id}/pdf").content == original


def test_company_logo_is_embedded_without_any_fetch(session: Session, client: TestClient) -> None:
    from encours.demo import _logo

    company = factories.company(session, name="Logo SAS", logo=_logo("LS", "#0f6e5b"), logo_mime="image/svg+xml")
    customer = factories.customer(session, company)
    invoice = factories.invoice(session, customer, number="F-LOGO")
    login(client, customer)
    for path in ("/portal/statement.pdf", f"/portal/invoices/{invoice.id}/pdf"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "Logo SAS" in pdf_text(response.content)


def test_pdf_rendering_refuses_to_fetch_files_or_urls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import http.server
    import threading

    from portal.pdf import render

    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        secret = tmp_path / "secret.css"
        secret.write_text("p { color: red }")
        html = (f'<link rel="stylesheet" href="file://{secret}">'
                f'<img src="http://127.0.0.1:{server.server_port}/tracker.png"><p>ok</p>')
        assert render(html).startswith(b"%PDF")
    finally:
        server.shutdown()
    assert requests == []
