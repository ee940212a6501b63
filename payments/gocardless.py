"""Instant bank pay and direct debit through GoCardless: the only module that imports `gocardless_pro`.

- Instant transfer (Instant Bank Pay, EUR and GBP): a Billing Request with a `payment_request`,
  a Billing Request Flow whose `authorisation_url` the debtor follows to their bank, then back
  to our return page.
- Direct debit: a Billing Request with a `mandate_request` (SEPA Core for EUR, Bacs for GBP),
  with the checkout's amount as an instant first payment where the debtor asked for it. Without
  it, and for the invoices that fall due later, the worker (`collect_due`) creates the payments
  on the mandate once it is active. A customer whose mandate is already active is debited at once.
- Webhooks (`apply_event`): one request carries many events; billing request fulfilled,
  payments and mandates events become payment statuses (`payments.settlement`) and the
  customer's mandate status. Amounts: GoCardless counts EUR and GBP in cents and pence, our
  minor units.

Every create carries an idempotency key made of our own ids, so a retry, a double click or a
second worker gets the first resource back (the SDK turns GoCardless's 409
`idempotent_creation_conflict` into a GET of the conflicting resource).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar
from urllib.parse import urlsplit

import gocardless_pro
import gocardless_pro.webhooks  # not imported by the package itself
from gocardless_pro import errors as gc_errors
from requests import RequestException
from sqlalchemy import exists, select

from kernel.clock import clock
from kernel.db import unit_of_work
from kernel.settings import SettingsError
from ledger import audit
from ledger.models import Checkout, Customer, Payment
from payments.base import (
    NotOurs,
    PaymentUpdate,
    ProviderEvent,
    ProviderUnavailable,
    SignatureError,
    StandIn,
    StartResult,
)
from payments.collections import MANDATE_ENDED, CollectionReport, collectable_invoices, mandate_currency

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from kernel.settings import Settings
    from ledger.models import Company

log = logging.getLogger("encours.gocardless")

PROVIDER = "gocardless"
INSTANT = "instant_transfer"
DIRECT_DEBIT = "direct_debit"
INSTANT_CURRENCIES = frozenset({"EUR", "GBP"})  # Instant Bank Pay
SCHEMES = {"EUR": "sepa_core", "GBP": "bacs"}
TIMEOUT = 20  # seconds: the debtor is waiting
REQUESTS_ASKED = 5  # a mandate unknown to us: the customer's latest billing requests asked whether they made it

# GoCardless payment event action -> our payment status (payments.settlement ranks them).
PAYMENT_ACTIONS = {
    "created": "processing",
    "submitted": "processing",
    "confirmed": "succeeded",
    "paid_out": "succeeded",
    "failed": "failed",
    "late_failure": "late_failure",
    "charged_back": "charged_back",
    "cancelled": "failed",
    "customer_approval_denied": "failed",
    "resubmission_requested": "processing",
}
# Mandate event action -> the mandate status we keep on the customer.
MANDATE_ACTIONS = {
    "created": "pending_submission",
    "customer_approval_granted": "pending_submission",
    "submitted": "submitted",
    "active": "active",
    "failed": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
    "consumer_denied": "failed",
}
# A mandate's status only moves forward, as a payment's does: a late "submitted" never
# hides an "active", and nothing comes back from failed, cancelled or expired.
MANDATE_RANK = {"pending_submission": 0, "submitted": 1, "active": 2, "failed": 3, "cancelled": 3, "expired": 3}


class GoCardlessUnavailable(ProviderUnavailable):
    """GoCardless could not be reached or refused the call; the message says why (no secrets)."""


class GoCardlessNotFound(GoCardlessUnavailable):
    """GoCardless has no such resource (404): on our account, nothing by that id."""


class GoCardlessEventError(ValueError):
    """A verified event of ours that cannot be applied yet (kept, retried by the worker)."""


def check_settings(settings: Settings) -> None:
    """Start-up check: with an access token set, webhooks must be verifiable."""
    if str(settings.gocardless_access_token or "") and not str(settings.gocardless_webhook_secret or ""):
        raise SettingsError(
            "GOCARDLESS_WEBHOOK_SECRET is missing while GOCARDLESS_ACCESS_TOKEN is set; copy the webhook "
            "endpoint's secret from the GoCardless dashboard (Developers > Webhook endpoints)"
        )


def is_configured(settings: Settings) -> bool:
    return bool(str(settings.gocardless_access_token or ""))


def is_sandbox(settings: Settings) -> bool:
    """A local stand-in, or GoCardless's sandbox: no real money moves."""
    return bool(settings.gocardless_base_url) or str(settings.gocardless_access_token or "").startswith("sandbox_")


