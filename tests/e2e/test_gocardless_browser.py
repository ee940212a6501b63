"""Instant bank transfer and direct debit in Chromium: the demo served with GOCARDLESS_* settings
pointing at the GoCardless stand-in (tests/fakes/gocardless_server.py), in its automatic mode:
the browser completes the stand-in's authorisation page, which fulfils the billing request and
sends the browser back; the stand-in then moves the payment/mandate on as the banks would and
POSTs signed webhooks (several events per request) to the live server's /webhooks/gocardless.
The direct-debit payment itself is created by the real `encours worker --once`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, select

from ledger.models import Checkout, Customer, Payment, WebhookEvent
from sandbox.gocardless_server import GoCardlessStandIn
from tests.e2e.conftest import ENCOURS, LiveDemo, serve_demo
from tests.e2e.test_pay_browser import _accessible_and_narrow
from tests.fakes.smtp import CapturingSMTP

pytestmark = pytest.mark.e2e

MakePage = Callable[..., Page]


@dataclass
class GoCardlessDemo:
    demo: LiveDemo
    standin: GoCardlessStandIn

    @property
    def base_url(self) -> str:
        return self.demo.base_url

    @property
    def engine(self) -> Engine:
        return self.demo.engine


@pytest.fixture(scope="module")
def gc_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoCardlessDemo]:
    """Its own stand-in and its own demo (the shared `live_demo` stays without GoCardless)."""
    standin = GoCardlessStandIn(auto=True).start()
    try:
        with serve_demo(tmp_path_factory.mktemp("gocardless-demo"), standin.settings()) as demo:
            standin.webhook_url = f"{demo.base_url}/webhooks/gocardless"
            yield GoCardlessDemo(demo=demo, standin=standin)
    finally:
        standin.stop()


def plain(text: str) -> str:
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def checkout_status(demo: GoCardlessDemo, checkout_id: int) -> str:
    with demo.engine.connect() as connection:
        return str(connection.execute(select(Checkout.status).where(Checkout.id == checkout_id)).scalar_one())


def choose_and_pay(page: Page, demo: GoCardlessDemo, link: str, currency: str, method: str) -> None:
    response = page.goto(link)
    assert response is not None and response.status == 200
    page.goto(f"{demo.base_url}/portal?select=overdue&currency={currency}")
    summary = page.locator("#pay-summary")
    summary.locator(f"#method-{method}").check()
    summary.locator("button[name=action][value=pay]").click()
    expect(page).to_have_url(re.compile(re.escape(demo.standin.url) + r"/flow/BRF\w+$"))


def test_pay_two_overdue_invoices_by_instant_bank_transfer(gc_demo: GoCardlessDemo, make_page: MakePage) -> None:
    page = make_page()
    csp_violations: list[str] = []
    page.on("console", lambda message: csp_violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    link = gc_demo.demo.link("C-MARTIN")
    page.goto(link)
    summary = plain(page.locator(".summary").inner_text())
    assert re.search(r"Total à régler\s+6 662,96 €", summary), summary

    choose_and_pay(page, gc_demo, link, "EUR", "instant_transfer")
    # The stand-in's authorisation page: what the bank will be asked to pay.
    # F-2026-0412 (1 234,56) + F-2026-0468 (2 860,00) less the 150,00 € credit note AV-2026-0033
    expect(page.locator("#amount")).to_have_text("3944.56 EUR")
    page.get_by_role("button", name="Confirm payment").click()
    expect(page).to_have_url(re.compile(re.escape(gc_demo.base_url) + r"/portal/pay/\d+$"))
    checkout_id = int(page.url.rsplit("/", 1)[1])
    # Back from the bank before any webhook: "processing" (the return page asked GoCardless).
    expect(page.locator("h1")).to_have_text(re.compile("Paiement en cours|Paiement reçu"))
    # The page keeps asking (htmx, every 5 s) and shows the receipt once the webhooks came, no reload.
    expect(page.locator("h1")).to_have_text("Paiement reçu", timeout=30_000)
    expect(page.locator(".pay-ok")).to_contain_text("3 944,56")

    wait_for(lambda: checkout_status(gc_demo, checkout_id) == "succeeded")
    with gc_demo.engine.connect() as connection:
        events = connection.execute(select(WebhookEvent.event_type, WebhookEvent.error)
                                    .where(WebhookEvent.provider == "gocardless").order_by(WebhookEvent.id)).all()
        payments = connection.execute(select(Payment.status, Payment.amount_minor, Payment.method)
                                      .where(Payment.checkout_id == checkout_id)).all()
    assert [(kind, error) for kind, error in events] == [
        ("payments.created", None), ("billing_requests.fulfilled", None), ("payments.confirmed", None)]
    assert payments == [("succeeded", 3944_56, "instant_transfer")]
    assert any(len(json.loads(delivery.body)["events"]) > 1 for delivery in gc_demo.standin.deliveries)

    page.reload()
    expect(page.locator("h1")).to_have_text("Paiement reçu")
    page.goto(f"{gc_demo.base_url}/portal")
    summary = plain(page.locator(".summary").inner_text())
    assert re.search(r"Total à régler\s+2 718,40 €", summary), summary  # 6 662,96 − 3 944,56 paid
    assert csp_violations == []


def test_set_up_a_direct_debit_mandate_and_have_the_overdue_invoice_collected(
    gc_demo: GoCardlessDemo, make_page: MakePage, smtp_server: CapturingSMTP
) -> None:
    page = make_page(locale="en-GB")
    link = gc_demo.demo.link("C-THAMES")
    page.goto(link)
    summary = plain(page.locator(".summary").inner_text())
    assert re.search(r"Total due\s+£10,597.46", summary), summary

    choose_and_pay(page, gc_demo, link, "GBP", "direct_debit")
    expect(page.locator("#scheme")).to_have_text("bacs")
    page.get_by_role("button", name="Set up mandate").click()
    expect(page).to_have_url(re.compile(re.escape(gc_demo.base_url) + r"/portal/pay/\d+$"))
    checkout_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator(".checkout-status")).to_contain_text("Your direct-debit mandate is being set up")

    def mandate() -> tuple[str | None, str | None]:
        with gc_demo.engine.connect() as connection:
            row = connection.execute(select(Customer.gocardless_mandate_status, Customer.gocardless_mandate_scheme)
                                     .where(Customer.ref == "C-THAMES")).one()
        return row[0], row[1]

    wait_for(lambda: mandate() == ("active", "bacs"))
    # The real worker debits the mandate for the checkout (UK-10233, overdue); the rest waits.
    env = {**gc_demo.demo.env(), **gc_demo.standin.settings(), "ENCOURS_SMTP_URL": smtp_server.url}
    done = subprocess.run([str(ENCOURS), "worker", "--once"], cwd=gc_demo.demo.directory, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "direct debits: 1 created, 0 failed" in done.stdout, done.stdout
    [collected] = [payment for payment in gc_demo.standin.all("payments") if payment["links"].get("mandate")]
    assert (collected["amount"], collected["currency"]) == (1234_56, "GBP")

    wait_for(lambda: checkout_status(gc_demo, checkout_id) == "succeeded")
    page.reload()
    expect(page.locator("h1")).to_have_text("Payment received")
    page.goto(f"{gc_demo.base_url}/portal")
    summary = plain(page.locator(".summary").inner_text())
    assert re.search(r"Total due\s+£9,362.90", summary), summary  # 10 597,46 − 1 234,56
    panel = page.locator(".mandate-panel")
    expect(panel).to_contain_text("Bacs Direct Debit mandate")
    expect(panel).to_contain_text("active")
    rows = panel.locator("tbody tr")
    expect(rows).to_have_count(2)  # UK-10251 and UK-10262, on their due dates
    assert "£8,750.00" in plain(rows.nth(0).inner_text()) and "£612.90" in plain(rows.nth(1).inner_text())
    assert _accessible_and_narrow(page, "statement with a mandate") == []
    assert os.environ.get("GOCARDLESS_ACCESS_TOKEN") is None  # nothing leaked into the test process
