"""Back-office: the customers list and one customer's page with its staff actions.

Thin: `admin.customers_service` reads and changes, `links` and `dunning.manual` send. Every
action is audited (so on the customer's timeline); a viewer gets 403 on each, a user who may
not see the customer 404.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin import bulk_service, contacts_service
from admin import customers_service as service
from admin.access import (
    Rejected,
    Staff,
    can_act,
    companies_of,
    forbidden,
    is_admin,
    moment,
    scoped,
    staff_get,
    staff_post,
    visible_customer,
)
from admin.routes import render, safe_next, t
from admin.scenarios import TONE_LABELS
from kernel.i18n import N_
from dunning import manual
from dunning.manual import queue_manual_reminder
from ledger import audit
from ledger.audit import action_label
from ledger import statement as statements
from ledger.models import Customer, OutboxMessage, Role, User
from links import tokens
from mail import renewal
from mail import retry as mail_retry
from kernel.user_error import UserError, UserErrors
from kernel.web import Posted
from portal import staff_view as staff_views
from portal.routes import PORTAL_SESSION_KEY
from portal.staff_view import STAFF_VIEW_SESSION_KEY
from payments import manual as manual_payments

EMAIL_KINDS = {
    "fresh_link": N_("Email with a link"),
    "dispute_answer": N_("Email: answer on a dispute"),
    "dispute_opened": N_("Email to staff: new dispute"),
    "dispute_replied": N_("Email to staff: customer replied"),
    "receipt": N_("Email: payment receipt"),
    "payment_failed": N_("Email: payment failed"),
}
NOTICES = {
    "note": N_("Note added."),
    "collector": N_("Collector saved."),
    "paused": N_("Reminders paused for this customer."),
    "resumed": N_("Reminders resumed for this customer."),
    "link": N_("A fresh link was queued to %(email)s."),
    "revoked": N_("Every link of this customer was revoked."),
    "reminder": N_("A reminder was queued to %(email)s."),
    "retried": N_("The message goes out again with the next delivery."),
    "payment": N_("Payment recorded."),
    "contact_added": N_("Contact added."),
    "contact_saved": N_("Contact saved."),
    "contact_removed": N_("Contact removed: it receives nothing any more and its links no longer open."),
    "task_done": N_("Task marked done."),
}
MANUAL_METHOD_LABELS = {
    "cheque": N_("Cheque"),
    "bill_of_exchange": N_("Bill of exchange (LCR)"),
    "cash": N_("Cash"),
    "set_off": N_("Set-off (compensation)"),
    "bank_transfer": N_("Bank transfer seen elsewhere"),
}


def fragment(request: Request, block: str) -> str | None:
    """The block htmx swaps in; None (the whole page) when htmx restores a page from history."""
    return None if request.headers.get("HX-History-Restore-Request") == "true" else block


def email_label(language: str, kind: str) -> str:
    return t(language, EMAIL_KINDS[kind]) if kind in EMAIL_KINDS else kind


BULK_NOTICES = {
    "assign": N_("Collector saved for %(count)s customer(s)."),
    "pause": N_("Reminders paused for %(count)s customer(s)."),
    "resume": N_("Reminders resumed for %(count)s customer(s)."),
    "send_links": N_("%(emails)s link email(s) queued for %(count)s customer(s)."),
}


def _list_notice(request: Request, language: str) -> str | None:
    params = request.query_params
    done = params.get("done", "")
    number = lambda name: int(params[name]) if params.get(name, "").isdigit() and len(params[name]) < 9 else 0  # noqa: E731
    if done in BULK_NOTICES:
        return t(language, BULK_NOTICES[done], count=number("n"), emails=number("emails"))
    if done == "view_saved":
        return t(language, N_("View saved."))
    if done == "view_deleted":
        return t(language, N_("View deleted."))
    return None


@staff_get
def customers(request: Request, session: Session, staff: Staff) -> Response:
    filters = service.CustomerFilters.from_params(request.query_params)
    page = service.list_customers(session, filters, lambda query: scoped(query, staff.user))
    companies = companies_of(session, staff.user)
    company_ids = None if is_admin(staff.user) else [c.id for c in companies]
    collectors = [] if staff.user.role == Role.collector.value else service.collectors_of(session, company_ids)
    skipped = request.query_params.get("skipped", "")[:2000]
    context: dict[str, Any] = {
        "user": staff.user,
        "filters": filters,
        "page": page,
        "companies": companies,
        "segments": service.segments(session, company_ids),
        "collectors": collectors,
        "sorts": service.SORTS,
        "views": bulk_service.views_for(session, staff.user),
        "notice": _list_notice(request, staff.language),
        "skipped": skipped,
        "can_act": can_act(staff.user),
        "bulk_actions": [(code, t(staff.language, label)) for code, label in bulk_service.ACTION_LABELS.items()
                         if code != "assign" or collectors],
    }
    return request.app.state.templates.response(request, "admin/customers.html", context, staff.language,
                                                block=fragment(request, "results"))


def _customer_page(request: Request, session: Session, staff: Staff, customer: Customer, *,
                   error: str | None = None, form: dict[str, str] | None = None, status_code: int = 200) -> Response:
    today = service.today_for(customer)
    done = request.query_params.get("done", "")
    contact = customer.primary_contact
    sent_to = request.query_params.get("to", "")[:254] or (contact.email if contact else "")
    notice = t(staff.language, NOTICES[done], email=sent_to) if done in NOTICES else None
    collector = staff.user.role != Role.collector.value
    language = staff.language
    payable = manual_payments.payable_invoices(session, customer)
    currencies = sorted({customer.company.base_currency, *(invoice.currency for invoice in payable)},
                        key=lambda code: (code != customer.company.base_currency, code))
    return render(request, "admin/customer.html", {
        "user": staff.user,
        "customer": customer,
        "company": customer.company,
        "statement": statements.build_statement(session, customer, today),
        "timeline": service.timeline(session, customer),
        "collector": session.get(User, customer.collector_id) if customer.collector_id else None,
        "collectors": service.collectors_of(session, [customer.company_id]) if collector else [],
        "can_act": can_act(staff.user),
        "can_assign": can_act(staff.user) and collector,
        "can_view_as": staff_views.may_view_as(staff.user, customer) and contact is not None,
        "error": error,
        "notice": notice,
        "form": form or {},
        "max_note": service.MAX_NOTE_CHARS,
        "action_label": lambda action: action_label(language, action),
        "email_label": lambda kind: email_label(language, kind),
        "moment": moment(language, customer.company.timezone),
        "can_record_payment": manual_payments.may_act(staff.user, customer),
        "payable": payable,
        "payment_currencies": currencies,
        "manual_methods": [(code, t(language, MANUAL_METHOD_LABELS[code])) for code in manual_payments.METHODS],
        "payment_key": (form or {}).get("key") or manual_payments.new_key(),
        "today": today,
        "role_labels": {code: t(language, label) for code, label in contacts_service.ROLE_LABELS.items()},
        "tasks": service.open_tasks(session, customer),
    }, staff.language, status_code=status_code)


@staff_get
def customer_page(request: Request, session: Session, staff: Staff) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    return _customer_page(request, session, staff, customer)


def back_to_customer(customer: Customer, what: str, to: str | None = None) -> Response:
    extra = f"&{urlencode({'to': to})}" if to else ""
    return RedirectResponse(f"/admin/customers/{customer.id}?done={what}{extra}#actions", status_code=303)


def refused_on_customer_page(request: Request, session: Session, staff: Staff, customer: Customer,
                             error: UserError | UserErrors, posted: Posted) -> Rejected:
    session.rollback()
    customer = visible_customer(session, staff.user, customer.id)
    form = {key: value for key, value in posted.form.items() if isinstance(value, str) and key != "csrf_token"}
    form["note"] = posted.text("note", service.MAX_NOTE_CHARS + 1)
    return Rejected(_customer_page(request, session, staff, customer, error=error.render(staff.language),
                                   form=form, status_code=400))


@staff_post
def add_note(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    raw_day = posted.text("next_action_on", 20).strip()
    try:
        try:
            next_action_on = date.fromisoformat(raw_day) if raw_day else None
        except ValueError:
            raise UserError(N_("The next action date %(value)s is not a date."),
                            value=raw_day) from None
        service.add_note(session, customer, staff.user, posted.text("note", service.MAX_NOTE_CHARS + 1),
                         kind="call" if posted.text("call", 2) == "1" else "note", next_action_on=next_action_on)
    except UserError as error:
        raise refused_on_customer_page(request, session, staff, customer, error, posted)
    return back_to_customer(customer, "note")


@staff_post
def task_done(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    """A note's next action is done: it leaves "My day"."""
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    try:
        service.mark_task_done(session, customer, staff.user, request.path_params["note_id"])
    except UserError as error:
        raise refused_on_customer_page(request, session, staff, customer, error, posted)
    back = posted.text("next", 500)
    if back:
        return RedirectResponse(safe_next(back), status_code=303)
    return back_to_customer(customer, "task_done")


