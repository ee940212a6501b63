"""Disputes and promises in Chromium: the French demo debtor disputes an invoice with a PDF, a
collector answers and accepts with a partial credit note, the debtor sees the answer and its new
balance; a promise to pay is made in the browser.

These tests change the demo's balances, which the other browser tests of a worker check: so this
module serves its own copy of the demo (the same `encours demo --no-serve` command, on its own
port and folder), and leaves the shared one alone.
"""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from typing import Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select, text

from kernel.clock import clock
from ledger.models import Dispute, OutboxMessage, PromiseToPay
from tests.e2e.conftest import DESKTOP, PHONE, LiveDemo, serve_demo
from tests.e2e.test_portal_browser import MakePage, _describe, _serious_violations, main_text

pytestmark = pytest.mark.e2e
_seq = itertools.count(1)
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    """A demo of this module's own: its disputes change balances the shared `live_demo` checks."""
    with serve_demo(tmp_path_factory.mktemp("dispute-demo")) as own:
        yield own


def _staff(demo: LiveDemo, role: str, company: str) -> tuple[str, str]:
    """A staff account made with the real CLI; (email, the password it printed)."""
    email = f"{role}{next(_seq)}-{company.lower()}@durand.example"
    return email, demo.staff(email, role, company)


def _staff_sign_in(page: Page, demo: LiveDemo, email: str, password: str, path: str) -> None:
    page.goto(f"{demo.base_url}{path}")
    page.get_by_label(re.compile("E-mail|Email")).fill(email)
    page.get_by_label(re.compile("^(Mot de passe|Password)$")).fill(password)
    page.get_by_role("button", name=re.compile("Se connecter|Sign in")).click()
    expect(page).to_have_url(f"{demo.base_url}{path}")


def _check_page(page: Page, where: str, problems: list[str]) -> None:
    """axe-core on a phone and a desktop, and no horizontal scroll on the phone."""
    for viewport in (PHONE, DESKTOP):
        page.set_viewport_size(viewport)
        found = _serious_violations(page)
        if found:
            problems.append(_describe(f"{where} [{viewport['width']}px]", found))
        if viewport is PHONE:
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > PHONE["width"]:
                problems.append(f"{where} is {width}px wide on a phone")