# Where GoCardless's hosted pages live: the pay form's redirect there must be allowed (CSP form-action).
HOSTED_PAGES = ("https://pay.gocardless.com", "https://pay-sandbox.gocardless.com")


def content_security_policy(settings: Settings) -> dict[str, list[str]]:
    """What every page adds to the default CSP: the pay form may be redirected to GoCardless."""
    if not is_configured(settings):
        return {}
    if settings.gocardless_base_url:
        parts = urlsplit(settings.gocardless_base_url)
        return {"form-action": [f"{parts.scheme}://{parts.netloc}"]}
    return {"form-action": list(HOSTED_PAGES)}


def client(settings: Settings) -> gocardless_pro.Client:
    """The SDK's client; `base_url` from GOCARDLESS_BASE_URL (a local stand-in) when set, else the
    environment the access token belongs to (sandbox_... or live_...)."""
    token = str(settings.gocardless_access_token or "")
    if not token:
        raise SettingsError("GOCARDLESS_ACCESS_TOKEN is not set")
    if settings.gocardless_base_url:
        return gocardless_pro.Client(access_token=token, base_url=settings.gocardless_base_url.rstrip("/"),
                                     timeout=TIMEOUT)
    environment = "sandbox" if token.startswith("sandbox_") else "live"
    return gocardless_pro.Client(access_token=token, environment=environment, timeout=TIMEOUT)


T = TypeVar("T")


def _call(request: Callable[[], T]) -> T:
    """Run an SDK call; its failures become GoCardlessUnavailable with a message free of secrets."""
    try:
        return request()
    except gc_errors.ApiError as error:
        if error.code == 404:
            raise GoCardlessNotFound(f"{type(error).__name__} (404): {error.message or error.type}") from None
        reasons = ", ".join(str(item.get("reason") or item.get("message")) for item in (error.errors or []))
        raise GoCardlessUnavailable(
            f"{type(error).__name__} ({error.code}): {error.message or error.type}" + (f" [{reasons}]" if reasons else "")
        ) from None
    except gc_errors.GoCardlessProError as error:
        raise GoCardlessUnavailable(f"{type(error).__name__}: {str(error)[:200]}") from None
    except RequestException as error:
        raise GoCardlessUnavailable(f"GoCardless could not be reached ({type(error).__name__})") from None


def return_path(checkout_id: int) -> str:
    return f"/portal/pay/{checkout_id}/gocardless/return"


def status_path(checkout_id: int) -> str:
    return f"/portal/pay/{checkout_id}"


def _description(checkout: Checkout) -> str:
    numbers = ", ".join(line.invoice.number for line in checkout.lines)
    return f"Invoices {numbers}"[:100]


