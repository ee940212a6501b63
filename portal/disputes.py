"""The debtor's disputes, questions and promises to pay. Thin: `ledger.disputes` does the work."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from kernel import i18n
from kernel.clock import clock
from kernel.db import unit_of_work
from kernel.forms import parse
from kernel.user_error import UserError, UserErrors
from kernel.web import Posted, Rejected, posted_ids, read_posted
from ledger import disputes
from mail import notifications
from ledger import statement as statements
from ledger.models import (
    Attachment,
    Dispute,
    DisputeMessage,
    DisputeReason,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    PromiseToPay,
)
from ledger.money import Money
from ledger.storage import FileStorage, ObjectMissing
from portal.routes import Visit, current_visit, debtor_page, session_required

# Generous: the service gives the clear message ("at most 5 files") before the parser refuses.

def reason_label(reason: DisputeReason | None, language: str) -> str:
    if reason is None:
        return ""
    return reason.label_fr if language == "fr" else reason.label_en


def storage(request: Request) -> FileStorage:
    return FileStorage(request.app.state.storage)


PostHandler = Callable[[Request, Session, Visit, Posted], Response]


def debtor_post(handler: PostHandler) -> Callable[[Request], Awaitable[Response]]:
    """Reads the (multipart) form, then runs `handler` in a unit of work for the signed-in debtor."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        posted = await read_posted(request)
        try:
            return await run_in_threadpool(_run, request, handler, posted)
        finally:
            await posted.form.close()

    return endpoint


def _run(request: Request, handler: PostHandler, posted: Posted) -> Response:
    with unit_of_work(request.app.state.sessions) as session:
        visit = current_visit(request, session)
        if visit is None:
            return session_required(request)
        return handler(request, session, visit, posted)


def rolled_back(handler: PostHandler) -> PostHandler:
    """On `Rejected`, roll the session back (nothing stored) and answer with its page."""

    @functools.wraps(handler)
    def wrapper(request: Request, session: Session, visit: Visit, posted: Posted) -> Response:
        try:
            return handler(request, session, visit, posted)
        except Rejected as rejected:
            session.rollback()
            return rejected.response

    return wrapper


CASE_STATUSES = {
    "open": i18n.N_("In progress"),
    "accepted": i18n.N_("Accepted"),
    "rejected": i18n.N_("Rejected"),
    "closed": i18n.N_("Closed"),
    "pending": i18n.N_("Pending"),
    "kept": i18n.N_("Kept"),
    "broken": i18n.N_("Broken"),
}


def case_context(language: str) -> dict[str, Any]:
    """Helpers the case and promise templates of both sides share."""
    return {
        "case_status": lambda status: i18n.gettext(language, CASE_STATUSES.get(status, status)),
        "amount_of": lambda promise: Money(promise.amount_minor, promise.currency),
        "reason_label": lambda reason: reason_label(reason, language),
    }


def _render(request: Request, visit: Visit, name: str, context: dict[str, Any], status_code: int = 200,
            block: str | None = None) -> Response:
    return request.app.state.templates.response(
        request, name, {"visit": visit, "company": visit.company, **case_context(visit.language), **context},
        visit.language, status_code=status_code, block=block,
    )


def _owned_case(session: Session, visit: Visit, case_id: int) -> Dispute:
    case = session.scalar(select(Dispute).where(Dispute.id == case_id, Dispute.customer_id == visit.customer.id))
    if case is None:
        raise HTTPException(404)
    return case


def _t(visit: Visit, message: str, **values: object) -> str:
    return i18n.gettext(visit.language, message, **values)


# --- list -------------------------------------------------------------------------------------


@debtor_page
def cases_page(request: Request, session: Session, visit: Visit) -> Response:
    cases = list(session.scalars(
        select(Dispute).where(Dispute.customer_id == visit.customer.id).order_by(Dispute.opened_at.desc(),
                                                                                 Dispute.id.desc())
    ))
    promises = list(session.scalars(
        select(PromiseToPay).where(PromiseToPay.customer_id == visit.customer.id)
        .order_by(PromiseToPay.created_at.desc(), PromiseToPay.id.desc())
    ))
    notice = {"dispute": _t(visit, "Your dispute was sent. We will answer here and by email."),
              "question": _t(visit, "Your question was sent. We will answer here and by email."),
              "promise": _t(visit, "Thank you: your promise to pay was recorded."),
              }.get(request.query_params.get("done", ""))
    return _render(request, visit, "portal/cases.html", {
        "cases": cases, "promises": promises, "notice": notice,
    })


# --- open a dispute or a question ---------------------------------------------------------------


def _choosable(session: Session, visit: Visit, kind: str, chosen: list[int]) -> list[Invoice]:
    """Invoices the debtor may pick: open ones (not already disputed, for a dispute), plus any
    of its own invoices it came from (a question may be about a paid invoice)."""
    open_invoices = [i for i in statements.open_items(session, visit.customer.id)
                     if i.kind == InvoiceKind.invoice.value
                     and not (kind == "dispute" and i.status == InvoiceStatus.disputed.value)]
    known = {i.id for i in open_invoices}
    extra = [i for i in (statements.customer_invoice(session, visit.customer.id, n) for n in chosen if n not in known)
             if i is not None and i.kind == InvoiceKind.invoice.value]
    return extra + open_invoices


