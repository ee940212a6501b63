"""Back-office: invoices and payments lists, one payment's page, the webhooks log and its replay.

Invoices and payments follow the customer's visibility (`scoped`). Provider events are not
any one customer's: admins, managers and viewers read the log, admins and managers replay;
a collector is answered 403.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin import book_service as service
from admin.access import (Rejected, Staff, companies_of, forbidden, is_admin, scoped, staff_get, staff_post,
                          staff_zone)
from admin.customers import fragment, moment
from admin.customers_service import collectors_of, segments
from admin.routes import render, t
from kernel.i18n import N_
from ledger.models import Company, Role, WebhookEvent
from ledger.money import Money
from payments import manual
from payments import replay as replays
from payments.webhooks import registered_handlers
from kernel.user_error import UserError
from kernel.web import Posted

WEBHOOK_STATES = ("all", "failed", "unprocessed", "processed", "not_ours")
PAYMENT_STATUS_LABELS = {
    "pending": N_("Pending"), "processing": N_("Processing"), "succeeded": N_("Succeeded"), "failed": N_("Failed"),
    "refunded": N_("Refunded"), "charged_back": N_("Charged back"), "cancelled": N_("Cancelled"),
}
METHOD_LABELS = {
    "card": N_("Card"), "instant_transfer": N_("Instant bank transfer"), "direct_debit": N_("Direct debit"),
    "bank_transfer": N_("Bank transfer"), "cheque": N_("Cheque"), "bill_of_exchange": N_("Bill of exchange (LCR)"),
    "cash": N_("Cash"), "set_off": N_("Set-off (compensation)"),
}
PROVIDER_LABELS = {
    "stripe": N_("Stripe (card)"), "gocardless": N_("GoCardless"), "manual": N_("Recorded by hand"),
    "bank": N_("Bank statement"), "bank_transfer": N_("Bank transfer"),
}
CHECKOUT_STATUS_LABELS = {
    "open": N_("Open, not paid yet"), "expired": N_("Expired"), "superseded": N_("Replaced by a newer one"),
    **PAYMENT_STATUS_LABELS,
}
REPLAY_OUTCOMES = {
    "processed": N_("Replayed: the event was applied and is now processed."),
    "reprocessed": N_("Replayed: the event was already processed; running it again changed nothing."),
    "failed": N_("Replayed, and it failed again: see the error below."),
    "no_handler": N_("No handler is registered for this provider: nothing was done."),
    "not_ours": N_("Replayed: the event is about nothing we created, so it changed nothing."),
}


def provider_labeller(language: str) -> Any:
    return lambda p: t(language, PROVIDER_LABELS[p]) if p in PROVIDER_LABELS else p


def _labels(language: str) -> dict[str, Any]:
    return {
        "payment_status": lambda s: t(language, PAYMENT_STATUS_LABELS[s]) if s in PAYMENT_STATUS_LABELS else s,
        "method_label": lambda m: t(language, METHOD_LABELS[m]) if m in METHOD_LABELS else m,
        "provider_label": provider_labeller(language),
        "checkout_status": lambda s: t(language, CHECKOUT_STATUS_LABELS[s]) if s in CHECKOUT_STATUS_LABELS else s,
        "money_of": Money,
    }


def _zoned(staff: Staff, session: Session, company_of: dict[int, int | None]) -> Any:
    """(row id, moment) -> the moment in the zone of the row's company (the staff's zone for a row
    of no company): a payment and the provider's events about it read the same day and hour."""
    zones = {company_id: zone for company_id, zone in session.execute(select(Company.id, Company.timezone))}
    fallback = staff_zone(session, staff.user)
    return lambda row_id, when: moment(staff.language, zones.get(company_of.get(row_id) or -1, fallback))(when)


def _event_company(session: Session, events: list[WebhookEvent]) -> dict[int, int | None]:
    """Each event's company (the first by id when it names several)."""
    return {event_id: min(companies) if companies else None
            for event_id, companies in service.event_companies(session, events).items()}


def _problems(staff: Staff, filters: service.ListFilters) -> list[str]:
    return [t(staff.language, message, **values) for message, values in filters.problems]


@staff_get
def invoices(request: Request, session: Session, staff: Staff) -> Response:
    filters = service.invoice_filters(request.query_params)
    page = service.list_invoices(session, filters, lambda q: scoped(q, staff.user))
    companies = companies_of(session, staff.user)
    company_ids = None if staff.user.role == Role.admin.value else [c.id for c in companies]
    context = {
        "user": staff.user, "filters": filters, "page": page, "companies": companies,
        "segments": segments(session, company_ids), "statuses": service.INVOICE_STATUSES,
        "collectors": [] if staff.user.role == Role.collector.value else collectors_of(session, company_ids),
        "problems": _problems(staff, filters),
    }
    return request.app.state.templates.response(request, "admin/invoices.html", context, staff.language,
                                                block=fragment(request, "results"))


@staff_get
def payments(request: Request, session: Session, staff: Staff) -> Response:
    providers = service.providers(session)
    filters = service.payment_filters(request.query_params, providers)
    page = service.list_payments(session, filters, lambda q: scoped(q, staff.user))
    context = {
        "user": staff.user, "filters": filters, "page": page, "companies": companies_of(session, staff.user),
        "providers": providers, "methods": service.METHODS, "statuses": service.PAYMENT_STATUSES,
        "problems": _problems(staff, filters),
        "at": _zoned(staff, session, {row.payment.id: row.company_id for row in page.rows}),
        **_labels(staff.language),
    }
    return request.app.state.templates.response(request, "admin/payments.html", context, staff.language,
                                                block=fragment(request, "results"))


