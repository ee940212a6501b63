"""The GoCardless providers with the real `gocardless-pro` SDK talking HTTP to the stand-in."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.settings import Settings, SettingsError, load_settings
from ledger.models import Checkout, Company, Customer, Invoice, Payment
from payments import registry
from payments.checkout import create_checkout
from payments.gocardless import DirectDebitProvider, GoCardlessUnavailable, InstantBankPayProvider
from sandbox.gocardless_server import ACCESS_TOKEN, ApiError, GoCardlessStandIn
from tests import factories
from tests.conftest import TEST_SECRET
from tests.fakes.gocardless_server import gocardless, gocardless_server  # noqa: F401
from tests.portal.conftest import csrf_from, login

TODAY = date(2026, 11, 25)


@pytest.fixture
def settings(db_url: str, gocardless: GoCardlessStandIn) -> Settings:  # noqa: F811
    return load_settings({
        "ENCOURS_DATABASE_URL": db_url,
        "ENCOURS_SECRET_KEY": TEST_SECRET,
        "ENCOURS_BASE_URL": "http://testserver",
        **gocardless.settings(),
    })


def _checkout(session: Session, customer: Customer, invoices: list[Invoice], method: str,
              instant_first: bool = False) -> Checkout:
    checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                               selection={invoices[0].id: None, invoices[1].id: None}, method=method, today=TODAY)
    checkout.instant_first_payment = instant_first
    return checkout


def test_instant_transfer_creates_one_billing_request_and_a_flow_back_to_us(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout = _checkout(session, customer, invoices, "instant_transfer")
    result = InstantBankPayProvider().start(session, checkout, settings, settings.base_url)
    assert checkout.provider == "gocardless" and checkout.provider_ref and checkout.provider_ref.startswith("BRQ")
    [flow] = gocardless.all("billing_request_flows")
    assert result.redirect_url == flow["authorisation_url"] and result.redirect_url.startswith(gocardless.url)
    assert flow["redirect_uri"] == f"http://testserver/portal/pay/{checkout.id}/gocardless/return"
    assert flow["links"]["billing_request"] == checkout.provider_ref

    request = gocardless.get("billing_requests", checkout.provider_ref)
    assert request["payment_request"]["amount"] == checkout.amount_minor == 1234_56 + 500_00 - 10_00  # minor units
    assert request["payment_request"]["currency"] == "EUR"
    assert request["payment_request"]["metadata"] == {"checkout_id": str(checkout.id)}
    assert request["mandate_request"] is None
    creates = [headers for method, path, headers in gocardless.requests if (method, path) == ("POST", "/billing_requests")]
    assert [headers["idempotency-key"] for headers in creates] == [f"checkout-{checkout.id}"]
    assert all(headers["idempotency-key"].startswith(f"checkout-{checkout.id}-flow-")
               for method, path, headers in gocardless.requests if path == "/billing_request_flows")

    # Coming back to pay (a second tab, the back button): the same request, a fresh flow.
    InstantBankPayProvider().start(session, checkout, settings, settings.base_url)
    assert len(gocardless.all("billing_requests")) == 1 and len(gocardless.all("billing_request_flows")) == 2


def test_a_lost_answer_retried_with_the_same_key_gets_the_first_billing_request(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    checkout = _checkout(session, customer, invoices, "instant_transfer")
    InstantBankPayProvider().start(session, checkout, settings, settings.base_url)
    first = checkout.provider_ref
    checkout.provider_ref = None  # as if our transaction had been lost after GoCardless created it
    InstantBankPayProvider().start(session, checkout, settings, settings.base_url)
    assert checkout.provider_ref == first
    assert len(gocardless.all("billing_requests")) == 1
    # GoCardless answered 409 idempotent_creation_conflict; the SDK fetched the conflicting request.
    assert ("GET", f"/billing_requests/{first}") in [(method, path) for method, path, _ in gocardless.requests]


def test_direct_debit_asks_for_a_mandate_in_the_currencys_scheme(
    session: Session, settings: Settings, company: Company, gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    for currency, scheme in (("EUR", "sepa_core"), ("GBP", "bacs")):
        customer = factories.customer(session, company)
        invoice = factories.invoice(session, customer, total_minor=250_00, currency=currency)
        plain = create_checkout(session, customer=customer, contact=None, selection={invoice.id: None},
                                method="direct_debit", today=TODAY)
        DirectDebitProvider().start(session, plain, settings, settings.base_url)
        request = gocardless.get("billing_requests", plain.provider_ref or "")
        assert request["mandate_request"]["scheme"] == scheme and request["mandate_request"]["currency"] == currency
        assert request["mandate_request"]["metadata"] == {"customer_id": str(customer.id)}
        assert request["payment_request"] is None  # the mandate collects it

    customer = factories.customer(session, company)
    invoice = factories.invoice(session, customer, total_minor=99_90, currency="GBP")
    first = create_checkout(session, customer=customer, contact=None, selection={invoice.id: None},
                            method="direct_debit", today=TODAY)
    first.instant_first_payment = True
    DirectDebitProvider().start(session, first, settings, settings.base_url)
    request = gocardless.get("billing_requests", first.provider_ref or "")
    assert request["mandate_request"]["scheme"] == "bacs"
    assert request["payment_request"]["amount"] == 99_90 and request["payment_request"]["currency"] == "GBP"


def test_a_customer_with_a_mandate_is_debited_at_once(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    gocardless.resources["mandates"] = {"MD0001TEST": {"id": "MD0001TEST", "scheme": "sepa_core", "status": "active",
                                                       "metadata": {}, "links": {}}}
    customer.gocardless_mandate_id, customer.gocardless_mandate_status = "MD0001TEST", "active"
    customer.gocardless_mandate_scheme = "sepa_core"
    checkout = _checkout(session, customer, invoices, "direct_debit")
    result = DirectDebitProvider().start(session, checkout, settings, settings.base_url)
    assert result.location == f"/portal/pay/{checkout.id}"
    [payment] = gocardless.all("payments")
    assert payment["links"]["mandate"] == "MD0001TEST" and payment["amount"] == checkout.amount_minor
    assert payment["metadata"] == {"checkout_id": str(checkout.id)}
    recorded = session.scalar(select(Payment).where(Payment.checkout_id == checkout.id))
    assert recorded is not None and (recorded.provider_ref, recorded.status) == (payment["id"], "processing")
    assert checkout.status == "processing"


def test_methods_are_offered_only_with_a_token_and_in_their_currencies(
    settings: Settings, company: Company, db_url: str,
) -> None:
    assert registry.offered_methods(settings, company, "EUR") == ["instant_transfer", "direct_debit", "bank_transfer"]
    assert registry.offered_methods(settings, company, "GBP")[:2] == ["instant_transfer", "direct_debit"]
    assert "instant_transfer" not in registry.offered_methods(settings, company, "USD")
    assert "direct_debit" not in registry.offered_methods(settings, company, "USD")
    bare = load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET})
    assert registry.offered_methods(bare, company, "EUR") == ["bank_transfer"]
    company.disabled_methods = ["direct_debit"]
    assert registry.offered_methods(settings, company, "EUR") == ["instant_transfer", "bank_transfer"]


def test_a_token_without_webhook_secret_stops_the_start(db_url: str) -> None:
    unsafe = load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                            "GOCARDLESS_ACCESS_TOKEN": ACCESS_TOKEN})
    with pytest.raises(SettingsError, match="GOCARDLESS_WEBHOOK_SECRET"):
        create_app(unsafe)


def test_refused_calls_become_unavailable_without_secrets(
    session: Session, settings: Settings, customer: Customer, invoices: list[Invoice], gocardless: GoCardlessStandIn,  # noqa: F811
    db_url: str,
) -> None:
    checkout = _checkout(session, customer, invoices, "instant_transfer")
    wrong = load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                           "GOCARDLESS_ACCESS_TOKEN": "sandbox_not_the_token", "GOCARDLESS_WEBHOOK_SECRET": "x",
                           "GOCARDLESS_BASE_URL": gocardless.url})
    with pytest.raises(GoCardlessUnavailable) as refused:
        InstantBankPayProvider().start(session, checkout, wrong, wrong.base_url)
    assert "AuthenticationError" in str(refused.value) and "sandbox_not_the_token" not in str(refused.value)
    gocardless.fail_next.append(ApiError(422, "validation_failed", "Validation failed",
                                         [{"field": "amount", "message": "is too large", "request_pointer": "/x"}]))
    with pytest.raises(GoCardlessUnavailable, match="ValidationFailedError"):
        InstantBankPayProvider().start(session, checkout, settings, settings.base_url)
    assert checkout.provider_ref is None and gocardless.all("billing_requests") == []


def test_the_pay_form_sends_the_debtor_to_the_authorisation_page(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice], gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    login(client, customer)
    page = client.get("/portal")
    assert gocardless.url in page.headers["content-security-policy"].split("form-action", 1)[1].split(";")[0]
    response = client.post("/portal/pay", data={
        "csrf_token": csrf_from(page.text), "invoice": [str(invoices[0].id)], "method": "direct_debit",
        "instant_first": "1", "action": "pay"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    [flow] = gocardless.all("billing_request_flows")
    assert response.headers["location"] == flow["authorisation_url"]
    checkout = session.scalar(select(Checkout).where(Checkout.customer_id == customer.id))
    assert checkout is not None and checkout.instant_first_payment is True
    request = gocardless.get("billing_requests", checkout.provider_ref or "")
    assert request["payment_request"]["amount"] == 1234_56 and request["mandate_request"]["scheme"] == "sepa_core"


def test_the_pay_form_says_when_gocardless_does_not_answer(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice], gocardless: GoCardlessStandIn,  # noqa: F811
) -> None:
    login(client, customer)
    page = client.get("/portal")
    gocardless.fail_next.append(ApiError(500, "gocardless", "Internal error",
                                         [{"reason": "internal_error", "message": "Internal error"}]))
    response = client.post("/portal/pay", data={
        "csrf_token": csrf_from(page.text), "invoice": [str(invoices[0].id)], "method": "instant_transfer",
        "action": "pay"}, follow_redirects=False)
    assert response.status_code == 503
    assert "Le service de paiement ne répond pas" in response.text


def test_the_statement_shows_the_mandate_and_its_next_collections(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice],
) -> None:
    customer.gocardless_mandate_id, customer.gocardless_mandate_status = "MD0001TEST", "active"
    customer.gocardless_mandate_scheme = "sepa_core"
    session.commit()
    login(client, customer)
    page = client.get("/portal").text
    panel = page.split('class="panel mandate-panel"', 1)[1].split("</section>", 1)[0]
    assert "Mandat de prélèvement SEPA" in panel and "actif" in panel
    # F-1 is overdue: collected at once (today); F-2 and F-3 on their due dates.
    assert [day in panel for day in ("25 novembre 2026", "20 décembre 2026", "24 décembre 2026")] == [True] * 3
    customer.gocardless_mandate_status = "cancelled"
    session.commit()
    panel = client.get("/portal").text.split('class="panel mandate-panel"', 1)[1].split("</section>", 1)[0]
    assert "annulé" in panel and "ne sont plus prélevées" in panel and "<table" not in panel


def test_a_customer_whose_mandate_lives_is_not_offered_direct_debit_again(
    client: TestClient, session: Session, customer: Customer, invoices: list[Invoice],
) -> None:
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    form = {"csrf_token": token, "invoice": [str(invoices[0].id)]}
    headers = {"HX-Request": "true"}
    assert 'value="direct_debit"' in client.post("/portal/pay/summary", data=form, headers=headers).text
    customer.gocardless_mandate_id, customer.gocardless_mandate_status = "MD0001", "active"
    session.commit()
    summary = client.post("/portal/pay/summary", data=form, headers=headers).text
    assert 'value="direct_debit"' not in summary and 'value="instant_transfer"' in summary
    refused = client.post("/portal/pay", data={**form, "method": "direct_debit", "action": "pay"})
    assert refused.status_code == 422
    customer.gocardless_mandate_status = "cancelled"  # an ended mandate: a new one may be set up
    session.commit()
    assert 'value="direct_debit"' in client.post("/portal/pay/summary", data=form, headers=headers).text
