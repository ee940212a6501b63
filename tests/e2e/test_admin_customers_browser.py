"""A manager finds a customer, pages the list in place with htmx, opens the customer, writes a
note and pauses its reminders, in a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DESKTOP, LiveDemo
from tests.e2e.test_admin_browser import _manager, _sign_in
from tests.e2e.test_portal_browser import MakePage, _describe, _serious_violations

pytestmark = pytest.mark.e2e


def _import_customers(live_demo: LiveDemo, tmp_path: Path, count: int) -> None:
    """`count` customers of DURAND named "Pagination NN", imported with the real CLI."""
    lines = ["company,customer_ref,name,email,language,phone,segment"]
    lines += [f"DURAND,E2E-PAGE-{n:02d},Pagination {n:02d},ap{n:02d}@pagination.example,fr,,pme" for n in range(count)]
    path = tmp_path / "customers.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    live_demo.cli("import", "customers", str(path))


def test_manager_searches_pages_opens_notes_and_pauses(make_page: MakePage, live_demo: LiveDemo,
                                                         tmp_path: Path) -> None:
    _import_customers(live_demo, tmp_path, 60)
    email, password = _manager(live_demo, "DURAND")
    page = make_page(viewport=DESKTOP, locale="fr-FR")
    problems: list[str] = []
    console_errors: list[str] = []
    # CSP refusals and script errors show as console errors; missing resources as responses (the
    # browser's own favicon request aside).
    page.on("console", lambda message: console_errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    page.on("response", lambda response: console_errors.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico") else None)
    _sign_in(page, live_demo, email, password)
    expect(page).to_have_url(f"{live_demo.base_url}/admin")

    page.get_by_role("link", name="Clients", exact=True).click()
    expect(page.locator("h1")).to_have_text("Clients")
    page.get_by_label("Rechercher").fill("Pagination")
    page.get_by_role("button", name="Filtrer").click()
    expect(page).to_have_url(re.compile(r"/admin/customers\?q=Pagination"))
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("Pagination 00")
    found = _serious_violations(page)
    if found:
        problems.append(_describe("customers list", found))

    # htmx swaps the results in place: the page (and this marker) stays, the address follows.
    page.evaluate("window.__stillHere = true")
    page.get_by_role("link", name="Page suivante").click()
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(rows).to_have_count(10)
    expect(rows.first).to_contain_text("Pagination 50")
    assert page.evaluate("window.__stillHere") is True
    page.get_by_role("link", name="Page précédente").click()
    expect(rows).to_have_count(50)

    page.get_by_label("Rechercher").fill("Boulangeries Martin")
    page.get_by_role("button", name="Filtrer").click()
    expect(rows).to_have_count(1)
    page.get_by_role("link", name="Boulangeries Martin SARL").click()
    expect(page.locator("h1")).to_contain_text("Boulangeries Martin SARL")
    expect(page.get_by_role("heading", name="Relevé")).to_be_visible()

    page.get_by_label("Ajouter une note").fill("Appelé M. Martin : règlement vendredi.")
    page.get_by_role("button", name="Enregistrer la note").click()
    expect(page.get_by_role("status")).to_have_text("Note ajoutée.")
    expect(page.locator(".timeline")).to_contain_text("Appelé M. Martin : règlement vendredi.")

    page.get_by_role("button", name="Suspendre les relances").click()
    expect(page.get_by_role("status")).to_have_text("Relances suspendues pour ce client.")
    expect(page.get_by_role("button", name="Reprendre les relances")).to_be_visible()
    expect(page.locator(".timeline")).to_contain_text("Relances suspendues")
    found = _serious_violations(page)
    if found:
        problems.append(_describe("customer page", found))
    # Leave the shared demo as the other tests expect it.
    page.get_by_role("button", name="Reprendre les relances").click()
    expect(page.get_by_role("status")).to_have_text("Relances reprises pour ce client.")
    assert not problems, "\n".join(problems)
    assert not console_errors, console_errors
