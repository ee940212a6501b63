"""A manager assigns customers to a collector with a bulk action; the collector works its day:
My day lists them with why, a note with a next action becomes a task, marked done it leaves. In a
real browser, on the demo, with the real CLI."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from kernel.clock import clock
from tests.e2e.conftest import DESKTOP, LiveDemo
from tests.e2e.test_admin_browser import _manager, _sign_in
from tests.e2e.test_portal_browser import MakePage, _describe, _serious_violations

pytestmark = pytest.mark.e2e


def _collector(live_demo: LiveDemo) -> tuple[str, str]:
    email = "collector-day@durand.example"
    return email, live_demo.staff(email, "collector", "DURAND")  # a printed password is one-time


def _import_book(live_demo: LiveDemo, tmp_path: Path) -> None:
    """Three DURAND customers with overdue invoices (the largest first), through the real CLI."""
    today = clock.today("Europe/Paris")
    customers = ["company,customer_ref,name,email,language,phone,segment"]
    invoices = ["company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until"]
    for n, (amount, late) in enumerate(((300, 10), (9000, 20), (1200, 45)), start=1):
        customers.append(f"DURAND,E2E-DAY-{n},Journée {n} SARL,ap{n}@journee.example,fr,,")
        due = today - timedelta(days=late)
        invoices.append(f"DURAND,E2E-DAY-{n},E2E-DAY-F{n},{due - timedelta(days=30)},{due},EUR,{amount},,")
    (tmp_path / "customers.csv").write_text("\n".join(customers) + "\n", encoding="utf-8")
    (tmp_path / "invoices.csv").write_text("\n".join(invoices) + "\n", encoding="utf-8")
    live_demo.cli("import", "customers", str(tmp_path / "customers.csv"))
    live_demo.cli("import", "invoices", str(tmp_path / "invoices.csv"))


def test_bulk_assign_then_the_collectors_day(make_page: MakePage, live_demo: LiveDemo, tmp_path: Path) -> None:
    _import_book(live_demo, tmp_path)
    collector_email, collector_password = _collector(live_demo)
    manager_email, manager_password = _manager(live_demo, "DURAND")
    problems: list[str] = []

    boss = make_page(viewport=DESKTOP, locale="fr-FR")
    _sign_in(boss, live_demo, manager_email, manager_password)
    boss.get_by_role("link", name="Clients", exact=True).click()
    boss.get_by_label("Rechercher").fill("E2E-DAY")
    boss.get_by_role("button", name="Filtrer").click()
    rows = boss.locator("#results tbody tr")
    expect(rows).to_have_count(3)
    # htmx swapped the results: the bulk form came with them, carrying these filters
    boss.get_by_label("Action", exact=True).select_option(label="Attribuer un recouvreur")
    boss.get_by_label("Recouvreur à attribuer").select_option(label=collector_email)
    boss.get_by_label("Tous les clients qui correspondent aux filtres, pas seulement ceux cochés").check()
    boss.get_by_role("button", name="Appliquer…").click()
    expect(boss.locator(".bulk-summary")).to_have_text(f"Attribuer 3 clients à {collector_email} ?")
    found = _serious_violations(boss)
    if found:
        problems.append(_describe("bulk confirmation", found))
    boss.get_by_role("button", name="Oui, pour 3 client(s)").click()
    expect(boss.get_by_role("status")).to_have_text("Recouvreur enregistré pour 3 client(s).")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text(collector_email)

    page = make_page(viewport=DESKTOP, locale="fr-FR")
    _sign_in(page, live_demo, collector_email, collector_password)
    page.get_by_role("link", name="Ma journée").click()
    expect(page.locator("h1")).to_have_text("Ma journée")
    day = page.locator("table.my-day tbody tr")
    expect(day).to_have_count(3)
    # by overdue amount: 9,000 then 1,200 then 300
    expect(day.nth(0)).to_contain_text("Journée 2 SARL")
    expect(day.nth(1)).to_contain_text("Journée 3 SARL")
    expect(day.nth(2)).to_contain_text("Journée 1 SARL")
    expect(day.nth(1)).to_contain_text("Échu depuis le")
    expect(day.nth(1).locator("td").nth(2)).to_have_text("45")
    found = _serious_violations(page)
    if found:
        problems.append(_describe("my day", found))

    # A call noted with a next action today makes Journée 1 a task: it comes first.
    page.get_by_role("link", name="Journée 1 SARL").click()
    page.get_by_label("Ajouter une note").fill("Rappeler la comptabilité.")
    page.get_by_label("C'était un appel").check()
    page.get_by_label(re.compile("^Prochaine action le")).fill(clock.today("Europe/Paris").isoformat())
    page.get_by_role("button", name="Enregistrer la note").click()
    expect(page.get_by_role("status")).to_have_text("Note ajoutée.")
    page.get_by_role("link", name="Ma journée").click()
    expect(day.nth(0)).to_contain_text("Journée 1 SARL")
    expect(day.nth(0)).to_contain_text("Prochaine action prévue le")
    expect(day.nth(0)).to_contain_text("Rappeler la comptabilité.")
    day.nth(0).get_by_role("button", name="Marquer comme faite : Rappeler la comptabilité.").click()
    expect(page).to_have_url(f"{live_demo.base_url}/admin/my-day")
    expect(day).to_have_count(3)
    expect(day.nth(2)).to_contain_text("Journée 1 SARL")
    expect(page.get_by_text("Prochaine action prévue le")).to_have_count(0)
    assert not problems, "\n".join(problems)