def _disputed_minor(session: Session, visit: Visit, chosen: list[int], typed: str) -> int | None:
    """The disputed part the debtor typed, in the chosen invoice's currency; None: the whole invoice."""
    if not typed:
        return None
    if len(chosen) != 1:
        raise UserError(i18n.N_("Name a disputed amount for one invoice at a time.")).at(field="disputed_amount")
    invoice = statements.customer_invoice(session, visit.customer.id, chosen[0])
    if invoice is None:
        raise UserError(i18n.N_("One of the chosen invoices is not on your account.")).at(field="invoice")
    try:
        return Money.parse(typed, invoice.currency).minor
    except ValueError:
        raise UserError(i18n.N_("The disputed amount “%(text)s” is not an amount."), text=typed).at(
            field="disputed_amount") from None


def _kind(value: str) -> str:
    return "question" if value == "question" else "dispute"


def _dispute_form(request: Request, session: Session, visit: Visit, *, kind: str, chosen: list[int],
                  reason: str = "", message: str = "", error: str | None = None,
                  status_code: int = 200, disputed_amount: str = "") -> Response:
    return _render(request, visit, "portal/dispute_new.html", {
        "kind": kind,
        "invoices": _choosable(session, visit, kind, chosen),
        "chosen": set(chosen),
        "reasons": disputes.active_reasons(session, visit.company.id),
        "reason": reason,
        "message": message,
        "disputed_amount": disputed_amount,
        "error": error,
        "max_files": disputes.MAX_FILES,
        "max_mb": disputes.MAX_FILE_BYTES // (1024 * 1024),
        "max_chars": disputes.MAX_MESSAGE_CHARS,
    }, status_code=status_code)


@debtor_page
def dispute_form(request: Request, session: Session, visit: Visit) -> Response:
    kind = _kind(request.query_params.get("kind", ""))
    chosen = posted_ids(request.query_params.getlist("invoice"))
    return _dispute_form(request, session, visit, kind=kind, chosen=chosen)


@debtor_post
@rolled_back
def dispute_create(request: Request, session: Session, visit: Visit, posted: Posted) -> Response:
    kind = _kind(posted.text("kind"))
    chosen = posted.ids("invoice")
    reason = posted.text("reason", 40)
    message = posted.text("message", disputes.MAX_MESSAGE_CHARS + 1)
    typed = posted.text("disputed_amount", 200).strip() if kind == "dispute" else ""
    try:
        form = parse(disputes.CaseForm, {"kind": kind, "invoice_ids": chosen, "message": message,
                                         "reason_code": reason if kind == "dispute" else None})
        case = disputes.open_case(
            session, customer=visit.customer, contact=visit.contact, invoice_ids=form.invoice_ids,
            message=form.message, storage=storage(request), reason_code=form.reason_code, uploads=posted.uploads,
            kind=form.kind, disputed_minor=_disputed_minor(session, visit, chosen, typed),
        )
    except (UserError, UserErrors) as error:
        raise Rejected(_dispute_form(request, session, visit, kind=kind, chosen=chosen, reason=reason,
                                     message=message, error=error.render(visit.language), status_code=400,
                                     disputed_amount=typed))
    settings = request.app.state.settings
    notifications.notify_staff(session, case, event="opened", base_url=settings.base_url,
                               templates=request.app.state.templates)
    return RedirectResponse(f"/portal/requests/{case.id}?done={kind}", status_code=303)


# --- one case ------------------------------------------------------------------------------------


def _case_page(request: Request, session: Session, visit: Visit, case: Dispute, *, message: str = "",
               error: str | None = None, status_code: int = 200) -> Response:
    thread = [m for m in case.messages if not m.internal]
    notice = {"dispute": _t(visit, "Your dispute was sent. We will answer here and by email."),
              "question": _t(visit, "Your question was sent. We will answer here and by email."),
              "reply": _t(visit, "Your reply was sent."),
              }.get(request.query_params.get("done", ""))
    return _render(request, visit, "portal/dispute.html", {
        "case": case, "thread": thread, "message": message, "error": error, "notice": notice,
        "reason": session.get(DisputeReason, case.reason_id) if case.reason_id else None,
        "max_files": disputes.MAX_FILES,
        "max_mb": disputes.MAX_FILE_BYTES // (1024 * 1024),
        "max_chars": disputes.MAX_MESSAGE_CHARS,
    }, status_code=status_code)


@debtor_page
def case_page(request: Request, session: Session, visit: Visit) -> Response:
    case = _owned_case(session, visit, request.path_params["case_id"])
    return _case_page(request, session, visit, case)


