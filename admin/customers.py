"""Back-office: the customers list and one customer's page with its staff actions.

Thin: `admin.customers_service` reads and changes, `links` and `dunning.manual` send. Every
action is audited (so on the customer's timeline); a viewer gets 403 on each, a user who may
not see the customer 404.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin import customers_service as service
from admin.access import (
    Rejected,
    Staff,
    can_act,
    companies_of,
    forbidden,
    is_admin,
    scoped,
    staff_get,
    staff_post,
    visible_customer,
)
from admin.routes import render, t
from kernel.i18n import N_, format_money
from dunning.manual import ManualReminderError, queue_manual_reminder
from ledger import audit
from ledger.audit import action_label
from ledger import statement as statements
from ledger.models import Customer, Role, User
from ledger.money import AmountError, Money, check_currency
from links import tokens
from mail import renewal
from kernel.web import Posted
from payments import manual

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
    "payment": N_("Payment recorded."),
}
MANUAL_METHOD_LABELS = {
    "cheque": N_("Cheque"),
    "bill_of_exchange": N_("Bill of exchange (LCR)"),
    "cash": N_("Cash"),
    "set_off": N_("Set-off (compensation)"),
    "bank_transfer": N_("Bank transfer seen elsewhere"),
}


def moment(language: str, timezone: str) -> Any:
    """Formats an aware datetime in the company's timezone, the reader's language."""
    zone = ZoneInfo(timezone)
    return lambda at: format_datetime(at, "short", tzinfo=zone, locale=language)


def fragment(request: Request, block: str) -> str | None:
    """The block htmx swaps in; None (the whole page) when htmx restores a page from history."""
    return None if request.headers.get("HX-History-Restore-Request") == "true" else block


def email_label(language: str, kind: str) -> str:
    return t(language, EMAIL_KINDS[kind]) if kind in EMAIL_KINDS else kind


@staff_get
def customers(request: Request, session: Session, staff: Staff) -> Response:
    filters = service.CustomerFilters.from_params(request.query_params)
    page = service.list_customers(session, filters, lambda query: scoped(query, staff.user))
    companies = companies_of(session, staff.user)
    company_ids = None if is_admin(staff.user) else [c.id for c in companies]
    context: dict[str, Any] = {
        "user": staff.user,
        "filters": filters,
        "page": page,
        "companies": companies,
        "segments": service.segments(session, company_ids),
        "collectors": [] if staff.user.role == Role.collector.value else service.collectors_of(session, company_ids),
        "sorts": service.SORTS,
    }
    return request.app.state.templates.response(request, "admin/customers.html", context, staff.language,
                                                block=fragment(request, "results"))


def _customer_page(request: Request, session: Session, staff: Staff, customer: Customer, *,
                   error: str | None = None, form: dict[str, str] | None = None, status_code: int = 200) -> Response:
    today = service.today_for(customer)
    done = request.query_params.get("done", "")
    contact = customer.primary_contact
    notice = t(staff.language, NOTICES[done], email=contact.email if contact else "") if done in NOTICES else None
    collector = staff.user.role != Role.collector.value
    language = staff.language
    payable = manual.payable_invoices(session, customer)
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
        "error": error,
        "notice": notice,
        "form": form or {},
        "max_note": service.MAX_NOTE_CHARS,
        "action_label": lambda action: action_label(language, action),
        "email_label": lambda kind: email_label(language, kind),
        "moment": moment(language, customer.company.timezone),
        "can_record_payment": manual.may_act(staff.user, customer),
        "payable": payable,
        "payment_currencies": currencies,
        "manual_methods": [(code, t(language, MANUAL_METHOD_LABELS[code])) for code in manual.METHODS],
        "payment_key": (form or {}).get("key") or manual.new_key(),
        "today": today,
    }, staff.language, status_code=status_code)


@staff_get
def customer_page(request: Request, session: Session, staff: Staff) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    return _customer_page(request, session, staff, customer)


def _done(customer: Customer, what: str) -> Response:
    return RedirectResponse(f"/admin/customers/{customer.id}?done={what}#actions", status_code=303)


def _refuse(request: Request, session: Session, staff: Staff, customer: Customer, message: str,
            values: dict[str, object], posted: Posted) -> Rejected:
    session.rollback()
    customer = visible_customer(session, staff.user, customer.id)
    form = {key: value for key, value in posted.form.items() if isinstance(value, str) and key != "csrf_token"}
    form["note"] = posted.text("note", service.MAX_NOTE_CHARS + 1)
    return Rejected(_customer_page(request, session, staff, customer, error=t(staff.language, message, **values),
                                   form=form, status_code=400))


@staff_post
def add_note(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    try:
        service.add_note(session, customer, staff.user, posted.text("note", service.MAX_NOTE_CHARS + 1))
    except service.CustomerActionError as error:
        raise _refuse(request, session, staff, customer, error.message, error.values, posted)
    return _done(customer, "note")


@staff_post
def assign(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    if staff.user.role == Role.collector.value:
        return forbidden(request, staff)
    raw = posted.text("collector", 12).strip()
    if raw and not raw.isdigit():
        raise _refuse(request, session, staff, customer, N_("Choose a collector of this company."), {}, posted)
    try:
        service.assign_collector(session, customer, staff.user, int(raw) if raw else None)
    except service.CustomerActionError as error:
        raise _refuse(request, session, staff, customer, error.message, error.values, posted)
    return _done(customer, "collector")


@staff_post
def pause(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    paused = posted.text("paused", 2) == "1"
    service.set_paused(session, customer, staff.user, paused)
    return _done(customer, "paused" if paused else "resumed")


@staff_post
def send_link(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    contact = customer.primary_contact
    if contact is None:
        raise _refuse(request, session, staff, customer, N_("This customer has no contact to write to."), {}, posted)
    settings = request.app.state.settings
    message = renewal.queue_link_email(session, contact, secret=str(settings.secret_key), base_url=settings.base_url,
                                       templates=request.app.state.templates, by_staff=True)
    audit.record(session, actor_type="user", actor=staff.user.email, action="link.sent", entity_type="contact",
                 entity_id=contact.id, customer_id=customer.id, after={"to": contact.email, "outbox_id": message.id})
    return _done(customer, "link")


@staff_post
def revoke_links(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    tokens.revoke_all(session, customer, actor=staff.user.email, actor_type="user")
    return _done(customer, "revoked")


@staff_post
def remind(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    settings = request.app.state.settings
    try:
        queue_manual_reminder(session, customer, actor=staff.user.email, secret=str(settings.secret_key),
                              base_url=settings.base_url)
    except ManualReminderError as error:
        raise _refuse(request, session, staff, customer, error.message, error.values, posted)
    return _done(customer, "reminder")


def _posted_payment(posted: Posted, customer: Customer) -> tuple[Money, date, list[tuple[int, Money]] | None]:
    """The amount, the day and the chosen amounts per invoice (None: oldest first) of the form;
    ManualPaymentError naming the field that is wrong."""
    try:
        currency = check_currency(posted.text("currency", 3))
    except ValueError:
        raise manual.ManualPaymentError(N_("Choose the currency of the payment.")) from None
    raw_amount = posted.text("amount", 40)
    try:
        amount = Money.parse(raw_amount, currency)
    except AmountError:
        raise manual.ManualPaymentError(N_("The amount received %(value)s is not an amount in %(currency)s."),
                                        value=raw_amount, currency=currency) from None
    raw_day = posted.text("received_on", 20).strip()
    try:
        received_on = date.fromisoformat(raw_day)
    except ValueError:
        raise manual.ManualPaymentError(N_("The date received %(value)s is not a date."), value=raw_day) from None
    chosen: list[tuple[int, Money]] = []
    for key, value in posted.form.multi_items():
        if not key.startswith("alloc-") or not isinstance(value, str) or not value.strip():
            continue
        invoice_id = key.removeprefix("alloc-")
        if not invoice_id.isdigit() or len(invoice_id) > 12:
            raise manual.ManualPaymentError(N_("An invoice chosen is not an open invoice of this customer."))
        try:
            chosen.append((int(invoice_id), Money.parse(value, currency)))
        except AmountError:
            raise manual.ManualPaymentError(N_("%(value)s is not an amount in %(currency)s."), value=value,
                                            currency=currency) from None
    return amount, received_on, (chosen or None)


@staff_post
def record_payment(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    try:
        amount, received_on, allocations = _posted_payment(posted, customer)
        manual.record_manual_payment(session, customer, amount, received_on, posted.text("method", 32),
                                     posted.text("reference", manual.MAX_REFERENCE * 2), allocations, staff.user,
                                     key=posted.text("key", 64) or None)
    except manual.ManualPaymentError as error:
        values = {key: format_money(value, staff.language) if isinstance(value, Money) else value
                  for key, value in error.values.items()}
        raise _refuse(request, session, staff, customer, error.message, values, posted)
    return _done(customer, "payment")


routes = [
    Route("/admin/customers", customers, methods=["GET"], name="admin:customers"),
    Route("/admin/customers/{customer_id:int}", customer_page, methods=["GET"], name="admin:customer"),
    Route("/admin/customers/{customer_id:int}/notes", add_note, methods=["POST"], name="admin:customer_note"),
    Route("/admin/customers/{customer_id:int}/collector", assign, methods=["POST"], name="admin:customer_collector"),
    Route("/admin/customers/{customer_id:int}/pause", pause, methods=["POST"], name="admin:customer_pause"),
    Route("/admin/customers/{customer_id:int}/send-link", send_link, methods=["POST"], name="admin:customer_link"),
    Route("/admin/customers/{customer_id:int}/revoke-links", revoke_links, methods=["POST"],
          name="admin:customer_revoke"),
    Route("/admin/customers/{customer_id:int}/remind", remind, methods=["POST"], name="admin:customer_remind"),
    Route("/admin/customers/{customer_id:int}/payments", record_payment, methods=["POST"],
          name="admin:customer_payment"),
]
