"""An admin adds a user, then rebrands a company; the debtor's portal shows the new colour and logo."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.e2e.conftest import DESKTOP, LiveDemo
from tests.e2e.test_portal_browser import MakePage

pytestmark = pytest.mark.e2e

NEW_COLOUR = "#0a6b3a"


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 107, 58)).save(out, format="PNG")
    return out.getvalue()


def _admin(live_demo: LiveDemo) -> tuple[str, str]:
    email = "settings-admin@durand.example"
    return email, live_demo.staff(email, "admin")


def _sign_in(page: Page, live_demo: LiveDemo, email: str, password: str) -> None:
    page.goto(f"{live_demo.base_url}/admin/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_demo.base_url}/admin")


def _brand(page: Page) -> str:
    return str(page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--brand')")).strip()


def test_admin_adds_a_user_and_rebrands_a_company(make_page: MakePage, live_demo: LiveDemo) -> None:
    email, password = _admin(live_demo)
    page = make_page(viewport=DESKTOP, locale="en-GB")
    _sign_in(page, live_demo, email, password)

    page.get_by_role("link", name="Users", exact=True).click()
    page.get_by_label("Email").fill("new.collector@durand.example")
    page.get_by_label("Role").select_option("collector")
    page.get_by_role("checkbox", name=re.compile(r"Durand Industrie SAS")).check()
    page.get_by_role("button", name="Create the account").click()
    expect(page.get_by_text("Account new.collector@durand.example created.")).to_be_visible()
    shown = page.locator("#new-password").inner_text()
    assert len(shown) >= 10
    expect(page.get_by_role("row", name=re.compile("new.collector@durand.example"))).to_contain_text("Collector")

    page.get_by_role("link", name="Settings", exact=True).click()
    page.get_by_role("link", name="Durand Industrie SAS").click()
    expect(page.locator("h1")).to_contain_text("Settings of Durand Industrie SAS")
    old_colour = page.get_by_label("Brand colour").input_value()
    page.get_by_label("Brand colour").fill("green")  # the browser already says no; the server too (unit tests)
    assert page.get_by_label("Brand colour").evaluate("el => el.validity.valid") is False
    page.get_by_label("Brand colour").fill(NEW_COLOUR)
    page.get_by_label("Logo", exact=True).set_input_files({"name": "logo.png", "mimeType": "image/png", "buffer": _png()})
    page.get_by_role("button", name="Save the settings").click()
    expect(page.get_by_role("status")).to_have_text("Settings saved.")
    expect(page.get_by_role("img", name="Current logo of Durand Industrie SAS")).to_be_visible()

    try:
        debtor = make_page(viewport=DESKTOP, locale="fr-FR")
        debtor.goto(live_demo.link("C-MARTIN"))
        expect(debtor).to_have_url(re.compile(r"/portal"))
        assert _brand(debtor) == NEW_COLOUR
        logo = debtor.locator("img.brand-logo")
        expect(logo).to_be_visible()
        assert debtor.evaluate("document.querySelector('img.brand-logo').naturalWidth") == 64
    finally:  # the demo is shared with other browser tests: put its branding back
        page.get_by_label("Brand colour").fill(old_colour)
        page.get_by_label("Remove the logo").check()
        page.get_by_role("button", name="Save the settings").click()
        expect(page.get_by_role("status")).to_have_text("Settings saved.")


def test_settings_pages_accessibility(make_page: MakePage, live_demo: LiveDemo) -> None:
    from tests.e2e.test_portal_browser import _describe, _serious_violations

    email = "settings-a11y@durand.example"
    password = live_demo.staff(email, "admin")
    page = make_page(viewport=DESKTOP, locale="en-GB")
    _sign_in(page, live_demo, email, password)
    problems = []
    for path in ("/admin/users", "/admin/settings", "/admin/settings/DURAND", "/admin/imports",
                 "/admin/audit?actor=system"):
        page.goto(f"{live_demo.base_url}{path}")
        found = _serious_violations(page)
        if found:
            problems.append(_describe(path, found))
    assert not problems, "\n".join(problems)
