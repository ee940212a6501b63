"""The debtor's payment journey in Chromium, in French on a phone and in English on a desktop:
start a bank transfer, go back (the invoices show the payment in progress and are not ticked),
cancel it ("I will pay another way"), pay by card; a declined card says why in the debtor's
language (Stripe's own English text never shows) and "Try again" pays."""

from __future__ import annotations

import json
import re
import urllib.error
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from playwright.sync_api import Page, Route, expect
from sqlalchemy import select

from ledger.models import Checkout
from sandbox.localstripe_server import LocalStripe
from sandbox.stripe_server import confirm_card
from tests.e2e.conftest import DESKTOP, PHONE
from tests.e2e.test_card_browser import BRIDGE_JS, CardDemo, card_demo, checkout_state, fill_card, plain, wait_for  # noqa: F401 - card_demo: the fixture
from tests.e2e.test_pay_browser import _accessible_and_narrow
from sandbox.localstripe_server import LocalStripe
from sandbox.stripe_server import Declined, confirm_card

pytestmark = pytest.mark.e2e

MakePage = Callable[..., Page]


@dataclass(frozen=True)
class Journey:
    ref: str
    currency: str
    locale: str
    viewport: dict[str, int]
    bank_transfer: str
    pay: str  # the pay button's name starts with it
    transfer_title: str
    in_progress: str
    awaited: re.Pattern[str]
    pay_another_way: str
    cancelled: str
    card: str
    card_title: str
    declined: str
    try_again: str
    another_way: str
    received: str
    checkbox: str  # the pay checkbox's label of the overdue invoice
    overdue: str  # the overdue invoice's number


FRENCH = Journey(
    ref="C-MARTIN", currency="EUR", locale="fr-FR", viewport=PHONE, bank_transfer="Virement bancaire",
    pay="Payer", transfer_title="Payer par virement", in_progress="Paiement en cours",
    awaited=re.compile(r"^Virement du \d{1,2} \S+ attendu$"), pay_another_way="Je paierai autrement",
    cancelled="Le paiement a été annulé", card="Carte", card_title="Payer par carte",
    declined="Votre banque a refusé la carte. Aucun montant n’a été débité.", try_again="Réessayer",
    another_way="Choisir un autre moyen de paiement", received="Paiement reçu",
    checkbox="Payer la facture F-2026-0412", overdue="F-2026-0412",
)
ENGLISH = Journey(
    ref="C-THAMES", currency="GBP", locale="en-GB", viewport=DESKTOP, bank_transfer="Bank transfer",
    pay="Pay", transfer_title="Pay by bank transfer", in_progress="Payment in progress",
    awaited=re.compile(r"^Bank transfer of \d{1,2} \S+ awaited$"), pay_another_way="I will pay another way",
    cancelled="The payment was cancelled", card="Card", card_title="Pay by card",
    declined="Your bank declined the card. Nothing was charged.", try_again="Try again",
    another_way="Choose another way to pay", received="Payment received",
    checkbox="Pay invoice UK-10233", overdue="UK-10233",
)


def bridge(page: Page, localstripe: LocalStripe) -> None:
    """test_card_browser's bridge, confirming as the demo's sandbox does (stripe_sandbox.confirm_card):
    a card Stripe declines (4000 0000 0000 0002) is declined with Stripe's `card_declined` error."""

    def serve(route: Route) -> None:
        original = route.fetch()
        route.fulfill(response=original, body=original.text() + BRIDGE_JS,
                      headers={**original.headers, "content-type": "application/javascript"})

    def confirm(client_secret: str, card: dict[str, Any]) -> Any:
        try:
            return confirm_card(localstripe.api, client_secret.split("_secret_")[0], card)
        except Declined as declined:
            return {"error": declined.error}
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            return {"error": body.get("error") or {"message": f"HTTP {error.code}"}}

    page.route(localstripe.js_url, serve)
    page.expose_function("encoursLocalstripeConfirm", confirm)