@debtor_post
@rolled_back
def case_reply(request: Request, session: Session, visit: Visit, posted: Posted) -> Response:
    case = _owned_case(session, visit, request.path_params["case_id"])
    message = posted.text("message", disputes.MAX_MESSAGE_CHARS + 1)
    if case.status != "open":
        raise Rejected(_case_page(request, session, visit, case, message=message, status_code=400,
                                  error=_t(visit, "This case is closed. To raise something new, open a new request.")))
    try:
        disputes.add_message(session, case, body=message, storage=storage(request), contact=visit.contact,
                             uploads=posted.uploads)
    except UserError as error:
        raise Rejected(_case_page(request, session, visit, case, message=message,
                                  error=error.render(visit.language), status_code=400))
    settings = request.app.state.settings
    notifications.notify_staff(session, case, event="replied", base_url=settings.base_url,
                               templates=request.app.state.templates)
    return RedirectResponse(f"/portal/requests/{case.id}?done=reply", status_code=303)


def attachment_response(request: Request, attachment: Attachment | None) -> Response:
    """A stored file as a download, never rendered in place, under the type sniffed at upload;
    404 when the caller found none (not allowed) or the file is gone from storage."""
    if attachment is None:
        raise HTTPException(404)
    try:
        content = storage(request).stream(attachment.storage_key)
    except (ObjectMissing, ValueError):
        raise HTTPException(404)
    name = attachment.filename
    ascii_name = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_. ") else "_" for ch in name)[:120] or "file"
    return StreamingResponse(content, media_type=attachment.content_type, headers={
        "Content-Length": str(attachment.size),
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    })


@debtor_page
def case_file(request: Request, session: Session, visit: Visit) -> Response:
    attachment = session.scalar(
        select(Attachment)
        .join(DisputeMessage, Attachment.message_id == DisputeMessage.id)
        .join(Dispute, DisputeMessage.dispute_id == Dispute.id)
        .where(
            Attachment.id == request.path_params["file_id"],
            Dispute.id == request.path_params["case_id"],
            Dispute.customer_id == visit.customer.id,
            DisputeMessage.internal.is_(False),
        )
    )
    return attachment_response(request, attachment)


# --- promises to pay ----------------------------------------------------------------------------


def _promise_form(request: Request, session: Session, visit: Visit, *, chosen: list[int], promised: str = "",
                  error: str | None = None, status_code: int = 200, block: str | None = None) -> Response:
    today = clock.today(visit.company.timezone)
    pending = {i.id for p in disputes.pending_promises_for(
        session, [i.id for i in statements.open_items(session, visit.customer.id)]) for i in p.invoices}
    invoices = [i for i in statements.open_items(session, visit.customer.id)
                if i.kind == InvoiceKind.invoice.value and i.id not in pending]
    picked = [i for i in invoices if i.id in set(chosen)]
    totals: dict[str, int] = {}
    for invoice in picked:
        totals[invoice.currency] = totals.get(invoice.currency, 0) + invoice.open_minor
    return _render(request, visit, "portal/promise_new.html", {
        "invoices": invoices,
        "chosen": set(chosen),
        "totals": [Money(minor, currency) for currency, minor in sorted(totals.items())],
        "promised": promised,
        "earliest": today,
        "latest": today + timedelta(days=visit.company.promise_horizon_days),
        "horizon": visit.company.promise_horizon_days,
        "error": error,
    }, status_code=status_code, block=block)


@debtor_page
def promise_form(request: Request, session: Session, visit: Visit) -> Response:
    chosen = posted_ids(request.query_params.getlist("invoice"))
    return _promise_form(request, session, visit, chosen=chosen, promised=request.query_params.get("date", "")[:10],
                         block="total")


@debtor_post
@rolled_back
def promise_create(request: Request, session: Session, visit: Visit, posted: Posted) -> Response:
    chosen = posted.ids("invoice")
    promised = posted.text("date", 10)
    try:
        form = parse(disputes.PromiseForm, {"invoice_ids": chosen, "promised_for": promised})
        promise = disputes.make_promise(session, customer=visit.customer, contact=visit.contact,
                                        invoice_ids=form.invoice_ids, promised_for=form.promised_for)
    except (UserError, UserErrors) as error:
        raise Rejected(_promise_form(request, session, visit, chosen=chosen, promised=promised, status_code=400,
                                     error=error.render(visit.language)))
    settings = request.app.state.settings
    notifications.notify_promise_made(session, promise, secret=str(settings.secret_key), base_url=settings.base_url,
                                      templates=request.app.state.templates)
    return RedirectResponse("/portal/requests?done=promise", status_code=303)


routes = [
    Route("/requests", cases_page, methods=["GET"], name="portal:cases"),
    Route("/requests/new", dispute_form, methods=["GET"], name="portal:dispute_form"),
    Route("/requests/new", dispute_create, methods=["POST"], name="portal:dispute_create"),
    Route("/requests/{case_id:int}", case_page, methods=["GET"], name="portal:case"),
    Route("/requests/{case_id:int}/reply", case_reply, methods=["POST"], name="portal:case_reply"),
    Route("/requests/{case_id:int}/files/{file_id:int}", case_file, methods=["GET"], name="portal:case_file"),
    Route("/promises/new", promise_form, methods=["GET"], name="portal:promise_form"),
    Route("/promises/new", promise_create, methods=["POST"], name="portal:promise_create"),
]