@staff_post
def assign(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    if staff.user.role == Role.collector.value:
        return forbidden(request, staff)
    raw = posted.text("collector", 12).strip()
    if raw and not raw.isdigit():
        raise refused_on_customer_page(request, session, staff, customer,
                      UserError(N_("Choose a collector of this company.")), posted)
    try:
        service.assign_collector(session, customer, staff.user, int(raw) if raw else None)
    except UserError as error:
        raise refused_on_customer_page(request, session, staff, customer, error, posted)
    return back_to_customer(customer, "collector")


@staff_post
def pause(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    paused = posted.text("paused", 2) == "1"
    service.set_paused(session, customer, staff.user, paused)
    return back_to_customer(customer, "paused" if paused else "resumed")


@staff_post
def send_link(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    chosen = posted.text("contact", 12)
    if chosen:
        contact = next((c for c in customer.contacts if str(c.id) == chosen), None)
        if contact is None:
            raise refused_on_customer_page(request, session, staff, customer,
                                           UserError(N_("Choose a contact of this customer.")), posted)
    else:
        contact = customer.primary_contact
    if contact is None:
        raise refused_on_customer_page(request, session, staff, customer,
                      UserError(N_("This customer has no contact to write to.")), posted)
    settings = request.app.state.settings
    message = renewal.queue_link_email(session, contact, secret=str(settings.secret_key), base_url=settings.base_url,
                                       templates=request.app.state.templates, by_staff=True)
    audit.record(session, actor_type="user", actor=staff.user.email, action="link.sent", entity_type="contact",
                 entity_id=contact.id, customer_id=customer.id, after={"to": contact.email, "outbox_id": message.id})
    return back_to_customer(customer, "link", to=contact.email)


def _revoke_page(request: Request, staff: Staff, customer: Customer, status_code: int = 200) -> Response:
    return render(request, "admin/customer_revoke.html", {"user": staff.user, "customer": customer},
                  staff.language, status_code=status_code)


@staff_get
def revoke_confirm(request: Request, session: Session, staff: Staff) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    if not can_act(staff.user):
        return forbidden(request, staff)
    return _revoke_page(request, staff, customer)


@staff_post
def revoke_links(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    if posted.text("confirm", 2) != "1":
        raise Rejected(_revoke_page(request, staff, customer, status_code=400))
    tokens.revoke_all(session, customer, actor=staff.user.email, actor_type="user")
    return back_to_customer(customer, "revoked")


def _step_id(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 12 else None


def _remind_page(request: Request, session: Session, staff: Staff, customer: Customer, step_id: int | None,
                 status_code: int = 200) -> Response:
    settings = request.app.state.settings
    preview = error = None
    try:
        preview = manual.prepare(session, customer, secret=str(settings.secret_key), base_url=settings.base_url,
                                 step_id=step_id)
    except UserError as problem:
        error = problem.render(staff.language)
    steps = preview.steps if preview is not None else []
    if preview is None:
        try:
            steps = manual._steps(session, customer)
        except UserError:
            steps = []
    return render(request, "admin/customer_remind.html", {
        "user": staff.user, "customer": customer, "preview": preview, "steps": steps, "error": error,
        "chosen": preview.message.step.id if preview is not None else step_id,
        "cautions": [t(staff.language, c.message, **c.values) for c in preview.warnings] if preview else [],
        "tone_label": lambda tone: t(staff.language, TONE_LABELS.get(tone, tone)),
    }, staff.language, status_code=status_code)


@staff_get
def remind_preview(request: Request, session: Session, staff: Staff) -> Response:
    """What "send a reminder now" would send: step (changeable), invoices, recipient, message, warnings."""
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    if not can_act(staff.user):
        return forbidden(request, staff)
    return _remind_page(request, session, staff, customer, _step_id(request.query_params.get("step", "")))


@staff_post
def view_as_customer(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    """The portal as this customer's primary contact sees it, read-only, for a manager or an admin;
    audited. A debtor session in this browser gives way to it."""
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    if not staff_views.may_view_as(staff.user, customer):
        return forbidden(request, staff)
    contact = customer.primary_contact
    if contact is None:
        raise refused_on_customer_page(request, session, staff, customer,
                      UserError(N_("This customer has no contact to write to.")), posted)
    audit.record(session, actor_type="user", actor=staff.user.email, action="portal.viewed_as_customer",
                 entity_type="customer", entity_id=customer.id, customer_id=customer.id,
                 after={"contact": contact.email})
    request.session.pop(PORTAL_SESSION_KEY, None)
    request.session[STAFF_VIEW_SESSION_KEY] = staff_views.session_data(staff.user, contact)
    return RedirectResponse("/portal", status_code=303, headers={"Cache-Control": "no-store"})


@staff_post
def remind(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    step_id = _step_id(posted.text("step", 12))
    if posted.text("confirm", 2) != "1":
        raise Rejected(_remind_page(request, session, staff, customer, step_id, status_code=400))
    settings = request.app.state.settings
    try:
        queue_manual_reminder(session, customer, actor=staff.user.email, secret=str(settings.secret_key),
                              base_url=settings.base_url, step_id=step_id)
    except UserError as error:
        raise refused_on_customer_page(request, session, staff, customer, error, posted)
    return back_to_customer(customer, "reminder")


@staff_post
def retry(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    """Send a failed message of this customer again (once its cause is fixed)."""
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    message_id = _step_id(posted.text("message", 12))
    message = session.get(OutboxMessage, message_id) if message_id is not None else None
    if message is None or message.customer_id != customer.id:
        raise refused_on_customer_page(request, session, staff, customer,
                                       UserError(N_("Choose a message of this customer.")), posted)
    done = mail_retry.retry_failed(session, [message.id], actor=staff.user.email)
    if not done.requeued:
        raise refused_on_customer_page(request, session, staff, customer,
                      UserError(N_("This message has not failed: it is not sent again.")), posted)
    return back_to_customer(customer, "retried")


@staff_post
def record_payment(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    try:
        form = manual_payments.ManualPaymentForm.from_form(posted.form.multi_items())
        assert form.amount is not None
        manual_payments.record_manual_payment(session, customer, form.amount, form.received_on, form.method,
                                              form.reference, form.allocations, staff.user, key=form.key)
    except (UserError, UserErrors) as error:
        raise refused_on_customer_page(request, session, staff, customer, error, posted)
    return back_to_customer(customer, "payment")


def _bulk_selection(posted: Posted) -> tuple[list[int] | None, service.CustomerFilters | None, str]:
    """The ticked ids, or the filters when every matching customer is chosen; and the list's query."""
    query = posted.text("filters", 2000)
    if posted.text("all", 2) == "1":
        return None, service.CustomerFilters.from_params(dict(parse_qsl(query))), query
    ids = [int(value) for value in posted.form.getlist("ids") if isinstance(value, str) and value.isdigit()
           and len(value) < 12]
    return ids, None, query


def _back_to_list(query: str, **extra: str) -> Response:
    normalized = bulk_service.normalized_query(query)
    pairs = urlencode(extra)
    target = "/admin/customers?" + "&".join(part for part in (normalized, pairs) if part)
    return RedirectResponse(target, status_code=303)


def _list_refusal(request: Request, staff: Staff, message: str, values: dict[str, object], query: str) -> Rejected:
    return Rejected(render(request, "admin/customers_bulk.html", {
        "user": staff.user, "error": t(staff.language, message, **values), "query": query, "count": 0,
    }, staff.language, status_code=400))


@staff_post
def bulk(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    """A bulk action: first a confirmation naming the action and how many customers it covers."""
    ids, filters, query = _bulk_selection(posted)
    action = posted.text("action", 16)
    raw_collector = posted.text("collector", 12).strip()
    collector_id = int(raw_collector) if raw_collector.isdigit() else None
    try:
        chosen = bulk_service.targets(session, lambda q: scoped(q, staff.user), ids, filters)
        bulk_service.check(session, staff.user, action, chosen, collector_id)
    except UserError as error:
        raise _list_refusal(request, staff, error.message, error.values, query)
    if posted.text("confirm", 2) != "1":
        collector = session.get(User, collector_id) if collector_id else None
        return render(request, "admin/customers_bulk.html", {
            "user": staff.user, "error": None, "query": query, "count": len(chosen), "action": action,
            "action_label": t(staff.language, bulk_service.ACTION_LABELS[action]), "collector": collector,
            "collector_id": raw_collector, "all": filters is not None, "ids": ids or [],
        }, staff.language)
    settings = request.app.state.settings
    templates = request.app.state.templates
    result = bulk_service.apply(
        session, staff.user, action, chosen, collector_id=collector_id,
        send_link=lambda contact: renewal.queue_link_email(session, contact, secret=str(settings.secret_key),
                                                           base_url=settings.base_url, templates=templates,
                                                           by_staff=True))
    extra = {"done": action, "n": str(result.customers)}
    if action == "send_links":
        extra["emails"] = str(result.emails)
        if result.without_contact:
            extra["skipped"] = ", ".join(result.without_contact[:50])
    return _back_to_list(query, **extra)


@staff_post
def save_view(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    query = posted.text("filters", 2000)
    try:
        bulk_service.save_view(session, staff.user, posted.text("name", bulk_service.MAX_VIEW_NAME * 2), query,
                               shared=posted.text("shared", 2) == "1")
    except UserError as error:
        raise _list_refusal(request, staff, error.message, error.values, query)
    return _back_to_list(query, done="view_saved")


@staff_post
def delete_view(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    try:
        bulk_service.delete_view(session, staff.user, request.path_params["view_id"])
    except UserError as error:
        raise _list_refusal(request, staff, error.message, error.values, "")
    return _back_to_list(posted.text("filters", 2000), done="view_deleted")


routes = [
    Route("/customers", customers, methods=["GET"], name="admin:customers"),
    Route("/customers/bulk", bulk, methods=["POST"], name="admin:customers_bulk"),
    Route("/customers/views", save_view, methods=["POST"], name="admin:customers_view_save"),
    Route("/customers/views/{view_id:int}/delete", delete_view, methods=["POST"],
          name="admin:customers_view_delete"),
    Route("/customers/{customer_id:int}/retry", retry, methods=["POST"], name="admin:customer_retry"),
    Route("/customers/{customer_id:int}", customer_page, methods=["GET"], name="admin:customer"),
    Route("/customers/{customer_id:int}/notes", add_note, methods=["POST"], name="admin:customer_note"),
    Route("/customers/{customer_id:int}/notes/{note_id:int}/done", task_done, methods=["POST"],
          name="admin:customer_task_done"),
    Route("/customers/{customer_id:int}/collector", assign, methods=["POST"], name="admin:customer_collector"),
    Route("/customers/{customer_id:int}/pause", pause, methods=["POST"], name="admin:customer_pause"),
    Route("/customers/{customer_id:int}/send-link", send_link, methods=["POST"], name="admin:customer_link"),
    Route("/customers/{customer_id:int}/revoke-links", revoke_confirm, methods=["GET"],
          name="admin:customer_revoke_confirm"),
    Route("/customers/{customer_id:int}/revoke-links", revoke_links, methods=["POST"],
          name="admin:customer_revoke"),
    Route("/customers/{customer_id:int}/remind", remind_preview, methods=["GET"],
          name="admin:customer_remind_preview"),
    Route("/customers/{customer_id:int}/remind", remind, methods=["POST"], name="admin:customer_remind"),
    Route("/customers/{customer_id:int}/view-as-customer", view_as_customer, methods=["POST"],
          name="admin:customer_view_as"),
    Route("/customers/{customer_id:int}/payments", record_payment, methods=["POST"],
          name="admin:customer_payment"),
]
