"""The scenario editor's preview in Chromium: the email keeps its inline styles (its own frame,
its own policy, no policy violation on the page) and follows the step being edited."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DESKTOP, LiveDemo
from tests.e2e.test_admin_browser import _manager, _sign_in
from tests.e2e.test_portal_browser import MakePage

pytestmark = pytest.mark.e2e


def test_the_preview_shows_the_styled_email_of_the_step_being_edited(make_page: MakePage,
                                                                      live_demo: LiveDemo) -> None:
    email, password = _manager(live_demo, "DURAND")
    page = make_page(viewport=DESKTOP, locale="en-GB")
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    _sign_in(page, live_demo, email, password)
    expect(page).to_have_url(f"{live_demo.base_url}/admin")
    page.goto(f"{live_demo.base_url}/admin/scenarios")
    page.get_by_label("New scenario name").fill("Preview test")
    page.get_by_label("Segment (empty: company default)").fill("preview-test")
    page.get_by_role("button", name="Create from the standard steps").click()
    expect(page.locator("h1")).to_contain_text("Scenario Preview test")
    page.get_by_label("Customer", exact=True).select_option(label="Boulangeries Martin SARL (C-MARTIN)")
    page.get_by_label("Language", exact=True).select_option(label="English")

    # Editing step 3 moves the preview to step 3, with the unsaved text.
    page.locator("#step-2-subject_en").click()
    expect(page.get_by_label("Step", exact=True)).to_have_value("2")
    page.locator("#step-2-subject_en").fill("Third step for {{ customer.name }}")
    expect(page.locator("#preview-subject")).to_have_text("Third step for Boulangeries Martin SARL")
    page.locator("#step-0-subject_en").focus()
    expect(page.get_by_label("Step", exact=True)).to_have_value("0")
    expect(page.locator("#preview-subject")).not_to_have_text("Third step for Boulangeries Martin SARL")

    # The HTML part with its inline styles applied: the button is coloured, not a plain link.
    button = page.frame_locator("#preview iframe.preview-html").get_by_role("link", name="View and pay my invoices")
    expect(button).to_be_visible()
    background = button.evaluate("a => getComputedStyle(a).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background
    assert not refused, refused
