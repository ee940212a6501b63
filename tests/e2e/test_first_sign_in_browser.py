"""`encours user create` without --password-stdin prints a one-time password: in Chromium, its
owner signs in, is taken to the password page before anything else, chooses its own, and goes on."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DESKTOP, LiveDemo
from tests.e2e.test_portal_browser import MakePage

pytestmark = pytest.mark.e2e


def test_a_one_time_password_is_changed_at_first_sign_in(make_page: MakePage, live_demo: LiveDemo) -> None:
    email = "first-sign-in@durand.example"
    out = live_demo.cli("user", "create", email, "--role", "collector", "--company", "DURAND")
    one_time = re.search(r"^password: (\S+)$", out, re.MULTILINE)
    assert one_time, out
    page = make_page(viewport=DESKTOP, locale="fr-FR")
    page.goto(f"{live_demo.base_url}/admin/customers")
    page.get_by_label(re.compile("E-mail|Email")).fill(email)
    page.get_by_label(re.compile("^Mot de passe$")).fill(one_time.group(1))
    page.get_by_role("button", name="Se connecter").click()
    expect(page).to_have_url(re.compile(r"/admin/password\?next=/admin/customers$"))
    expect(page.locator("#password-forced")).to_contain_text("mot de passe à usage unique")
    expect(page.get_by_role("navigation", name="Back-office").get_by_role("link", name="Clients")).to_have_count(0)
    page.goto(f"{live_demo.base_url}/admin")  # any other page leads back here
    expect(page).to_have_url(re.compile(r"/admin/password\?next=/admin$"))
    page.get_by_label("Mot de passe à usage unique").fill(one_time.group(1))
    page.get_by_label("Nouveau mot de passe", exact=True).fill("my own first password")
    page.get_by_label(re.compile("Confirm")).fill("my own first password")
    page.get_by_role("button", name="Changer le mot de passe").click()
    expect(page).to_have_url(f"{live_demo.base_url}/admin")
    expect(page.get_by_role("link", name="Clients")).to_be_visible()
