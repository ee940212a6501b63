"""Error pages in the visitor's language."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from kernel import i18n
from kernel.i18n import N_


def _language(request: Request) -> str:
    chosen = request.session.get("lang") if "session" in request.scope else None
    return i18n.normalize(chosen) if chosen else i18n.negotiate(request.headers.get("accept-language"))


def _page(request: Request, status_code: int, title: str, body: str) -> Response:
    templates = getattr(request.app.state, "templates", None) if "app" in request.scope else None
    language = _language(request)
    if templates is None or "session" not in request.scope:
        return PlainTextResponse(i18n.gettext(language, title), status_code=status_code)
    page: Response = templates.response(
        request,
        "portal/message.html",
        {"title": i18n.gettext(language, title), "body": i18n.gettext(language, body), "company": None,
         "visit": None},
        language,
        status_code=status_code,
    )
    return page


def csrf_failure_response(request: Request) -> Response:
    return _page(
        request, 403, N_("This form has expired"),
        N_("For your security, forms are valid only for your current visit. Go back, reload the page and try again."),
    )


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _page(request, 404, N_("Page not found"), N_("This page does not exist, or is not yours to see."))
    if exc.status_code == 405:
        return _page(request, 405, N_("Not allowed"), N_("This address does not accept that request."))
    return _page(request, exc.status_code, N_("Something went wrong"), N_("Please try again in a moment."))


async def server_error(request: Request, exc: Exception) -> Response:
    return _page(request, 500, N_("Something went wrong"), N_("Please try again in a moment."))
