from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from kernel.settings import Settings, load_settings
from ledger.models import Company
from payments import base, registry
from payments.bank_transfer import BankTransferProvider
from payments.gocardless import GoCardlessProvider
from payments.settlement import triage_event
from tests import factories
from tests.conftest import TEST_SECRET


def test_bank_transfer_is_offered_when_the_company_has_an_iban(session: Session, settings: Settings,
                                                               company: Company) -> None:
    assert registry.offered_methods(settings, company, "EUR") == ["bank_transfer"]
    without_iban = factories.company(session)
    assert registry.offered_methods(settings, without_iban, "EUR") == []
    company.disabled_methods = ["bank_transfer"]
    assert registry.offered_methods(settings, company, "EUR") == []


def test_card_needs_the_stripe_keys(session: Session, company: Company) -> None:
    with_keys = load_settings({"ENCOURS_SECRET_KEY": TEST_SECRET, "STRIPE_SECRET_KEY": "sk_test_x",
                               "STRIPE_PUBLISHABLE_KEY": "pk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"})
    assert "card" in registry.offered_methods(with_keys, company, "EUR")
    company.disabled_methods = ["card"]
    assert "card" not in registry.offered_methods(with_keys, company, "EUR")


def test_every_registered_provider_follows_the_protocol(settings: Settings) -> None:
    for method in base.METHODS:
        provider = registry.provider_for(method)
        assert isinstance(provider, base.PaymentProvider) and method in provider.methods
        assert registry.provider_named(provider.name) is provider
    assert any(isinstance(p, BankTransferProvider) for p in registry.providers(settings))
    with pytest.raises(base.UnknownMethod):
        registry.provider_for("cash")
    # Each method is served by exactly one provider, each provider named once.
    served = [method for provider in registry.PROVIDERS for method in provider.methods]
    assert sorted(served) == sorted(base.METHODS)
    assert len({provider.name for provider in registry.PROVIDERS}) == len(registry.PROVIDERS)


def test_a_providers_triage_is_derived_from_its_triage_update() -> None:
    """One way to tell an event by one read: the provider names the update (`triage_update`, on the
    protocol), `payments.settlement.triage_event` reads; no provider keeps a `triage` of its own.
    A provider that names no update is told None without a read (no connection is touched)."""
    for provider in registry.PROVIDERS:
        assert not hasattr(provider, "triage"), provider.name
    event = base.ProviderEvent(id="EV1", type="payments.confirmed", payload={"id": "EV1"}, body="{}")
    for provider in (GoCardlessProvider(), BankTransferProvider()):
        assert provider.triage_update(event) is None
        assert triage_event(None, provider, event) is None  # type: ignore[arg-type]  # never read


def test_webhooks_are_taken_for_the_providers_that_send_them() -> None:
    senders = registry.webhook_providers()
    assert set(senders) == {"stripe", "gocardless"}
    assert (senders["stripe"].bad_signature_status, senders["gocardless"].bad_signature_status) == (400, 498)


def test_start_result_needs_a_destination() -> None:
    assert base.StartResult(redirect_url="https://pay.example/x").location == "https://pay.example/x"
    assert base.StartResult(next_path="/portal/pay/1").location == "/portal/pay/1"
    with pytest.raises(ValueError):
        base.StartResult().location