class _GoCardless:
    name = PROVIDER
    methods: tuple[str, ...] = ()

    def is_configured(self, settings: Settings) -> bool:
        return is_configured(settings)

    def is_sandbox(self, settings: Settings) -> bool:
        return is_sandbox(settings)

    def _billing_request(self, session: Session, checkout: Checkout, settings: Settings, *,
                         payment: bool, mandate: bool) -> None:
        """Create the checkout's Billing Request once (its id becomes the checkout's provider_ref)."""
        if checkout.provider == PROVIDER and checkout.provider_ref:
            return
        params: dict[str, Any] = {"metadata": {"checkout_id": str(checkout.id)}}
        if payment:
            params["payment_request"] = {
                "amount": checkout.amount_minor,
                "currency": checkout.currency,
                "description": _description(checkout),
                # Copied onto the payment made when the request is fulfilled: its events find us.
                "metadata": {"checkout_id": str(checkout.id)},
            }
        if mandate:
            params["mandate_request"] = {
                "scheme": SCHEMES[checkout.currency],
                "currency": checkout.currency,
                "metadata": {"customer_id": str(checkout.customer_id)},
            }
        request = _call(lambda: client(settings).billing_requests.create(
            params=params, headers={"Idempotency-Key": checkout.idempotency_key}))
        checkout.provider = PROVIDER
        checkout.provider_ref = request.id
        session.flush()

    def _flow(self, checkout: Checkout, settings: Settings, base_url: str) -> StartResult:
        """A fresh Billing Request Flow for the checkout's request: where the debtor authorises it.

        Flows expire and may be made many times for one request (no money moves on a flow), and
        the SDK cannot fetch one back: so each gets its own key, still named after the checkout.
        """
        request_id = checkout.provider_ref
        base = base_url.rstrip("/")
        flow = _call(lambda: client(settings).billing_request_flows.create(
            params={
                "redirect_uri": f"{base}{return_path(checkout.id)}",
                "exit_uri": f"{base}{status_path(checkout.id)}",
                "links": {"billing_request": request_id},
            },
            headers={"Idempotency-Key": f"{checkout.idempotency_key}-flow-{uuid.uuid4().hex[:12]}"},
        ))
        return StartResult(redirect_url=flow.authorisation_url)


class InstantBankPayProvider(_GoCardless):
    methods: tuple[str, ...] = (INSTANT,)

    def is_available(self, settings: Settings, company: Company, currency: str, method: str = INSTANT) -> bool:
        return currency.upper() in INSTANT_CURRENCIES

    def start(self, session: Session, checkout: Checkout, settings: Settings, base_url: str) -> StartResult:
        self._billing_request(session, checkout, settings, payment=True, mandate=False)
        return self._flow(checkout, settings, base_url)


class DirectDebitProvider(_GoCardless):
    methods: tuple[str, ...] = (DIRECT_DEBIT,)

    def is_available(self, settings: Settings, company: Company, currency: str, method: str = DIRECT_DEBIT) -> bool:
        return currency.upper() in SCHEMES

    def start(self, session: Session, checkout: Checkout, settings: Settings, base_url: str) -> StartResult:
        customer = session.get(Customer, checkout.customer_id)
        assert customer is not None
        if mandate_currency(customer) == checkout.currency and not checkout.instant_first_payment \
                and not (checkout.provider == PROVIDER and checkout.provider_ref):
            # A mandate that can take payments already: debit it, no new authorisation.
            collect_checkout(session, settings, checkout, customer, checkout.idempotency_key)
            return StartResult(next_path=status_path(checkout.id))
        wants_instant = checkout.instant_first_payment and checkout.currency in INSTANT_CURRENCIES
        # With a mandate already in place, only the instant payment is asked for: never a second mandate.
        self._billing_request(session, checkout, settings, payment=wants_instant,
                              mandate=mandate_currency(customer) != checkout.currency)
        return self._flow(checkout, settings, base_url)


