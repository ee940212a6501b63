"""Card payments through Stripe: the only module that imports the `stripe` SDK.

A PaymentIntent is created server-side when the debtor starts a card checkout; Stripe.js
(Card Element + `confirmCardPayment`, 3-D Secure included) confirms it in the page; Stripe's
signed webhooks tell us what happened, and `apply_event` turns them into payment statuses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

import stripe
from sqlalchemy import bindparam, select

from kernel.settings import SettingsError
from ledger import audit
from ledger.models import Checkout
from ledger.money import decimals
from payments.base import (
    CardDetails,
    NotOurs,
    PaymentUpdate,
    ProviderEvent,
    ProviderUnavailable,
    SignatureError,
    StandIn,
    StartResult,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from kernel.settings import Settings
    from ledger.models import Company

PROVIDER = "stripe"
METHOD = "card"
NETWORK_RETRIES = 2

# Stripe's presentment currencies (https://docs.stripe.com/currencies), upper-case ISO codes.
CURRENCIES = frozenset("""
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BWP BYN
    BZD CAD CDF CHF CLP CNY COP CRC CVE CZK DJF DKK DOP DZD EGP ETB EUR FJD FKP GBP GEL GIP GMD
    GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR ISK JMD JOD JPY KES KGS KHR KMF KRW KWD KYD KZT LAK
    LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD
    OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SEK SGD SHP SLE SOS SRD STD
    SZL THB TJS TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VND VUV WST XAF XCD XOF XPF YER ZAR ZMW
""".split())
# Where Stripe's amount exponent differs from ISO 4217's minor units: ISK is zero-decimal in
# ISO but stays two-decimal in Stripe's API (amounts multiples of 100).
STRIPE_EXPONENT = {"ISK": 2}
# Three-decimal currencies: Stripe wants the last digit 0.
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


class StripeAmountError(ValueError):
    """An amount Stripe cannot charge in that currency (e.g. 5,125 KWD)."""


class StripeUnavailable(ProviderUnavailable):
    """Stripe's API could not be reached or refused the call; the message says why (no secrets)."""


class StripeEventError(ValueError):
    """A verified event that cannot be applied yet (it is kept and retried)."""


def _exponent_shift(currency: str) -> int:
    currency = currency.upper()
    return STRIPE_EXPONENT.get(currency, decimals(currency)) - decimals(currency)


def to_stripe_amount(minor: int, currency: str) -> int:
    """Our minor units (ISO 4217, see ledger.money) as Stripe's `amount`; never a /100."""
    currency = currency.upper()
    amount: int = minor * 10 ** _exponent_shift(currency)  # a shift >= 0: an int
    if currency in THREE_DECIMAL and amount % 10:
        raise StripeAmountError(f"Stripe charges {currency} only in multiples of 10 minor units")
    return amount


def from_stripe_amount(amount: int, currency: str) -> int:
    shift = _exponent_shift(currency)
    return amount // 10**shift if shift else amount


def check_settings(settings: Settings) -> None:
    """Start-up check: with Stripe keys set, webhooks must be verifiable."""
    configured = bool(str(settings.stripe_secret_key or "") or settings.stripe_publishable_key)
    if configured and not str(settings.stripe_webhook_secret or ""):
        raise SettingsError(
            "STRIPE_WEBHOOK_SECRET is missing while Stripe keys are set; copy the webhook "
            "endpoint's signing secret (whsec_...) from the Stripe dashboard"
        )
    if configured and not (settings.stripe_secret_key and settings.stripe_publishable_key):
        raise SettingsError("set both STRIPE_SECRET_KEY and STRIPE_PUBLISHABLE_KEY, or neither")
    if configured:
        secret_mode = _key_mode(str(settings.stripe_secret_key), ("sk_", "rk_"))
        publishable_mode = _key_mode(str(settings.stripe_publishable_key), ("pk_",))
        if secret_mode is None:
            raise SettingsError("STRIPE_SECRET_KEY must start with sk_test_, sk_live_, rk_test_ or rk_live_")
        if publishable_mode is None:
            raise SettingsError("STRIPE_PUBLISHABLE_KEY must start with pk_test_ or pk_live_")
        if secret_mode != publishable_mode:
            # Card details would go to one Stripe mode and the charge be made in the other.
            raise SettingsError(
                f"STRIPE_SECRET_KEY is a {secret_mode} key but STRIPE_PUBLISHABLE_KEY a {publishable_mode} key; "
                "take both from the same mode of the Stripe dashboard"
            )