def _payment_page(request: Request, session: Session, staff: Staff, payment: Any, *, notice: str | None = None,
                  error: str | None = None, status_code: int = 200) -> Response:
    story = service.payment_story(session, payment)
    return render(request, "admin/payment.html", {
        "user": staff.user, "story": story, "can_see_events": staff.user.role != Role.collector.value,
        "moment": moment(staff.language, story.customer.company.timezone), **_labels(staff.language),
        "can_cancel": (payment.provider == manual.PROVIDER and payment.status == "succeeded"
                       and manual.may_act(staff.user, story.customer)),
        "notice": notice, "error": error,
    }, staff.language, status_code=status_code)


@staff_get
def payment_page(request: Request, session: Session, staff: Staff) -> Response:
    payment = service.visible_payment(session, lambda q: scoped(q, staff.user), request.path_params["payment_id"])
    if payment is None:
        raise HTTPException(404)
    notice = t(staff.language, N_("The payment was cancelled: what it settled is open again.")) \
        if request.query_params.get("done") == "cancelled" else None
    return _payment_page(request, session, staff, payment, notice=notice)


@staff_post
def cancel_payment(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    """Take back a payment recorded by hand (payments.manual)."""
    payment = service.visible_payment(session, lambda q: scoped(q, staff.user), request.path_params["payment_id"])
    if payment is None:
        raise HTTPException(404)
    try:
        manual.reverse_manual_payment(session, payment, staff.user)
    except UserError as error:
        session.rollback()
        payment = service.visible_payment(session, lambda q: scoped(q, staff.user), payment.id)
        raise Rejected(_payment_page(request, session, staff, payment,
                                     error=error.render(staff.language), status_code=400))
    return RedirectResponse(f"/admin/payments/{payment.id}?done=cancelled", status_code=303)


# --- webhooks -------------------------------------------------------------------------------------


def _may_read_webhooks(staff: Staff) -> bool:
    return staff.user.role != Role.collector.value


def _event_scope(staff: Staff) -> set[int] | None:
    """The companies whose events `staff` may see (None: all of them, for an admin)."""
    return None if is_admin(staff.user) else {company.id for company in staff.user.companies}


def _visible_event(session: Session, staff: Staff, event_id: int) -> WebhookEvent:
    event = service.visible_webhook_event(session, _event_scope(staff), event_id)
    if event is None:
        raise HTTPException(404)
    return event


@staff_get
def webhooks(request: Request, session: Session, staff: Staff) -> Response:
    if not _may_read_webhooks(staff):
        return forbidden(request, staff)
    params = request.query_params
    state = params.get("state", "all") if params.get("state", "all") in WEBHOOK_STATES else "all"
    providers = list(session.scalars(select(WebhookEvent.provider).distinct().order_by(WebhookEvent.provider)))
    provider = params.get("provider", "") if params.get("provider", "") in providers else ""
    filters = service.ListFilters(values={"state": "" if state == "all" else state, "provider": provider},
                                  page=service.page_number(params))
    page, failed = service.list_webhook_events(session, state, provider, filters.page, _event_scope(staff))
    return request.app.state.templates.response(request, "admin/webhooks.html", {
        "user": staff.user, "page": page, "filters": filters, "state": state, "states": WEBHOOK_STATES,
        "providers": providers, "provider": provider, "failed_count": failed,
        "provider_label": provider_labeller(staff.language),
        "at": _zoned(staff, session, _event_company(session, page.rows)),
    }, staff.language, block=fragment(request, "results"))


def pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return body


def _webhook_page(request: Request, session: Session, staff: Staff, event: WebhookEvent,
                  outcome: replays.ReplayOutcome | None = None) -> Response:
    return render(request, "admin/webhook.html", {
        "user": staff.user, "event": event, "body": pretty(event.body),
        "headers": json.dumps(event.headers or {}, indent=2, ensure_ascii=False, sort_keys=True),
        "can_replay": staff.user.role in (Role.admin.value, Role.manager.value),
        "outcome": outcome, "outcome_text": t(staff.language, REPLAY_OUTCOMES[outcome.outcome]) if outcome else None,
        "provider_label": provider_labeller(staff.language),
        "moment": lambda when: _zoned(staff, session, _event_company(session, [event]))(event.id, when),
    }, staff.language)


@staff_get
def webhook_page(request: Request, session: Session, staff: Staff) -> Response:
    if not _may_read_webhooks(staff):
        return forbidden(request, staff)
    return _webhook_page(request, session, staff, _visible_event(session, staff, request.path_params["event_id"]))


@staff_post
def webhook_replay(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    if staff.user.role not in (Role.admin.value, Role.manager.value):
        return forbidden(request, staff)
    event_pk = _visible_event(session, staff, request.path_params["event_id"]).id
    actor = staff.user.email
    session.commit()  # the replay runs in transactions of its own
    outcome = replays.replay(request.app.state.sessions, event_pk, registered_handlers(request.app.state.settings), actor)
    session.expire_all()
    return _webhook_page(request, session, staff, session.get_one(WebhookEvent, event_pk), outcome)


routes = [
    Route("/invoices", invoices, methods=["GET"], name="admin:invoices"),
    Route("/payments", payments, methods=["GET"], name="admin:payments"),
    Route("/payments/{payment_id:int}", payment_page, methods=["GET"], name="admin:payment"),
    Route("/payments/{payment_id:int}/cancel", cancel_payment, methods=["POST"], name="admin:payment_cancel"),
    Route("/webhooks", webhooks, methods=["GET"], name="admin:webhooks"),
    Route("/webhooks/{event_id:int}", webhook_page, methods=["GET"], name="admin:webhook"),
    Route("/webhooks/{event_id:int}/replay", webhook_replay, methods=["POST"], name="admin:webhook_replay"),
]
