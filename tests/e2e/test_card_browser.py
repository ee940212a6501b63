"""Paying by card in Chromium: the demo served with STRIPE_* settings pointing at localstripe.

What localstripe (1.15.10) cannot show, and how this test bridges it: its Stripe.js stand-in
serves the Card Element (plain inputs) but its `confirmCardPayment(clientSecret, data)` never
reads the card: it only plays the 3-D Secure step (`POST /v1/payment_intents/<id>/_authenticate`),
which answers 400 unless the intent is already in `requires_action`, i.e. already has a payment
method and was confirmed server-side. Real Stripe.js attaches the card and confirms with the
publishable key; localstripe accepts neither `POST /v1/payment_methods` nor
`POST /v1/payment_intents/<id>/confirm` with a publishable key. So the test wraps the stand-in:
the page keeps loading it from STRIPE_JS_URL (under the page's real CSP), and a few lines
appended to it hand the Card Element's values to the test (a Playwright binding), which does
what Stripe does with them using the secret key (payment method, attach, confirm). A card that
needs 3-D Secure then goes through localstripe's own authentication dialog. Everything after
that is real: localstripe charges, signs `payment_intent.succeeded` with the webhook secret and
POSTs it to the live server, whose `/webhooks/stripe` verifies it with the stripe SDK.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
from playwright.sync_api import Page, Route, expect
from sqlalchemy import Engine, select

from ledger.models import AuditEvent, Checkout, Payment, WebhookEvent
from sandbox.localstripe_server import LocalStripe, start_localstripe, stop_localstripe
from tests.e2e.conftest import LiveDemo, serve_demo
from tests.fakes.localstripe_server import event_payload, sign

pytestmark = pytest.mark.e2e

MakePage = Callable[..., Page]
MARTIN = "C-MARTIN"

# Appended to localstripe's Stripe.js stand-in (see the module docstring).
BRIDGE_JS = """
;(function () {
  var standIn = window.Stripe;
  window.Stripe = function (key, options) {
    var stripe = standIn(key, options);
    var authenticate = stripe.confirmCardPayment;
    stripe.confirmCardPayment = async function (clientSecret, data) {
      var element = data && data.payment_method && data.payment_method.card;
      var card = element && element.value && element.value.card;
      if (!card) { return {error: {message: "Your card number is incomplete."}}; }
      var intent = await window.encoursLocalstripeConfirm(clientSecret, card);
      if (intent.error) { return {error: intent.error}; }
      if (intent.status === "requires_action") { return authenticate(clientSecret, data); }
      return {paymentIntent: intent};
    };
    return stripe;
  };
})();
"""


@dataclass
class CardDemo:
    base_url: str
    engine: Engine
    links: dict[str, str]
    localstripe: LocalStripe
    live: LiveDemo


@pytest.fixture(scope="module")
def card_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CardDemo]:
    """Its own localstripe and its own demo, served with Stripe settings (the shared `live_demo`
    stays without them, as a user without keys sees it)."""
    process, url, (workdir, log) = start_localstripe()
    localstripe = LocalStripe(url=url)
    try:
        with serve_demo(tmp_path_factory.mktemp("card-demo"), localstripe.settings()) as demo:
            localstripe.register_webhook("encours", f"{demo.base_url}/webhooks/stripe")
            yield CardDemo(base_url=demo.base_url, engine=demo.engine, links=demo.links, localstripe=localstripe,
                           live=demo)
    finally:
        stop_localstripe(process, workdir, log)


def bridge(page: Page, localstripe: LocalStripe) -> list[dict[str, Any]]:
    """Serve localstripe's Stripe.js with the bridge appended; returns the cards it confirmed."""
    confirmed: list[dict[str, Any]] = []

    def serve(route: Route) -> None:
        original = route.fetch()
        route.fulfill(response=original, body=original.text() + BRIDGE_JS,
                      headers={**original.headers, "content-type": "application/javascript"})

    def confirm(client_secret: str, card: dict[str, Any]) -> dict[str, Any]:
        intent_id = client_secret.split("_secret_")[0]
        try:
            method = localstripe.api("POST", "/v1/payment_methods", {"type": "card", "card": {
                "number": card["number"].replace(" ", ""), "exp_month": card["exp_month"],
                "exp_year": card["exp_year"], "cvc": card["cvc"]}})
            localstripe.api("POST", f"/v1/payment_intents/{intent_id}", {"payment_method": method["id"]})
            intent = localstripe.api("POST", f"/v1/payment_intents/{intent_id}/confirm", {})
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            return {"error": body.get("error") or {"message": f"HTTP {error.code}"}}
        confirmed.append({"intent": intent_id, "last4": card["number"][-4:], "status": intent["status"]})
        return intent

    page.route(localstripe.js_url, serve)
    page.expose_function("encoursLocalstripeConfirm", confirm)
    return confirmed


