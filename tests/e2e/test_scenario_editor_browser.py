"""A manager edits a reminder scenario in a real browser, with the live preview on a real customer."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DESKTOP, LiveDemo
from tests.e2e.test_admin_browser import _manager, _sign_in
from tests.e2e.test_portal_browser import MakePage, _describe, _serious_violations

pytestmark = pytest.mark.e2e


def test_manager_edits_a_step_sees_the_live_preview_saves_and_is_refused_a_bad_placeholder(
    make_page: MakePage, live_demo: LiveDemo
) -> None:
    email, password = _manager(live_demo, "DURAND")
    page = make_page(viewport=DESKTOP, locale="en-GB")
    _sign_in(page, live_demo, email, password)
    expect(page).to_have_url(f"{live_demo.base_url}/admin")
    page.get_by_role("link", name="Reminders").click()
    expect(page.locator("h1")).to_have_text("Reminder scenarios")

    # A scenario of its own (a segment no demo customer is in), so that other tests' runs are untouched.
    page.get_by_label("New scenario name").fill("Browser test")
    page.get_by_label("Segment (empty: company default)").fill("browser-test")
    page.get_by_role("button", name="Create from the standard steps").click()
    expect(page.locator("h1")).to_contain_text("Scenario Browser test")
    editor_url = page.url

    page.get_by_label("Customer", exact=True).select_option(label="Boulangeries Martin SARL (C-MARTIN)")
    page.get_by_label("Step", exact=True).select_option(label="Step 2: D+3")
    page.get_by_label("Language", exact=True).select_option(label="English")
    expect(page.locator("#preview-subject")).to_have_text("Durand Industrie SAS: reminder of overdue invoices")

    subject = page.locator("#step-1-subject_en")
    subject.fill("Still open for {{ customer.name }}")
    expect(page.locator("#preview-subject")).to_have_text("Still open for Boulangeries Martin SARL")
    expect(page.locator("#preview .preview-text")).to_contain_text("Total")
    # The HTML part, as the mail client would show it, in a sandboxed frame.
    html_part = page.frame_locator("#preview iframe.preview-html")
    expect(html_part.get_by_role("link", name="View and pay my invoices")).to_be_visible()

    found = _serious_violations(page)
    assert not found, _describe("scenario editor", found)

    page.get_by_role("button", name="Save the scenario").click()
    expect(page.get_by_text("Scenario saved.")).to_be_visible()
    expect(page.locator("#step-1-subject_en")).to_have_value("Still open for {{ customer.name }}")

    page.locator("#step-1-subject_en").fill("Still open for {{ custmer.name }}")
    expect(page.locator("#preview")).to_contain_text("unknown placeholder “custmer”")
    page.get_by_role("button", name="Save the scenario").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "Step D+3, English subject, line 1: unknown placeholder “custmer”.")
    expect(page.get_by_role("alert")).to_contain_text("Nothing was saved")
    page.goto(editor_url)
    expect(page.locator("#step-1-subject_en")).to_have_value("Still open for {{ customer.name }}")


def test_run_history_and_dry_run_pages(make_page: MakePage, live_demo: LiveDemo) -> None:
    email, password = _manager(live_demo, "DURAND")
    page = make_page(viewport=DESKTOP, locale="fr-FR")
    _sign_in(page, live_demo, email, password)
    page.goto(f"{live_demo.base_url}/admin/scenarios/runs")
    expect(page.locator("h1")).to_have_text("Exécutions des relances")
    page.get_by_role("button", name="Voir ce qui partirait").click()
    expect(page.locator("h1")).to_have_text("Aperçu d'une exécution")
    expect(page.get_by_text(re.compile("rien n'est envoyé ni enregistré"))).to_be_visible()
    found = _serious_violations(page)
    assert not found, _describe("dry run page", found)
