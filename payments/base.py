"""The one protocol every payment provider implements, and the registry of providers.

Small dataclasses at the boundary (Saleor-style): a provider gets our Checkout and answers
with a StartResult; provider SDKs are imported only by their own `payments/<provider>.py`.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from kernel.settings import Settings
    from ledger.models import Checkout, Company

log = logging.getLogger("encours.payments")

# Every method a debtor may be offered, in the order the portal lists them.
METHODS = ("card", "instant_transfer", "direct_debit", "bank_transfer")

# method -> "module:ClassName" of the provider serving it. A new provider adds its line(s);
# the module is imported only when the method is looked up, so a missing SDK breaks nothing else.
REGISTRY: tuple[tuple[str, str], ...] = (
    ("card", "payments.stripe:StripeProvider"),
    ("instant_transfer", "payments.gocardless:InstantBankPayProvider"),
    ("direct_debit", "payments.gocardless:DirectDebitProvider"),
    ("bank_transfer", "payments.bank_transfer:BankTransferProvider"),
)


@dataclass(frozen=True)
class StartResult:
    """Where the debtor goes after a checkout started: a provider's page, or one of ours."""

    redirect_url: str | None = None  # an external page (Stripe, GoCardless), absolute
    next_path: str | None = None  # a portal path, e.g. /portal/pay/12/transfer

    @property
    def location(self) -> str:
        location = self.redirect_url or self.next_path
        if not location:
            raise ValueError("a StartResult names where to go next")
        return location


@runtime_checkable
class PaymentProvider(Protocol):
    name: str  # stored in Payment.provider and Checkout.provider
    methods: tuple[str, ...]

    def is_configured(self, settings: Settings) -> bool:
        """The provider's settings are present (keys, tokens)."""
        ...

    def is_available(self, settings: Settings, company: Company, currency: str) -> bool:
        """It can take this company's money in this currency (e.g. the company has an IBAN)."""
        ...

    def start(self, session: Session, checkout: Checkout, settings: Settings, base_url: str) -> StartResult:
        """Begin paying `checkout` (inside the caller's transaction); outbound creates carry
        `checkout.idempotency_key`."""
        ...


class UnknownMethod(LookupError):
    pass


class ProviderUnavailable(RuntimeError):
    """The provider could not be reached or refused the call: the debtor may retry or choose another method."""


@lru_cache(maxsize=None)
def _load(path: str) -> PaymentProvider:
    module_name, _, class_name = path.partition(":")
    provider = getattr(importlib.import_module(module_name), class_name)()
    return provider  # type: ignore[no-any-return]


def provider_for(method: str) -> PaymentProvider:
    """The provider of `method`; UnknownMethod when none is registered or its module cannot load
    (a missing SDK takes that method away, never the portal)."""
    for registered, path in REGISTRY:
        if registered == method:
            try:
                return _load(path)
            except (ImportError, AttributeError) as error:
                log.error("payment provider %s cannot be loaded: %s", path, error)
                raise UnknownMethod(f"the provider of {method!r} cannot be loaded") from error
    raise UnknownMethod(f"no provider for the payment method {method!r}")


def providers(settings: Settings) -> list[PaymentProvider]:
    """The registered providers whose settings are present, each once."""
    found: list[PaymentProvider] = []
    for method, _ in REGISTRY:
        try:
            provider = provider_for(method)
        except UnknownMethod:
            continue
        if provider not in found and provider.is_configured(settings):
            found.append(provider)
    return found


def sandbox_methods(settings: Settings) -> set[str]:
    """Methods served by a provider's sandbox or local stand-in (no real money): the portal says so."""
    found = set()
    for method in METHODS:
        try:
            provider = provider_for(method)
        except UnknownMethod:
            continue
        is_sandbox = getattr(provider, "is_sandbox", None)
        if is_sandbox is not None and provider.is_configured(settings) and is_sandbox(settings):
            found.add(method)
    return found


def offered_methods(settings: Settings, company: Company, currency: str) -> list[str]:
    """Methods the debtor may choose: provider configured and able to take the currency,
    and the company has not turned the method off."""
    disabled = set(company.disabled_methods or ())
    offered = []
    for method in METHODS:
        if method in disabled:
            continue
        try:
            provider = provider_for(method)
        except UnknownMethod:
            continue
        if provider.is_configured(settings) and provider.is_available(settings, company, currency):
            offered.append(method)
    return offered