class GoCardlessProvider(_GoCardless):
    """GoCardless as a whole: both its methods, its settings and its webhooks."""

    methods: tuple[str, ...] = (INSTANT, DIRECT_DEBIT)
    bad_signature_status: int | None = 498  # what GoCardless's documentation asks for ("Invalid Token")
    stand_in: StandIn | None = StandIn("sandbox.gocardless_server", "instant transfer and direct debit",
                       "the GoCardless stand-in (click through its authorisation page)")
    _by_method: dict[str, InstantBankPayProvider | DirectDebitProvider] = {
        INSTANT: InstantBankPayProvider(), DIRECT_DEBIT: DirectDebitProvider()}

    def check_settings(self, settings: Settings) -> None:
        check_settings(settings)

    def content_security_policy(self, settings: Settings) -> dict[str, list[str]]:
        return content_security_policy(settings)

    def is_available(self, settings: Settings, company: Company, currency: str, method: str = INSTANT) -> bool:
        return self._by_method[method].is_available(settings, company, currency, method)

    def start(self, session: Session, checkout: Checkout, settings: Settings, base_url: str) -> StartResult:
        return self._by_method[checkout.method].start(session, checkout, settings, base_url)

    def verify(self, settings: Settings, headers: Mapping[str, str], body: bytes) -> list[ProviderEvent]:
        return verify_webhook(settings, body, headers.get("webhook-signature"))

    def calls_out(self, event: ProviderEvent) -> bool:
        return calls_out(event)

    def fetch(self, settings: Settings, session: Session, event: ProviderEvent) -> Any:
        return fetch(settings, session, event.payload)

    def apply(self, session: Session, settings: Settings, event: ProviderEvent, fetched: Any) -> str:
        return apply_event(session, event.payload, settings, fetched)

    def triage_update(self, event: ProviderEvent) -> tuple[PaymentUpdate, bool] | None:
        return None


def payment_method(checkout: Checkout) -> str:
    """How a checkout's GoCardless payment moves money: a direct-debit checkout's instant first
    payment is an instant transfer; what the worker collects on a mandate is a direct debit."""
    return INSTANT if checkout.method == INSTANT or checkout.instant_first_payment else DIRECT_DEBIT


def collect_checkout(session: Session, settings: Settings, checkout: Checkout, customer: Customer,
                     idempotency_key: str) -> Payment:
    """Create the GoCardless payment of `checkout` on the customer's mandate, recorded "processing"."""
    from payments.settlement import apply_payment_status

    mandate_id = customer.gocardless_mandate_id
    created = _call(lambda: client(settings).payments.create(
        params={
            "amount": checkout.amount_minor,
            "currency": checkout.currency,
            "description": _description(checkout),
            "metadata": {"checkout_id": str(checkout.id)},
            "links": {"mandate": mandate_id},
        },
        headers={"Idempotency-Key": idempotency_key},
    ))
    checkout.provider = PROVIDER
    checkout.provider_ref = checkout.provider_ref or created.id
    return apply_payment_status(
        session, checkout=checkout, provider=PROVIDER, provider_ref=created.id, method=DIRECT_DEBIT,
        status="processing", amount_minor=checkout.amount_minor, currency=checkout.currency, settings=settings,
    )


def check_return(session: Session, settings: Settings, checkout: Checkout) -> bool:
    """Back from the authorisation page: if GoCardless says the billing request is fulfilled, record
    what it made (never "succeeded": that is the webhook's to say). True when something moved."""
    if not (checkout.provider == PROVIDER and checkout.provider_ref and checkout.provider_ref.startswith("BRQ")):
        return False
    request_id = checkout.provider_ref
    request = _call(lambda: client(settings).billing_requests.get(request_id))
    if request.status != "fulfilled":
        return False
    links = request.attributes.get("links") or {}
    _fulfilled(session, settings, checkout, links)
    return True


# --- webhooks ---


def verify_webhook(settings: Settings, payload: bytes, signature: str | None) -> list[ProviderEvent]:
    """`gocardless_pro.webhooks.parse` on the raw body: every event of the request, or SignatureError."""
    secret = str(settings.gocardless_webhook_secret or "")
    if not secret:
        # check_settings refuses to start like this; never verify against an empty secret.
        raise SettingsError("GOCARDLESS_WEBHOOK_SECRET is not set")
    if not signature:
        raise SignatureError("no Webhook-Signature header")
    if not signature.isascii():
        raise SignatureError("the Webhook-Signature header is not ASCII")
    try:
        events = gocardless_pro.webhooks.parse(payload, secret, signature)
    except gc_errors.InvalidSignatureError:
        raise SignatureError("the Webhook-Signature does not match the body") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise SignatureError(f"not a GoCardless webhook: {type(error).__name__}") from None
    verified = []
    for event in events:
        raw = event.attributes
        if not isinstance(raw, dict) or not raw.get("id") or not raw.get("resource_type") or not raw.get("action"):
            raise SignatureError("not a GoCardless webhook: an event has no id, resource_type or action")
        verified.append(ProviderEvent(id=str(raw["id"]), type=f"{raw['resource_type']}.{raw['action']}", payload=raw,
                                      body=json.dumps(raw, sort_keys=True)))
    return verified


