"""The card page the debtor pays on (Stripe.js), and where it comes back to."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kernel import i18n
from kernel.security import DEFAULT_CSP, csp_header, extend_csp
from ledger.money import Money
from payments import stripe as stripe_provider
from payments import failures
from payments.checkout import customer_checkout, new_attempt
from portal.routes import Visit, debtor_page

log = logging.getLogger("encours.stripe")

# Checkout statuses past the card step: the debtor goes to the status page instead. A
# "processing" checkout may still be a declined attempt (reported "pending"): Stripe's intent decides.
SETTLED = ("succeeded", "failed", "cancelled")
# PaymentIntent statuses after which the page has nothing left to confirm.
INTENT_DONE = ("processing", "succeeded", "requires_capture", "canceled")


def status_path(checkout_id: int) -> str:
    return f"/portal/pay/{checkout_id}"


def return_path(checkout_id: int) -> str:
    return f"/portal/pay/{checkout_id}/card/return"


is_sandbox = stripe_provider.is_sandbox


def _t(language: str, message: str) -> str:
    return i18n.gettext(language, message)


def unavailable(request: Request, visit: Visit) -> Response:
    title = _t(visit.language, "Card payment is unavailable")
    body = _t(visit.language, "The card payment service could not be reached. Please try again in a moment.")
    return request.app.state.templates.response(
        request, "portal/message.html", {"title": title, "body": body, "company": visit.company, "visit": visit},
        visit.language, status_code=503, headers={"Retry-After": "30"},
    )


def card_failure_messages(language: str) -> dict[str, str]:
    """Stripe.js's error and decline codes -> our sentence in the debtor's language, for the card
    page's script: it never shows Stripe's own (English) text."""
    messages = {code: _t(language, failures.message(ours)) for code, ours in failures.STRIPE_CODES.items()}
    messages[failures.GENERIC] = _t(language, failures.message(failures.GENERIC))
    return messages


@debtor_page
def card_page(request: Request, session: Session, visit: Visit) -> Response:
    settings = request.app.state.settings
    provider = stripe_provider.StripeProvider()
    checkout = customer_checkout(session, visit.customer.id, request.path_params["checkout_id"])
    if checkout is None or checkout.method != stripe_provider.METHOD:
        raise HTTPException(404)  # another customer's checkout reads like one that does not exist
    if not provider.is_configured(settings):
        raise HTTPException(404)
    if checkout.status in SETTLED:
        return RedirectResponse(status_path(checkout.id), status_code=303)
    try:
        if checkout.provider != stripe_provider.PROVIDER or not checkout.provider_ref:
            provider.start(session, checkout, settings, settings.base_url)
        intent = provider.intent(settings, checkout)
        if intent.status == "canceled" and checkout.status == "open":
            # The last attempt can no longer be confirmed (declined and cancelled, abandoned):
            # a retry gets a fresh intent under the key checkout-<id>-<attempt>.
            new_attempt(session, checkout)
            provider.start(session, checkout, settings, settings.base_url)
            intent = provider.intent(settings, checkout)
    except stripe_provider.StripeUnavailable as error:
        log.error("card page of checkout %s: %s", checkout.id, error)
        return unavailable(request, visit)
    if intent.status in INTENT_DONE:
        return RedirectResponse(return_path(checkout.id), status_code=303)
    csp = extend_csp(DEFAULT_CSP, stripe_provider.content_security_policy(settings))
    return request.app.state.templates.response(
        request,
        "portal/card.html",
        {
            "visit": visit,
            "company": visit.company,
            "checkout": checkout,
            "amount": Money(checkout.amount_minor, checkout.currency),
            "discount": Money(checkout.discount_minor, checkout.currency),
            "stripe_js_url": settings.stripe_js_url,
            "publishable_key": settings.stripe_publishable_key,
            "client_secret": intent.client_secret,
            "return_path": return_path(checkout.id),
            "status_path": status_path(checkout.id),
            "sandbox": is_sandbox(settings),
            "failure_messages": card_failure_messages(visit.language),
        },
        visit.language,
        headers={"Content-Security-Policy": csp_header(csp), "Cache-Control": "no-store"},
    )


@debtor_page
def card_return(request: Request, session: Session, visit: Visit) -> Response:
    """Where the card page goes once Stripe.js confirmed: ask Stripe (server to server, with the
    secret key) and show the checkout as processing until the webhook says succeeded. Only the
    webhook settles; the browser's word is never taken."""
    settings = request.app.state.settings
    checkout = customer_checkout(session, visit.customer.id, request.path_params["checkout_id"])
    if checkout is None or checkout.method != stripe_provider.METHOD:
        raise HTTPException(404)
    if checkout.status in ("open", "processing") and checkout.provider == stripe_provider.PROVIDER \
            and checkout.provider_ref:
        try:
            stripe_provider.mark_processing(session, settings, checkout)
        except stripe_provider.StripeUnavailable as error:  # the webhook will tell
            log.warning("return from the card page of checkout %s: %s", checkout.id, error)
    return RedirectResponse(status_path(checkout.id), status_code=303, headers={"Cache-Control": "no-store"})


routes = [
    Route("/pay/{checkout_id:int}/card", card_page, methods=["GET"], name="payments:stripe_card"),
    Route("/pay/{checkout_id:int}/card/return", card_return, methods=["GET"], name="payments:stripe_return"),
]
