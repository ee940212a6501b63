"""An admin creates an ERP API key in the back-office, copies it, reloads the page (nothing is
posted again, the key is not shown again), the ERP uses it, the admin revokes it."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import DESKTOP, LiveDemo
from tests.e2e.test_portal_browser import MakePage, _describe, _serious_violations

pytestmark = pytest.mark.e2e


def _sign_in_as_new_admin(page: Page, live_demo: LiveDemo) -> None:
    email = "keys-admin@durand.example"
    password = live_demo.staff(email, "admin")  # chosen by its owner: a printed one is one-time
    page.goto(f"{live_demo.base_url}/admin/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_demo.base_url}/admin")


def test_admin_creates_copies_and_revokes_an_erp_key(make_page: MakePage, live_demo: LiveDemo) -> None:
    page = make_page(viewport=DESKTOP, locale="en-GB")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    _sign_in_as_new_admin(page, live_demo)

    page.get_by_role("link", name="ERP API keys", exact=True).click()
    page.get_by_label("Company").select_option("DURAND")
    page.get_by_label("Name (the audit trail shows it)").fill("Cegid browser")
    page.get_by_role("button", name="Create the key").click()
    expect(page.get_by_text("Key Cegid browser created for DURAND.")).to_be_visible()
    # The page showing the key came by a redirect: its address carries nothing of it.
    expect(page).to_have_url(f"{live_demo.base_url}/admin/api-keys")
    key = page.locator("#new-api-key").inner_text()
    assert key.startswith("enc_live_")
    cookies = page.context.cookies()
    assert all(key not in c["value"] and "enc_live_" not in c["value"] for c in cookies)
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    found = _serious_violations(page)
    assert not found, _describe("api keys page", found)

    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{live_demo.base_url}/api/v1/customers?limit=1", headers=auth).status_code == 200
    page.reload()  # posts nothing again: no second key, no error; the key is not shown again, its last use is
    expect(page.locator("#new-api-key")).to_have_count(0)
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_text(key)).to_have_count(0)
    expect(page.get_by_role("row", name=re.compile("Cegid browser"))).to_have_count(1)
    row = page.get_by_role("row", name=re.compile("Cegid browser"))
    expect(row).to_contain_text("Read and write")
    expect(row).not_to_contain_text("Never")

    row.get_by_role("link", name=re.compile("Revoke")).click()
    expect(page.locator("h1")).to_have_text("Revoke the key Cegid browser of DURAND?")
    page.get_by_role("button", name="Yes, revoke the key").click()
    expect(page.get_by_role("status")).to_contain_text("Key revoked")
    expect(page.get_by_role("row", name=re.compile("Cegid browser"))).to_contain_text("Revoked")
    assert httpx.get(f"{live_demo.base_url}/api/v1/customers?limit=1", headers=auth).status_code == 401