@dataclass(frozen=True)
class PaymentFacts:
    """What GoCardless says of one payment, and which checkout of ours it pays."""

    checkout_id: int
    amount_minor: int  # the payment's own amount, never the checkout's
    currency: str
    made_by: str | None = None  # the billing request of ours that made it; None: a payment we created


@dataclass(frozen=True)
class MandateFacts:
    """The customer of ours whose billing request made a mandate."""

    customer_id: int
    billing_request: str | None = None


def calls_out(event: ProviderEvent) -> bool:
    """Whether applying `event` needs GoCardless's API (payments: their amount; mandates: whose they
    are; a fulfilled billing request whose event names nothing it made)."""
    resource, action = event.payload.get("resource_type"), event.payload.get("action")
    if resource == "payments":
        return action in PAYMENT_ACTIONS
    if resource == "mandates":
        return action in MANDATE_ACTIONS
    if resource == "billing_requests" and action == "fulfilled":
        links = event.payload.get("links") or {}
        return not (links.get("payment_request_payment") or links.get("mandate_request_mandate"))
    return False


def fetch(settings: Settings, session: Session, event: dict[str, Any]) -> Any:
    """What GoCardless must tell us before `event` is applied; asked outside any write transaction
    (`session` only reads). NotOurs when it is about nothing we created."""
    resource, action = event.get("resource_type"), event.get("action")
    links = event.get("links") or {}
    if resource == "payments" and action in PAYMENT_ACTIONS:
        return _payment_facts(settings, session, str(links.get("payment") or ""), event)
    if resource == "mandates" and action in MANDATE_ACTIONS:
        return _mandate_facts(settings, session, str(links.get("mandate") or ""), event)
    if resource == "billing_requests" and action == "fulfilled":
        checkout = _checkout_of_request(session, links.get("billing_request"))
        if links.get("payment_request_payment") or links.get("mandate_request_mandate"):
            return dict(links)
        request_id = checkout.provider_ref
        request = _call(lambda: client(settings).billing_requests.get(request_id))
        return {**(request.attributes.get("links") or {}), **links}
    return None


def _payment_facts(settings: Settings, session: Session, payment_id: str, event: dict[str, Any]) -> PaymentFacts:
    """A payment is ours when we recorded it (created on a mandate by `collect_checkout`, or made by
    our billing request and recorded when it was fulfilled), or when the billing request of the
    checkout its metadata names made exactly this payment. Its amount is GoCardless's."""
    if not payment_id:
        raise NotOurs(f"payments event {event.get('id')} names no payment")
    try:
        payment = _call(lambda: client(settings).payments.get(payment_id))
    except GoCardlessNotFound:
        raise NotOurs(f"payment {payment_id} is not on our GoCardless account") from None

    def facts(checkout_id: int, made_by: str | None = None) -> PaymentFacts:
        return PaymentFacts(checkout_id=checkout_id, amount_minor=int(payment.amount),
                            currency=str(payment.currency).upper(), made_by=made_by)

    known = session.scalar(select(Payment).where(Payment.provider == PROVIDER, Payment.provider_ref == payment_id))
    if known is not None and known.checkout_id is not None:
        return facts(known.checkout_id)
    checkout_id = str((payment.metadata or {}).get("checkout_id") or "")
    checkout = session.get(Checkout, int(checkout_id)) if checkout_id.isdigit() else None
    if checkout is None or checkout.provider != PROVIDER or checkout.method not in (INSTANT, DIRECT_DEBIT) \
            or not checkout.provider_ref:
        raise NotOurs(f"payment {payment_id} is none of ours (metadata.checkout_id={checkout_id!r})")
    if checkout.provider_ref.startswith("BRQ"):
        request_id = checkout.provider_ref
        request = _call(lambda: client(settings).billing_requests.get(request_id))
        if (request.attributes.get("links") or {}).get("payment_request_payment") == payment_id:
            return facts(checkout.id, request_id)
    customer = session.get(Customer, checkout.customer_id)
    mandate = (payment.attributes.get("links") or {}).get("mandate")
    if customer is not None and mandate and mandate == customer.gocardless_mandate_id and checkout.method == DIRECT_DEBIT:
        # Made on our mandate for this checkout by a collection whose transaction has not committed
        # yet (it records the payment): applied on a retry once it has.
        raise GoCardlessEventError(f"payment {payment_id} of checkout {checkout.id} is not recorded yet")
    raise NotOurs(f"payment {payment_id} was not made by checkout {checkout.id}'s billing request")


