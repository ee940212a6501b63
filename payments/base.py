"""What a payment provider is: the one protocol every provider implements, and the small
dataclasses at its boundary (Saleor-style).

A provider gets our Checkout and answers with a StartResult; a webhook delivery is verified into
ProviderEvents; an event is applied in two steps: `fetch` asks the provider what it needs (outside
any transaction: a slow provider must never hold the database), then `apply` turns the event and
what was fetched into PaymentUpdates that `payments.settlement.apply_update` applies, in the
event's own transaction. Provider SDKs are imported only by their own `payments/<provider>.py`;
the providers are listed in `payments.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping, Protocol, runtime_checkable

from ledger.models import DEBTOR_METHODS

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from kernel.settings import Settings
    from ledger.models import Checkout, Company

# Every method a debtor may be offered, in the order the portal lists them.
METHODS = DEBTOR_METHODS


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


@dataclass(frozen=True)
class StandIn:
    """The local stand-in `encours demo` runs for a provider when no keys are set."""

    module: str  # run as `python -m module --webhook-url <base url>/webhooks/<provider>`
    label: str  # what it serves, as the demo says it
    note: str  # what the demo prints once it runs


@dataclass(frozen=True)
class ProviderEvent:
    """One verified event of a webhook delivery."""

    id: str
    type: str  # e.g. payment_intent.succeeded, payments.confirmed
    payload: dict[str, Any] = field(repr=False)
    body: str = field(repr=False)  # what is stored raw: the delivery's body, or the event alone


@dataclass(frozen=True)
class CardDetails:
    """The card a payment was made with, as the provider reports it (never more than this)."""

    brand: str  # visa, mastercard, amex, cartes_bancaires…
    last4: str


@dataclass(frozen=True)
class PaymentUpdate:
    """What an event says about a payment of ours, for `payments.settlement.apply_update`."""

    checkout_id: int
    provider: str
    provider_ref: str  # the provider's id of the payment (PaymentIntent, GoCardless payment)
    method: str
    status: str  # pending, processing, succeeded, refunded, charged_back, failed (late_failure)
    amount_minor: int  # our minor units, as the provider reports the payment
    currency: str
    reason: str | None = None
    occurred_at: datetime | None = None
    # What our checkout created that made this payment, when not the payment itself (a GoCardless
    # billing request, as the provider reported it): matched against the checkout's provider_ref.
    made_by: str | None = None
    card: CardDetails | None = None  # a card payment's brand and last four, when the event carries them


@dataclass(frozen=True)
class PaymentWrites:
    """What applying an event changes on a payment we hold already, worked out from one read
    (`payments.settlement.triage`) without allocating money: the payment's new fields, the
    checkout's, the audit row. `seen_*`: what the read found; the writes apply only while the
    rows still hold it (`payments.settlement.write_payment`), else the full handler runs."""

    payment_id: int
    seen_status: str
    seen_reason: str | None
    seen_card: tuple[str | None, str | None]  # (brand, last four)
    status: str
    reason: str | None
    card: tuple[str | None, str | None]
    checkout_id: int
    # The checkout's (status, failure code) as read and as they become; None: the checkout is left alone.
    checkout_seen: tuple[str, str | None] | None = None
    checkout_new: tuple[str, str | None] | None = None
    # The audit row `payments.settlement.apply_payment_status` records (no ERP delivery subscribes to
    # it), its action `payment.<status>`: (customer id, company id, before, after); None when it records none.
    audit: tuple[int, int, dict[str, Any], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Triage:
    """What one read tells about an event (`payments.settlement.triage`): `outcome`, what `apply`
    would report; `writes`, what it would change (None: nothing but the event's own record)."""

    outcome: str
    writes: PaymentWrites | None = None


class SignatureError(ValueError):
    """A webhook delivery whose signature is missing, malformed, out of date or wrong, or whose
    body is no event of the provider's: nothing of it is stored or applied."""


class NotOurs(LookupError):
    """A verified event about something we did not create (another integration on the same
    provider account, a forged checkout id, an amount that is not ours): stored, marked
    unmatched, never retried, and no balance moves."""


class ProviderUnavailable(RuntimeError):
    """The provider could not be reached or refused the call: the debtor may retry or choose another method."""


class UnknownMethod(LookupError):
    pass


@runtime_checkable
class PaymentProvider(Protocol):
    name: str  # stored in Payment.provider and Checkout.provider; the webhook URL /webhooks/<name>
    methods: tuple[str, ...]
    # The status a delivery with a bad signature gets (Stripe: 400; GoCardless asks for 498);
    # None: the provider sends no webhooks.
    bad_signature_status: int | None
    # The local stand-in `encours demo` runs for it (None: nothing to stand in for).
    stand_in: StandIn | None

    def check_settings(self, settings: Settings) -> None:
        """Start-up check: raise SettingsError when the settings cannot work (e.g. keys without a webhook secret)."""
        ...

    def is_configured(self, settings: Settings) -> bool:
        """The provider's settings are present (keys, tokens)."""
        ...

    def is_sandbox(self, settings: Settings) -> bool:
        """A local stand-in or the provider's test mode: no real money moves."""
        ...

    def content_security_policy(self, settings: Settings) -> dict[str, list[str]]:
        """Sources every page adds to the default CSP for this provider (e.g. form-action to its pages)."""
        ...

    def is_available(self, settings: Settings, company: Company, currency: str, method: str) -> bool:
        """It can take this company's money in this currency by `method` (e.g. the company has an IBAN)."""
        ...

    def start(self, session: Session, checkout: Checkout, settings: Settings, base_url: str) -> StartResult:
        """Begin paying `checkout` (inside the caller's transaction); outbound creates carry
        `checkout.idempotency_key`."""
        ...

    def verify(self, settings: Settings, headers: Mapping[str, str], body: bytes) -> list[ProviderEvent]:
        """The events of one webhook delivery, verified on the raw body; SignatureError otherwise."""
        ...

    def calls_out(self, event: ProviderEvent) -> bool:
        """Whether `fetch` asks the provider's API for this event (then the intake answers first)."""
        ...

    def fetch(self, settings: Settings, session: Session, event: ProviderEvent) -> Any:
        """What the provider must tell us before `event` can be applied, asked outside any write
        transaction (`session` only reads). May raise NotOurs, or ProviderUnavailable (retried)."""
        ...

    def apply(self, session: Session, settings: Settings, event: ProviderEvent, fetched: Any) -> str:
        """Apply `event` in the caller's transaction (payment statuses through
        `payments.settlement.apply_update`); what was done, for the log. NotOurs when it names
        nothing we created."""
        ...

    def triage_update(self, event: ProviderEvent) -> tuple[PaymentUpdate, bool] | None:
        """The update `event` would make to a payment, as `payments.settlement.triage` reads about it,
        and its `by_checkout_ref`; None when no read can tell what `apply` would do. A read then
        tells (`payments.settlement.triage_event`, or one of its own on PostgreSQL's event loop:
        `payments.webhooks.intake_on_loop`) whether the event changes nothing (`Triage.writes`
        None: stored already processed, `payments.webhooks.store_unchanged`) or moves a payment we
        hold without settling money (a new decline reason, `processing`, a card to record: the
        writes `apply` would make, made with Core statements, `payments.webhooks.store_and_write`);
        else `apply` runs. Only asked for an event that needs nothing fetched."""
        ...
