"""Paying from the statement in Chromium: select, see the total change, pay by bank transfer,
then the transfer is matched and the statement shows the new balance."""

from __future__ import annotations

import re
from typing import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.settings import load_settings
from ledger.models import AuditEvent, Checkout, CheckoutLine, Customer, Invoice, OutboxMessage, Payment
from payments import rf
from payments.settlement import record_bank_transfer
from tests.e2e.conftest import DESKTOP, PHONE, LiveDemo
from tests.e2e.test_portal_browser import _describe, _serious_violations

pytestmark = pytest.mark.e2e

MakePage = Callable[..., Page]
MARTIN = "C-MARTIN"


def plain(text: str) -> str:
    return text.replace("\u202f", " ").replace("\u00a0", " ")


@pytest.fixture
def restored_demo(live_demo: LiveDemo) -> Iterator[LiveDemo]:
    """The demo is shared by this worker's tests: put MARTIN's invoices back as they were."""
    with Session(live_demo.engine) as session:
        customer_id = session.scalar(select(Customer.id).where(Customer.ref == MARTIN))
        invoices = {row.id: (row.open_minor, row.status)
                    for row in session.scalars(select(Invoice).where(Invoice.customer_id == customer_id))}
        last_checkout = session.scalar(select(func.coalesce(func.max(Checkout.id), 0)))
        last_outbox = session.scalar(select(func.coalesce(func.max(OutboxMessage.id), 0)))
        last_audit = session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))
    yield live_demo
    with Session(live_demo.engine) as session, session.begin():
        from ledger.models import Allocation

        checkouts = select(Checkout.id).where(Checkout.id > last_checkout)
        payments = select(Payment.id).where(Payment.checkout_id.in_(checkouts))
        session.execute(delete(Allocation).where(Allocation.payment_id.in_(payments)))
        session.execute(delete(Allocation).where(Allocation.credit_for_checkout_id.in_(checkouts)))
        session.execute(delete(Payment).where(Payment.id.in_(payments)))
        session.execute(delete(CheckoutLine).where(CheckoutLine.checkout_id.in_(checkouts)))
        session.execute(delete(Checkout).where(Checkout.id > last_checkout))
        session.execute(delete(OutboxMessage).where(OutboxMessage.id > last_outbox))
        session.execute(delete(AuditEvent).where(AuditEvent.id > last_audit))
        for invoice_id, (open_minor, status) in invoices.items():
            invoice = session.get(Invoice, invoice_id)
            assert invoice is not None
            invoice.open_minor, invoice.status = open_minor, status


def _accessible_and_narrow(page: Page, where: str) -> list[str]:
    """axe-core's serious violations on a phone and a desktop, and no sideways scroll on the phone."""
    problems = []
    for viewport in (PHONE, DESKTOP):
        page.set_viewport_size(viewport)
        found = _serious_violations(page)
        if found:
            problems.append(_describe(f"{where} [{viewport['width']}px]", found))
        if viewport is PHONE:
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > PHONE["width"]:
                problems.append(f"{where} is {width}px wide on a phone")
    return problems


def test_french_customer_pays_two_invoices_by_bank_transfer(make_page: MakePage, restored_demo: LiveDemo) -> None:
    live_demo = restored_demo
    page = make_page()
    problems: list[str] = []
    page.goto(live_demo.link(MARTIN))
    expect(page.locator("h1")).to_have_text("Relevé de compte")
    summary = page.locator("#pay-summary")
    # Everything due is ticked at first; the summary comes from the server through htmx.
    expect(summary.locator(".pay-charged")).to_have_text(re.compile(r"^6\s614,96\s€$"))  # 6 662,96 € due less the 48,00 € discount

    page.get_by_role("link", name="rien").first.click()
    expect(page.get_by_role("checkbox", name="Payer la facture F-2026-0412")).not_to_be_checked()
    expect(summary).to_contain_text("Choisissez les factures à payer.")
    page.get_by_role("checkbox", name="Payer la facture F-2026-0412").check()
    # The 150,00 € credit note is deducted from what is charged.
    expect(summary.locator(".pay-charged")).to_have_text(re.compile(r"^1\s084,56\s€$"))
    page.get_by_role("checkbox", name="Payer la facture F-2026-0519").check()
    expect(summary.locator(".pay-charged")).to_have_text(re.compile(r"^1\s402,96\s€$"))
    assert "Facture F-2026-0519" in plain(summary.inner_text())
    problems += _accessible_and_narrow(page, "statement with its pay summary")

    methods = page.get_by_role("group", name="Moyen de paiement")
    methods.get_by_role("radio", name="Virement bancaire").check()
    page.get_by_role("button", name=re.compile(r"^Payer 1\s402,96\s€$")).click()

    expect(page.locator("h1")).to_have_text("Payer par virement")
    assert re.search(r"/portal/pay/\d+/transfer$", page.url)
    details = plain(page.locator(".transfer-details").inner_text())
    assert "FR76 3000 6000 0112 3456 7890 189" in details and "1 402,96 €" in details
    reference = page.locator(".transfer-reference").inner_text()
    assert rf.is_valid(reference), reference
    expect(page.get_by_role("button", name="Copier").first).to_be_visible()  # the copy script ran under the CSP
    problems += _accessible_and_narrow(page, "transfer page")

    checkout_id = int(page.url.rsplit("/", 2)[-2])
    with Session(live_demo.engine) as session, session.begin():
        checkout = session.get(Checkout, checkout_id)
        assert checkout is not None and checkout.reference == rf.normalize(reference)
        record_bank_transfer(session, checkout, checkout.amount_minor, clock.today("Europe/Paris"),
                             settings=load_settings(live_demo.env(), env_file=None))

    page.goto("/portal")
    text = plain(page.locator(".summary").inner_text())
    assert re.search(r"Total à régler\s+5 260,00 €", text), text  # 6 662,96 € less 1 402,96 € paid
    assert "F-2026-0412" not in plain(page.locator("main").inner_text())
    page.goto(f"/portal/pay/{checkout_id}")
    expect(page.locator("h1")).to_have_text("Paiement reçu")
    problems += _accessible_and_narrow(page, "receipt page")
    assert not problems, "\n".join(problems)
