"""A manager uploads the bank's camt.053, accepts the suggested match in one click, sees the invoice
paid on the customer page, then records a cheque there, in a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from kernel.clock import clock
from tests.e2e.conftest import DESKTOP, LiveDemo
from tests.e2e.test_admin_browser import _manager, _sign_in
from tests.e2e.test_portal_browser import MakePage, _describe, _serious_violations
from tests.reconciliation.camt_builder import Doc, Ntry, Stmt, Tx, build

pytestmark = pytest.mark.e2e

DURAND_IBAN = "FR7630006000011234567890189"  # the demo company's account, as `encours demo` sets it


def _customer_with_invoices(live_demo: LiveDemo, tmp_path: Path) -> None:
    """A customer of DURAND and two open invoices, imported with the real CLI."""
    today = clock.today("Europe/Paris")
    (tmp_path / "customers.csv").write_text(
        "company,customer_ref,name,email,language,phone,segment\n"
        "DURAND,C-E2E-BANK,Quincaillerie Lenoir SARL,compta@lenoir.example,fr,,pme\n", encoding="utf-8")
    (tmp_path / "invoices.csv").write_text(
        "company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until\n"
        f"DURAND,C-E2E-BANK,E2E-BANK-1,{today.replace(day=1).isoformat()},{today.isoformat()},EUR,251.37,,\n"
        f"DURAND,C-E2E-BANK,E2E-BANK-2,{today.replace(day=1).isoformat()},{today.isoformat()},EUR,90.00,,\n",
        encoding="utf-8")
    live_demo.cli("import", "customers", str(tmp_path / "customers.csv"))
    live_demo.cli("import", "invoices", str(tmp_path / "invoices.csv"))


def _statement(tmp_path: Path) -> Path:
    """The day's camt.053 (version 001.08, as banks send them now): the customer's transfer names no
    invoice, so only its amount points at one: a suggestion for staff, not an automatic match."""
    day = clock.today("Europe/Paris").isoformat()
    entry = Ntry("251.37", ref="E2E-BANK-E1", booking=day, value=day,
                 txs=(Tx("251.37", "QUINCAILLERIE LENOIR", "FR1420041010050500013M02606",
                         ustrd=("REGLEMENT FACTURES OCTOBRE",), end_to_end="LENOIR-0001", ref="TX-E2E-1"),))
    data = build(Doc("053", 8, (Stmt(id=f"STMT-E2E-{day}", iban=DURAND_IBAN, currency="EUR", opening="1000.00",
                                     closing="1251.37", entries=(entry,)),)))
    path = tmp_path / "releve-camt053.xml"
    path.write_bytes(data)
    return path


def test_upload_accept_the_suggestion_and_record_a_cheque(make_page: MakePage, live_demo: LiveDemo,
                                                          tmp_path: Path) -> None:
    _customer_with_invoices(live_demo, tmp_path)
    statement = _statement(tmp_path)
    email, password = _manager(live_demo, "DURAND")
    page = make_page(viewport=DESKTOP, locale="fr-FR")
    problems: list[str] = []
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    page.on("response", lambda response: console_errors.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico") else None)
    _sign_in(page, live_demo, email, password)
    expect(page).to_have_url(f"{live_demo.base_url}/admin")

    page.get_by_role("link", name="Banque", exact=True).click()
    expect(page.locator("h1")).to_have_text("Rapprochement bancaire")
    page.get_by_label(re.compile("Fichier de relevé")).set_input_files(str(statement))
    page.get_by_role("button", name="Importer", exact=True).click()
    summary = page.locator("section", has=page.get_by_role("heading", name="Relevés importés"))
    expect(summary).to_contain_text("releve-camt053.xml")
    expect(summary.locator("tbody tr").first).to_contain_text("DURAND")
    row = page.locator("tr.bank-entry", has_text="QUINCAILLERIE LENOIR")
    expect(row).to_contain_text("Proposée")
    expect(row).to_contain_text("251,37")
    expect(row).to_contain_text("E2E-BANK-1")  # the proposal names the invoice
    found = _serious_violations(page)
    if found:
        problems.append(_describe("bank queue", found))

    # One click: htmx swaps the row in place, the page stays.
    page.evaluate("window.__stillHere = true")
    row.get_by_role("button", name="Accepter").click()
    expect(row).to_contain_text("Rapprochée")
    expect(row.get_by_role("button", name="Annuler le rapprochement")).to_be_visible()
    assert page.evaluate("window.__stillHere") is True

    page.get_by_role("link", name="Clients", exact=True).click()
    page.get_by_label("Rechercher").fill("Lenoir")
    page.get_by_role("button", name="Filtrer").click()
    page.get_by_role("link", name="Quincaillerie Lenoir SARL").click()
    statement_card = page.locator("section", has=page.get_by_role("heading", name="Relevé"))
    expect(statement_card).not_to_contain_text("E2E-BANK-1")  # paid by the transfer
    expect(statement_card).to_contain_text("E2E-BANK-2")

    form = page.locator("#record-payment")
    form.get_by_label("Montant reçu").fill("90,00")
    form.get_by_label("Moyen").select_option(label="Chèque")
    form.get_by_label(re.compile("^Référence")).fill("CHQ 778899")
    form.get_by_role("button", name="Enregistrer le paiement").click()
    expect(page.get_by_role("status")).to_have_text("Paiement enregistré.")
    expect(statement_card).not_to_contain_text("E2E-BANK-2")
    expect(page.locator(".timeline")).to_contain_text("Paiement enregistré à la main")
    found = _serious_violations(page)
    if found:
        problems.append(_describe("customer page after a cheque", found))

    page.locator(".timeline").get_by_role("link", name="Paiement enregistré à la main").first.click()
    expect(page.locator("h1")).to_contain_text("Réussi")
    expect(page.locator("main")).to_contain_text("CHQ 778899")
    expect(page.locator("main")).to_contain_text("Chèque")
    assert not problems, "\n".join(problems)
    assert not console_errors, console_errors
