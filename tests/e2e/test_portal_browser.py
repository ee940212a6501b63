"""Debtor journeys in Chromium, against the demo created by the real `encours demo` command.

Every test opens the links the command printed, in a fresh browser context. The demo is shared
by the tests of one worker: a test that revokes a link hands out a fresh one before it ends.
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from babel.dates import format_date
from playwright.sync_api import Page, Response, expect
from sqlalchemy import select

from kernel.clock import clock
from tests.e2e.conftest import DESKTOP, PHONE, REPO, LiveDemo

pytestmark = pytest.mark.e2e

MakePage = Callable[..., Page]

MARTIN, THAMES, NORDIC = "C-MARTIN", "C-THAMES", "C-NORDIC"
NAMES = {
    MARTIN: "Boulangeries Martin SARL",
    THAMES: "Thames Valley Logistics Ltd",
    NORDIC: "Nordic Marine Supply AB",
}
PDFTOTEXT = "/usr/bin/pdftotext"
SCREENSHOTS = ("portal-desktop.png", "portal-phone.png")
SCREENSHOTS_INTO_DOCS = "ENCOURS_README_SCREENSHOTS"  # "1": test_readme_screenshots rewrites docs/'s
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def plain(text: str) -> str:
    """Babel's narrow and plain no-break spaces as ordinary spaces, for comparisons."""
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def main_text(page: Page) -> str:
    return plain(page.locator("main").inner_text())


def sign_in(page: Page, live_demo: LiveDemo, ref: str) -> Response:
    """Open the customer's magic link as the debtor would, and land on the statement."""
    response = page.goto(live_demo.link(ref))
    assert response is not None and response.status == 200, response and response.status
    assert page.url == f"{live_demo.base_url}/portal"
    return response