def test_dispute_with_a_pdf_answered_and_accepted_with_a_partial_credit(make_page: MakePage, demo: LiveDemo) -> None:
    disputed = "F-2026-0412"  # 1 234,56 €, overdue
    collector, password = _staff(demo, "collector", "DURAND")
    with demo.engine.begin() as connection:  # the French customer's assigned collector
        connection.execute(text("UPDATE customers SET collector_id = (SELECT id FROM users WHERE email = :email) "
                                "WHERE ref = 'C-MARTIN'"), {"email": collector})
    problems: list[str] = []

    # The debtor disputes one invoice from its page, with a PDF.
    debtor = make_page()
    debtor.goto(demo.link("C-MARTIN"))
    expect(debtor.locator("h1")).to_have_text("Relevé de compte")
    assert re.search(r"Total à régler\s+6 662,96 €", main_text(debtor))
    debtor.get_by_role("link", name=f"Facture {disputed}").click()
    debtor.get_by_role("link", name="Contester cette facture").click()
    expect(debtor.locator("h1")).to_have_text("Contester des factures")
    expect(debtor.get_by_label(re.compile(f"Facture {disputed}"))).to_be_checked()
    _check_page(debtor, "new dispute form", problems)
    debtor.get_by_role("button", name="Envoyer la contestation").click()  # no reason yet: the browser says so
    expect(debtor.locator("h1")).to_have_text("Contester des factures")
    debtor.get_by_label("Motif").select_option(label="Problème de qualité")
    debtor.get_by_label("Message").fill("La moitié des sacs de farine est arrivée percée.")
    debtor.get_by_label("Pièces jointes (facultatif)").set_input_files(
        [{"name": "bon-de-livraison.pdf", "mimeType": "application/pdf", "buffer": PDF}])
    debtor.get_by_role("button", name="Envoyer la contestation").click()
    expect(debtor.locator("h1")).to_have_text(re.compile(r"^Contestation \d+$"))
    expect(debtor.get_by_role("status")).to_contain_text("Votre contestation a été envoyée")
    expect(debtor.get_by_role("link", name="bon-de-livraison.pdf")).to_be_visible()
    case_url = debtor.url.split("?")[0]
    case_id = int(case_url.rsplit("/", 1)[1])
    _check_page(debtor, "case page", problems)
    debtor.goto(f"{demo.base_url}/portal")
    statement = main_text(debtor)
    # 6 662,96 € less the disputed 1 234,56 €, which is shown apart.
    assert re.search(r"Total à régler\s+5 428,40 €", statement), statement
    assert re.search(r"En litige\s+1 234,56 €", statement) or "Contestée" in statement, statement

    # The collector finds it in the queue, answers, then accepts with a partial credit note.
    staff = make_page()
    _staff_sign_in(staff, demo, collector, password, "/admin/disputes")
    expect(staff.locator("h1")).to_have_text("Contestations et questions")
    _check_page(staff, "disputes queue", problems)
    staff.get_by_role("link", name=f"Contestation {case_id}").click()
    expect(staff.get_by_text("La moitié des sacs de farine est arrivée percée.")).to_be_visible()
    expect(staff.get_by_role("link", name="bon-de-livraison.pdf")).to_be_visible()
    _check_page(staff, "staff case page", problems)
    staff.get_by_label("Message", exact=True).fill("Nous vérifions auprès de l’entrepôt.")
    staff.get_by_role("button", name="Envoyer au client").click()
    expect(staff.get_by_role("status")).to_contain_text("Réponse envoyée")
    staff.get_by_label("Avoir partiel").check()
    staff.get_by_label("Montant de l’avoir (EUR)").fill("234,56")
    staff.locator("#accept-note").fill("Nous vous accordons un avoir de 234,56 € pour les sacs percés.")
    staff.get_by_role("button", name="Accepter la contestation").click()
    expect(staff.get_by_role("status")).to_contain_text("Contestation acceptée")
    with demo.engine.connect() as connection:
        mails = connection.execute(select(OutboxMessage.to_address).where(OutboxMessage.kind == "dispute_answer"))
        assert [to for (to,) in mails] == ["compta@boulangeries-martin.fr"] * 2  # the reply, then the decision
        assert connection.execute(select(Dispute.status).where(Dispute.id == case_id)).scalar() == "accepted"

    # The debtor reads the answer and sees its new balance.
    debtor.goto(case_url)
    thread = main_text(debtor)
    assert "Nous vérifions auprès de l’entrepôt." in thread and "avoir de 234,56 €" in thread, thread
    assert "Acceptée" in thread
    debtor.goto(f"{demo.base_url}/portal")
    statement = main_text(debtor)
    assert re.search(r"Total à régler\s+6 428,40 €", statement), statement  # 6 662,96 € less the 234,56 € credit
    debtor.get_by_role("link", name=f"Facture {disputed}").click()
    assert re.search(r"Reste dû\s+1 000,00 €", main_text(debtor)), main_text(debtor)
    assert not problems, "\n".join(problems)


def test_promise_to_pay_made_in_the_browser(make_page: MakePage, demo: LiveDemo) -> None:
    problems: list[str] = []
    debtor = make_page(viewport=PHONE, locale="en-GB")
    debtor.goto(demo.link("C-THAMES"))  # the UK customer, who reads English
    debtor.get_by_role("link", name="Invoice UK-10233").click()
    debtor.get_by_role("link", name="Promise to pay").click()
    expect(debtor.locator("h1")).to_have_text("Promise to pay")
    expect(debtor.locator("#promise-total")).to_contain_text("£1,234.56")
    debtor.get_by_label(re.compile("Invoice UK-10262")).check()  # htmx recomputes the amount
    expect(debtor.locator("#promise-total")).to_contain_text("£1,847.46")
    _check_page(debtor, "promise form", problems)
    day = clock.today("Europe/London") + timedelta(days=7)
    debtor.get_by_label("Date of payment").fill(day.isoformat())
    debtor.get_by_role("button", name="Record my promise").click()
    expect(debtor.locator("h1")).to_have_text("My requests")
    expect(debtor.get_by_role("status")).to_contain_text("your promise to pay was recorded")
    listing = main_text(debtor)
    assert "£1,847.46" in listing and "Pending" in listing and "UK-10233, UK-10262" in listing, listing
    _check_page(debtor, "my requests", problems)
    with demo.engine.connect() as connection:
        rows = connection.execute(select(PromiseToPay.amount_minor, PromiseToPay.promised_for, PromiseToPay.status)
                                  ).all()
    assert rows == [(1847_46, day, "pending")]

    manager, password = _staff(demo, "manager", "DURAND-UK")
    staff = make_page()
    _staff_sign_in(staff, demo, manager, password, "/admin/promises")
    upcoming = staff.locator("section", has=staff.get_by_role("heading", name=re.compile("^À venir")))
    expect(upcoming).to_contain_text("C-THAMES")
    _check_page(staff, "promises page", problems)
    assert not problems, "\n".join(problems)


