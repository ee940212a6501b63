"""`encours demo` as a new user runs it, without provider keys: the providers' stand-ins run
beside the server (sandbox) and a debtor pays by card end to end, with nothing patched in the
browser — the demo's own Stripe bridge (encours/sandbox.py) plays Stripe.js's part."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ENCOURS, _clean_environ, _parse_links
from tests.e2e.test_card_browser import pay_by_card_in_the_sandbox, plain

pytestmark = pytest.mark.e2e
MARTIN = "C-MARTIN"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_healthy(base_url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"encours demo exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise AssertionError("encours demo did not answer /healthz")


@pytest.fixture(scope="module")
def sandbox_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Path]]:
    directory = tmp_path_factory.mktemp("sandbox-demo")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    output = directory / "demo.out"
    with open(output, "w") as sink:
        process = subprocess.Popen([str(ENCOURS), "demo", "--port", str(port), "--dir", str(directory)],
                                   cwd=directory, env=_clean_environ(), stdout=sink, stderr=subprocess.STDOUT,
                                   text=True)
    try:
        _wait_healthy(base_url, process)
        links, _ = _parse_links(output.read_text())
        yield base_url, links, output
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_the_demo_runs_a_card_sandbox_a_debtor_can_pay_with(
    sandbox_demo: tuple[str, dict[str, str], Path], make_page: Callable[..., Page]
) -> None:
    base_url, links, output = sandbox_demo
    printed = output.read_text()
    assert "Sandbox payments" in printed and "localstripe" in printed and "4242 4242 4242 4242" in printed

    page = make_page()
    page.goto(links[MARTIN])
    page.goto(f"{base_url}/portal?select=overdue&currency=EUR")
    pay_by_card_in_the_sandbox(page, "Paiement reçu")
    page.goto(f"{base_url}/portal")
    # 6 662,96 € due; the two overdue invoices (4 094,56 €) paid with 3 944,56 € by card and the
    # 150,00 € credit note.
    assert re.search(r"Total à régler\s+2 718,40 €", plain(page.locator(".summary").inner_text()))


def test_the_demo_runs_a_gocardless_stand_in_for_instant_transfers(
    sandbox_demo: tuple[str, dict[str, str], Path], make_page: Callable[..., Page]
) -> None:
    base_url, links, output = sandbox_demo
    assert "GoCardless stand-in" in output.read_text()
    page = make_page()
    page.goto(links["C-THAMES"])
    page.goto(f"{base_url}/portal?select=overdue&currency=GBP")
    summary = page.locator("#pay-summary")
    # The methods the sandbox serves say so.
    expect(summary.locator("label[for=method-instant_transfer] .sandbox-tag")).to_be_visible()
    summary.locator("#method-instant_transfer").check()
    summary.locator("button[name=action][value=pay]").click()
    expect(page.locator("#amount")).to_have_text("1234.56 GBP")  # UK-10233, overdue
    page.get_by_role("button", name=re.compile("Confirm payment")).click()
    expect(page).to_have_url(re.compile(re.escape(base_url) + r"/portal/pay/\d+$"))
    # The stand-in confirms the payment and posts signed webhooks; the page updates itself.
    expect(page.locator("h1")).to_have_text(re.compile("Payment received|Paiement reçu"), timeout=30_000)


def test_in_the_demo_a_new_mandate_is_collected_and_the_payment_ends_received(
    sandbox_demo: tuple[str, dict[str, str], Path], make_page: Callable[..., Page]
) -> None:
    """The demo runs the worker's jobs: the mandate set up at checkout is debited, the stand-in moves
    the payment from submitted to confirmed and signs the webhook, and the page says it was received."""
    base_url, links, _output = sandbox_demo
    page = make_page(locale="en-GB")
    page.goto(links["C-NORDIC"])
    page.goto(f"{base_url}/portal?select=overdue&currency=EUR")
    summary = page.locator("#pay-summary")
    summary.locator("#method-direct_debit").check()
    summary.locator("button[name=action][value=pay]").click()
    expect(page.locator("#scheme")).to_have_text("sepa_core")
    page.get_by_role("button", name="Set up mandate").click()
    expect(page).to_have_url(re.compile(re.escape(base_url) + r"/portal/pay/\d+$"))
    # The mandate becomes active, the worker (every few seconds) debits it, the stand-in confirms it.
    expect(page.locator("h1")).to_have_text("Payment received", timeout=60_000)
    page.goto(f"{base_url}/portal")
    expect(page.locator(".mandate-status")).to_contain_text("active")
    page.goto(f"{base_url}/portal/payments")
    expect(page.locator("table.payments-list tbody tr").first).to_contain_text("Direct debit · mandate MD")


def _fill(page: Page, number: str, year: str) -> None:
    element = page.locator("#card-element")
    element.locator("input[placeholder=number]").fill(number)
    element.locator("input[placeholder=exp_month]").fill("12")
    element.locator("input[placeholder=exp_year]").fill(year)
    element.locator("input[placeholder=cvc]").fill("123")
    element.locator("input[placeholder=postal_code]").fill("75001")


@pytest.mark.parametrize(("ref", "currency", "locale", "viewport", "declined", "received", "card"), [
    (MARTIN, "EUR", "fr-FR", {"width": 375, "height": 812},
     "La carte a été refusée pour provision insuffisante. Aucun montant n’a été débité.", "Paiement reçu",
     "Carte bancaire · Visa •••• 4242"),
    ("C-THAMES", "GBP", "en-GB", {"width": 1280, "height": 900},
     "The card was declined for insufficient funds. Nothing was charged.", "Payment received",
     "Card · Visa •••• 4242"),
], ids=["fr-375px", "en-1280px"])
def test_the_sandbox_answers_stripes_test_cards_as_stripe_does_and_takes_a_four_digit_year(
    sandbox_demo: tuple[str, dict[str, str], Path], make_page: Callable[..., Page], ref: str, currency: str,
    locale: str, viewport: dict[str, int], declined: str, received: str, card: str,
) -> None:
    base_url, links, _output = sandbox_demo
    page = make_page(viewport=viewport, locale=locale)
    page.goto(links[ref])
    page.goto(f"{base_url}/portal?select=due&currency={currency}")
    summary = page.locator("#pay-summary")
    summary.locator("#method-card").check()
    summary.locator("button[name=action][value=pay]").click()
    expect(page).to_have_url(re.compile(r"/portal/pay/\d+/card$"))
    # Stripe's "insufficient funds" test card: declined, in the debtor's language, nothing charged.
    _fill(page, "4000000000009995", "2034")
    page.locator("#card-submit").click()
    expect(page.locator("#card-errors")).to_have_text(declined)
    expect(page).to_have_url(re.compile(r"/portal/pay/\d+/card$"))
    # The card that succeeds, with the year typed in full.
    _fill(page, "4242424242424242", "2034")
    page.locator("#card-submit").click()
    expect(page).to_have_url(re.compile(r"/portal/pay/\d+$"))
    deadline = time.monotonic() + 20
    while received not in page.locator("h1").inner_text() and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    expect(page.locator("h1")).to_have_text(re.compile(received))
    page.goto(f"{base_url}/portal/payments")
    expect(page.locator("table.payments-list tbody tr").first).to_contain_text(card)