def _mandate_facts(settings: Settings, session: Session, mandate_id: str, event: dict[str, Any]) -> MandateFacts:
    """A mandate is ours when we recorded it for a customer (from our billing request), or when a
    billing request of ours for the customer its metadata names made exactly this mandate."""
    if not mandate_id:
        raise NotOurs(f"mandates event {event.get('id')} names no mandate")
    customer = session.scalar(select(Customer).where(Customer.gocardless_mandate_id == mandate_id))
    if customer is not None:
        return MandateFacts(customer_id=customer.id)
    try:
        mandate = _call(lambda: client(settings).mandates.get(mandate_id))
    except GoCardlessNotFound:
        raise NotOurs(f"mandate {mandate_id} is not on our GoCardless account") from None
    customer_id = str((mandate.metadata or {}).get("customer_id") or "")
    requests = list(session.scalars(
        select(Checkout.provider_ref)
        .where(Checkout.customer_id == int(customer_id), Checkout.provider == PROVIDER,
               Checkout.method == DIRECT_DEBIT, Checkout.provider_ref.like("BRQ%"))
        .order_by(Checkout.id.desc())
        .limit(REQUESTS_ASKED)
    )) if customer_id.isdigit() else []
    for request_id in requests:
        request = _call(lambda: client(settings).billing_requests.get(request_id))
        if (request.attributes.get("links") or {}).get("mandate_request_mandate") == mandate_id:
            return MandateFacts(customer_id=int(customer_id), billing_request=request_id)
    raise NotOurs(f"mandate {mandate_id} was made by no billing request of ours (metadata.customer_id={customer_id!r})")


