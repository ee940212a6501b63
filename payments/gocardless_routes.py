"""GoCardless's two HTTP surfaces: the page the debtor comes back to from their bank, and the webhook."""

from __future__ import annotations

import logging
from functools import partial

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from payments import gocardless
from payments.checkout import customer_checkout
from payments.webhooks import apply_new, decode_headers, store_many
from portal.routes import Visit, debtor_page

log = logging.getLogger("encours.gocardless")


@debtor_page
def gocardless_return(request: Request, session: Session, visit: Visit) -> Response:
    """Back from the bank: ask GoCardless (server to server) whether the request was authorised, then
    show the checkout, "processing" until the webhook settles it. The browser's word is never taken."""
    settings = request.app.state.settings
    checkout = customer_checkout(session, visit.customer.id, request.path_params["checkout_id"])
    if checkout is None or checkout.method not in (gocardless.INSTANT, gocardless.DIRECT_DEBIT):
        raise HTTPException(404)  # another customer's checkout reads like one that does not exist
    if checkout.status in ("open", "processing") and gocardless.is_configured(settings):
        try:
            gocardless.check_return(session, settings, checkout)
        except gocardless.GoCardlessUnavailable as error:  # the webhook will tell
            log.warning("return from GoCardless for checkout %s: %s", checkout.id, error)
    return RedirectResponse(gocardless.status_path(checkout.id), status_code=303,
                            headers={"Cache-Control": "no-store"})


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
    outcomes = await run_in_threadpool(_intake, request, events)
    return JSONResponse({"received": len(events), "outcomes": outcomes})


def _intake(request: Request, events: list[gocardless.VerifiedEvent]) -> list[str]:
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
    Route("/portal/pay/{checkout_id:int}/gocardless/return", gocardless_return, methods=["GET"],
          name="payments:gocardless_return"),
    Route("/webhooks/gocardless", gocardless_webhook, methods=["POST"], name="payments:gocardless_webhook"),
]