def test_a_promise_is_kept_when_paid_and_broken_when_its_date_and_grace_pass(make_page: MakePage,
                                                                              demo: LiveDemo) -> None:
    """Two promises made in the browser by the French debtor: one paid in time (kept), one not (broken)."""
    from sqlalchemy.orm import Session

    from kernel.settings import load_settings
    from ledger.models import Contact, Customer, Invoice
    from payments.checkout import create_checkout
    from payments.settlement import record_bank_transfer

    debtor = make_page(viewport=DESKTOP, locale="fr-FR")
    debtor.goto(demo.link("C-MARTIN"))
    today = clock.today("Europe/Paris")
    promised = today + timedelta(days=5)
    for number in ("F-2026-0519", "F-2026-0501"):
        debtor.goto(f"{demo.base_url}/portal")
        debtor.get_by_role("link", name=f"Facture {number}").click()
        debtor.get_by_role("link", name=re.compile("Promettre|promesse", re.IGNORECASE)).click()
        debtor.get_by_label(re.compile("Date")).fill(promised.isoformat())
        debtor.get_by_role("button", name=re.compile("Enregistrer")).click()
        expect(debtor.get_by_role("status")).to_be_visible()

    # F-2026-0519 is paid by transfer two days later: the money reaches the bank.
    clock.set(clock.now() + timedelta(days=2))
    with Session(demo.engine) as session, session.begin():
        customer = session.scalar(select(Customer).where(Customer.ref == "C-MARTIN"))
        invoice = session.scalar(select(Invoice).where(Invoice.number == "F-2026-0519"))
        assert customer is not None and invoice is not None
        contact = session.scalar(select(Contact).where(Contact.customer_id == customer.id))
        checkout = create_checkout(session, customer=customer, contact=contact, selection={invoice.id: None},
                                   method="bank_transfer", today=clock.today("Europe/Paris"))
        record_bank_transfer(session, checkout, checkout.amount_minor, clock.today("Europe/Paris"),
                             settings=load_settings(demo.env(), env_file=None))

    # A week after the promised date (grace: 3 days), the worker settles the promises (its first
    # step, as `encours worker` runs it), then the manager looks at them.
    clock.set(clock.now() + timedelta(days=10))
    from kernel.templating import Templates
    from ledger import disputes
    from mail import notifications

    with Session(demo.engine) as session, session.begin():
        disputes.settle_promises(session, on_broken=lambda promise: notifications.notify_promise_broken(
            session, promise, base_url=demo.base_url, templates=Templates()))
    manager, password = _staff(demo, "manager", "DURAND")
    staff = make_page()
    _staff_sign_in(staff, demo, manager, password, "/admin/promises")
    broken = staff.locator("section[aria-labelledby=broken-title]")
    expect(broken).to_contain_text("F-2026-0501")
    assert "F-2026-0519" not in broken.inner_text()
    with demo.engine.connect() as connection:
        outcomes = dict(connection.execute(
            text("SELECT i.number, p.status FROM promises p JOIN promise_invoices pi ON pi.promise_id = p.id "
                 "JOIN invoices i ON i.id = pi.invoice_id WHERE i.number IN ('F-2026-0519', 'F-2026-0501')")).all())
    assert outcomes == {"F-2026-0519": "kept", "F-2026-0501": "broken"}
