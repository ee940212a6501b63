"""Cancelling a card checkout cancels its PaymentIntent at Stripe; the card a payment was made with
is recorded for the debtor's history; a live mandate is not offered again; the sandbox's test cards
answer as Stripe documents them. The real `stripe` SDK against localstripe."""

from __future__ import annotations

import urllib.error
from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.settings import Settings, load_settings
from ledger.models import Checkout, Customer, Invoice, Payment
from kernel.user_error import UserError
from payments.checkout import create_checkout
from payments.registry import cancel_checkout_payment
from payments.stripe import card_of
from tests.conftest import TEST_SECRET
from sandbox.localstripe_server import LocalStripe
from sandbox.stripe_server import Declined, card_year, confirm_card
from tests.fakes.localstripe_server import localstripe, localstripe_server, pay_intent  # noqa: F401
from tests.portal.conftest import csrf_from, login

TODAY = date(2026, 11, 25)


@pytest.fixture
def settings(db_url: str, localstripe: LocalStripe) -> Settings:  # noqa: F811
    return load_settings({
        "ENCOURS_DATABASE_URL": db_url,
        "ENCOURS_SECRET_KEY": TEST_SECRET,
        "ENCOURS_BASE_URL": "http://testserver",
        **localstripe.settings(),
    })


def _started_card_checkout(client: TestClient, session: Session, customer: Customer, invoice: Invoice) -> Checkout:
    checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                               selection={invoice.id: None}, method="card", today=TODAY)
    session.commit()
    login(client, customer)
    assert client.get(f"/portal/pay/{checkout.id}/card").status_code == 200  # creates the PaymentIntent
    session.refresh(checkout)
    assert checkout.provider_ref
    return checkout


def test_paying_another_way_cancels_the_payment_intent_so_a_stale_tab_cannot_charge_it(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice], localstripe: LocalStripe,  # noqa: F811
) -> None:
    checkout = _started_card_checkout(client, session, customer, invoices[0])
    page = client.get(f"/portal/pay/{checkout.id}").text
    answer = client.post(f"/portal/pay/{checkout.id}/cancel", data={"csrf_token": csrf_from(page)},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/portal?cancelled=1"
    session.refresh(checkout)
    assert checkout.status == "cancelled"
    intent = localstripe.api("GET", f"/v1/payment_intents/{checkout.provider_ref}")
    assert intent["status"] == "canceled"
    # The card page left open in another tab confirms later: Stripe refuses, nothing is charged.
    with pytest.raises(urllib.error.HTTPError):
        pay_intent(localstripe, checkout.provider_ref or "")
    assert localstripe.api("GET", f"/v1/payment_intents/{checkout.provider_ref}")["status"] == "canceled"


def test_a_card_already_confirmed_is_not_cancelled(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice], localstripe: LocalStripe,  # noqa: F811
    settings: Settings,
) -> None:
    checkout = _started_card_checkout(client, session, customer, invoices[0])
    assert pay_intent(localstripe, checkout.provider_ref or "")["status"] == "succeeded"
    with pytest.raises(UserError):
        cancel_checkout_payment(session, checkout, settings, contact=customer.primary_contact)
    session.rollback()
    session.refresh(checkout)
    assert checkout.status == "open"  # the webhook settles it; the debtor is not told it was cancelled


def test_the_card_a_payment_was_made_with_is_kept_for_the_history(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice], localstripe: LocalStripe,  # noqa: F811
) -> None:
    checkout = _started_card_checkout(client, session, customer, invoices[0])
    pay_intent(localstripe, checkout.provider_ref or "", number="5555555555554444")
    client.get(f"/portal/pay/{checkout.id}/card/return", follow_redirects=False)
    payment = session.scalar(select(Payment).where(Payment.checkout_id == checkout.id))
    assert payment is not None and (payment.card_brand, payment.card_last4) == ("visa", "4444")


def test_card_details_are_read_from_an_expanded_method_or_the_charge() -> None:
    assert card_of({"payment_method": {"card": {"brand": "mastercard", "last4": "4444"}}}).last4 == "4444"  # type: ignore[union-attr]
    charge = {"payment_method_details": {"card": {"brand": "visa", "last4": "4242"}}}
    assert card_of({"payment_method": "pm_1", "charges": {"data": [charge]}}).brand == "visa"  # type: ignore[union-attr]
    assert card_of({"payment_method": "pm_1", "latest_charge": "ch_1"}) is None


@pytest.mark.parametrize(("number", "code", "decline_code"), [
    ("4000000000000002", "card_declined", "generic_decline"),
    ("4000000000009995", "card_declined", "insufficient_funds"),
    ("4000000000000069", "expired_card", None),
])
def test_the_sandbox_declines_stripes_test_cards_with_stripes_codes(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice], localstripe: LocalStripe,  # noqa: F811
    number: str, code: str, decline_code: str | None,
) -> None:
    checkout = _started_card_checkout(client, session, customer, invoices[0])
    with pytest.raises(Declined) as declined:
        confirm_card(localstripe.api, checkout.provider_ref or "",
                     {"number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"})
    assert declined.value.error["code"] == code and declined.value.error.get("decline_code") == decline_code


def test_the_sandbox_takes_a_four_digit_year_and_stripes_3d_secure_card(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice], localstripe: LocalStripe,  # noqa: F811
) -> None:
    assert card_year("202034") == "2034" and card_year("2034") == "2034" and card_year("34") == "34"
    checkout = _started_card_checkout(client, session, customer, invoices[0])
    # localstripe's Card Element sends "20" + what was typed: "2034" typed arrives as "202034".
    paid = confirm_card(localstripe.api, checkout.provider_ref or "",
                        {"number": "4242 4242 4242 4242", "exp_month": "12", "exp_year": "202034", "cvc": "123"})
    assert paid["status"] == "succeeded"
    other = create_checkout(session, customer=customer, contact=customer.primary_contact,
                            selection={invoices[1].id: None}, method="card", today=TODAY)
    session.commit()
    assert client.get(f"/portal/pay/{other.id}/card").status_code == 200
    session.refresh(other)
    asked = confirm_card(localstripe.api, other.provider_ref or "",
                         {"number": "4000002760003184", "exp_month": "12", "exp_year": "34", "cvc": "123"})
    assert asked["status"] == "requires_action"