def apply_event(session: Session, event: dict[str, Any], settings: Settings, fetched: Any) -> str:
    """Apply one verified GoCardless event (its raw JSON) in the caller's transaction, with what
    `fetch` got for it; what was done. NotOurs when it names nothing we created."""
    from payments.settlement import apply_update

    resource, action = event.get("resource_type"), event.get("action")
    links = event.get("links") or {}
    occurred = _parse_time(event.get("created_at"))
    if resource == "billing_requests" and action == "fulfilled":
        checkout = _checkout_of_request(session, links.get("billing_request"))
        _fulfilled(session, settings, checkout, fetched if isinstance(fetched, dict) else links)
        return f"{links.get('billing_request')} fulfilled"
    if resource == "payments" and action in PAYMENT_ACTIONS:
        if not isinstance(fetched, PaymentFacts):
            raise GoCardlessEventError(f"payments event {event.get('id')} was applied without asking GoCardless")
        payment_id = str(links.get("payment"))
        paid = session.get(Checkout, fetched.checkout_id)
        if paid is None:
            raise NotOurs(f"payment {payment_id} names no checkout of ours ({fetched.checkout_id})")
        status = PAYMENT_ACTIONS[action]
        details = event.get("details") or {}
        if action == "failed" and details.get("will_attempt_retry"):
            # GoCardless collects it again by itself: an attempt that failed, not a failed payment
            # (a final "failed" would shut out the "confirmed" of the retry; see payments.settlement).
            status = "pending"
        reason = None
        if status not in ("processing", "succeeded"):
            reason = details.get("description") or details.get("cause") or action
        apply_update(session, PaymentUpdate(
            checkout_id=paid.id, provider=PROVIDER, provider_ref=payment_id, method=payment_method(paid),
            status=status, amount_minor=fetched.amount_minor, currency=fetched.currency, reason=reason,
            occurred_at=occurred, made_by=fetched.made_by,
        ), settings)
        return f"{payment_id} {action}"
    if resource == "mandates" and action in MANDATE_ACTIONS:
        if not isinstance(fetched, MandateFacts):
            raise GoCardlessEventError(f"mandates event {event.get('id')} was applied without asking GoCardless")
        mandate_id = str(links.get("mandate"))
        customer = session.get(Customer, fetched.customer_id)
        if customer is None:
            raise NotOurs(f"mandate {mandate_id} names no customer of ours ({fetched.customer_id})")
        moved = record_mandate(session, customer, mandate_id, MANDATE_ACTIONS[action], scheme=None,
                               reason=(event.get("details") or {}).get("description"))
        return f"{mandate_id} {action}" + ("" if moved else ": no change")
    return f"{resource}.{action}: ignored"


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _fulfilled(session: Session, settings: Settings, checkout: Checkout, links: dict[str, Any]) -> None:
    """The debtor authorised the checkout's billing request: the payment it made is processing, the
    mandate it made is the customer's; a mandate alone leaves the checkout to the worker's collection.
    `links` are the billing request's, as GoCardless reported them (no call here)."""
    from payments.settlement import apply_update

    payment_id = links.get("payment_request_payment")
    mandate_id = links.get("mandate_request_mandate")
    customer = session.get(Customer, checkout.customer_id)
    assert customer is not None
    if links.get("customer") and not customer.gocardless_customer_id:
        customer.gocardless_customer_id = str(links["customer"])
    if mandate_id:
        record_mandate(session, customer, str(mandate_id), "pending_submission", scheme=SCHEMES.get(checkout.currency))
    if payment_id:
        # Our payment request asked for the checkout's amount: the payment it made is for that.
        apply_update(session, PaymentUpdate(
            checkout_id=checkout.id, provider=PROVIDER, provider_ref=str(payment_id), method=payment_method(checkout),
            status="processing", amount_minor=checkout.amount_minor, currency=checkout.currency,
            made_by=checkout.provider_ref,
        ), settings)
    elif customer.gocardless_mandate_id == str(mandate_id) and customer.gocardless_mandate_status in MANDATE_ENDED:
        checkout.status = "failed"  # the mandate ended before this (late) event: nothing will be debited
    elif checkout.status == "open":
        checkout.status = "processing"  # the worker debits it once the mandate can take payments
        _audit(session, checkout.customer_id, "checkout.mandate_set_up", "checkout", checkout.id,
               {"mandate": mandate_id})


def record_mandate(session: Session, customer: Customer, mandate_id: str, status: str, *,
                   scheme: str | None, reason: str | None = None) -> bool:
    """Move the customer's mandate forward to `status`; True when something changed.

    A new mandate replaces one that ended (or none); an event about an older mandate than the
    customer's current one changes nothing.
    """
    current = customer.gocardless_mandate_id
    if current and current != mandate_id:
        if customer.gocardless_mandate_status not in MANDATE_ENDED:
            return False
        customer.gocardless_mandate_scheme = None
        customer.gocardless_mandate_status = None
    previous = customer.gocardless_mandate_status if current == mandate_id else None
    if previous is not None and MANDATE_RANK.get(status, 0) <= MANDATE_RANK.get(previous, 0):
        if scheme and not customer.gocardless_mandate_scheme:
            customer.gocardless_mandate_scheme = scheme
        return False
    customer.gocardless_mandate_id = mandate_id
    customer.gocardless_mandate_status = status
    if scheme:
        customer.gocardless_mandate_scheme = scheme
    _audit(session, customer.id, f"mandate.{status}", "customer", customer.id,
           {"mandate": mandate_id, "previous": previous, "reason": reason})
    if status in MANDATE_ENDED:
        _fail_waiting_checkouts(session, customer, reason or f"mandate {status}")
    return True