def _choose_overdue(page: Page, demo: CardDemo, journey: Journey, method: str) -> None:
    page.goto(f"{demo.base_url}/portal?select=overdue&currency={journey.currency}")
    expect(page.get_by_role("checkbox", name=journey.checkbox)).to_be_checked()
    summary = page.locator("#pay-summary")
    summary.get_by_role("radio", name=re.compile(f"^{method}")).check()
    summary.get_by_role("button", name=re.compile(f"^{journey.pay} ")).click()


@pytest.mark.parametrize("journey", [FRENCH, ENGLISH], ids=["fr-375px", "en-1280px"])
def test_a_transfer_in_progress_locks_its_invoices_then_a_declined_card_says_why_and_a_retry_pays(
    card_demo: CardDemo, make_page: MakePage, journey: Journey
) -> None:
    demo = card_demo
    page = make_page(viewport=journey.viewport, locale=journey.locale)
    bridge(page, demo.localstripe)
    problems: list[str] = []
    response = page.goto(demo.links[journey.ref])
    assert response is not None and response.status == 200

    # 1. A bank transfer for the overdue invoice, then back to the statement.
    _choose_overdue(page, demo, journey, journey.bank_transfer)
    expect(page.locator("h1")).to_have_text(journey.transfer_title)
    transfer_url = page.url
    transfer_id = int(transfer_url.rsplit("/", 2)[-2])
    page.go_back()
    expect(page.get_by_role("checkbox", name=journey.checkbox)).to_have_count(0)  # in progress: nothing to tick
    row = page.locator("tr", has=page.get_by_role("link", name=re.compile(journey.overdue)))
    expect(row.locator(".badge-progress")).to_have_text(journey.in_progress)
    expect(row.get_by_role("link", name=journey.awaited)).to_have_attribute("href", f"/portal/pay/{transfer_id}")
    problems += _accessible_and_narrow(page, f"{journey.locale} statement with a payment in progress")

    # 2. "I will pay another way": the invoice is free again.
    page.goto(transfer_url)
    page.get_by_role("button", name=journey.pay_another_way).click()
    expect(page.locator(".notice[role=status]")).to_contain_text(journey.cancelled)
    expect(page.get_by_role("checkbox", name=journey.checkbox)).to_have_count(1)
    with demo.engine.connect() as connection:
        assert connection.execute(select(Checkout.status).where(Checkout.id == transfer_id)).scalar() == "cancelled"

    # 3. By card: declined; the debtor's language, nothing raw from Stripe, then "Try again".
    _choose_overdue(page, demo, journey, journey.card)
    expect(page.locator("h1")).to_have_text(journey.card_title)
    checkout_id = int(page.url.rsplit("/", 2)[-2])
    fill_card(page, "4000000000000002")  # Stripe's "card declined" test card
    page.locator("#card-submit").click()
    expect(page.locator("#card-errors")).to_have_text(journey.declined)
    expect(page.get_by_role("button", name=journey.another_way)).to_be_visible()
    problems += _accessible_and_narrow(page, f"{journey.locale} card page after a decline")
    page.get_by_role("link", name=journey.try_again).click()

    # 4. The retry pays (on the same intent: a declined card leaves it waiting for another card).
    expect(page).to_have_url(f"{demo.base_url}/portal/pay/{checkout_id}/card")
    expect(page.locator("#card-element input")).to_have_count(5)
    fill_card(page, "4242424242424242")
    page.locator("#card-submit").click()
    expect(page).to_have_url(f"{demo.base_url}/portal/pay/{checkout_id}")
    wait_for(lambda: checkout_state(demo, checkout_id)[0] == "succeeded", timeout=20)
    page.reload()
    expect(page.locator("h1")).to_have_text(journey.received)
    problems += _accessible_and_narrow(page, f"{journey.locale} receipt")
    assert "card_declined" not in plain(page.content())
    assert not problems, "\n".join(problems)
