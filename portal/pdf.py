"""Statement and invoice PDFs, rendered by WeasyPrint from the same templates' data."""

from __future__ import annotations

import base64
from datetime import date
from typing import Any

from ledger.models import Company, Invoice
from ledger.statement import Statement, available_discount, days_overdue
from portal.branding import palette


def _logo_data_uri(company: Company) -> str | None:
    if not company.logo or not company.logo_mime:
        return None
    return f"data:{company.logo_mime};base64,{base64.b64encode(company.logo).decode()}"


def render(html: str) -> bytes:
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    # Every resource is inlined as a data: URI; a PDF must never reach the network or the disk.
    return HTML(string=html, url_fetcher=URLFetcher(allowed_protocols=("data",))).write_pdf()


def _brand(company: Company) -> dict[str, Any]:
    return {"company": company, "logo_uri": _logo_data_uri(company), "colors": palette(company.brand_color)}


def branded_pdf(templates: Any, template: str, company: Company, context: dict[str, Any], language: str) -> bytes:
    """A PDF template rendered with the company's name, logo and colours."""
    return render(templates.render_string(template, {**_brand(company), **context}, language))


def statement_pdf(templates: Any, statement: Statement, language: str) -> bytes:
    context = {"statement": statement, "customer": statement.customer}
    return branded_pdf(templates, "pdf/statement.html", statement.customer.company, context, language)


def invoice_pdf(templates: Any, invoice: Invoice, language: str, today: date) -> bytes:
    context = {
        "invoice": invoice,
        "customer": invoice.customer,
        "days_overdue": 0 if invoice.is_credit_note else days_overdue(invoice.due_date, today),
        "discount": available_discount(invoice, today),
        "today": today,
    }
    return branded_pdf(templates, "pdf/invoice.html", invoice.company, context, language)
