"""Rendering reminder texts: sandboxed, text and HTML, in the contact's language; delivered multipart."""

from __future__ import annotations

import random
from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dunning import messages
from dunning.messages import (
    CompanyView,
    ContactView,
    CustomerView,
    InvoiceFacts,
    StepTexts,
    build_context,
    render,
)
from mail.outbox import deliver_due, parse_smtp_url
from dunning.planner import run
from dunning.scenarios import DEFAULT_STEPS, ensure_default_scenario
from kernel import i18n
from kernel.settings import Settings
from ledger.models import OutboxMessage
from ledger.money import Money
from tests import factories
from tests.fakes.smtp import CapturingSMTP

TODAY = date(2026, 11, 25)


def _plain(text: str) -> str:
    return text.replace("\u202f", " ").replace("\xa0", " ")


def _step(index: int) -> StepTexts:
    d = DEFAULT_STEPS[index]
    return StepTexts(id=1, offset_days=d.offset_days, tone=d.tone, whole_balance=d.whole_balance,
                     subject_fr=d.subject_fr, body_fr=d.body_fr, subject_en=d.subject_en, body_en=d.body_en,
                     may_skip=d.may_skip)


def _context(language: str = "fr", name: str = "Boulangeries Martin", country: str = "FR",
             invoices: list[InvoiceFacts] | None = None) -> dict[str, object]:
    invoices = invoices or [
        InvoiceFacts(1, "F-1", date(2026, 9, 1), date(2026, 10, 16), "EUR", 1000_00),
        InvoiceFacts(2, "F-2", date(2026, 11, 1), date(2026, 12, 1), "EUR", 2400_00, 200, date(2026, 12, 5)),
        InvoiceFacts(3, "F-3", date(2026, 9, 1), date(2026, 10, 1), "USD", 50_00),
    ]
    return build_context(
        language=language, today=TODAY, company=CompanyView("Durand Industrie SAS", "recouvrement@durand.test", ""),
        country=country, base_currency="EUR", customer=CustomerView(name, "C-1"),
        contact=ContactView("", "ap@client.test"), invoices=invoices, all_open=invoices,
        link="https://encours.test/p/TOKEN",
    )


def test_french_message_has_the_table_totals_savings_and_link() -> None:
    rendered = render(_step(1), "fr", _context())
    text = _plain(rendered.text)
    assert rendered.subject == "Durand Industrie SAS : rappel de factures échues"
    assert "Facture" in text and "Échéance" in text and "Reste dû" in text
    assert "F-1" in text and "16 oct. 2026" in text and "1 000,00 €" in text
    assert "Total échu : 1 000,00 € · 50,00 $US" in text
    assert "Payez avant le 5 décembre et économisez 48,00 €" in text
    assert "https://encours.test/p/TOKEN" in text


def test_english_message_in_english() -> None:
    rendered = render(_step(1), "en", _context("en"))
    assert rendered.subject == "Durand Industrie SAS: reminder of overdue invoices"
    assert "Invoice" in rendered.text and "Due date" in rendered.text and "€1,000.00" in rendered.text
    assert "Pay by 5 December and save €48.00" in rendered.text
    assert 'lang="en"' in rendered.html and "View and pay my invoices" in rendered.html


def test_html_part_escapes_data_and_has_a_pay_button() -> None:
    rendered = render(_step(1), "fr", _context(name="<script>alert(1)</script> & Fils"))
    step = StepTexts(1, 3, "courteous", False, "{{ customer.name }}", "Bonjour {{ customer.name }}\n\n{{ invoices }}",
                     "x", "x")
    custom = render(step, "fr", _context(name="<b>Fils</b> & Cie"))
    assert custom.subject == "<b>Fils</b> & Cie"
    assert "Bonjour <b>Fils</b> & Cie" in custom.text
    assert "&lt;b&gt;Fils&lt;/b&gt; &amp; Cie" in custom.html and "<b>Fils</b>" not in custom.html
    assert '<a href="https://encours.test/p/TOKEN"' in rendered.html
    assert "Voir et régler mes factures" in rendered.html
    assert "<table" in rendered.html and "<script>" not in rendered.html


def test_formal_notice_states_french_late_charges_computed() -> None:
    invoices = [InvoiceFacts(1, "F-1", date(2026, 9, 1), date(2026, 10, 16), "EUR", 1000_00)]  # 40 days late
    text = _plain(render(_step(3), "fr", _context(invoices=invoices)).text)
    assert "article L441-10 du Code de commerce" in text
    assert "taux annuel de 12,15 %" in text and "40,00 € par facture" in text
    assert "13,32 €" in text  # 1 000 € × 12.15 % × 40 / 365
    assert "Total des indemnités forfaitaires de recouvrement : 40,00 €" in text
    english = render(_step(3), "en", _context("en", invoices=invoices)).text
    assert "€13.32" in english and "article L441-10" in english


def test_formal_notice_outside_france_says_nothing_of_french_law() -> None:
    text = render(_step(3), "en", _context("en", country="GB")).text
    assert "L441-10" not in text and "Formal notice" in render(_step(3), "en", _context("en", country="GB")).subject
    text = render(_step(3), "en", _context("en", country="US")).text
    assert "L441-10" not in text and "Late Payment" not in text and "interest" not in text