def pdf_text(content: bytes, tmp_path: Path) -> str | None:
    """The PDF's text via pdftotext (poppler-utils), or None where it is not installed."""
    if not Path(PDFTOTEXT).exists():
        return None
    source = tmp_path / "document.pdf"
    source.write_bytes(content)
    done = subprocess.run([PDFTOTEXT, "-layout", str(source), "-"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return plain(done.stdout)


def download(page: Page, link_name: str) -> tuple[str, bytes]:
    """Click a download link; the file's suggested name and content."""
    with page.expect_download() as info:
        page.get_by_role("link", name=link_name).click()
    failure = info.value.failure()
    assert failure is None, f"downloading {link_name!r} failed ({failure}): see the server's log below"
    return info.value.suggested_filename, Path(info.value.path()).read_bytes()


def demo_day(days: int) -> str:
    """A demo date (relative to the day the demo was created) as the French sentences show it."""
    return format_date(clock.today("Europe/Paris") + timedelta(days=days), format="d MMMM", locale="fr_FR")


# --- Statements -------------------------------------------------------------------------------------------


def test_french_customer_opens_the_printed_link(page: Page, live_demo: LiveDemo) -> None:
    sign_in(page, live_demo, MARTIN)

    assert "/p/" not in page.url  # the token left the address bar
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator("h1")).to_have_text("Relevé de compte")
    text = main_text(page)
    assert NAMES[MARTIN] in text
    for number in ("F-2026-0412", "F-2026-0468", "F-2026-0501", "F-2026-0519"):
        assert f"Facture {number}" in text
    assert "Avoir AV-2026-0033" in text
    assert "Jours de retard" in plain(page.locator("table.items thead").inner_text())
    assert "1 234,56 €" in text
    assert "2 860,00 €" in text  # 4 860,00 € less the 2 000,00 € already paid
    assert "150,00 €" in text  # the credit note
    summary = plain(page.locator(".summary").inner_text())
    # 6 812,96 € of open invoices less the 150,00 € credit note; overdue: F-2026-0412 and what is left of 0468.
    assert re.search(r"Total à régler\s+6 662,96 €", summary), summary
    assert re.search(r"dont en retard\s+4 094,56 €", summary), summary
    overdue_row = page.locator("tbody tr", has_text="F-2026-0412")
    expect(overdue_row.locator('td[data-label="Jours de retard"]')).to_have_text("45")
    expect(overdue_row.locator(".badge")).to_have_text("En retard")
    discount = plain(page.locator("tbody tr", has_text="F-2026-0501").locator(".discount").inner_text())
    assert discount == f"Payez avant le {demo_day(10)} et économisez 48,00 €"

    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    session = cookies["encours_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"


def test_language_switch_persists_across_pages(page: Page, live_demo: LiveDemo) -> None:
    sign_in(page, live_demo, MARTIN)
    expect(page.locator("html")).to_have_attribute("lang", "fr")

    page.get_by_role("button", name="English").click()
    expect(page.locator("h1")).to_have_text("Statement of account")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert page.url == f"{live_demo.base_url}/portal"
    text = main_text(page)
    assert "€1,234.56" in text and "€6,662.96" in text
    assert "Days overdue" in text
    expect(page.get_by_role("button", name="English")).to_be_disabled()

    page.get_by_role("link", name="Invoice F-2026-0412").click()
    expect(page.locator("h1")).to_have_text("Invoice F-2026-0412")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert "€1,234.56" in main_text(page)

    page.get_by_role("button", name="français").click()
    expect(page.locator("h1")).to_have_text("Facture F-2026-0412")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    assert re.fullmatch(rf"{re.escape(live_demo.base_url)}/portal/invoices/\d+", page.url), page.url
    page.get_by_role("link", name="Relevé de compte").click()
    expect(page.locator("h1")).to_have_text("Relevé de compte")
    assert "1 234,56 €" in main_text(page)


def test_uk_customer_sees_pounds_in_english(page: Page, live_demo: LiveDemo) -> None:
    sign_in(page, live_demo, THAMES)

    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("Statement of account")
    text = main_text(page)
    assert NAMES[THAMES] in text
    assert "£1,234.56" in text
    assert "£10,597.46" in text  # total due
    assert "€" not in text
    assert plain(page.locator(".discount").inner_text()).endswith("and save £131.25")  # 1.5 % of £8,750.00


def test_export_customer_gets_one_section_per_currency(page: Page, live_demo: LiveDemo) -> None:
    sign_in(page, live_demo, NORDIC)

    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator(".summary-card h2")).to_have_text(["Euro", "US Dollar"])
    sections = page.locator("section.currency-section")
    expect(sections.locator("h2")).to_have_text(["Invoices in Euro", "Invoices in US Dollar"])

    euro, dollar = plain(sections.nth(0).inner_text()), plain(sections.nth(1).inner_text())
    assert "F-2026-0390" in euro and "F-2026-0477" in euro and "F-2026-0480" not in euro
    assert "F-2026-0480" in dollar and "F-2026-0522" in dollar and "F-2026-0390" not in dollar
    assert re.search(r"Total due\s+€19,075.25", euro), euro
    assert re.search(r"Total due\s+US\$7,440.00", dollar), dollar  # 9,990 - 4,000 paid + 1,450
    assert re.search(r"of which overdue\s+US\$5,990.00", dollar), dollar
    cards = page.locator(".summary-card")
    assert "€19,075.25" in plain(cards.nth(0).inner_text())
    assert "US$7,440.00" in plain(cards.nth(1).inner_text())


# --- Invoices and PDFs ------------------------------------------------------------------------------------


def test_invoice_page_and_pdfs(page: Page, live_demo: LiveDemo, tmp_path: Path) -> None:
    sign_in(page, live_demo, MARTIN)

    page.get_by_role("link", name="Facture F-2026-0468").click()
    expect(page.locator("h1")).to_have_text("Facture F-2026-0468")
    assert re.fullmatch(rf"{re.escape(live_demo.base_url)}/portal/invoices/\d+", page.url), page.url
    details = plain(page.locator("dl.details").inner_text())
    assert re.search(r"Montant TTC\s+4 860,00 €", details), details
    assert re.search(r"Reste dû\s+2 860,00 €", details), details
    assert "Partiellement payée" in details
    assert re.search(r"Jours de retard\s+20", details), details
    history = plain(page.locator("table.items").inner_text())
    assert "2 000,00 €" in history  # the payment applied

    filename, content = download(page, "Télécharger le PDF")
    assert filename == "F-2026-0468.pdf"
    assert content.startswith(b"%PDF")
    text = pdf_text(content, tmp_path)
    if text is not None:
        assert "F-2026-0468" in text and "4 860,00 €" in text, text

    page.get_by_role("link", name="Relevé de compte").click()
    filename, content = download(page, "Télécharger le relevé (PDF)")
    assert filename == f"statement-C-MARTIN-{clock.today('Europe/Paris').isoformat()}.pdf"
    assert content.startswith(b"%PDF")
    text = pdf_text(content, tmp_path)
    if text is not None:
        for number in ("F-2026-0412", "F-2026-0468", "F-2026-0501", "F-2026-0519", "AV-2026-0033"):
            assert number in text, text
        assert "1 234,56 €" in text and "6 662,96 €" in text, text
        assert NAMES[THAMES] not in text and "UK-10233" not in text


def test_other_customers_invoices_are_not_found(page: Page, live_demo: LiveDemo) -> None:
    sign_in(page, live_demo, MARTIN)
    invoices = live_demo.invoices()
    own = [(id_, number) for id_, number, ref in invoices if ref == MARTIN]
    # The demo's other customers (other tests of this worker may import customers of their own).
    others = [(id_, number, ref) for id_, number, ref in invoices if ref != MARTIN and ref in NAMES]
    assert len(own) == 5 and len(others) == 7

    for id_, number, ref in others:
        for path in (f"/portal/invoices/{id_}", f"/portal/invoices/{id_}/pdf"):
            response = page.request.get(path)
            body = plain(response.text())
            assert response.status == 404, f"{path} ({number} of {ref}) answered {response.status}"
            assert number not in body and NAMES[ref] not in body, f"{path} leaks {number} of {ref}"
    for id_, number in own:
        page_response = page.request.get(f"/portal/invoices/{id_}")
        assert page_response.status == 200, f"the page of {number} answered {page_response.status}"
        assert number in page_response.text()
        pdf_response = page.request.get(f"/portal/invoices/{id_}/pdf")
        assert pdf_response.status == 200, f"the PDF of {number} answered {pdf_response.status}"
        assert pdf_response.body().startswith(b"%PDF"), number

    # And in the browser itself: the not-found page, in French, with nothing of the other customer.
    other_id, other_number, other_ref = others[0]
    response = page.goto(f"/portal/invoices/{other_id}")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Page introuvable")
    assert other_number not in page.content() and NAMES[other_ref] not in page.content()


# --- Bad links --------------------------------------------------------------------------------------------


def _tampered(link: str) -> str:
    """The link with one character of the signature changed (not the last: its low bits are padding)."""
    position = len(link) - 8
    replacement = "A" if link[position] != "A" else "B"
    return link[:position] + replacement + link[position + 1:]


def test_tampered_link_shows_nothing_of_the_customer(page: Page, live_demo: LiveDemo) -> None:
    response = page.goto(_tampered(live_demo.link(MARTIN)))

    assert response is not None and response.status == 400
    expect(page.locator("h1")).to_have_text("Ce lien n’est pas valide")
    content = page.content()
    for forbidden in (NAMES[MARTIN], "Durand", "C-MARTIN", "F-2026-0412", "1 234,56", "compta@"):
        assert forbidden not in plain(content), forbidden
    expect(page.get_by_role("button", name="M’envoyer un nouveau lien par e-mail")).to_have_count(0)
    # No session was opened either.
    response = page.goto("/portal")
    assert response is not None and response.status == 401
    expect(page.locator("h1")).to_have_text("Ouvrez le lien reçu par e-mail")


def test_expired_link_offers_a_fresh_one(page: Page, live_demo: LiveDemo) -> None:
    from ledger.models import OutboxMessage

    with live_demo.engine.connect() as connection:
        queued_before = len(connection.execute(select(OutboxMessage.id)).all())
    clock.set(datetime.now(timezone.utc) + timedelta(days=31))

    response = page.goto(live_demo.link(MARTIN))
    assert response is not None and response.status == 410
    assert "/p/" in page.url  # no redirect to the portal
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator("h1")).to_have_text("Ce lien a expiré")
    assert NAMES[MARTIN] not in plain(page.content()) and "compta@" not in page.content()
    page.get_by_role("button", name="M’envoyer un nouveau lien par e-mail").click()
    expect(page.locator("h1")).to_have_text("Consultez votre messagerie")
    expected = main_text(page)
    assert NAMES[MARTIN] not in plain(page.content()) and "compta@" not in page.content()

    with live_demo.engine.connect() as connection:
        queued = connection.execute(
            select(OutboxMessage.kind, OutboxMessage.to_address).order_by(OutboxMessage.id)
        ).all()
    assert len(queued) == queued_before + 1
    assert tuple(queued[-1]) == ("fresh_link", "compta@boulangeries-martin.fr")

    # Whatever the token, the visitor reads the same page: it tells nothing about the link.
    for token in ("not-a-token", _tampered(live_demo.link(MARTIN)).rsplit("/", 1)[1]):
        response = page.goto(live_demo.link(MARTIN))
        assert response is not None and response.status == 410
        page.locator('input[name="token"]').evaluate("(input, token) => { input.value = token; }", token)
        page.get_by_role("button", name="M’envoyer un nouveau lien par e-mail").click()
        expect(page.locator("h1")).to_have_text("Consultez votre messagerie")
        assert main_text(page) == expected
    with live_demo.engine.connect() as connection:
        assert len(connection.execute(select(OutboxMessage.id)).all()) == queued_before + 1


