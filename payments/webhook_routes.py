"""The webhook endpoints the providers call: verify on the raw body, store raw once, apply."""

from __future__ import annotations

import logging
from functools import partial

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from payments import gocardless
from payments import stripe as stripe_provider
from payments.webhooks import apply_new, decode_headers, store_many, store_new

log = logging.getLogger("encours.webhooks")


async def stripe_webhook(request: Request) -> Response:
    """Verify on the raw body, store raw once, apply in its own transaction, answer 2xx."""
    settings = request.app.state.settings
    if not stripe_provider.StripeProvider().is_configured(settings):
        return PlainTextResponse("Stripe is not configured", status_code=404)
    payload = await request.body()
    try:
        event = stripe_provider.verify_webhook(settings, payload, request.headers.get("stripe-signature"))
    except stripe_provider.SignatureError as error:
        log.warning("stripe webhook refused: %s", error)
        return PlainTextResponse("invalid signature", status_code=400)
    outcome = await run_in_threadpool(_stripe_intake, request, event, payload)
    return JSONResponse({"received": True, "outcome": outcome})


def _stripe_intake(request: Request, event: stripe_provider.VerifiedEvent, payload: bytes) -> str:
    sessions = request.app.state.sessions
    settings = request.app.state.settings
    pk = store_new(sessions, stripe_provider.PROVIDER, event.id, event.type, payload.decode("utf-8"),
                   decode_headers(request.headers))
    if pk is None:
        return "duplicate"  # Stripe delivers at least once: the stored copy is (being) applied

    def apply(session: Session) -> None:
        stripe_provider.apply_event(session, event.payload, settings)  # the stored body, already parsed

    return "processed" if apply_new(sessions, pk, apply) else "kept for retry"


async def gocardless_webhook(request: Request) -> Response:
    """Verify the raw body, store every event of the request raw once, apply each in its own
    transaction, answer 2xx. A bad or missing signature: 498, nothing stored."""
    settings = request.app.state.settings
    if not gocardless.is_configured(settings):
        return PlainTextResponse("GoCardless is not configured", status_code=404)
    payload = await request.body()
    try:
        events = gocardless.verify_webhook(settings, payload, request.headers.get("webhook-signature"))
    except gocardless.SignatureError as error:
        log.warning("gocardless webhook refused: %s", error)
        return PlainTextResponse("invalid signature", status_code=498)
    outcomes = await run_in_threadpool(_gocardless_intake, request, events)
    return JSONResponse({"received": len(events), "outcomes": outcomes})


def _gocardless_intake(request: Request, events: list[gocardless.VerifiedEvent]) -> list[str]:
    sessions = request.app.state.sessions
    settings = request.app.state.settings
    # All the request's events are kept (or none): GoCardless resends the whole request otherwise.
    stored = store_many(sessions, gocardless.PROVIDER, [(event.id, event.type, event.body) for event in events],
                        decode_headers(request.headers))
    outcomes = []
    for event, pk in zip(events, stored):
        if pk is None:
            outcomes.append("duplicate")
            continue
        # Applied from the verified payload: the stored body is that same event, already parsed.
        apply = partial(gocardless.apply_event, event=event.payload, settings=settings)
        outcomes.append("processed" if apply_new(sessions, pk, apply) else "kept for retry")
    return outcomes


routes = [
    Route("/webhooks/stripe", stripe_webhook, methods=["POST"], name="payments:stripe_webhook"),
    Route("/webhooks/gocardless", gocardless_webhook, methods=["POST"], name="payments:gocardless_webhook"),
]