def _key_mode(key: str, prefixes: tuple[str, ...]) -> str | None:
    """"test" or "live" from a Stripe key's prefix; None when it is not a Stripe key."""
    for prefix in prefixes:
        for mode in ("test", "live"):
            if key.startswith(f"{prefix}{mode}_"):
                return mode
    return None


def client(settings: Settings, http_client: Any = None) -> stripe.StripeClient:
    """The SDK's client; `api_base` from STRIPE_API_BASE (a local Stripe double) when set."""
    if settings.stripe_secret_key is None:
        raise SettingsError("STRIPE_SECRET_KEY is not set")
    return stripe.StripeClient(
        str(settings.stripe_secret_key),
        base_addresses={"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None,
        max_network_retries=NETWORK_RETRIES, http_client=http_client)


def js_origin(settings: Settings) -> str:
    parts = urlsplit(settings.stripe_js_url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(settings: Settings) -> dict[str, list[str]]:
    """What the card page adds to the default CSP: Stripe.js, its frames and its API calls."""
    origin = js_origin(settings)
    sources = {"script-src": [origin], "frame-src": [origin], "connect-src": [origin]}
    if settings.stripe_api_base:
        api = urlsplit(settings.stripe_api_base)
        sources["connect-src"].append(f"{api.scheme}://{api.netloc}")
    if origin == "https://js.stripe.com":
        # Stripe's published CSP for Stripe.js: its frames (3-D Secure at hooks.stripe.com) and API.
        sources["script-src"].append("https://*.js.stripe.com")
        sources["frame-src"] += ["https://*.js.stripe.com", "https://hooks.stripe.com"]
        sources["connect-src"].append("https://api.stripe.com")
    return sources


@dataclass(frozen=True)
class Intent:
    id: str
    client_secret: str
    status: str
    card: CardDetails | None = None


def is_sandbox(settings: Settings) -> bool:
    """A local Stripe double, or Stripe's test mode: no real card is charged."""
    return bool(settings.stripe_api_base) or str(settings.stripe_secret_key or "").startswith("sk_test_")


class StripeProvider:
    name = PROVIDER
    methods: tuple[str, ...] = (METHOD,)
    bad_signature_status: int | None = 400
    # localstripe plus a bridge playing Stripe.js's part
    stand_in: StandIn | None = StandIn("sandbox.stripe_server", "card",
                       "localstripe (test card 4242 4242 4242 4242, any future date, any CVC)")

    def check_settings(self, settings: Settings) -> None:
        check_settings(settings)

    def is_configured(self, settings: Settings) -> bool:
        return bool(settings.stripe_secret_key and settings.stripe_publishable_key)

    def is_sandbox(self, settings: Settings) -> bool:
        return is_sandbox(settings)

    def content_security_policy(self, settings: Settings) -> dict[str, list[str]]:
        return {}  # Stripe.js is allowed on the card page only (content_security_policy below)

    def is_available(self, settings: Settings, company: Company, currency: str, method: str = METHOD) -> bool:
        return currency.upper() in CURRENCIES

    def verify(self, settings: Settings, headers: Mapping[str, str], body: bytes) -> list[ProviderEvent]:
        return verify_webhook(settings, body, headers.get("stripe-signature"))

    def calls_out(self, event: ProviderEvent) -> bool:
        return False  # every event carries what it is about

    def fetch(self, settings: Settings, session: Session, event: ProviderEvent) -> Any:
        return None

    def apply(self, session: Session, settings: Settings, event: ProviderEvent, fetched: Any) -> str:
        return apply_event(session, event.payload, settings)

    def triage_update(self, event: ProviderEvent) -> tuple[PaymentUpdate, bool] | None:
        change = triage_update(event.payload)
        return None if change is None else (change, True)

    def start(self, session: Session, checkout: Checkout, settings: Settings, base_url: str) -> StartResult:
        """Create the checkout's PaymentIntent once; the card page confirms it."""
        if not (checkout.provider == PROVIDER and checkout.provider_ref):
            intent = _call(lambda: client(settings).v1.payment_intents.create(
                params={
                    "amount": to_stripe_amount(checkout.amount_minor, checkout.currency),
                    "currency": checkout.currency.lower(),
                    # The API version the SDK pins refuses `payment_method_types` (400).
                    "allowed_payment_method_types": ["card"],
                    "metadata": {"checkout_id": str(checkout.id)},
                },
                # The same key on a retry or a second click: Stripe answers with the first intent.
                options={"idempotency_key": checkout.idempotency_key},
            ))
            checkout.provider = PROVIDER
            checkout.provider_ref = intent.id
            session.flush()
        return StartResult(next_path=card_path(checkout))

    def intent(self, settings: Settings, checkout: Checkout) -> Intent:
        """The checkout's PaymentIntent as Stripe has it now (its client secret is never stored)."""
        if checkout.provider != PROVIDER or not checkout.provider_ref:
            raise StripeEventError(f"checkout {checkout.id} has no PaymentIntent")
        intent_id = checkout.provider_ref
        # Its payment method expanded: the card's brand and last four go to the debtor's history.
        found = _call(lambda: client(settings).v1.payment_intents.retrieve(
            intent_id, params={"expand": ["payment_method"]}))
        # stripe-python 13+: a StripeObject is no dict (no .get); to_dict() first.
        metadata = found.metadata.to_dict() if found.metadata is not None else {}
        if str(metadata.get("checkout_id")) != str(checkout.id):
            raise StripeEventError(f"PaymentIntent {found.id} is not checkout {checkout.id}'s")
        return Intent(id=found.id, client_secret=found.client_secret or "", status=found.status,
                      card=card_of(found.to_dict()))


# PaymentIntent statuses Stripe lets us cancel: nothing was charged and nothing is on its way.
CANCELLABLE_INTENT = ("requires_payment_method", "requires_confirmation", "requires_action", "canceled")


def cancel_intent(settings: Settings, checkout: Checkout) -> bool:
    """The debtor pays another way: cancel the checkout's PaymentIntent at Stripe, so a card
    confirmed later (in another tab, from a stale page) can no longer be charged. The key is
    made of our checkout's own: a retry cancels once. False when the intent is already paid or
    on its way (Stripe refuses to cancel it then): the checkout must not end."""
    if checkout.provider != PROVIDER or not checkout.provider_ref:
        return True  # no intent was ever created: nothing can be charged
    intent_id = checkout.provider_ref
    found = _call(lambda: client(settings).v1.payment_intents.retrieve(intent_id))
    if found.status == "canceled":
        return True
    if found.status not in CANCELLABLE_INTENT:
        return False
    try:
        client(settings).v1.payment_intents.cancel(
            intent_id, options={"idempotency_key": f"cancel-{checkout.idempotency_key}"})
    except stripe.InvalidRequestError:
        return False  # confirmed meanwhile: Stripe no longer cancels it
    except stripe.StripeError as error:
        raise StripeUnavailable(f"{type(error).__name__}: {error.user_message or error.code or 'no detail'}") from None
    return True


def mark_processing(session: Session, settings: Settings, checkout: Checkout) -> bool:
    """After Stripe.js confirmed: if Stripe says the intent is paid or on its way, the checkout
    shows "processing" (never "succeeded": that is the webhook's to say). True when it moved."""
    from payments.settlement import apply_payment_status

    intent = StripeProvider().intent(settings, checkout)
    if intent.status not in ("processing", "succeeded", "requires_capture"):
        return False
    apply_payment_status(
        session, checkout=checkout, provider=PROVIDER, provider_ref=intent.id, method=METHOD, status="processing",
        amount_minor=checkout.amount_minor, currency=checkout.currency, settings=settings, card=intent.card,
    )
    return True


def card_of(intent: Any) -> CardDetails | None:
    """The card of a PaymentIntent (a dict of its JSON), when it carries one: its payment method
    expanded, or its charge's payment_method_details (events of older API versions list charges)."""
    def read(card: Any) -> CardDetails | None:
        if isinstance(card, dict) and card.get("last4"):
            return CardDetails(brand=str(card.get("brand") or "card"), last4=str(card["last4"]))
        return None

    method = intent.get("payment_method")
    if isinstance(method, dict) and (found := read(method.get("card"))):
        return found
    charge = intent.get("latest_charge")
    charges = [charge] if isinstance(charge, dict) else list((intent.get("charges") or {}).get("data") or [])
    for charge in reversed(charges):
        if isinstance(charge, dict) and (found := read((charge.get("payment_method_details") or {}).get("card"))):
            return found
    return None


def _call(request: Any) -> Any:
    try:
        return request()
    except stripe.StripeError as error:
        raise StripeUnavailable(f"{type(error).__name__}: {error.user_message or error.code or 'no detail'}") from None


def card_path(checkout: Checkout) -> str:
    return f"/portal/pay/{checkout.id}/card"


# --- webhooks ---


# Stripe's webhook signature scheme (https://docs.stripe.com/webhooks#verify-manually): the header
# `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the endpoint secret>`, with one v1 per
# secret while a rotated one is still valid; other schemes (v0, test signatures) are ignored.
SIGNATURE_SCHEME = "v1"
SIGNATURE_TOLERANCE = stripe.Webhook.DEFAULT_TOLERANCE  # seconds, on both sides of now


def verify_signature(payload: bytes, header: str, secret: str, now: float,
                     tolerance: int = SIGNATURE_TOLERANCE) -> None:
    """The scheme the SDK's `WebhookSignature.verify_header` checks, on the bytes as received (the
    SDK decodes and encodes the body again, and builds an error object even for a good one):
    SignatureError unless one v1 signature is the HMAC of this body at that time, that time within
    the tolerance of `now`. Also refused, unlike the SDK: a time in the future beyond the
    tolerance (a clock we cannot trust, or a signature saved up for a replay) and a header with
    more than one time (which of them was signed?)."""
    stamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.partition("=")
        if name == "t":
            stamps.append(value)
        elif name == SIGNATURE_SCHEME:
            signatures.append(value)
    if len(stamps) != 1 or not stamps[0].isdigit():
        raise SignatureError("the Stripe-Signature has no single timestamp")
    if not signatures:
        raise SignatureError(f"the Stripe-Signature has no {SIGNATURE_SCHEME} signature")
    timestamp = int(stamps[0])
    expected = hmac.new(secret.encode("utf-8"), b"%d." % timestamp + payload, hashlib.sha256).hexdigest()
    # Every candidate compared, in constant time each: which one matched is not told by the timing.
    if not sum(hmac.compare_digest(expected, signature) for signature in signatures):
        raise SignatureError("no Stripe-Signature matches the body")
    if timestamp < now - tolerance:
        raise SignatureError(f"the Stripe-Signature is older than {tolerance} s")
    if timestamp > now + tolerance:
        raise SignatureError("the Stripe-Signature is dated in the future")


def verify_webhook(settings: Settings, payload: bytes, signature: str | None) -> list[ProviderEvent]:
    """Stripe's signature check on the raw body, then its JSON read once; SignatureError when it
    does not verify or is not an event. No SDK Event object is built: a duplicate delivery needs
    only the id, and a new one is applied from the dict. Wall time, not kernel.clock: it is
    compared with the time Stripe signed at."""
    secret = settings.stripe_webhook_secret
    if secret is None or not str(secret):
        # check_settings refuses to start like this; never verify against an empty secret.
        raise SettingsError("STRIPE_WEBHOOK_SECRET is not set")
    if not signature:
        raise SignatureError("no Stripe-Signature header")
    if not signature.isascii():
        raise SignatureError("the Stripe-Signature header is not ASCII")
    verify_signature(payload, signature, str(secret), time.time())
    try:
        body = payload.decode("utf-8")
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:  # not UTF-8 JSON
        raise SignatureError(f"not a Stripe event: {error}") from None
    if not isinstance(raw, dict) or not raw.get("id") or not raw.get("type"):
        raise SignatureError("not a Stripe event: no id or type")
    return [ProviderEvent(id=str(raw["id"]), type=str(raw["type"]), payload=raw, body=body)]


def event_time(value: Any) -> datetime | None:
    """When an event happened: a Unix time (v1 snapshot events) or an ISO 8601 string (v2 thin events)."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value), tz=timezone.utc)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def apply_event(session: Session, payload: dict[str, Any], settings: Settings | None = None) -> str:
    """Apply one verified Stripe event (a dict of its raw JSON) in the caller's transaction.

    Returns what was done, for the log. Raises NotOurs when it is about a PaymentIntent we did
    not create, or one whose amount or currency is not what we asked for; StripeEventError when
    it names our card checkout before that checkout's PaymentIntent is recorded (retried).
    """
    from payments.settlement import apply_partial_refund, apply_update

    kind = str(payload.get("type") or "")
    data = payload.get("data")
    obj = (data.get("object") if isinstance(data, dict) else None) or {}
    occurred = event_time(payload.get("created"))

    def update(checkout: Checkout, intent_id: str, status: str, amount: int, currency: str,
               reason: str | None = None) -> PaymentUpdate:
        return PaymentUpdate(checkout_id=checkout.id, provider=PROVIDER, provider_ref=intent_id, method=METHOD,
                             status=status, amount_minor=from_stripe_amount(int(amount), currency),
                             currency=currency.upper(), reason=reason, occurred_at=occurred,
                             card=card_of(obj) if kind.startswith("payment_intent.") else None)

    def settle(change: PaymentUpdate) -> str:
        apply_update(session, change, settings)
        return f"{change.provider_ref} {change.status}"

    match kind:
        case "payment_intent.processing" | "payment_intent.succeeded" | "payment_intent.payment_failed":
            checkout = _checkout_of_intent(session, obj)
            currency = str(obj.get("currency") or "")
            if kind == "payment_intent.succeeded":
                # amount_received is what was captured; localstripe's intents do not carry it.
                received = obj.get("amount_received") or obj.get("amount")
                if obj.get("amount") and received != obj.get("amount"):
                    raise NotOurs(f"PaymentIntent {obj['id']} received {received} of {obj.get('amount')}: "
                                  "not the amount we asked for")
                return settle(update(checkout, obj["id"], "succeeded", int(received or 0), currency))
            if kind == "payment_intent.processing":
                return settle(update(checkout, obj["id"], "processing", int(obj.get("amount") or 0), currency))
            # A declined attempt: the debtor may retry on the same intent, so "pending", with why.
            error = obj.get("last_payment_error") or {}
            reason = error.get("message") or error.get("code") or "card payment declined"
            return settle(update(checkout, obj["id"], "pending", int(obj.get("amount") or 0), currency, reason))
        case "charge.refunded":
            checkout = _checkout_of_charge(session, obj)
            currency = str(obj.get("currency") or "")
            if not obj.get("refunded"):  # partial refund: the refunded part reopens, the rest stands
                change = update(checkout, str(obj.get("payment_intent")), "refunded", int(obj.get("amount") or 0),
                                currency)
                refunded = from_stripe_amount(int(obj.get("amount_refunded") or 0), currency)
                payment = apply_partial_refund(session, change, refunded)
                return f"{change.provider_ref} partially refunded ({refunded})" + ("" if payment else ": no payment")
            return settle(update(checkout, str(obj.get("payment_intent")), "refunded", int(obj.get("amount") or 0),
                                 currency, "refunded"))
        case "charge.dispute.created":
            checkout = _checkout_of_charge(session, obj)
            _record(session, checkout, "payment.dispute_opened",
                    {"dispute": obj.get("id"), "reason": obj.get("reason"), "amount": obj.get("amount")})
            return f"{obj.get('payment_intent')} dispute opened: recorded"
        case "charge.dispute.closed":
            checkout = _checkout_of_charge(session, obj)
            if obj.get("status") == "lost":
                return settle(update(checkout, str(obj.get("payment_intent")), "charged_back", int(obj.get("amount") or 0),
                                     str(obj.get("currency") or ""), f"dispute lost ({obj.get('reason') or 'no reason given'})"))
            _record(session, checkout, "payment.dispute_closed", {"dispute": obj.get("id"), "status": obj.get("status")})
            return f"{obj.get('payment_intent')} dispute closed {obj.get('status')}: recorded"
        case _:
            return f"{kind}: ignored"


def triage_update(payload: dict[str, Any]) -> PaymentUpdate | None:
    """What a PaymentIntent event would make of a payment we hold, for `payments.settlement.triage`
    (the checkout found by the update's `provider_ref`); None for anything else (a charge, a
    dispute, an event no read can tell: `apply_event` applies it, or says why not)."""
    kind = str(payload.get("type") or "")
    if kind not in ("payment_intent.processing", "payment_intent.succeeded", "payment_intent.payment_failed"):
        return None
    data = payload.get("data")
    obj = (data.get("object") if isinstance(data, dict) else None) or {}
    intent_id, currency = obj.get("id"), str(obj.get("currency") or "")
    if not intent_id or not isinstance(obj.get("amount", 0), int):
        return None
    if kind == "payment_intent.succeeded":
        received = obj.get("amount_received") or obj.get("amount")
        if (obj.get("amount") and received != obj.get("amount")) or not isinstance(received, int):
            return None
        status, amount, reason = "succeeded", received, None
    elif kind == "payment_intent.processing":
        status, amount, reason = "processing", int(obj.get("amount") or 0), None
    else:
        error = obj.get("last_payment_error") or {}
        status, amount = "pending", int(obj.get("amount") or 0)
        reason = error.get("message") or error.get("code") or "card payment declined"
    try:
        change = PaymentUpdate(checkout_id=0, provider=PROVIDER, provider_ref=str(intent_id), method=METHOD,
                               status=status, amount_minor=from_stripe_amount(amount, currency),
                               currency=currency.upper(), reason=reason, card=card_of(obj))
    except Exception:  # noqa: BLE001 - anything odd (a currency we do not know): apply_event says why
        return None
    return change


def _checkout_of_intent(session: Session, intent: dict[str, Any]) -> Checkout:
    """The card checkout that created this PaymentIntent: by the intent id we recorded, never by the
    metadata alone (anything on the same Stripe account can write a checkout id there)."""
    intent_id = intent.get("id")
    checkout = _by_intent_id(session, intent_id)
    if checkout is not None:
        return checkout
    checkout_id = str((intent.get("metadata") or {}).get("checkout_id") or "")
    named = session.get(Checkout, int(checkout_id)) if checkout_id.isdigit() else None
    if named is not None and named.method == METHOD and named.status == "open" and not named.provider_ref:
        # Stripe made the intent and our transaction recording it has not committed yet (or died:
        # the idempotency key gives the same intent on the next start). Until then: retried.
        raise StripeEventError(f"PaymentIntent {intent_id} names checkout {named.id}, "
                               "whose PaymentIntent is not recorded yet")
    raise NotOurs(f"PaymentIntent {intent_id} is none of ours (metadata.checkout_id={checkout_id!r})")


def _checkout_of_charge(session: Session, obj: dict[str, Any]) -> Checkout:
    """The checkout of a charge or dispute, by its PaymentIntent id (charges do not carry our metadata)."""
    checkout = _by_intent_id(session, obj.get("payment_intent"))
    if checkout is None:
        raise NotOurs(f"{obj.get('object', 'object')} {obj.get('id')} is about no PaymentIntent of ours "
                      f"(payment_intent={obj.get('payment_intent')!r})")
    return checkout


# Built once: every event looks its checkout up, and building the query cost about as much as running it.
_CHECKOUT_OF_INTENT = select(Checkout).where(Checkout.provider == PROVIDER,
                                             Checkout.provider_ref == bindparam("intent_id"))


def _by_intent_id(session: Session, intent_id: Any) -> Checkout | None:
    if not intent_id:
        return None
    return session.scalar(_CHECKOUT_OF_INTENT, {"intent_id": str(intent_id)})


def _record(session: Session, checkout: Checkout, action: str, after: dict[str, Any]) -> None:
    audit.record(session, actor_type="provider", actor=PROVIDER, action=action, entity_type="checkout",
                 entity_id=checkout.id, customer_id=checkout.customer_id, after=after)
