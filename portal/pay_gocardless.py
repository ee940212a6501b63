"""The page the debtor comes back to from their bank after a GoCardless flow."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from payments import gocardless
from payments.checkout import customer_checkout
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


routes = [
    Route("/pay/{checkout_id:int}/gocardless/return", gocardless_return, methods=["GET"],
          name="payments:gocardless_return"),
]