def _fail_waiting_checkouts(session: Session, customer: Customer, reason: str) -> None:
    """Checkouts waiting to be debited on a mandate that ended will never be: their invoices are open again
    to pay another way (they never stopped being open)."""
    for checkout in _waiting_checkouts(session, customer.id):
        checkout.status = "failed"
        _audit(session, customer.id, "checkout.mandate_ended", "checkout", checkout.id, {"reason": reason})


def _waiting_checkouts(session: Session, customer_id: int) -> list[Checkout]:
    """Direct-debit checkouts whose mandate was set up and that have no payment yet."""
    return list(session.scalars(
        select(Checkout)
        .where(
            Checkout.customer_id == customer_id,
            Checkout.method == DIRECT_DEBIT,
            Checkout.provider == PROVIDER,
            Checkout.status == "processing",
            ~exists().where(Payment.checkout_id == Checkout.id),
        )
        .order_by(Checkout.id)
        .with_for_update()
    ))


def _checkout_of_request(session: Session, request_id: Any) -> Checkout:
    if not request_id:
        raise NotOurs("the event names no billing request")
    checkout = session.scalar(
        select(Checkout).where(Checkout.provider == PROVIDER, Checkout.provider_ref == str(request_id))
    )
    if checkout is None:
        raise NotOurs(f"billing request {request_id} is no checkout of ours")
    return checkout


def _audit(session: Session, customer_id: int, action: str, entity_type: str, entity_id: int,
           after: dict[str, Any]) -> None:
    audit.record(session, actor_type="provider", actor=PROVIDER, action=action, entity_type=entity_type,
                 entity_id=entity_id, customer_id=customer_id, after=after)


# --- collecting on mandates (the worker's step) ---


def collect_due(settings: Settings, session_factory: sessionmaker[Session]) -> CollectionReport:
    """Debit the mandates that can take payments: checkouts waiting for theirs, and every open,
    undisputed invoice whose due date (company time) has come. One transaction per customer, the
    customer's row claimed with SKIP LOCKED so two workers never debit the same customer at once;
    the idempotency keys (`collect-<invoice>-<open amount>`) make a retry after a crash get the
    payment GoCardless already has."""
    from kernel.user_error import UserError
    from payments.checkout import create_checkout

    if not is_configured(settings):
        return CollectionReport()
    with session_factory() as session:
        candidates = list(session.scalars(
            select(Customer.id).where(Customer.gocardless_mandate_id.is_not(None),
                                      Customer.gocardless_mandate_status == "active").order_by(Customer.id)
        ))
    created = failed = 0
    for customer_id in candidates:
        try:
            with unit_of_work(session_factory) as session:
                customer = session.scalar(
                    select(Customer).where(Customer.id == customer_id, Customer.gocardless_mandate_status == "active")
                    .with_for_update(skip_locked=True)
                )
                currency = mandate_currency(customer) if customer is not None else None
                if customer is None or currency is None:
                    continue  # another worker has it, or the mandate ended meanwhile
                if DIRECT_DEBIT in (customer.company.disabled_methods or ()):
                    continue  # the company turned direct debit off: its mandates wait
                for checkout in _waiting_checkouts(session, customer.id):
                    collect_checkout(session, settings, checkout, customer, f"{checkout.idempotency_key}-collect")
                    created += 1
                today = clock.today(customer.company.timezone)
                for invoice in collectable_invoices(session, customer, currency):
                    if invoice.due_date > today:
                        break  # ordered by due date
                    try:
                        checkout = create_checkout(session, customer=customer, contact=None,
                                                   selection={invoice.id: None}, method=DIRECT_DEBIT, today=today)
                    except UserError as problem:
                        log.warning("invoice %s cannot be collected: %s", invoice.number, problem)
                        continue
                    collect_checkout(session, settings, checkout, customer,
                                     f"collect-{invoice.id}-{invoice.open_minor}")
                    created += 1
        except (GoCardlessUnavailable, SettingsError) as error:
            # Nothing of this customer's is half-recorded (rolled back); the next run tries again.
            log.warning("collecting on the mandate of customer %s failed: %s", customer_id, error)
            failed += 1
    return CollectionReport(created=created, failed=failed)
