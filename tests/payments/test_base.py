from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from kernel.settings import Settings, load_settings
from ledger.models import Company
from payments import base
from payments.bank_transfer import BankTransferProvider
from tests import factories
from tests.conftest import TEST_SECRET


def test_bank_transfer_is_offered_when_the_company_has_an_iban(session: Session, settings: Settings,
                                                               company: Company) -> None:
    assert base.offered_methods(settings, company, "EUR") == ["bank_transfer"]
    without_iban = factories.company(session)
    assert base.offered_methods(settings, without_iban, "EUR") == []
    company.disabled_methods = ["bank_transfer"]
    assert base.offered_methods(settings, company, "EUR") == []


def test_card_needs_the_stripe_keys(session: Session, company: Company) -> None:
    with_keys = load_settings({"ENCOURS_SECRET_KEY": TEST_SECRET, "STRIPE_SECRET_KEY": "sk_test_x",
                               "STRIPE_PUBLISHABLE_KEY": "pk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"})
    assert "card" in base.offered_methods(with_keys, company, "EUR")
    company.disabled_methods = ["card"]
    assert "card" not in base.offered_methods(with_keys, company, "EUR")


def test_every_registered_provider_follows_the_protocol(settings: Settings) -> None:
    for method, _ in base.REGISTRY:
        provider = base.provider_for(method)
        assert isinstance(provider, base.PaymentProvider) and method in provider.methods
    assert any(isinstance(p, BankTransferProvider) for p in base.providers(settings))
    with pytest.raises(base.UnknownMethod):
        base.provider_for("cash")


def test_a_provider_that_cannot_load_is_left_out(monkeypatch: pytest.MonkeyPatch, settings: Settings,
                                                 company: Company) -> None:
    monkeypatch.setattr(base, "REGISTRY", (("card", "payments.nowhere:Nothing"),) + base.REGISTRY)
    assert base.offered_methods(settings, company, "EUR") == ["bank_transfer"]


def test_start_result_needs_a_destination() -> None:
    assert base.StartResult(redirect_url="https://pay.example/x").location == "https://pay.example/x"
    assert base.StartResult(next_path="/portal/pay/1").location == "/portal/pay/1"
    with pytest.raises(ValueError):
        base.StartResult().location