def test_revoked_link_ends_the_open_session(make_page: MakePage, live_demo: LiveDemo) -> None:
    page = make_page()
    old_link = live_demo.link(MARTIN)
    sign_in(page, live_demo, MARTIN)
    expect(page.locator("h1")).to_have_text("Relevé de compte")
    try:
        output = live_demo.cli("link", "--revoke", MARTIN)
        assert "revoked every link of C-MARTIN" in output

        response = page.reload()
        assert response is not None and response.status == 401
        expect(page.locator("h1")).to_have_text("Ouvrez le lien reçu par e-mail")
        assert NAMES[MARTIN] not in plain(page.content())

        response = page.goto(old_link)
        assert response is not None and response.status == 410
        expect(page.locator("h1")).to_have_text("Ce lien a été retiré")
        assert NAMES[MARTIN] not in plain(page.content())
        expect(page.get_by_role("button", name="M’envoyer un nouveau lien par e-mail")).to_have_count(0)
    finally:
        # The demo is shared by this worker's tests: hand the customer a working link again.
        fresh = live_demo.cli("link", MARTIN).strip()
        assert fresh.startswith(f"{live_demo.base_url}/p/") and fresh != old_link
        live_demo.links[MARTIN] = fresh

    other = make_page()  # the fresh link works, in a new browser
    sign_in(other, live_demo, MARTIN)
    expect(other.locator("h1")).to_have_text("Relevé de compte")


