"""A retry on the card page after an attempt that can no longer be confirmed, against localstripe
with the real stripe SDK; the card page's failure sentences; failure codes from Stripe's."""

from __future__ import annotations

import html as html_lib
import json
import re
from datetime import date

import pytest
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.settings import Settings, load_settings
from ledger.models import Checkout, Customer, Invoice
from payments import failures
from payments.checkout import create_checkout
from payments.settlement import apply_payment_status
from sandbox.localstripe_server import LocalStripe
from tests.conftest import TEST_SECRET
from tests.fakes.localstripe_server import localstripe, localstripe_server  # noqa: F401
from tests.portal.conftest import login

TODAY = date(2026, 11, 25)


@pytest.fixture
def settings(db_url: str, localstripe: LocalStripe) -> Settings:  # noqa: F811
    return load_settings({
        "ENCOURS_DATABASE_URL": db_url,
        "ENCOURS_SECRET_KEY": TEST_SECRET,
        "ENCOURS_BASE_URL": "http://testserver",
        **localstripe.settings(),
    })


def _card_checkout(session: Session, customer: Customer, invoices: list[Invoice]) -> Checkout:
    return create_checkout(session, customer=customer, contact=customer.primary_contact,
                           selection={invoices[0].id: None}, method="card", today=TODAY)


def test_a_retry_after_a_cancelled_intent_gets_a_fresh_one_under_a_new_key(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice],
    localstripe: LocalStripe,  # noqa: F811
) -> None:
    checkout = _card_checkout(session, customer, invoices)
    session.commit()
    login(client, customer)
    assert client.get(f"/portal/pay/{checkout.id}/card").status_code == 200
    session.refresh(checkout)
    first = checkout.provider_ref
    assert first and checkout.attempt == 1 and checkout.idempotency_key == f"checkout-{checkout.id}"
    # The attempt can no longer be confirmed (Stripe cancelled it, as localstripe does a declined card).
    localstripe.api("POST", f"/v1/payment_intents/{first}/cancel", {})
    page = client.get(f"/portal/pay/{checkout.id}/card")
    assert page.status_code == 200, page.text
    session.refresh(checkout)
    assert checkout.provider_ref and checkout.provider_ref != first
    assert (checkout.attempt, checkout.idempotency_key) == (2, f"checkout-{checkout.id}-2")
    fresh = localstripe.api("GET", f"/v1/payment_intents/{checkout.provider_ref}")
    assert fresh["status"] == "requires_payment_method" and fresh["metadata"]["checkout_id"] == str(checkout.id)
    assert f'data-client-secret="{fresh["client_secret"]}"' in page.text
    # Reloading does not make a third one.
    client.get(f"/portal/pay/{checkout.id}/card")
    session.refresh(checkout)
    assert checkout.attempt == 2


def test_the_card_page_carries_our_sentences_for_stripes_codes(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice],
) -> None:
    checkout = _card_checkout(session, customer, invoices)
    session.commit()
    login(client, customer)
    page = client.get(f"/portal/pay/{checkout.id}/card").text
    match = re.search(r'data-failures="([^"]+)"', page)
    assert match
    messages = json.loads(html_lib.unescape(match.group(1)))
    assert messages["card_declined"] == "Votre banque a refusé la carte. Aucun montant n’a été débité."
    assert messages["generic_decline"] == messages["card_declined"]
    assert messages["insufficient_funds"].startswith("La carte a été refusée pour provision insuffisante")
    assert messages["payment_intent_authentication_failure"].startswith("La carte n’a pas pu être vérifiée")
    assert messages["generic"] == "Le paiement n’a pas abouti. Aucun montant n’a été débité."
    assert "Choisir un autre moyen de paiement" in page


@pytest.mark.parametrize("signals, code", [
    (("card_declined",), "card_declined"),
    (("generic_decline",), "card_declined"),
    (("insufficient_funds",), "insufficient_funds"),
    (("expired_card",), "expired_card"),
    (("incorrect_cvc",), "incorrect_cvc"),
    (("authentication_required",), "authentication_failed"),
    (("payment_intent_authentication_failure",), "authentication_failed"),
    (("processing_error",), "processing_error"),
    (("Your card was declined.",), "card_declined"),
    (("Your card has insufficient funds.",), "insufficient_funds"),
    (("The customer cancelled the payment at their bank",), "bank_cancelled"),
    (("The mandate was cancelled",), "mandate_refused"),
    (("something nobody expected",), "generic"),
    ((None, ""), "generic"),
])
def test_provider_codes_and_texts_map_to_the_catalog(signals: tuple[str | None, ...], code: str) -> None:
    assert failures.classify(*signals) == code
    assert failures.message(code) in failures.MESSAGES.values()


def test_a_declined_attempt_reported_by_webhook_keeps_its_code_not_its_text(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice]
) -> None:
    checkout = _card_checkout(session, customer, invoices)
    apply_payment_status(session, checkout=checkout, provider="stripe", provider_ref="pi_declined", method="card",
                         status="pending", amount_minor=checkout.amount_minor, currency="EUR",
                         reason="Your card has insufficient funds.", settings=settings)
    assert (checkout.status, checkout.failure_code) == ("open", "insufficient_funds")
