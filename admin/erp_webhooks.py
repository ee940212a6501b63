"""Back-office: the ERP's webhook endpoints and their delivery log (admin only). Thin:
`ledger.webhook_endpoints` does the work and the audit trail. A new endpoint's signing secret is
shown once, as `encours webhook add` prints it once (`admin.reveal`, as the ERP API keys): only the
new endpoint's id waits in the session, and the secret is given once
(`ledger.webhook_endpoints.reveal_secret_once`, which records to whom)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin.access import Rejected, Staff, staff_get, staff_post
from admin.customers import fragment, moment
from admin.customers_service import page_number, param_text
from admin.reveal import ShownOnce
from admin.routes import render
from kernel import i18n
from kernel.web import Posted
from ledger.events import PUBLIC_TYPES
from ledger.models import Company, WebhookEndpoint
from ledger.webhook_endpoints import (DELIVERY_STATES, EndpointError, add_endpoint, delivery_page, endpoints,
                                      remove_endpoint, reveal_secret_once, send_again)

BASE = "/admin/webhooks/endpoints"
# The endpoint whose secret the next page shows, once.
NEW_SECRET = ShownOnce("erp_webhook_reveal")


def _cursor(request: Request, name: str) -> int | None:
    """The pager's `after`/`before` delivery id; anything else reads as none."""
    raw = str(request.query_params.get(name, ""))
    return int(raw) if raw.isdigit() and len(raw) <= 18 else None


def _filters(request: Request) -> dict[str, Any]:
    params = request.query_params
    status = param_text(params, "status", 16)
    endpoint = param_text(params, "endpoint", 18)
    return {"status": status if status in DELIVERY_STATES else "",
            "endpoint": int(endpoint) if endpoint.isdigit() else None, "page": page_number(params)}


def _query(filters: dict[str, Any], **changes: Any) -> str:
    """The log's address with these filters (and the pager's cursor when one is given)."""
    pairs = [(k, str(filters[k])) for k in ("status", "endpoint") if filters[k]]
    page = changes.get("page", 1)
    if page > 1:
        pairs.append(("page", str(page)))
        for cursor in ("after", "before"):
            if changes.get(cursor) is not None:
                pairs.append((cursor, str(changes[cursor])))
    return urlencode(pairs)


def _page(request: Request, session: Session, staff: Staff, *, status_code: int = 200, error: str | None = None,
          form: dict[str, Any] | None = None, created: tuple[WebhookEndpoint, str] | None = None) -> Response:
    companies = list(session.scalars(select(Company).order_by(Company.name, Company.id)))
    filters = _filters(request)
    notice = {
        "removed": i18n.gettext(staff.language, "Endpoint removed: nothing more is sent to it."),
        "resent": i18n.gettext(staff.language, "The delivery is queued: the worker sends it again shortly."),
    }.get(request.query_params.get("done", ""))
    page = delivery_page(session, endpoint_id=filters["endpoint"], status=filters["status"] or None,
                         page=filters["page"], after=_cursor(request, "after"), before=_cursor(request, "before"))
    return request.app.state.templates.response(request, "admin/erp_webhooks.html", {
        "user": staff.user, "endpoints": endpoints(session), "companies": companies, "event_types": PUBLIC_TYPES,
        "deliveries": page, "filters": filters, "query": lambda **c: _query(filters, **c),
        "error": error, "notice": notice, "created": created, "moment": moment(staff.language, "UTC"),
        "form": form or {"company": companies[0].code if len(companies) == 1 else "", "url": "", "events": ["*"]},
    }, staff.language, status_code=status_code,
        block=fragment(request, "deliveries") if request.method == "GET" else None)


@staff_get(admin_only=True)
def show(request: Request, session: Session, staff: Staff) -> Response:
    created = None
    reveal = NEW_SECRET.take(request)
    if reveal is not None:
        created = reveal_secret_once(session, reveal, shown_to=staff.user.email)
    return _page(request, session, staff, created=created)


@staff_post(admin_only=True)
def add(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    form = {"company": posted.text("company", 32), "url": posted.text("url", 2000),
            "events": [v[:64] for v in posted.form.getlist("events") if isinstance(v, str)][:50]}
    try:
        endpoint, _ = add_endpoint(session, str(form["company"]), str(form["url"]), list(form["events"]),
                                        allow_private=request.app.state.settings.webhook_allow_private,
                                        created_by=staff.user.email)
    except EndpointError as error:
        message = i18n.gettext(staff.language, error.message, **error.values)
        raise Rejected(_page(request, session, staff, status_code=400, form=form, error=message)) from None
    NEW_SECRET.hold(request, endpoint.id)
    return RedirectResponse(BASE, 303)


def _endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise HTTPException(404)
    return endpoint


@staff_get(admin_only=True)
def remove_confirm(request: Request, session: Session, staff: Staff) -> Response:
    return render(request, "admin/erp_webhook_remove.html",
                  {"user": staff.user, "endpoint": _endpoint(session, request.path_params["endpoint_id"])},
                  staff.language)


@staff_post(admin_only=True)
def remove(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    endpoint = _endpoint(session, request.path_params["endpoint_id"])
    if posted.text("confirm", 1) != "1":
        raise Rejected(render(request, "admin/erp_webhook_remove.html", {"user": staff.user, "endpoint": endpoint},
                              staff.language, status_code=400))
    remove_endpoint(session, endpoint.company.code, endpoint.id, removed_by=staff.user.email)
    return RedirectResponse(f"{BASE}?done=removed", 303)


@staff_post(admin_only=True)
def resend(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    if not send_again(session, request.path_params["delivery_id"], actor=staff.user.email):
        raise HTTPException(404)
    return RedirectResponse(f"{BASE}?done=resent", 303)


routes = [
    Route("/webhooks/endpoints", show, methods=["GET"], name="admin:erp_webhooks"),
    Route("/webhooks/endpoints", add, methods=["POST"], name="admin:erp_webhook_add"),
    Route("/webhooks/endpoints/{endpoint_id:int}/remove", remove_confirm, methods=["GET"],
          name="admin:erp_webhook_remove_confirm"),
    Route("/webhooks/endpoints/{endpoint_id:int}/remove", remove, methods=["POST"], name="admin:erp_webhook_remove"),
    Route("/webhooks/deliveries/{delivery_id:int}/resend", resend, methods=["POST"],
          name="admin:erp_webhook_resend"),
]
