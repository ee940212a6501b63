"""Every route of the mail package: the relay's bounce reports."""

from __future__ import annotations

import hmac

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kernel.db import unit_of_work
from mail import bounces


def _apply(request: Request, raw: bytes) -> bounces.BounceOutcome:
    with unit_of_work(request.app.state.sessions) as session:
        return bounces.record_bounces(session, raw)


async def bounce_report(request: Request) -> Response:
    """POST /webhooks/bounces: one DSN as received (the raw RFC 822 message), bearer-authenticated
    with ENCOURS_BOUNCE_TOKEN; off (404) without it."""
    token = request.app.state.settings.bounce_token
    if token is None:
        return JSONResponse({"error": "bounce reports are not enabled (ENCOURS_BOUNCE_TOKEN)"}, status_code=404)
    if not hmac.compare_digest(request.headers.get("authorization", "").encode(), f"Bearer {token}".encode()):
        return JSONResponse({"error": "a valid bearer token is required"}, status_code=401,
                            headers={"WWW-Authenticate": 'Bearer realm="bounces"'})
    raw = await request.body()
    try:
        outcome = await run_in_threadpool(_apply, request, raw)
    except bounces.NotADeliveryReport as error:
        return JSONResponse({"error": str(error)}, status_code=422)
    return JSONResponse({"bounced": outcome.bounced, "already": outcome.already, "ignored": outcome.ignored})


routes = [Route("/webhooks/bounces", bounce_report, methods=["POST"], name="mail:bounces")]
