"""The payment providers Encours knows. A new provider is its own module and one line here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from payments.bank_transfer import BankTransferProvider
from kernel.i18n import N_
from kernel.user_error import UserError
from payments.base import METHODS, PaymentProvider, ProviderUnavailable, UnknownMethod
from payments.gocardless import GoCardlessProvider
from payments.stripe import StripeProvider

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from kernel.settings import Settings
    from ledger.models import Checkout, Company, Contact

PROVIDER_NOT_ANSWERING = N_("The payment service is not answering, so this payment could not be cancelled yet. "
                            "Please try again in a moment.")

PROVIDERS: tuple[PaymentProvider, ...] = (
    StripeProvider(),
    GoCardlessProvider(),
    BankTransferProvider(),
)


def provider_named(name: str) -> PaymentProvider:
    """The provider stored as `name` in Payment.provider; UnknownMethod when there is none."""
    for provider in PROVIDERS:
        if provider.name == name:
            return provider
    raise UnknownMethod(f"no payment provider named {name!r}")


def provider_for(method: str) -> PaymentProvider:
    """The provider of `method`; UnknownMethod when none serves it."""
    for provider in PROVIDERS:
        if method in provider.methods:
            return provider
    raise UnknownMethod(f"no provider for the payment method {method!r}")


def webhook_providers() -> dict[str, PaymentProvider]:
    """The providers that send webhooks, by name (the `{provider}` of /webhooks/{provider})."""
    return {provider.name: provider for provider in PROVIDERS if provider.bad_signature_status is not None}


def check_settings(settings: Settings) -> None:
    """Every provider's start-up check (SettingsError on the first that cannot work)."""
    for provider in PROVIDERS:
        provider.check_settings(settings)


def content_security_policy(settings: Settings) -> dict[str, list[str]]:
    """What the configured providers add to every page's CSP."""
    sources: dict[str, list[str]] = {}
    for provider in PROVIDERS:
        if provider.is_configured(settings):
            for directive, values in provider.content_security_policy(settings).items():
                sources.setdefault(directive, []).extend(value for value in values
                                                         if value not in sources.get(directive, []))
    return sources


def providers(settings: Settings) -> list[PaymentProvider]:
    """The registered providers whose settings are present."""
    return [provider for provider in PROVIDERS if provider.is_configured(settings)]


def sandbox_methods(settings: Settings) -> set[str]:
    """Methods served by a provider's sandbox or local stand-in (no real money): the portal says so."""
    return {method for provider in PROVIDERS if provider.is_configured(settings) and provider.is_sandbox(settings)
            for method in provider.methods}


def offered_methods(settings: Settings, company: Company, currency: str) -> list[str]:
    """Methods the debtor may choose: provider configured and able to take the currency,
    and the company has not turned the method off."""
    disabled = set(company.disabled_methods or ())
    offered: list[str] = []
    for method in METHODS:
        if method in disabled:
            continue
        try:
            provider = provider_for(method)
        except UnknownMethod:
            continue
        if provider.is_configured(settings) and provider.is_available(settings, company, currency, method):
            offered.append(method)
    return offered


def cancel_checkout_payment(session: Session, checkout: Checkout, settings: Settings, *,
                            contact: Contact | None) -> None:
    """"I will pay another way": the provider's intent is cancelled first (a card confirmed later in
    another tab cannot be charged), then the checkout ends and frees its invoices and credit.
    UserError when its money is already on its way, or the provider cannot be reached."""
    from payments import stripe as stripe_provider
    from payments.checkout import NOT_CANCELLABLE, CANCELLABLE_STATUSES, cancel_checkout

    if checkout.status in CANCELLABLE_STATUSES and checkout.method == stripe_provider.METHOD \
            and checkout.provider == stripe_provider.PROVIDER and checkout.provider_ref:
        try:
            cancelled = stripe_provider.cancel_intent(settings, checkout)
        except ProviderUnavailable:
            raise UserError(PROVIDER_NOT_ANSWERING) from None
        if not cancelled:
            raise UserError(NOT_CANCELLABLE)
    cancel_checkout(session, checkout, contact=contact)
