"""Back-office: the disputes queue, one case, its resolution, and promises to pay.

Who sees what: an admin everything, a manager or a viewer its companies, a collector the
customers assigned to it. A viewer reads and never acts (403). Thin: `ledger.disputes` does
the work and the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin import auth
from admin.amounts import typed_amount
from admin.exports_service import DisputeFilters, dispute_query
from admin.access import Rejected, Staff, can_act, scoped, staff_get, staff_post
from admin.routes import render, t
from kernel.clock import clock
from ledger import disputes
from mail import notifications
from ledger import statement as statements
from kernel.user_error import UserError
from ledger.models import (
    Attachment,
    Company,
    Customer,
    Dispute,
    DisputeMessage,
    DisputeReason,
    Invoice,
    PromiseToPay,
    Role,
    User,
)
from ledger.money import Money
from kernel.web import Posted
from portal.disputes import attachment_response, case_context, storage

STATUSES = ("open", "accepted", "rejected", "closed", "all")


def visible_case(session: Session, user: User, case_id: int) -> Dispute:
    case = session.scalar(
        scoped(select(Dispute).join(Customer, Customer.id == Dispute.customer_id), user).where(Dispute.id == case_id)
    )
    if case is None:
        raise HTTPException(404)
    return case


def _page(request: Request, staff: Staff, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    return render(request, name, {"user": staff.user, "forbidden": False, **case_context(staff.language), **context},
                   staff.language, status_code=status_code)


# --- the queue ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    case: Dispute
    customer: Customer
    company: Company
    reason: DisputeReason | None
    collector: User | None
    amounts: list[Money]
    age_days: int


def _amounts(case: Dispute) -> list[Money]:
    totals: dict[str, int] = {}
    for invoice in case.invoices:
        totals[invoice.currency] = totals.get(invoice.currency, 0) + invoice.open_minor
    return [Money(minor, currency) for currency, minor in sorted(totals.items())]


@staff_get
def queue(request: Request, session: Session, staff: Staff) -> Response:
    params = request.query_params
    status = params.get("status", "open") if params.get("status", "open") in STATUSES else "open"
    company_code = params.get("company", "")
    reason_code = params.get("reason", "")
    sort = params.get("sort", "age") if params.get("sort") in ("age", "amount") else "age"
    filters = DisputeFilters(status, company_code, reason_code)
    query = dispute_query(staff.user, filters).limit(500)
    now = clock.now()
    collectors = {u.id: u for u in session.scalars(select(User).where(User.role == Role.collector.value))}
    rows = [
        QueueRow(case=case, customer=customer, company=company, reason=reason,
                 collector=collectors.get(case.assigned_to_id or customer.collector_id or -1),
                 amounts=_amounts(case), age_days=max(0, (now - case.opened_at).days))
        for case, customer, company, reason in session.execute(query).all()
    ]
    if sort == "amount":
        rows.sort(key=lambda r: -max((m.minor for m in r.amounts), default=0))
    companies = auth.visible_companies(session, staff.user)
    reasons = sorted({(r.code, r.label_fr if staff.language == "fr" else r.label_en) for r in session.scalars(
        select(DisputeReason).where(DisputeReason.company_id.in_([c.id for c in companies] or [-1])))})
    return _page(request, staff, "admin/disputes.html", {
        "rows": rows, "companies": companies, "reasons": reasons, "status": status, "company_code": company_code,
        "reason_code": reason_code, "sort": sort, "statuses": STATUSES,
        "export_query": urlencode([(k, v) for k, v in (("status", status), ("company", company_code),
                                                       ("reason", reason_code)) if v]),
    })


# --- one case -----------------------------------------------------------------------------------


def _case_page(request: Request, session: Session, staff: Staff, case: Dispute, *, error: str | None = None,
               form: dict[str, str] | None = None, status_code: int = 200) -> Response:
    customer = session.get(Customer, case.customer_id)
    assert customer is not None
    today = clock.today(customer.company.timezone)
    authors = {u.id: u for u in session.scalars(select(User).where(
        User.id.in_({m.author_id for m in case.messages if m.author_type == "user" and m.author_id})))}
    notice = {
        "reply": t(staff.language, "Reply sent; the customer was emailed a link."),
        "note": t(staff.language, "Internal note added."),
        "accepted": t(staff.language, "Dispute accepted."),
        "rejected": t(staff.language, "Dispute rejected."),
        "closed": t(staff.language, "Question closed."),
    }.get(request.query_params.get("done", ""))
    return _page(request, staff, "admin/dispute.html", {
        "case": case,
        "customer": customer,
        "reason": session.get(DisputeReason, case.reason_id) if case.reason_id else None,
        "authors": authors,
        "statement": statements.build_statement(session, customer, today),
        "credit_note": session.get(Invoice, case.credit_note_id) if case.credit_note_id else None,
        # A dispute of part of its one invoice: that part (the credit accepting it offers by default).
        "disputed_part": Money(case.disputed_minor, case.invoices[0].currency)
        if case.disputed_minor is not None and case.invoices else None,
        "can_act": can_act(staff.user),
        "error": error,
        "notice": notice,
        "form": form or {},
        "max_files": disputes.MAX_FILES,
        "max_mb": disputes.MAX_FILE_BYTES // (1024 * 1024),
    }, status_code=status_code)


@staff_get
def case_page(request: Request, session: Session, staff: Staff) -> Response:
    case = visible_case(session, staff.user, request.path_params["case_id"])
    return _case_page(request, session, staff, case)


def _fail(request: Request, session: Session, staff: Staff, case: Dispute, error: UserError | str,
          posted: Posted) -> Rejected:
    text = error.render(staff.language) if isinstance(error, UserError) else error
    form = {k: posted.text(k, 6000) for k in ("message", "note", "credit", "amount", "internal")}
    return Rejected(_case_page(request, session, staff, case, error=text, form=form, status_code=400))


def _done(case: Dispute, what: str) -> Response:
    return RedirectResponse(f"/admin/disputes/{case.id}?done={what}", status_code=303)


def _tell_debtor(request: Request, session: Session, case: Dispute) -> None:
    settings = request.app.state.settings
    notifications.notify_debtor(session, case, secret=str(settings.secret_key), base_url=settings.base_url,
                                templates=request.app.state.templates)


@staff_post
def reply(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    case = visible_case(session, staff.user, request.path_params["case_id"])
    internal = posted.text("internal") == "1"
    if case.status != "open" and not internal:
        raise _fail(request, session, staff, case, t(staff.language, "This case is closed."), posted)
    try:
        disputes.add_message(session, case, body=posted.text("message", disputes.MAX_MESSAGE_CHARS + 1),
                             storage=storage(request), user=staff.user, internal=internal, uploads=posted.uploads)
    except UserError as error:
        raise _fail(request, session, staff, case, error, posted)
    if not internal:
        _tell_debtor(request, session, case)
    return _done(case, "note" if internal else "reply")


@staff_post
def accept(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    case = visible_case(session, staff.user, request.path_params["case_id"])
    credit = posted.text("credit", 10)
    credit_minor: int | None = 0
    if credit == "full":
        credit_minor = None
    elif credit == "partial":
        amount = typed_amount(posted.text("amount", 40), case.invoices[0].currency if case.invoices else "EUR")
        if amount is None:
            raise _fail(request, session, staff, case,
                        t(staff.language, "Type the credit amount, for example 250.00."), posted)
        credit_minor = amount.minor
        if credit_minor <= 0:
            raise _fail(request, session, staff, case,
                        t(staff.language, "The credit must be more than zero and at most the open amount."), posted)
    try:
        disputes.accept(session, case, user=staff.user, note=posted.text("note", disputes.MAX_MESSAGE_CHARS + 1),
                        credit_minor=credit_minor)
    except UserError as error:
        raise _fail(request, session, staff, case, error, posted)
    _tell_debtor(request, session, case)
    return _done(case, "accepted")


@staff_post
def reject(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    case = visible_case(session, staff.user, request.path_params["case_id"])
    try:
        disputes.reject(session, case, user=staff.user, message=posted.text("note", disputes.MAX_MESSAGE_CHARS + 1))
    except UserError as error:
        raise _fail(request, session, staff, case, error, posted)
    _tell_debtor(request, session, case)
    return _done(case, "rejected")


@staff_post
def close(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    case = visible_case(session, staff.user, request.path_params["case_id"])
    try:
        disputes.close_question(session, case, user=staff.user)
    except UserError as error:
        raise _fail(request, session, staff, case, error, posted)
    return _done(case, "closed")


@staff_get
def case_file(request: Request, session: Session, staff: Staff) -> Response:
    case = visible_case(session, staff.user, request.path_params["case_id"])
    attachment = session.scalar(
        select(Attachment).join(DisputeMessage, Attachment.message_id == DisputeMessage.id)
        .where(Attachment.id == request.path_params["file_id"], DisputeMessage.dispute_id == case.id)
    )
    return attachment_response(request, attachment)


# --- promises -----------------------------------------------------------------------------------


@staff_get
def promises(request: Request, session: Session, staff: Staff) -> Response:
    # Only reads: the worker settles promises (kept, broken, and the emails that go with it).
    query = scoped(
        select(PromiseToPay, Customer, Company)
        .join(Customer, Customer.id == PromiseToPay.customer_id)
        .join(Company, Company.id == Customer.company_id),
        staff.user,
    )
    due_today, broken, upcoming = [], [], []
    for promise, customer, company in session.execute(query.order_by(PromiseToPay.promised_for,
                                                                     PromiseToPay.id).limit(1000)).all():
        today: date = clock.today(company.timezone)
        row = (promise, customer, company)
        if promise.status == "broken":
            broken.append(row)
        elif promise.status == "pending" and promise.promised_for <= today:
            due_today.append(row)
        elif promise.status == "pending":
            upcoming.append(row)
    return _page(request, staff, "admin/promises.html",
                 {"due_today": due_today, "broken": broken, "upcoming": upcoming})


routes = [
    Route("/disputes", queue, methods=["GET"], name="admin:disputes"),
    Route("/disputes/{case_id:int}", case_page, methods=["GET"], name="admin:dispute"),
    Route("/disputes/{case_id:int}/reply", reply, methods=["POST"], name="admin:dispute_reply"),
    Route("/disputes/{case_id:int}/accept", accept, methods=["POST"], name="admin:dispute_accept"),
    Route("/disputes/{case_id:int}/reject", reject, methods=["POST"], name="admin:dispute_reject"),
    Route("/disputes/{case_id:int}/close", close, methods=["POST"], name="admin:dispute_close"),
    Route("/disputes/{case_id:int}/files/{file_id:int}", case_file, methods=["GET"],
          name="admin:dispute_file"),
    Route("/promises", promises, methods=["GET"], name="admin:promises"),
]
