"""What an operator sets up with the CLI alone, paid for by card in a browser.

The book is built as in tests/encours/test_operator_journey.py (`encours db upgrade`, `encours
company create`, `encours import` of customers, contacts, and invoices with a credit note, `encours
link`, `encours serve`), and the server is pointed at the Stripe stand-in the way `encours demo`
points it (encours.sandbox). A debtor opens the link, pays the overdue invoice by card with the
credit note deducted; localstripe signs the webhook, the invoice and the credit note end paid, and
the receipt waits in the outbox. The demo's own data is never used: `encours demo` seeds its book
itself, so only this test sees a card payment of a book the CLI built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import create_engine, text

from encours import sandbox
from tests.e2e.test_card_browser import pay_by_card_in_the_sandbox, plain
from tests.encours.test_operator_journey import Operator, database_url, operator  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(operator: Operator) -> Iterator[str]:  # noqa: F811
    """The operator's book on `encours serve`, beside the providers' stand-ins; yields the debtor's link."""
    stand_ins = sandbox.start(f"http://127.0.0.1:{operator.port}")
    try:
        operator.env.update(stand_ins.settings)
        day = lambda offset: (datetime.now(timezone.utc).date() + timedelta(days=offset)).isoformat()  # noqa: E731
        operator("db", "upgrade")
        operator("company", "create", "ACME", "--name", "Acme Industrie SAS", "--currency", "EUR")
        (operator.cwd / "customers.csv").write_text(
            "company,customer_ref,name,email,language,phone,segment\n"
            "ACME,C-100,Boulangerie du Port,compta@boulangerie.test,en,,pme\n"
            "ACME,C-200,Garage Central,factures@garage.test,fr,,pme\n", encoding="utf-8")
        operator("import", "customers", str(operator.cwd / "customers.csv"))
        (operator.cwd / "contacts.csv").write_text(
            "customer_ref,email,name,phone,language,role,receives_reminders\n"
            "C-100,direction@boulangerie.test,Marie Martin,,fr,manager,no\n", encoding="utf-8")
        assert "1 created" in operator("import", "contacts", str(operator.cwd / "contacts.csv"), "--company", "ACME")
        (operator.cwd / "invoices.csv").write_text(
            "company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until,type\n"
            f"ACME,C-100,F-100,{day(-60)},{day(-30)},EUR,1234.56,,,invoice\n"
            f"ACME,C-100,F-101,{day(-5)},{day(25)},EUR,318.40,,,invoice\n"
            f"ACME,C-100,AV-100,{day(-20)},{day(-20)},EUR,200.00,,,credit_note\n"
            f"ACME,C-200,F-200,{day(-50)},{day(-20)},EUR,999.00,,,invoice\n", encoding="utf-8")
        assert "4 created" in operator("import", "invoices", str(operator.cwd / "invoices.csv"))
        link = operator("link", "C-100", "--company", "ACME").strip()
        with operator.serve():
            yield link
    finally:
        stand_ins.stop()


def test_a_debtor_pays_by_card_what_the_operator_imported_with_its_credit_note_deducted(
        operator: Operator, served: str, database_url: str, make_page: Callable[..., Page]) -> None:  # noqa: F811
    base = f"http://127.0.0.1:{operator.port}"
    page = make_page(locale="en-GB")
    page.goto(served)
    expect(page).to_have_url(f"{base}/portal")
    statement = plain(page.locator("main").inner_text())
    assert "F-100" in statement and "AV-100" in statement and "F-200" not in statement
    assert re.search(r"Total due\s+€1,352.96", statement), statement  # 1,234.56 + 318.40 - 200.00

    page.get_by_role("link", name="only overdue").first.click()
    summary = page.locator("#pay-summary")
    expect(summary.locator("#method-card")).to_be_visible()
    shown = plain(summary.inner_text())
    assert re.search(r"-€200.00", shown) and re.search(r"Amount charged\s+€1,034.56", shown), shown
    pay_by_card_in_the_sandbox(page, "Payment received")
    page.goto(f"{base}/portal")
    after = plain(page.locator("main").inner_text())
    assert re.search(r"Total due\s+€318.40", after) and "F-100" not in after and "AV-100" not in after, after

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            assert dict(connection.execute(text("SELECT number, status FROM invoices")).all()) == {
                "F-100": "paid", "AV-100": "paid", "F-101": "open", "F-200": "open"}
            assert connection.execute(text("SELECT status, amount_minor, card_last4 FROM payments")).all() == [
                ("succeeded", 103456, "4242")]
            assert connection.execute(text("SELECT provider, event_type, processed_at IS NOT NULL, error "
                                           "FROM webhook_events")).all() == [
                ("stripe", "payment_intent.succeeded", True, None)]
            receipts = connection.execute(text("SELECT to_address, subject FROM outbox WHERE kind = 'receipt'")).all()
            assert receipts == [("compta@boulangerie.test", "Payment received: €1,034.56 to Acme Industrie SAS")]
    finally:
        engine.dispose()