def plain(text: str) -> str:
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def choose_overdue_and_pay_by_card(page: Page, demo: CardDemo) -> int:
    """From the statement: the two overdue invoices, card, pay; returns the checkout id."""
    page.goto(f"{demo.base_url}/portal?select=overdue&currency=EUR")
    summary = page.locator("#pay-summary")
    expect(summary.locator("#method-card")).to_be_visible()
    assert "4 094,56 €" in plain(summary.inner_text())  # F-2026-0412 (1 234,56) + F-2026-0468 (2 860,00)
    summary.locator("#method-card").check()
    summary.locator("button[name=action][value=pay]").click()
    expect(page).to_have_url(re.compile(r"/portal/pay/\d+/card$"))
    return int(page.url.rsplit("/", 2)[1])


def fill_card(page: Page, number: str) -> None:
    element = page.locator("#card-element")
    element.locator("input[placeholder=number]").fill(number)
    element.locator("input[placeholder=exp_month]").fill("12")
    element.locator("input[placeholder=exp_year]").fill("34")
    element.locator("input[placeholder=cvc]").fill("123")
    element.locator("input[placeholder=postal_code]").fill("75001")


def pay_by_card_in_the_sandbox(page: Page, received: str, timeout: float = 30) -> None:
    """From the portal's payment summary: the card chosen, paid with Stripe's good test card on the
    sandbox's card page, then the payment page reloaded until its heading says `received` (the
    Stripe stand-in signs payment_intent.succeeded and posts it to the server's /webhooks/stripe)."""
    summary = page.locator("#pay-summary")
    summary.locator("#method-card").check()
    summary.locator("button[name=action][value=pay]").click()
    expect(page).to_have_url(re.compile(r"/portal/pay/\d+/card$"))
    expect(page.locator(".sandbox-banner")).to_be_visible()
    expect(page.locator("#card-element input")).to_have_count(5)  # the stand-in's Card Element, mounted
    fill_card(page, "4242424242424242")
    page.locator("#card-submit").click()
    expect(page).to_have_url(re.compile(r"/portal/pay/\d+$"))
    deadline = time.monotonic() + timeout
    while received not in page.locator("h1").inner_text() and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    expect(page.locator("h1")).to_have_text(re.compile(re.escape(received)))


