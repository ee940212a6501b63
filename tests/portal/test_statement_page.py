from __future__ import annotations

import re
from datetime import date

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import InvoiceKind, Payment
from tests import factories
from tests.conftest import statements_run
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


def _row(html: str, invoice_id: int) -> str:
    """The table row of one invoice or credit note."""
    match = re.search(rf'<tr class="[^"]*">\s*<td class="pay-col"[^>]*>(?:(?!</tr>).)*?/portal/invoices/{invoice_id}".*?</tr>',
                      html, re.S)
    assert match, f"no row for invoice {invoice_id}"
    return match.group(0)


def _ticked(html: str) -> set[str]:
    return set(re.findall(r'name="invoice" value="(\d+)" id="pay-\d+" checked', html))


def test_each_kind_of_line_reads_as_before(session: Session, client: TestClient) -> None:
    """The rows the page formats in Python (portal.statement_view): classes, badges, signs, dates,
    the discount, the partial amount field and which boxes start ticked."""
    company = factories.company(session, allow_partial_payments=True)
    customer = factories.customer(session, company, language="en")
    late = factories.invoice(session, customer, total_minor=1234_56, open_minor=1000_00, number="F-LATE",
                             status="partially_paid", issue_date=date(2026, 10, 1), due_date=date(2026, 11, 15))
    soon = factories.invoice(session, customer, total_minor=500_00, number="F-SOON", due_date=date(2026, 12, 20),
                             discount_bps=200, discount_until=date(2026, 12, 12))
    disputed = factories.invoice(session, customer, total_minor=300_00, number="F-DISP", status="disputed",
                                 due_date=date(2026, 11, 1))
    credit = factories.invoice(session, customer, total_minor=150_00, number="AV-1", kind=InvoiceKind.credit_note)
    dollars = factories.invoice(session, customer, total_minor=70_00, currency="USD", number="F-USD",
                                due_date=date(2026, 12, 1))
    session.add(Payment(customer_id=customer.id, provider="manual", method="bank_transfer", amount_minor=25_00,
                        currency="EUR", status="succeeded"))
    session.flush()
    login(client, customer)
    html = _nbsp(client.get("/portal").text)

    row = _row(html, late.id)
    assert row.startswith('<tr class="is-overdue">') and 'data-label="Pay"' in row
    assert ">Invoice F-LATE</a>" in row and ">1 Oct 2026<" in row and ">15 Nov 2026<" in row
    assert ">€1,234.56<" in row and ">€1,000.00<" in row and ">10<" in row
    assert '<span class="badge badge-overdue">Overdue</span>' in row
    assert f'id="amount-{late.id}"' in row and 'placeholder="1000.00"' in row and "Pay invoice F-LATE" in row

    row = _row(html, soon.id)
    assert row.startswith('<tr class="">') and '<span class="badge">Open</span>' in row and ">—<" in row
    assert '<span class="discount">Pay by 12 December and save €10.00</span>' in row

    row = _row(html, disputed.id)
    assert '<span class="badge badge-disputed">Disputed</span>' in row

    row = _row(html, credit.id)
    assert row.startswith('<tr class="is-credit">') and ">Credit note AV-1</a>" in row
    assert 'name="invoice"' not in row and "data-label=\"Pay\"" not in row
    assert row.count(">−€150.00<") + row.count(">-€150.00<") == 2 and ">—<" in row
    assert '<span class="badge badge-credit">Credit</span>' in row

    assert "Unapplied payments" in html and 'id="amount-hint"' in html
    # Everything due in the company's currency starts ticked, never a disputed invoice.
    assert _ticked(html) == {str(late.id), str(soon.id)}
    assert _ticked(client.get("/portal?select=overdue").text) == {str(late.id)}
    assert _ticked(client.get("/portal?select=none").text) == set()
    assert _ticked(client.get("/portal?select=due&currency=USD").text) == {str(dollars.id)}


def test_statement_page_queries_do_not_grow_with_its_lines(session: Session, client: TestClient) -> None:
    customer = factories.customer(session, factories.company(session))
    for _ in range(3):
        factories.invoice(session, customer)
    login(client, customer)
    with statements_run(session.get_bind().engine) as statements:
        assert client.get("/portal").status_code == 200
        few = len(statements)
        for n in range(40):
            factories.invoice(session, customer, total_minor=100_00 + n, discount_bps=100,
                              discount_until=date(2026, 12, 31),
                              kind=InvoiceKind.credit_note if n % 7 == 0 else InvoiceKind.invoice,
                              status="disputed" if n % 11 == 0 else "open")
        session.flush()
        statements.clear()
        page = client.get("/portal")
    assert page.status_code == 200 and page.text.count('name="invoice"') == 3 + 40 - 6
    assert len(statements) == few, statements


def test_rows_printed_without_autoescape_are_escaped_already(session: Session, client: TestClient) -> None:
    """The table's rows are printed with autoescaping off (see portal.statement_view): an invoice
    number from an import must still come out as text."""
    company = factories.company(session, allow_partial_payments=True)
    customer = factories.customer(session, company, language="en")
    invoice = factories.invoice(session, customer, number="<b>F&1</b>\"'", discount_bps=100,
                                discount_until=date(2026, 12, 31), due_date=date(2026, 12, 31))
    note = factories.invoice(session, customer, number="<i>AV</i>", kind=InvoiceKind.credit_note)
    login(client, customer)
    html = client.get("/portal").text
    assert "<b>" not in html and "<i>" not in html
    row = _row(html, invoice.id)
    assert ">Invoice &lt;b&gt;F&amp;1&lt;/b&gt;&#34;&#39;</a>" in row
    assert ">Pay invoice &lt;b&gt;F&amp;1&lt;/b&gt;&#34;&#39;</label>" in row
    assert ">Credit note &lt;i&gt;AV&lt;/i&gt;</a>" in _row(html, note.id)
