"""The debtor's Payments page and receipts, the phone's sticky pay bar, a visible keyboard focus on
the brand-coloured header, and "Copied" after a copy button, in Chromium, French and English, at
375 px and 1280 px, with axe-core."""

from __future__ import annotations

import re
from typing import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import DESKTOP, PHONE, LiveDemo
from tests.e2e.test_pay_browser import _accessible_and_narrow, plain, restored_demo  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

MakePage = Callable[..., Page]


@pytest.mark.parametrize(("ref", "locale", "viewport", "payments", "method", "receipt", "pdf"), [
    ("C-MARTIN", "fr-FR", PHONE, "Paiements", "Virement bancaire", "Reçu DURAND-R000001",
     "Télécharger le reçu (PDF)"),
    ("C-NORDIC", "en-GB", DESKTOP, "Payments", "Bank transfer", "Receipt DURAND-R000002",
     "Download the receipt (PDF)"),
], ids=["fr-375px", "en-1280px"])
def test_the_payments_page_lists_what_was_paid_and_each_receipt_opens_with_its_pdf(
    make_page: MakePage, live_demo: LiveDemo, ref: str, locale: str, viewport: dict[str, int], payments: str,
    method: str, receipt: str, pdf: str,
) -> None:
    page = make_page(viewport=viewport, locale=locale)
    page.goto(live_demo.link(ref))
    page.get_by_role("link", name=payments, exact=True).click()
    expect(page.locator("h1")).to_have_text(payments)
    problems = _accessible_and_narrow(page, f"{locale} payments page")
    row = page.locator("table.payments-list tbody tr").first
    expect(row).to_contain_text(method)
    row.get_by_role("link").click()
    expect(page.locator("h1")).to_have_text(receipt)
    problems += _accessible_and_narrow(page, f"{locale} receipt page")
    link = page.get_by_role("link", name=pdf)
    href = link.get_attribute("href")
    assert href and href.endswith("/receipt.pdf")
    response = page.request.get(live_demo.base_url + href)
    assert response.status == 200 and response.headers["content-type"] == "application/pdf"
    assert response.body().startswith(b"%PDF")
    assert not problems, "\n".join(problems)


def test_on_a_phone_the_selected_total_stays_in_reach_and_focus_shows_on_the_header(
    make_page: MakePage, live_demo: LiveDemo
) -> None:
    page = make_page(viewport=PHONE)
    page.goto(live_demo.link("C-MARTIN"))
    summary = page.locator("#pay-summary")
    expect(summary.locator(".pay-charged")).to_be_visible()
    bar = page.locator("#pay-sticky")
    expect(bar).to_be_visible()
    expect(bar.locator(".pay-sticky-total")).to_have_text(re.compile(r"^Sélection : 6\s614,96\s€$"))
    # At the top of a long statement, the bar sits at the foot of the screen, the pay panel far below.
    box = bar.bounding_box()
    assert box is not None and box["y"] + box["height"] <= PHONE["height"] + 1 and box["y"] > PHONE["height"] / 2
    panel = page.locator(".pay-panel").bounding_box()
    assert panel is not None and panel["y"] > PHONE["height"]
    page.get_by_role("checkbox", name="Payer la facture F-2026-0412").uncheck()
    expect(bar.locator(".pay-sticky-total")).to_have_text(re.compile(r"^Sélection : 5\s380,40\s€$"))
    bar.get_by_role("link", name="Choisir comment payer").click()
    expect(page.get_by_role("heading", name="Payer en ligne")).to_be_in_viewport()

    # Keyboard: the skip link, then the brand's link on the brand-coloured header, ringed dark and white.
    page.goto(f"{live_demo.base_url}/portal")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    focused = page.evaluate("""() => {
        const el = document.activeElement, style = getComputedStyle(el);
        return {inHeader: !!el.closest('.site-header'), outline: style.outlineStyle, color: style.outlineColor,
                width: style.outlineWidth, shadow: style.boxShadow,
                header: getComputedStyle(document.querySelector('.site-header')).backgroundColor};
    }""")
    assert focused["inHeader"] and focused["outline"] == "solid" and focused["width"] == "3px", focused
    assert focused["color"] == "rgb(17, 17, 17)" and "rgb(255, 255, 255)" in focused["shadow"], focused
    assert focused["color"] != focused["header"], focused

    page.set_viewport_size(DESKTOP)
    expect(bar).to_be_hidden()  # a desktop sees the pay panel beside the table


def test_copy_buttons_say_copied_and_the_amount_has_one(make_page: MakePage, restored_demo: LiveDemo) -> None:
    live_demo = restored_demo
    page = make_page(viewport=PHONE)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_demo.base_url)
    page.goto(live_demo.link("C-MARTIN"))
    page.goto(f"{live_demo.base_url}/portal?select=overdue&currency=EUR")
    summary = page.locator("#pay-summary")
    summary.get_by_role("radio", name="Virement bancaire").check()
    summary.get_by_role("button", name=re.compile(r"^Payer ")).click()
    expect(page.locator("h1")).to_have_text("Payer par virement")
    amount = plain(page.locator("#copy-amount").inner_text())
    assert amount == "3 944,56 €"
    buttons = page.locator(".transfer-details button.copy-button")
    expect(buttons).to_have_count(4)  # IBAN, BIC, amount, reference
    copy_amount = page.locator("button[data-copy=copy-amount]")
    copy_amount.click()
    expect(copy_amount).to_have_text("Copié")
    expect(copy_amount).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == "3944,56"
    page.locator("button[data-copy=copy-reference]").click()
    expect(page.locator("button[data-copy=copy-reference]")).to_have_text("Copié")
    expect(copy_amount).to_have_text("Copier")  # one "Copied" at a time: the last one pressed
    assert re.fullmatch(r"RF\d{2}[0-9A-Z]+", page.evaluate("navigator.clipboard.readText()"))
    problems = _accessible_and_narrow(page, "transfer page with its copy buttons")
    assert not problems, "\n".join(problems)