def test_pay_two_overdue_invoices_by_card(card_demo: CardDemo, make_page: MakePage) -> None:
    page = make_page()
    confirmed = bridge(page, card_demo.localstripe)
    csp_violations: list[str] = []
    page.on("console", lambda message: csp_violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    response = page.goto(card_demo.links[MARTIN])
    assert response is not None and response.status == 200
    summary = plain(page.locator(".summary").inner_text())
    assert re.search(r"Total à régler\s+6 662,96 €", summary), summary

    checkout_id = choose_overdue_and_pay_by_card(page, card_demo)
    expect(page.locator("h1")).to_have_text("Payer par carte")
    expect(page.locator(".sandbox-banner")).to_be_visible()
    expect(page.locator("#card-element input")).to_have_count(5)  # the stand-in's Card Element, mounted
    # An incomplete card: the error is announced, nothing is charged.
    page.locator("#card-submit").click()
    expect(page.locator("#card-errors")).not_to_be_empty()
    assert confirmed == []

    fill_card(page, "4242424242424242")
    page.locator("#card-submit").click()
    expect(page).to_have_url(f"{card_demo.base_url}/portal/pay/{checkout_id}")
    assert confirmed and confirmed[0]["status"] == "succeeded" and confirmed[0]["last4"] == "4242"

    # localstripe signs payment_intent.succeeded and posts it to /webhooks/stripe about a second later.
    with card_demo.engine.connect() as connection:
        def settled() -> bool:
            status = connection.execute(select(Checkout.status).where(Checkout.id == checkout_id)).scalar()
            connection.rollback()
            return status == "succeeded"

        wait_for(settled)
        events = connection.execute(select(WebhookEvent.event_type, WebhookEvent.processed_at, WebhookEvent.error)
                                    .where(WebhookEvent.provider == "stripe")).all()
        payments = connection.execute(select(Payment.status, Payment.amount_minor, Payment.provider)
                                      .where(Payment.checkout_id == checkout_id)).all()
        history = connection.execute(select(AuditEvent.action).where(AuditEvent.entity_type == "payment")
                                     .order_by(AuditEvent.id)).scalars().all()
    assert [(kind, processed is not None, error) for kind, processed, error in events] == [
        ("payment_intent.succeeded", True, None)]
    # The 150,00 € credit note AV-2026-0033 is deducted from the card charge.
    assert payments == [("succeeded", 4094_56 - 150_00, "stripe")]
    assert history == ["payment.processing", "payment.succeeded"]  # "processing" until the webhook came

    page.reload()
    expect(page.locator("h1")).to_have_text(re.compile("Paiement reçu|Payment received"))
    page.goto(f"{card_demo.base_url}/portal")
    summary = plain(page.locator(".summary").inner_text())
    assert re.search(r"Total à régler\s+2 718,40 €", summary), summary  # 6 662,96 − 3 944,56 charged
    assert not re.search(r"dont en retard", summary) or re.search(r"dont en retard\s+0,00 €", summary), summary
    assert csp_violations == []


def pay_everything_due_by_card(page: Page, demo: CardDemo, ref: str, currency: str) -> int:
    response = page.goto(demo.links[ref])
    assert response is not None and response.status == 200
    page.goto(f"{demo.base_url}/portal?select=due&currency={currency}")
    summary = page.locator("#pay-summary")
    summary.locator("#method-card").check()
    summary.locator("button[name=action][value=pay]").click()
    expect(page).to_have_url(re.compile(r"/portal/pay/\d+/card$"))
    return int(page.url.rsplit("/", 2)[1])


def checkout_state(demo: CardDemo, checkout_id: int) -> tuple[str, list[tuple[str, str | None]]]:
    with demo.engine.connect() as connection:
        status = connection.execute(select(Checkout.status).where(Checkout.id == checkout_id)).scalar_one()
        payments = connection.execute(select(Payment.status, Payment.failure_reason)
                                      .where(Payment.checkout_id == checkout_id)).all()
    return status, [(row[0], row[1]) for row in payments]


def test_a_card_asking_for_3d_secure_goes_through_the_banks_check(card_demo: CardDemo, make_page: MakePage) -> None:
    page = make_page(locale="en-GB")
    confirmed = bridge(page, card_demo.localstripe)
    checkout_id = pay_everything_due_by_card(page, card_demo, "C-THAMES", "GBP")
    fill_card(page, "4000002500003155")  # Stripe's "authentication required" test card
    page.locator("#card-submit").click()
    # localstripe's stand-in of the issuer's 3-D Secure dialog.
    page.get_by_role("button", name="Complete authentication").click()
    expect(page).to_have_url(f"{card_demo.base_url}/portal/pay/{checkout_id}")
    assert confirmed[0]["status"] == "requires_action"
    wait_for(lambda: checkout_state(card_demo, checkout_id)[0] == "succeeded")
    assert checkout_state(card_demo, checkout_id)[1] == [("succeeded", None)]


def test_a_declined_card_is_announced_and_leaves_the_invoices_open(
    card_demo: CardDemo, make_page: MakePage
) -> None:
    page = make_page(locale="en-GB")
    confirmed = bridge(page, card_demo.localstripe)
    checkout_id = pay_everything_due_by_card(page, card_demo, "C-NORDIC", "EUR")
    fill_card(page, "4000000000000341")  # Stripe's "charge declined" test card
    page.locator("#card-submit").click()
    expect(page.locator("#card-errors")).to_contain_text("declined")
    expect(page.locator("#card-submit")).to_be_enabled()  # the debtor may try another card
    assert page.url.endswith(f"/portal/pay/{checkout_id}/card") and confirmed == []
    # localstripe also sends payment_intent.payment_failed: a retryable attempt, kept with its reason.
    wait_for(lambda: checkout_state(card_demo, checkout_id)[1])
    status, payments = checkout_state(card_demo, checkout_id)
    assert [row[0] for row in payments] == ["pending"] and payments[0][1]
    assert status in ("open", "processing")
    # The intent is still open at Stripe: the card page stays the place to try another card.
    page.reload()
    expect(page).to_have_url(f"{card_demo.base_url}/portal/pay/{checkout_id}/card")
    expect(page.locator("#card-element input")).to_have_count(5)


def test_a_webhook_not_ours_is_seen_and_replayed_from_the_back_office(card_demo: CardDemo, make_page: MakePage) -> None:
    """A signed event naming no checkout of ours is kept, marked "not ours" and never retried; a
    administrator finds it in the webhooks log (an event tied to no company is for administrators only),
    reads why, and replays it (it changes nothing), all in Chromium."""
    password = card_demo.live.staff("ops@durand.test", "admin")
    payload = event_payload("payment_intent.succeeded", {
        "id": "pi_not_ours_replay", "object": "payment_intent", "amount": 1000, "currency": "eur",
        "status": "succeeded", "metadata": {"checkout_id": "999999"}}, event_id="evt_replay_browser")
    request = urllib.request.Request(f"{card_demo.base_url}/webhooks/stripe", data=payload, method="POST", headers={
        "Stripe-Signature": sign(payload, card_demo.localstripe.webhook_secret), "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200  # stored and acknowledged: it is not Stripe's to resend

    page = make_page()
    page.goto(f"{card_demo.base_url}/admin/login")
    page.get_by_label(re.compile("^(Adresse e-mail|E-mail|Email)", re.I)).fill("ops@durand.test")
    page.get_by_label(re.compile("^(Mot de passe|Password)$")).fill(password)
    page.get_by_role("button", name=re.compile("Se connecter|Sign in")).click()
    page.goto(f"{card_demo.base_url}/admin/webhooks?state=not_ours")
    page.get_by_role("link", name="evt_replay_browser").click()
    expect(page.get_by_text("Pas à nous : il ne concerne rien que nous ayons créé")).to_be_visible()
    expect(page.locator("#error-title")).to_have_count(0)
    page.get_by_role("button", name="Rejouer cet événement").click()
    expect(page.locator(".alert[role=status]")).to_contain_text("ne concerne rien que nous ayons créé")
    with card_demo.engine.connect() as connection:
        outcome, error, tries, retry = connection.execute(
            select(WebhookEvent.outcome, WebhookEvent.error, WebhookEvent.attempts, WebhookEvent.next_attempt_at)
            .where(WebhookEvent.event_id == "evt_replay_browser")).one()
    assert (outcome, error, tries, retry) == ("not_ours", None, 1, None)
