"""Every route of the debtor's portal: the magic link (`links`, at /p), and the statement, requests
and paying (`routes`, relative to PREFIX, where the application mounts them; `home` is PREFIX itself)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from portal import disputes, pay, pay_card, pay_gocardless, receipts
from portal import routes as statement


def _read_only_in_staff_view(route: BaseRoute) -> BaseRoute:
    """A route that takes POSTs refuses them while staff look as the customer: the view is read-only."""
    if not isinstance(route, Route) or "POST" not in (route.methods or set()):
        return route
    endpoint: Callable[[Request], Any] = route.endpoint

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        if statement.in_staff_view(request):
            return statement.session_required(request)
        if asyncio.iscoroutinefunction(endpoint):
            return await endpoint(request)
        return await run_in_threadpool(endpoint, request)

    return Route(route.path, guarded, methods=sorted(route.methods or ()), name=route.name)


PREFIX = "/portal"

links = [_read_only_in_staff_view(route) for route in statement.links]

# "/portal" itself, beside the mount (a Mount answers only below its path).
home = Route(PREFIX, statement.statement_page, methods=["GET"], name="portal:statement")

routes = [_read_only_in_staff_view(route) for route in
          (*statement.routes, *pay.routes, *pay_card.routes, *pay_gocardless.routes, *disputes.routes, *receipts.routes)]