def test_uk_formal_notice_states_statutory_interest_and_fixed_compensation() -> None:
    invoices = [InvoiceFacts(1, "INV-1", date(2026, 9, 1), date(2026, 10, 16), "GBP", 2_000_00),  # 40 days late
                InvoiceFacts(2, "INV-2", date(2026, 9, 1), date(2026, 10, 16), "GBP", 500_00)]
    text = _plain(render(_step(3), "en", _context("en", country="GB", invoices=invoices)).text)
    assert "Late Payment of Commercial Debts (Interest) Act 1998" in text and "L441-10" not in text
    # Base rate on 30 June 2026 (the last known: 4.00 %) + 8 points.
    assert "12.00% a year (the Bank of England base rate plus 8 points)" in text
    assert "£26.30" in text and "£6.58" in text  # 2,000 and 500 × 12 % × 40 / 365
    assert "£70.00" in text and "£40.00" in text
    assert "Total recovery indemnities: £110.00" in text
    french = _plain(render(_step(3), "fr", _context("fr", country="GB", invoices=invoices)).text)
    assert "Late Payment of Commercial Debts (Interest) Act 1998" in french and "12,00 %" in french


def _facts(number: str, due: date, reminded: bool = False) -> InvoiceFacts:
    return InvoiceFacts(hash(number) % 1000, number, date(2026, 9, 1), due, "EUR", 100_00, reminded=reminded)


@pytest.mark.parametrize("index", [1, 2, 3])
def test_a_grouped_message_puts_invoices_not_yet_due_in_their_own_section(index: int) -> None:
    # Seen: a D+15 email listed an invoice due in three days as unpaid and overdue.
    invoices = [_facts("F-LATE", date(2026, 11, 5), reminded=True), _facts("F-SOON", date(2026, 11, 28))]
    text = render(_step(index), "en", _context("en", invoices=invoices)).text
    overdue_part, _, rest = text.partition("F-LATE")
    assert "F-SOON" not in overdue_part
    if DEFAULT_STEPS[index].whole_balance:
        return  # the formal notice is about what is overdue
    assert "fall due soon" in rest and "F-SOON" in rest.split("fall due soon", 1)[1]
    assert "Days left" in rest


def test_despite_our_reminder_only_when_one_was_sent_for_those_invoices() -> None:
    never = [_facts("F-1", date(2026, 11, 5))]
    once = [_facts("F-1", date(2026, 11, 5), reminded=True)]
    mixed = [_facts("F-1", date(2026, 11, 5), reminded=True), _facts("F-2", date(2026, 11, 20))]
    for index, claim in ((2, "Despite our previous reminder"), (3, "Despite our reminders")):
        assert claim not in render(_step(index), "en", _context("en", invoices=never)).text
        assert claim in render(_step(index), "en", _context("en", invoices=once)).text
        assert claim not in render(_step(index), "en", _context("en", invoices=mixed)).text
    assert "Malgré notre précédent rappel" not in render(_step(2), "fr", _context(invoices=never)).text
    assert "Malgré notre précédent rappel" in render(_step(2), "fr", _context(invoices=once)).text


def test_a_falling_due_soon_notice_never_lists_an_overdue_invoice_as_upcoming() -> None:
    # Seen: a D-5 email listed one two days overdue.
    invoices = [_facts("F-LATE", date(2026, 11, 23)), _facts("F-SOON", date(2026, 11, 30))]
    text = render(_step(0), "en", _context("en", invoices=invoices)).text
    assert "F-SOON" in text and "F-LATE" not in text


def test_the_sandbox_blocks_unsafe_attribute_access_at_render_time_too() -> None:
    step = StepTexts(1, 3, "firm", False, "x", "{{ invoices.__class__.__mro__ }}", "x", "x")
    with pytest.raises(Exception, match="unsafe|not safely"):
        render(step, "fr", _context())


def test_fast_money_format_matches_babel() -> None:
    rng = random.Random(7)
    for currency in ("EUR", "USD", "GBP", "JPY", "KWD", "CHF"):
        for language in ("fr", "en"):
            for minor in [0, 1, 99, 1000_00, 99_999, 1_234_567_89] + [rng.randrange(10**11) for _ in range(50)]:
                assert messages._format_money(minor, currency, language) == i18n.format_money(
                    Money(minor, currency), language)


def test_a_queued_reminder_is_delivered_as_text_and_html(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, smtp_server: CapturingSMTP
) -> None:
    company = factories.company(session, name="Durand Industrie SAS")
    ensure_default_scenario(session, company)
    customer = factories.customer(session, company, email="compta@client.test")
    factories.invoice(session, customer, 1000_00, number="F-2026-0412", due_date=date(2026, 11, 22))
    run(session_factory, settings, TODAY, company.code)

    report = deliver_due(session_factory, parse_smtp_url(smtp_server.url), "Durand <relances@durand.test>")

    assert report.sent == 1
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["compta@client.test"]
    assert received.message.get_content_type() == "multipart/alternative"
    assert received.message["Subject"] == "Durand Industrie SAS : rappel de factures échues"
    assert "F-2026-0412" in received.text() and "http://testserver/p/" in received.text()
    html = received.html() or ""
    assert "F-2026-0412" in html and 'href="http://testserver/p/' in html
    assert session.scalars(select(OutboxMessage.status)).all() == ["sent"]
