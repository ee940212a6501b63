"""Staff sign in to the back-office in a real browser."""

from __future__ import annotations

import itertools
import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import DESKTOP, PHONE, LiveDemo
from tests.e2e.test_portal_browser import MakePage, _describe, _serious_violations

pytestmark = pytest.mark.e2e
_seq = itertools.count(1)


def _manager(live_demo: LiveDemo, company: str) -> tuple[str, str]:
    """A manager created with the real CLI; returns (email, the password it printed)."""
    email = f"manager{next(_seq)}-{company.lower()}@durand.example"
    return email, live_demo.staff(email, "manager", company)


def _sign_in(page: Page, live_demo: LiveDemo, email: str, password: str) -> None:
    page.goto(f"{live_demo.base_url}/admin")
    expect(page).to_have_url(re.compile(r"/admin/login"))
    page.get_by_label(re.compile("E-mail|Email")).fill(email)
    page.get_by_label(re.compile("^(Mot de passe|Password)$")).fill(password)
    page.get_by_role("button", name=re.compile("Se connecter|Sign in")).click()


def test_manager_signs_in_sees_only_its_company_and_signs_out(make_page: MakePage, live_demo: LiveDemo) -> None:
    email, password = _manager(live_demo, "DURAND-UK")
    page = make_page(viewport=DESKTOP, locale="fr-FR")
    _sign_in(page, live_demo, email, "not the password")
    expect(page.get_by_text("E-mail ou mot de passe incorrect")).to_be_visible()
    page.get_by_label(re.compile("^Mot de passe$")).fill(password)
    page.get_by_role("button", name="Se connecter").click()
    expect(page).to_have_url(f"{live_demo.base_url}/admin")
    expect(page.locator("h1")).to_have_text("Tableau de bord")
    body = page.locator("main").inner_text()
    assert "Durand Industrie UK Ltd" in body and "Durand Industrie SAS" not in body
    assert "10 597,46 £GB" in body.replace("\u202f", " ").replace("\u00a0", " ")
    page.get_by_role("button", name="Se déconnecter").click()
    expect(page).to_have_url(re.compile(r"/admin/login"))
    page.goto(f"{live_demo.base_url}/admin")
    expect(page).to_have_url(re.compile(r"/admin/login"))


@pytest.mark.parametrize("language", ["fr", "en"])
def test_back_office_accessibility(make_page: MakePage, live_demo: LiveDemo, language: str) -> None:
    email, password = _manager(live_demo, "DURAND")
    page = make_page(viewport=PHONE, locale="fr-FR" if language == "fr" else "en-GB")
    problems: list[str] = []

    def scan(where: str) -> None:
        for viewport in (PHONE, DESKTOP):
            page.set_viewport_size(viewport)
            found = _serious_violations(page)
            if found:
                problems.append(_describe(f"{where} [{language}, {viewport['width']}px]", found))

    page.goto(f"{live_demo.base_url}/admin/login")
    scan("login page")
    _sign_in(page, live_demo, email, password)
    expect(page).to_have_url(f"{live_demo.base_url}/admin")
    scan("dashboard")
    for viewport in (PHONE, DESKTOP):  # the charts and tables fit: no sideways scrolling of the page
        page.set_viewport_size(viewport)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), viewport
        expect(page.locator("svg.chart").first).to_be_visible()
    page.goto(f"{live_demo.base_url}/admin/fx")
    scan("exchange rates page")
    page.goto(f"{live_demo.base_url}/admin/password")
    scan("password page")
    assert not problems, "\n".join(problems)
