"""StripeProvider with the real `stripe` SDK talking HTTP to localstripe, and the card page."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.settings import Settings, SettingsError, load_settings
from ledger.models import Checkout, Company, Customer, Invoice, Payment
from payments import registry
from payments import stripe as provider_module
from payments.checkout import create_checkout
from payments.stripe import StripeAmountError, StripeProvider, from_stripe_amount, to_stripe_amount
from sandbox.localstripe_server import LocalStripe
from tests import factories
from tests.conftest import TEST_SECRET
from tests.fakes.localstripe_server import localstripe, localstripe_server, pay_intent  # noqa: F401
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
                           selection={invoices[0].id: None, invoices[1].id: None}, method="card", today=TODAY)


def test_start_creates_one_payment_intent_for_the_checkout(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], localstripe: LocalStripe,  # noqa: F811
) -> None:
    checkout = _card_checkout(session, customer, invoices)
    result = StripeProvider().start(session, checkout, settings, settings.base_url)
    assert result.location == f"/portal/pay/{checkout.id}/card"
    assert checkout.provider == "stripe" and checkout.provider_ref and checkout.provider_ref.startswith("pi_")

    intent = localstripe.api("GET", f"/v1/payment_intents/{checkout.provider_ref}")
    assert intent["amount"] == checkout.amount_minor == 1234_56 + 500_00 - 10_00  # minor units, discount off
    assert intent["currency"] == "eur"
    assert intent["metadata"] == {"checkout_id": str(checkout.id)}
    assert intent["status"] == "requires_payment_method"
    # As the API version the SDK pins takes it (its `payment_method_types` is refused, 400).
    assert intent["payment_method_types"] == ["card"]

    # A second start (double click, retry) reuses the intent: still one at Stripe.
    again = StripeProvider().start(session, checkout, settings, settings.base_url)
    assert again.location == result.location
    assert [pi["id"] for pi in localstripe.api("GET", "/v1/payment_intents")["data"]] == [checkout.provider_ref]


def test_start_sends_the_checkout_idempotency_key(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[dict[str, Any]] = []

    class Recording(stripe.RequestsClient):
        def request(self, method: str, url: str, headers: Any, post_data: Any = None) -> Any:
            sent.append({"method": method, "url": url, "headers": dict(headers or {}), "body": post_data})
            return super().request(method, url, headers, post_data)

    real_client = provider_module.client
    monkeypatch.setattr(provider_module, "client", lambda s: real_client(s, http_client=Recording()))
    checkout = _card_checkout(session, customer, invoices)
    StripeProvider().start(session, checkout, settings, settings.base_url)
    [create] = [call for call in sent if call["method"] == "post"]
    assert create["url"].startswith(f"{settings.stripe_api_base}/v1/payment_intents")
    assert create["headers"]["Idempotency-Key"] == checkout.idempotency_key == f"checkout-{checkout.id}"
    assert "metadata[checkout_id]" in str(create["body"]).replace("%5B", "[").replace("%5D", "]")


def test_amounts_use_iso_minor_units_with_stripes_exceptions(
    session: Session, settings: Settings, company: Company, localstripe: LocalStripe,  # noqa: F811
) -> None:
    assert to_stripe_amount(1234_56, "EUR") == 123456
    assert to_stripe_amount(5000, "JPY") == 5000  # zero-decimal: never multiplied by 100
    assert to_stripe_amount(5000, "ISK") == 500000  # ISO zero-decimal, two-decimal in Stripe's API
    assert from_stripe_amount(500000, "ISK") == 5000
    assert to_stripe_amount(5120, "KWD") == 5120
    with pytest.raises(StripeAmountError):
        to_stripe_amount(5125, "KWD")  # Stripe wants three-decimal amounts rounded to ten

    yen_customer = factories.customer(session, company)
    yen = factories.invoice(session, yen_customer, total_minor=5000, currency="JPY")
    checkout = create_checkout(session, customer=yen_customer, contact=None, selection={yen.id: None},
                               method="card", today=TODAY)
    StripeProvider().start(session, checkout, settings, settings.base_url)
    intent = localstripe.api("GET", f"/v1/payment_intents/{checkout.provider_ref}")
    assert (intent["amount"], intent["currency"]) == (5000, "jpy")


def test_offered_when_keys_are_set_and_stripe_takes_the_currency(
    settings: Settings, company: Company, db_url: str
) -> None:
    provider = registry.provider_for("card")
    assert isinstance(provider, StripeProvider)
    assert provider.is_configured(settings)
    assert "card" in registry.offered_methods(settings, company, "EUR")
    assert not provider.is_available(settings, company, "XTS")
    bare = load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET})
    assert not provider.is_configured(bare)
    assert "card" not in registry.offered_methods(bare, company, "EUR")
    company.disabled_methods = ["card"]
    assert "card" not in registry.offered_methods(settings, company, "EUR")


def test_stripe_keys_without_a_webhook_secret_stop_the_start(db_url: str, localstripe: LocalStripe) -> None:  # noqa: F811
    values = {"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET, **localstripe.settings()}
    del values["STRIPE_WEBHOOK_SECRET"]
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(load_settings(values))
    values["STRIPE_WEBHOOK_SECRET"] = ""
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(load_settings(values))


# --- the card page ---


def test_card_page_loads_stripe_js_with_its_own_csp(
    client: TestClient, session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
    localstripe: LocalStripe,  # noqa: F811
) -> None:
    checkout = _card_checkout(session, customer, invoices)
    session.commit()
    login(client, customer)
    response = client.get(f"/portal/pay/{checkout.id}/card")
    assert response.status_code == 200, response.text
    html = response.text
    session.refresh(checkout)
    assert checkout.provider_ref  # the page started the intent when nothing had
    intent = localstripe.api("GET", f"/v1/payment_intents/{checkout.provider_ref}")
    assert f'data-client-secret="{intent["client_secret"]}"' in html
    assert f'data-publishable-key="{settings.stripe_publishable_key}"' in html
    assert f'<script src="{localstripe.js_url}" defer></script>' in html
    assert '<script src="/static/js/card.js" defer></script>' in html
    assert "<script>" not in html  # nothing inline: the CSP forbids it
    assert 'role="alert"' in html and 'aria-labelledby="card-label"' in html
    assert "Sandbox" in html or "Bac à sable" in html
    csp = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == f"'self' {localstripe.url}"
    assert localstripe.url in csp["frame-src"] and "'none'" not in csp["frame-src"]
    assert localstripe.url in csp["connect-src"]
    # Every other page keeps the strict default.
    statement = client.get("/portal")
    assert localstripe.url not in statement.headers["content-security-policy"]


def test_card_page_is_only_the_customers_own(
    client: TestClient, session: Session, company: Company, customer: Customer, invoices: list[Invoice],
) -> None:
    checkout = _card_checkout(session, customer, invoices)
    other = factories.customer(session, company)
    session.commit()
    assert client.get(f"/portal/pay/{checkout.id}/card").status_code == 401  # no session: the link is needed
    login(client, other)
    assert client.get(f"/portal/pay/{checkout.id}/card").status_code == 404
    assert client.get("/portal/pay/999999/card").status_code == 404


def test_a_paid_checkout_goes_to_its_status_page(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice],
) -> None:
    checkout = _card_checkout(session, customer, invoices)
    checkout.status = "succeeded"
    session.commit()
    login(client, customer)
    response = client.get(f"/portal/pay/{checkout.id}/card", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/portal/pay/{checkout.id}"


def test_back_from_stripe_js_the_checkout_shows_processing_until_the_webhook(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice], localstripe: LocalStripe,  # noqa: F811
) -> None:
    checkout = _card_checkout(session, customer, invoices)
    session.commit()
    login(client, customer)
    assert client.get(f"/portal/pay/{checkout.id}/card").status_code == 200
    session.refresh(checkout)
    # Not confirmed yet (the debtor came back without paying): nothing moves.
    response = client.get(f"/portal/pay/{checkout.id}/card/return", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/portal/pay/{checkout.id}"
    session.refresh(checkout)
    assert checkout.status == "open"

    assert pay_intent(localstripe, checkout.provider_ref or "")["status"] == "succeeded"
    client.get(f"/portal/pay/{checkout.id}/card/return", follow_redirects=False)
    session.refresh(checkout)
    payment = session.scalar(select(Payment).where(Payment.checkout_id == checkout.id))
    assert checkout.status == "processing" and payment is not None and payment.status == "processing"
    assert [invoice.status for invoice in invoices[:2]] == ["open", "open"]  # only the webhook settles
    # The card page of a paid intent goes back, through the return step, to the status page.
    again = client.get(f"/portal/pay/{checkout.id}/card", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == f"/portal/pay/{checkout.id}/card/return"
    assert client.get(f"/portal/pay/{checkout.id}/card").url.path == f"/portal/pay/{checkout.id}"


def test_card_page_says_so_when_stripe_cannot_be_reached(
    session: Session, session_factory: Any, db_url: str, customer: Customer, invoices: list[Invoice],
) -> None:
    down = load_settings({
        "ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET, "ENCOURS_BASE_URL": "http://testserver",
        "STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_PUBLISHABLE_KEY": "pk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x",
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # nothing listens there
    })
    checkout = _card_checkout(session, customer, invoices)
    session.commit()
    with TestClient(create_app(down, sessions=session_factory), base_url="http://testserver") as client:
        login(client, customer)
        response = client.get(f"/portal/pay/{checkout.id}/card")
    assert response.status_code == 503
    assert "Le paiement par carte est indisponible" in response.text
    session.refresh(checkout)
    assert checkout.provider_ref is None and checkout.status == "open"


def test_the_card_pages_csp_for_real_stripe(db_url: str) -> None:
    from payments.stripe import content_security_policy

    real = load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "STRIPE_SECRET_KEY": "sk_live_x", "STRIPE_PUBLISHABLE_KEY": "pk_live_x",
                          "STRIPE_WEBHOOK_SECRET": "whsec_x"})
    csp = content_security_policy(real)
    assert csp["script-src"] == ["https://js.stripe.com", "https://*.js.stripe.com"]
    assert "https://hooks.stripe.com" in csp["frame-src"]
    assert csp["connect-src"] == ["https://js.stripe.com", "https://api.stripe.com"]
