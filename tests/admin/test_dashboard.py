"""The dashboard's every figure against values computed by hand on a small fixed book.

The clock is frozen at 2026-11-25 10:00 UTC (tests/conftest.py): a Wednesday; in Paris
today is 2026-11-25, the week runs 23–29 November, the last 30 days start on 27 October and
the last 90 days on 28 August.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Iterator

import pytest
from sqlalchemy.orm import Session

from admin.dashboard_service import CompanyDashboard, Scope, build_dashboard
from ledger.models import (
    Allocation,
    Checkout,
    Company,
    Customer,
    Dispute,
    FxRate,
    InvoiceKind,
    LinkOpen,
    OutboxMessage,
    Payment,
    PromiseToPay,
    Reminder,
    User,
)
from ledger.money import Money
from tests import factories
from tests.admin.conftest import login, make_user

EUR = lambda text: Money.parse(text, "EUR")  # noqa: E731
USD = lambda text: Money.parse(text, "USD")  # noqa: E731


@dataclass
class Book:
    alpha: Company
    beta: Company
    a: Customer
    b: Customer
    c: Customer
    col1: User
    col2: User


def _payment(session: Session, customer: Customer, method: str, amount: Money, received: date, *,
             status: str = "succeeded", checkout: Checkout | None = None) -> Payment:
    payment = Payment(customer_id=customer.id, provider="test", provider_ref=f"p-{customer.id}-{method}-{received}",
                      method=method, amount_minor=amount.minor, currency=amount.currency, status=status,
                      received_on=received if status == "succeeded" else None,
                      checkout_id=checkout.id if checkout else None)
    session.add(payment)
    session.flush()
    return payment


def _allocate(session: Session, payment: Payment, invoice, amount: Money) -> None:
    session.add(Allocation(invoice_id=invoice.id, payment_id=payment.id, currency=amount.currency,
                           amount_minor=amount.minor))
    session.flush()


def _reminder(session: Session, customer: Customer, sent_at: datetime | None) -> None:
    contact = customer.contacts[0]
    outbox = OutboxMessage(customer_id=customer.id, contact_id=contact.id, kind="reminder", to_address=contact.email,
                           subject="Reminder", body_text="…", status="sent" if sent_at else "queued", sent_at=sent_at)
    session.add(outbox)
    session.flush()
    session.add(Reminder(customer_id=customer.id, contact_id=contact.id, invoice_key=f"k{customer.id}",
                         outbox_id=outbox.id))
    session.flush()


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.fixture
def book(session: Session) -> Book:
    return _book(session)


@pytest.fixture
def any_session(both_databases_session_factory) -> Iterator[Session]:
    """SQLite, then PostgreSQL: the aggregates are dialect-sensitive (date arithmetic, partial indexes)."""
    with both_databases_session_factory() as session:
        yield session


def _book(session: Session) -> Book:
    alpha = factories.company(session, "ALPHA", name="Alpha Industries")
    beta = factories.company(session, "BETA", name="Beta Holdings")
    col1 = make_user(session, "col1@example.com", "collector", ["ALPHA"])
    col2 = make_user(session, "col2@example.com", "collector", ["ALPHA"])
    a = factories.customer(session, alpha, "A", collector_id=col1.id)
    b = factories.customer(session, alpha, "B", collector_id=col2.id)
    c = factories.customer(session, alpha, "C")
    inv = factories.invoice
    # A: not due 1,000.00; 1-30 days 200.00 of 500.00; USD 300.00 at 31-60 days; a void one.
    inv(session, a, 1000_00, issue_date=date(2026, 11, 10), due_date=date(2026, 12, 10))
    a2 = inv(session, a, 500_00, open_minor=200_00, status="partially_paid", issue_date=date(2026, 9, 1),
             due_date=date(2026, 11, 10))
    inv(session, a, 300_00, currency="USD", issue_date=date(2026, 9, 1), due_date=date(2026, 10, 1))
    inv(session, a, 999_00, status="void", issue_date=date(2026, 11, 1), due_date=date(2026, 11, 2))
    # B: 800.00 at 97 days, 400.00 at 76 days (both issued before the 90 days), 250.00 in dispute.
    inv(session, b, 800_00, issue_date=date(2026, 7, 21), due_date=date(2026, 8, 20))
    inv(session, b, 400_00, issue_date=date(2026, 8, 11), due_date=date(2026, 9, 10))
    b3 = inv(session, b, 250_00, status="disputed", issue_date=date(2026, 9, 15), due_date=date(2026, 10, 15))
    dispute = Dispute(customer_id=b.id, kind="dispute", status="open")
    dispute.invoices.append(b3)
    session.add(dispute)
    session.add(Dispute(customer_id=b.id, kind="question", status="open"))  # a question is not a dispute
    # C: an open credit note of 100.00; 600.00 paid by card on 5 November.
    inv(session, c, 100_00, kind=InvoiceKind.credit_note, issue_date=date(2026, 11, 1), due_date=date(2026, 11, 1))
    c2 = inv(session, c, 600_00, open_minor=0, status="paid", issue_date=date(2026, 10, 1), due_date=date(2026, 10, 31))
    _allocate(session, _payment(session, c, "card", EUR("600"), date(2026, 11, 5)), c2, EUR("600"))
    # A paid 300.00 of A2 by bank transfer on 15 September (in the 90 days, not the 30).
    _allocate(session, _payment(session, a, "bank_transfer", EUR("300"), date(2026, 9, 15)), a2, EUR("300"))
    # A failed direct debit counts nowhere; A paid USD 100.00 online on 22 November, not yet applied.
    _payment(session, b, "direct_debit", EUR("50"), date(2026, 11, 20), status="failed")
    checkout = Checkout(customer_id=a.id, method="card", currency="USD", amount_minor=100_00, idempotency_key="k-a")
    session.add(checkout)
    session.flush()
    _payment(session, a, "card", USD("100"), date(2026, 11, 22), checkout=checkout)
    # Promises: A's due Friday; B's broken one, and one past its 3 grace days still pending; C's kept.
    session.add_all([
        PromiseToPay(customer_id=a.id, promised_for=date(2026, 11, 27), currency="EUR", amount_minor=200_00),
        PromiseToPay(customer_id=b.id, promised_for=date(2026, 11, 10), currency="EUR", amount_minor=400_00,
                     status="broken"),
        PromiseToPay(customer_id=b.id, promised_for=date(2026, 11, 18), currency="EUR", amount_minor=150_00),
        PromiseToPay(customer_id=c.id, promised_for=date(2026, 11, 24), currency="EUR", amount_minor=600_00,
                     status="kept"),
        # dated before the 30 days: neither due this week nor counted as broken
        PromiseToPay(customer_id=b.id, promised_for=date(2026, 10, 1), currency="EUR", amount_minor=70_00,
                     status="broken"),
    ])
    # Funnel: A and B were sent a reminder (C's is still queued); A opened its link and paid online.
    _reminder(session, a, _utc(2026, 11, 20, 9))
    _reminder(session, b, _utc(2026, 11, 21, 9))
    _reminder(session, c, None)
    session.add(LinkOpen(contact_id=a.contacts[0].id, opened_at=_utc(2026, 11, 21, 12)))
    session.add(LinkOpen(contact_id=c.contacts[0].id, opened_at=_utc(2026, 11, 21, 12)))  # not reminded
    # Rates: the one of 1 November is used (a later one is not valid yet, an older one is superseded).
    session.add_all([
        FxRate(base="EUR", quote="USD", rate="1.1", valid_on=date(2026, 10, 1)),
        FxRate(base="EUR", quote="USD", rate="1.25", valid_on=date(2026, 11, 1)),
        FxRate(base="EUR", quote="USD", rate="2", valid_on=date(2026, 11, 30)),
    ])
    # Another company, which a manager of ALPHA never sees.
    other = factories.customer(session, beta, "Z")
    inv(session, other, 9876_54, issue_date=date(2026, 9, 1), due_date=date(2026, 9, 30))
    session.commit()
    return Book(alpha, beta, a, b, c, col1, col2)


def _alpha(session: Session, book: Book, **scope: object) -> CompanyDashboard:
    dashboard = build_dashboard(session, Scope((book.alpha.id,), **scope))  # type: ignore[arg-type]
    [company] = dashboard.companies
    return company


def _parts(amount) -> dict[str, str]:
    return {m.currency: str(m.to_decimal()) for m in amount.parts if m.minor}


def test_every_figure_by_hand(any_session):
    session = any_session
    book = _book(session)
    d = _alpha(session, book)
    assert d.today == date(2026, 11, 25) and d.week == (date(2026, 11, 23), date(2026, 11, 29))
    assert _parts(d.outstanding) == {"EUR": "2400.00", "USD": "300.00"}
    assert d.outstanding.converted == EUR("2640.00")  # USD 300 / 1.25 = EUR 240
    assert _parts(d.overdue) == {"EUR": "1400.00", "USD": "300.00"} and d.overdue.converted == EUR("1640")
    aging = {key: (_parts(amount), amount.converted) for key, _label, amount in d.aging}
    assert aging == {
        "not_due": ({"EUR": "1000.00"}, EUR("1000")),
        "1_30": ({"EUR": "200.00"}, EUR("200")),
        "31_60": ({"USD": "300.00"}, EUR("240")),
        "61_90": ({"EUR": "400.00"}, EUR("400")),
        "over_90": ({"EUR": "800.00"}, EUR("800")),
    }
    assert d.open_disputes == 1 and _parts(d.disputed) == {"EUR": "250.00"}
    assert _parts(d.credit_notes) == {"EUR": "100.00"}
    assert _parts(d.net_balance) == {"EUR": "2300.00", "USD": "300.00"} and d.net_balance.converted == EUR("2540")
    # DSO: outstanding ÷ issued over 90 days (EUR 1000 + 500 + 250 + 600; USD 300) × 90
    assert d.dso.by_currency == {"EUR": Decimal("91.9"), "USD": Decimal("90.0")}
    assert d.dso.overall == Decimal("91.7")  # 2640 / 2590 × 90
    # CEI: collected in 30 days ÷ (collected + overdue now): EUR 600/2000, USD 100/400, all 680/2320
    assert d.cei.by_currency == {"EUR": Decimal("30.0"), "USD": Decimal("25.0")}
    assert d.cei.overall == Decimal("29.3")
    # Days to pay: 600 paid after 35 days, 300 after 14; the USD payment settled nothing.
    assert d.days_to_pay.by_currency == {"EUR": Decimal("28.0")} and d.days_to_pay.overall == Decimal("28.0")
    assert d.promises_due_count == 1 and _parts(d.promises_due) == {"EUR": "200.00"}
    assert d.promises_broken_count == 2 and _parts(d.promises_broken) == {"EUR": "550.00"}
    cash = {method: (_parts(a30), _parts(a90), a30.converted, a90.converted) for method, a30, a90 in d.cash}
    assert cash == {
        "card": ({"EUR": "600.00", "USD": "100.00"}, {"EUR": "600.00", "USD": "100.00"}, EUR("680"), EUR("680")),
        "bank_transfer": ({}, {"EUR": "300.00"}, EUR("0"), EUR("300")),
        "direct_debit": ({}, {}, EUR("0"), EUR("0")),
        "instant_transfer": ({}, {}, EUR("0"), EUR("0")),
    }
    assert d.cash_30_total.converted == EUR("680") and d.cash_90_total.converted == EUR("980")
    assert (d.funnel.reminded, d.funnel.opened, d.funnel.paid_online) == (2, 1, 1)
    assert [(t.customer_id, t.overdue, t.converted) for t in d.top_overdue] == [  # a customer once, all currencies
        (book.b.id, [EUR("1200")], EUR("1200")), (book.a.id, [EUR("200"), USD("300")], EUR("440")),
    ]
    [used] = d.rates_used
    assert (used.rate.pair, used.rate.valid_on, used.rate.rate, used.inverse) == ("EUR/USD", date(2026, 11, 1),
                                                                                  Decimal("1.25"), True)
    assert d.missing_rates == [] and d.currencies == ["EUR", "USD"]


def test_without_a_rate_the_total_says_so(session, book):
    session.query(FxRate).delete()
    session.commit()
    d = _alpha(session, book)
    assert d.outstanding.converted == EUR("2400") and d.outstanding.missing == ["USD"] and not d.outstanding.complete
    assert d.missing_rates == ["USD"] and d.rates_used == []
    assert d.dso.overall is None and d.cei.overall is None and d.dso.by_currency["USD"] == Decimal("90.0")
    assert [t.converted for t in d.top_overdue] == [EUR("1200"), None]


def test_a_collector_filter_covers_its_customers_only(any_session):
    session = any_session
    book = _book(session)
    d = _alpha(session, book, collector_id=book.col1.id)
    assert _parts(d.outstanding) == {"EUR": "1200.00", "USD": "300.00"}
    assert _parts(d.overdue) == {"EUR": "200.00", "USD": "300.00"}
    assert d.open_disputes == 0 and _parts(d.credit_notes) == {}
    assert {t.customer_id for t in d.top_overdue} == {book.a.id}
    assert (d.funnel.reminded, d.funnel.opened, d.funnel.paid_online) == (1, 1, 1)
    assert d.promises_due_count == 1 and d.promises_broken_count == 0


def test_a_currency_filter(any_session):
    session = any_session
    book = _book(session)
    d = _alpha(session, book, currency="USD")
    assert _parts(d.outstanding) == {"USD": "300.00"} and d.outstanding.converted == EUR("240")
    assert [m for m, a30, a90 in d.cash if a90.parts] == ["card"] and d.cash_90_total.converted == EUR("80")
    assert d.open_disputes == 0 and d.promises_due_count == 0


# --- the page ------------------------------------------------------------------------------------


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_page_shows_each_figure_in_each_currency_and_converted(session, book, client):
    make_user(session, "boss@example.com")
    login(client, "boss@example.com")
    page = client.get("/admin", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    html, text = page.text, _text(page.text)
    assert "<h1>Dashboard</h1>" in html and "style=" not in html and "<script>" not in html
    for shown in ("€2,640.00", "US$300.00", "€240.00", "€1,640.00", "91.7", "29.3 %", "28.0", "€550.00",
                  "1 EUR = 1.25 USD", "divided by the rate", "Beta Holdings", "€9,876.54"):
        assert shown in text, shown
    assert f'href="/admin/customers/{book.b.id}"' in html
    # charts: server-side SVG, accessible, with visible labels
    assert html.count('role="img"') == 4 and "<title id=\"aging-" in html and "<desc id=\"cash-" in html
    assert "Over 90 days" in text and "Instant bank transfer" in text


def test_the_page_in_french_names_the_missing_rate(session, book, client):
    session.query(FxRate).delete()
    session.commit()
    make_user(session, "boss@example.com")
    login(client, "boss@example.com")
    text = _text(client.get("/admin", headers={"Accept-Language": "fr"}).text)
    assert "Tableau de bord" in text and "Aucun taux de change" in text and "incomplet" in text


def test_a_manager_sees_only_its_companies(session, book, client):
    make_user(session, "m@example.com", "manager", ["ALPHA"])
    login(client, "m@example.com")
    text = _text(client.get("/admin", headers={"Accept-Language": "en"}).text)
    assert "Alpha Industries" in text and "€2,640.00" in text
    assert "Beta Holdings" not in text and "9,876.54" not in text and "BETA" not in text
    # asking for the other company by its code shows nothing of it
    text = _text(client.get("/admin?company=BETA", headers={"Accept-Language": "en"}).text)
    assert "No company matches" in text and "9,876.54" not in text


def test_a_collector_sees_its_customers_figures_whatever_it_asks(session, book, client):
    login(client, "col1@example.com")
    text = _text(client.get(f"/admin?collector={book.col2.id}", headers={"Accept-Language": "en"}).text)
    assert "Figures cover the customers assigned to you" in text
    assert "€1,440.00" in text  # EUR 1,200.00 + USD 300.00 at 1.25
    assert "€2,640.00" not in text and "Beta Holdings" not in text and "9,876.54" not in text


def test_a_viewer_reads_the_dashboard(session, book, client):
    make_user(session, "v@example.com", "viewer", ["ALPHA"])
    login(client, "v@example.com")
    assert "€2,640.00" in _text(client.get("/admin", headers={"Accept-Language": "en"}).text)


def test_filters_answer_htmx_with_the_fragment(session, book, client):
    make_user(session, "boss@example.com")
    login(client, "boss@example.com")
    params = {"company": "ALPHA", "collector": str(book.col1.id), "currency": "EUR"}
    response = client.get("/admin", params=params, headers={"HX-Request": "true", "Accept-Language": "en"})
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    assert response.text.lstrip().startswith('<div id="dashboard-body"') and "<h1>" not in response.text
    text = _text(response.text)
    assert "€1,200.00" in text and "US$" not in text and "Beta Holdings" not in text
    full = client.get("/admin", params=params, headers={"Accept-Language": "en"}).text
    assert '<option value="ALPHA" selected>' in full and f'<option value="{book.col1.id}" selected>' in full


# --- the exchange-rate page ---------------------------------------------------------------------


def _rates(session: Session) -> list[tuple[str, str, str, date]]:
    session.expire_all()
    return [(r.base, r.quote, r.rate, r.valid_on) for r in session.query(FxRate).order_by(FxRate.valid_on, FxRate.rate)]


def test_an_admin_adds_a_rate_and_imports_a_file(session, client):
    factories.company(session, "ALPHA")
    make_user(session, "m@example.com", "admin")
    login(client, "m@example.com")
    page = client.get("/admin/fx", headers={"Accept-Language": "en"})
    assert page.status_code == 200 and "No exchange rate yet" in page.text and "style=" not in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/admin/fx", data={"csrf_token": token, "valid_on": "2026-11-20", "base": "EUR",
                                              "quote": "USD", "rate": "1,0842"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/fx?done=created"
    assert "1 EUR = 1.0842 USD" in client.get("/admin/fx").text
    bad = client.post("/admin/fx", data={"csrf_token": token, "valid_on": "2026-11-20", "base": "EUR",
                                         "quote": "EUR", "rate": "0"}, headers={"Accept-Language": "en"})
    assert bad.status_code == 400 and "base and quote are both EUR" in bad.text and "must be more than zero" in bad.text
    files = {"files": ("rates.csv", b"date;base;quote;rate\n2026-11-21;EUR;GBP;0,87\n2026-11-20;EUR;USD;1.0842\n",
                       "text/csv")}
    response = client.post("/admin/fx/import", data={"csrf_token": token}, files=files, follow_redirects=False)
    assert response.status_code == 303
    notice = client.get(response.headers["location"], headers={"Accept-Language": "fr"}).text
    assert "Fichier importé : 1 ajoutés, 0 corrigés, 1 inchangés." in notice
    assert _rates(session) == [("EUR", "USD", "1.0842", date(2026, 11, 20)), ("EUR", "GBP", "0.87", date(2026, 11, 21))]


def test_a_bad_file_reports_its_lines_in_french_and_changes_nothing(session, client):
    make_user(session, "boss@example.com")
    login(client, "boss@example.com")
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/fx").text).group(1)
    files = {"files": ("rates.csv", b"date,base,quote,rate\n2026-11-21,EUR,GBP,0.87\n2026-11-21,EUR,ZZZ,1\n"
                                    b"21/11/2026,EUR,USD,1.1\n", "text/csv")}
    response = client.post("/admin/fx/import", data={"csrf_token": token}, files=files,
                           headers={"Accept-Language": "fr"})
    text = _text(response.text)
    assert response.status_code == 400 and "Rien n’a été importé" in text
    assert "Ligne 3 : quote ZZZ n’est pas un code de devise" in text
    assert "Ligne 4 : date 21/11/2026 n’est pas une date" in text
    files = {"files": ("rates.csv", b"when,base\n", "text/csv")}
    response = client.post("/admin/fx/import", data={"csrf_token": token}, files=files,
                           headers={"Accept-Language": "fr"})
    assert response.status_code == 400 and "Le fichier n’a pas pu être lu" in response.text
    assert "colonne inconnue" in response.text  # the reason too is in French
    assert _rates(session) == []


@pytest.mark.parametrize("role", ["manager", "collector", "viewer"])
def test_only_admins_change_the_shared_rates_the_others_read_them(session, client, role):
    factories.company(session, "ALPHA")
    session.add(FxRate(base="EUR", quote="USD", rate="1.1", valid_on=date(2026, 11, 1)))
    session.commit()
    make_user(session, "u@example.com", role, ["ALPHA"])
    login(client, "u@example.com")
    page = client.get("/admin/fx", headers={"Accept-Language": "en"})
    assert page.status_code == 200 and "1 EUR = 1.1 USD" in page.text and 'action="/admin/fx/import"' not in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/admin/fx", data={"csrf_token": token, "valid_on": "2026-11-20", "base": "EUR",
                                              "quote": "USD", "rate": "2"})
    assert response.status_code == 403
    files = {"files": ("rates.csv", b"date,base,quote,rate\n2026-11-21,EUR,GBP,0.87\n", "text/csv")}
    assert client.post("/admin/fx/import", data={"csrf_token": token}, files=files).status_code == 403
    assert _rates(session) == [("EUR", "USD", "1.1", date(2026, 11, 1))]


def test_the_fx_page_needs_a_login(client):
    response = client.get("/admin/fx", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/login?next=/admin/fx"
