"""A French admin creates an ERP API key and an ERP webhook endpoint: each secret is shown once,
the same way (`admin.reveal`), in French, with its copy button; a reload shows it no more and
creates nothing."""

from __future__ import annotations

import re
from typing import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import DESKTOP, LiveDemo, serve_demo
from tests.e2e.test_admin_browser import _sign_in
from tests.e2e.test_portal_browser import MakePage, _describe, _serious_violations

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    """A demo that accepts an endpoint on 127.0.0.1 (an ERP on the LAN): nothing is sent to it here."""
    with serve_demo(tmp_path_factory.mktemp("reveal-demo"), {"ENCOURS_WEBHOOK_ALLOW_PRIVATE": "true"}) as own:
        yield own


def _shown_once(page: Page, path: str, secret_id: str, message: str, rows: str) -> list[str]:
    """After the form's POST: the secret, copied; then a reload. The accessibility problems found."""
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))  # the address carries nothing of it
    expect(page.get_by_role("status").first).to_contain_text(message)
    secret = page.locator(f"#{secret_id}").inner_text()
    assert len(secret) > 20 and all(secret not in c["value"] for c in page.context.cookies())
    found = _serious_violations(page)
    problems = [_describe(f"{path}: secret shown", found)] if found else []
    page.get_by_role("button", name="Copier").click()
    expect(page.locator("#copy-status")).to_have_text("Copié")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    page.reload()  # nothing posted again, nothing shown again
    expect(page.locator(f"#{secret_id}")).to_have_count(0)
    expect(page.get_by_text(secret)).to_have_count(0)
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.locator(rows)).to_have_count(1)
    return problems


def test_both_secrets_are_shown_once_in_french(make_page: MakePage, demo: LiveDemo) -> None:
    email = "reveal-admin@durand.example"
    password = demo.staff(email, "admin")
    page = make_page(viewport=DESKTOP, locale="fr-FR")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    _sign_in(page, demo, email, password)
    expect(page).to_have_url(f"{demo.base_url}/admin")

    page.goto(f"{demo.base_url}/admin/api-keys")
    form = page.locator("form", has=page.get_by_role("button", name="Créer la clé"))
    form.locator("select[name=company]").select_option("DURAND")
    form.locator("input[name=name]").fill("Cegid navigateur")
    form.get_by_role("button", name="Créer la clé").click()
    problems = _shown_once(page, "/admin/api-keys", "new-api-key", "Clé Cegid navigateur créée pour DURAND.",
                           "tbody tr:has-text('Cegid navigateur')")

    page.goto(f"{demo.base_url}/admin/webhooks/endpoints")
    form = page.locator("form", has=page.get_by_role("button", name="Ajouter l’adresse"))
    form.locator("select[name=company]").select_option("DURAND")
    form.locator("input[name=url]").fill("http://127.0.0.1:9/erp-reveal")
    form.get_by_role("button", name="Ajouter l’adresse").click()
    problems += _shown_once(page, "/admin/webhooks/endpoints", "new-webhook-secret",
                            "Adresse http://127.0.0.1:9/erp-reveal ajoutée pour DURAND.",
                            "tbody tr:has-text('/erp-reveal')")
    assert not problems, "\n".join(problems)