# --- Accessibility, small screens, screenshots ------------------------------------------------------------


def _serious_violations(page: Page) -> list[dict[str, Any]]:
    from axe_playwright_python.sync_playwright import Axe

    # resultTypes: full details for violations only (passes are merely counted), which halves the run time.
    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]})
    assert results.response.get("passes"), "axe-core checked nothing: is the page empty?"
    return [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]


def _describe(where: str, violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        lines.append(f"{where}: {violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"][:5]:
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            lines.append(f"    {node.get('target')}: {summary}")
    return "\n".join(lines)


@pytest.mark.parametrize("language", ["fr", "en"])
def test_accessibility(make_page: MakePage, live_demo: LiveDemo, language: str) -> None:
    """axe-core (WCAG 2.1 A and AA): no serious or critical violation on the statement, an invoice
    and the expired-link page, each on a phone and on a desktop screen.
    French: the French customer; English: the export customer (two currencies)."""
    ref = MARTIN if language == "fr" else NORDIC
    page = make_page(viewport=PHONE, locale="fr-FR" if language == "fr" else "en-GB")
    problems: list[str] = []

    def scan(where: str) -> None:
        expect(page.locator("html")).to_have_attribute("lang", language)
        for viewport in (PHONE, DESKTOP):
            page.set_viewport_size(viewport)
            found = _serious_violations(page)
            if found:
                problems.append(_describe(f"{where} [{language}, {viewport['width']}px]", found))

    sign_in(page, live_demo, ref)
    scan("statement")
    page.locator("tbody tr").first.get_by_role("link").click()
    expect(page.locator(".breadcrumb")).to_be_visible()
    scan("invoice page")
    clock.set(datetime.now(timezone.utc) + timedelta(days=31))
    response = page.goto(live_demo.link(ref))
    assert response is not None and response.status == 410
    expect(page.get_by_role("button", name=re.compile("fresh link|nouveau lien"))).to_be_visible()
    scan("expired-link page")

    assert not problems, "serious accessibility violations:\n" + "\n".join(problems)


@pytest.mark.parametrize("ref", [MARTIN, THAMES, NORDIC])
def test_no_horizontal_scroll_on_a_phone(make_page: MakePage, live_demo: LiveDemo, ref: str) -> None:
    page = make_page(viewport=PHONE)
    sign_in(page, live_demo, ref)
    pages = ["/portal"] + [
        link.get_attribute("href") for link in page.locator("tbody tr a[href^='/portal/invoices/']").all()
    ]
    for path in pages:
        assert path is not None
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width}px wide on a {PHONE['width']}px screen"


def test_readme_screenshots(make_page: MakePage, live_demo: LiveDemo, tmp_path: Path) -> None:
    """The README's pictures, taken into a temporary directory: into docs/ only when asked
    (`make screenshots`), so a test run leaves the tracked tree as it found it."""
    docs = REPO / "docs"
    shown = {name: (docs / name).read_bytes() for name in SCREENSHOTS}
    into = docs if os.environ.get(SCREENSHOTS_INTO_DOCS) == "1" else tmp_path

    desktop = make_page(viewport=DESKTOP)
    sign_in(desktop, live_demo, MARTIN)
    desktop.screenshot(path=str(into / "portal-desktop.png"), full_page=True, animations="disabled")

    phone = make_page(viewport=PHONE, locale="en-GB")
    sign_in(phone, live_demo, NORDIC)
    phone.screenshot(path=str(into / "portal-phone.png"), full_page=True, animations="disabled")

    for name in SCREENSHOTS:
        assert (into / name).read_bytes().startswith(b"\x89PNG"), name
        if into != docs:
            assert (docs / name).read_bytes() == shown[name], f"docs/{name} was written without being asked"
