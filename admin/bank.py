"""Back-office: the bank reconciliation queue at /admin/bank.

Upload a statement file (the importer of `encours import bank`), then work the entries the
rules did not settle: accept a suggestion in one click (htmx swaps the row), match an entry by
hand to invoices of one or several customers with the amounts staff choose (the difference
becomes the first customer's credit, or a small short payment is written off within the
company's tolerance), set an entry aside as not a customer payment, undo any match.

Thin: `reconciliation.imports` and `reconciliation.queue` do the work and audit it. Admins and
managers act, on their companies; a viewer reads them; a collector sees only the entries matched
to its customers. What a user may not see answers 404.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin.access import Rejected, Staff, companies_of, forbidden, staff_get, staff_post, staff_zone
from admin.amounts import typed_amount
from admin.customers import fragment
from admin.customers_service import page_number, param_text
from admin.routes import render, t
from kernel.clock import clock
from kernel.i18n import N_
from ledger.models import BankMatch, BankMatchState, Company, Customer, Invoice, Role, User
from ledger.money import Money
from kernel.web import Posted
from reconciliation import queue
from kernel.user_error import UserError
from reconciliation.imports import import_statement_file

MAX_STATEMENT_BYTES = 50 * 1024 * 1024
STATE_FILTERS = ("open", "suggested", "unmatched", "matched", "ignored", "all")
STATE_LABELS = {
    "unmatched": N_("Unmatched"), "suggested": N_("Suggested"), "matched": N_("Matched"),
    "ignored": N_("Not a customer payment"), "debit": N_("Money out"),
}
FILTER_LABELS = {
    "open": N_("To do (unmatched and suggested)"), "suggested": N_("Suggested"), "unmatched": N_("Unmatched"),
    "matched": N_("Matched"), "ignored": N_("Not a customer payment"), "all": N_("All"),
}
NOTICES = {
    "confirmed": N_("The entry is matched."),
    "matched": N_("The entry is matched."),
    "ignored": N_("The entry is set aside: not a customer payment."),
    "restored": N_("The entry is back in the queue."),
    "undone": N_("The match is undone: the invoices are open again and the entry waits in the queue."),
}
PICKS_LIMIT = 30


def may_act(user: User) -> bool:
    return user.role in (Role.admin.value, Role.manager.value)


def _scope(user: User) -> list[int] | None:
    return queue.companies_of(user)


def _message(language: str, error: UserError) -> str:
    return error.render(language)


def _reason(language: str, match: BankMatch) -> str:
    """Why the rule proposed it, in the reader's language when the rule said it in a msgid."""
    message = match.details.get("reason_message") if isinstance(match.details, dict) else None
    if message:
        values = match.details.get("reason_values") or {}
        try:
            return t(language, message, **values)
        except (KeyError, ValueError, TypeError):
            return match.reason
    return match.reason


def _labels(staff: Staff, today: date) -> dict[str, Any]:
    language = staff.language
    return {
        "state_label": lambda state: t(language, STATE_LABELS[state]) if state in STATE_LABELS else state,
        "reason": lambda match: _reason(language, match),
        "age": lambda entry: (today - (entry.booking_date or entry.value_date or today)).days,
        "today": today,
    }


def _filters(request: Request) -> dict[str, Any]:
    params = request.query_params
    state = param_text(params, "state", 16)
    company = param_text(params, "company", 32)
    return {"state": state if state in STATE_FILTERS else "open", "q": param_text(params, "q", 100),
            "company": company, "page": page_number(params)}


def _cursor(request: Request, name: str) -> int | None:
    """The pager's `after`/`before` entry id; anything else reads as none."""
    raw = str(request.query_params.get(name, ""))
    return int(raw) if raw.isdigit() and len(raw) <= 18 else None


def _query(filters: dict[str, Any], **changes: Any) -> str:
    chosen = {**filters, **changes}
    pairs = [(k, v) for k, v in (("state", chosen["state"]), ("company", chosen["company"]), ("q", chosen["q"]))
             if v and not (k == "state" and v == "open")]
    if chosen["page"] > 1:
        pairs.append(("page", str(chosen["page"])))
        for cursor in ("after", "before"):  # the pager's links: the page found from where the reader is
            if changes.get(cursor) is not None:
                pairs.append((cursor, str(changes[cursor])))
    return urlencode(pairs)


def _list_context(request: Request, session: Session, staff: Staff) -> dict[str, Any]:
    filters = _filters(request)
    companies = companies_of(session, staff.user)
    after, before = _cursor(request, "after"), _cursor(request, "before")
    if staff.user.role == Role.collector.value:
        page = queue.list_collector_entries(session, staff.user.id, filters["q"], filters["page"], after=after,
                                            before=before)
    else:
        scope = _scope(staff.user)
        if filters["company"]:
            wanted = [c.id for c in companies if c.code == filters["company"]]
            scope = [i for i in (scope if scope is not None else wanted) if i in wanted]
        state = None if filters["state"] == "all" else filters["state"]
        page = queue.list_entries(session, scope, state=state, search=filters["q"], page=filters["page"],
                                  after=after, before=before)
    return {
        "user": staff.user, "filters": filters, "query": lambda **c: _query(filters, **c), "page": page,
        "companies": companies, "filter_labels": [(k, t(staff.language, FILTER_LABELS[k])) for k in STATE_FILTERS],
        "can_act": may_act(staff.user), "is_collector": staff.user.role == Role.collector.value,
        "max_mb": MAX_STATEMENT_BYTES // (1024 * 1024), "notice": None, "error": None, "report": None, "row_notice": None,
        **_labels(staff, clock.today(staff_zone(session, staff.user))),
    }


@staff_get
def index(request: Request, session: Session, staff: Staff) -> Response:
    context = _list_context(request, session, staff)
    done = request.query_params.get("done", "")
    context["notice"] = t(staff.language, NOTICES[done]) if done in NOTICES else None
    return request.app.state.templates.response(request, "admin/bank.html", context, staff.language,
                                                block=fragment(request, "results"))


def _refuse_on_list(request: Request, session: Session, staff: Staff, message: str, status_code: int = 400,
                    **extra: Any) -> Rejected:
    session.rollback()
    context = _list_context(request, session, staff)
    context.update({"error": message, **extra})
    return Rejected(request.app.state.templates.response(request, "admin/bank.html", context, staff.language,
                                                         status_code=status_code))


@staff_post
def upload(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    if not may_act(staff.user):
        return forbidden(request, staff)
    value = posted.form.get("statement")
    if not isinstance(value, UploadFile) or not value.filename:
        raise _refuse_on_list(request, session, staff, t(staff.language, N_("Choose a statement file to import.")))
    value.file.seek(0)
    raw = value.file.read(MAX_STATEMENT_BYTES + 1)
    filename = value.filename[:200]
    if len(raw) > MAX_STATEMENT_BYTES:
        raise _refuse_on_list(request, session, staff, t(
            staff.language, N_("%(file)s is larger than %(size)s MB: nothing imported; split it into smaller files."),
            file=filename, size=MAX_STATEMENT_BYTES // (1024 * 1024)), status_code=413)
    code = posted.text("company", 32).strip()
    visible = {c.code for c in companies_of(session, staff.user)}
    if code and code not in visible:
        raise HTTPException(404)
    try:
        report = import_statement_file(session, raw, filename, company_code=code or None, user=staff.user,
                                       settings=request.app.state.settings)
    except UserError as error:
        raise _refuse_on_list(request, session, staff, _message(staff.language, error))
    if staff.user.role != Role.admin.value:
        foreign = sorted({s.company_code for s in report.statements} - visible)
        if foreign:  # the file names an account of a company this manager does not see: nothing stays
            raise _refuse_on_list(request, session, staff, t(
                staff.language, N_("%(file)s: nothing imported: it holds statements of companies you do not "
                                   "manage (%(codes)s)."), file=filename, codes=", ".join(foreign)), status_code=403)
    context = _list_context(request, session, staff)
    context["report"] = report
    return request.app.state.templates.response(request, "admin/bank.html", context, staff.language)


def _row_or_redirect(request: Request, session: Session, staff: Staff, entry_id: int, done: str) -> Response:
    """htmx gets the entry's row again; a plain form goes back to the queue."""
    if request.headers.get("HX-Request") == "true":
        session.flush()
        entry = queue.get_entry(session, entry_id, _scope(staff.user))
        matches = list(session.scalars(select(BankMatch).where(
            BankMatch.entry_id == entry.id, BankMatch.state != BankMatchState.undone.value)
            .order_by(BankMatch.score.desc(), BankMatch.id)))
        code = session.get_one(Company, entry.company_id).code
        context = {"user": staff.user, "row": queue.EntryRow(entry, code, matches), "can_act": may_act(staff.user),
                   "row_notice": t(staff.language, NOTICES[done]), **_labels(staff, clock.today(staff_zone(session, staff.user)))}
        return request.app.state.templates.response(request, "admin/bank_row.html", context, staff.language)
    return RedirectResponse(f"/admin/bank?done={done}", status_code=303)


def _act(request: Request, session: Session, staff: Staff, action: Any, done: str) -> Response:
    if not may_act(staff.user):
        return forbidden(request, staff)
    entry_id = request.path_params["entry_id"]
    try:
        action(entry_id)
    except queue.EntryNotFound:
        raise HTTPException(404)
    except UserError as error:
        message = _message(staff.language, error)
        if request.headers.get("HX-Request") == "true":
            # htmx swaps only 2xx answers: the refusal goes to the page's alert area instead of the row.
            session.rollback()
            raise Rejected(Response(f'<p>{_escape(message)}</p>', status_code=200, media_type="text/html",
                                    headers={"HX-Retarget": "#bank-error", "HX-Reswap": "innerHTML"}))
        raise _refuse_on_list(request, session, staff, message, status_code=409)
    return _row_or_redirect(request, session, staff, entry_id, done)


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


@staff_post
def accept(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    match_id = posted.text("match", 12)
    settings = request.app.state.settings
    return _act(request, session, staff, lambda entry_id: queue.confirm_suggestion(
        session, entry_id, staff.user, int(match_id) if match_id.isdigit() else None, settings), "confirmed")


@staff_post
def ignore(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    return _act(request, session, staff, lambda entry_id: queue.mark_not_customer_payment(session, entry_id,
                                                                                          staff.user), "ignored")


@staff_post
def restore(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    return _act(request, session, staff, lambda entry_id: queue.restore_entry(session, entry_id, staff.user),
                "restored")


@staff_post
def undo(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    if not may_act(staff.user):
        return forbidden(request, staff)
    try:
        match = queue.undo_match(session, request.path_params["match_id"], staff.user,
                                 settings=request.app.state.settings)
    except queue.EntryNotFound:
        raise HTTPException(404)
    except UserError as error:
        raise _refuse_on_list(request, session, staff, _message(staff.language, error), status_code=409)
    return _row_or_redirect(request, session, staff, match.entry_id, "undone")


# --- one entry: match by hand --------------------------------------------------------------------


def _picks(values: list[str]) -> list[int]:
    found: list[int] = []
    for value in values:
        if value.isdigit() and len(value) < 12 and int(value) not in found:
            found.append(int(value))
    return found[:PICKS_LIMIT]


def _entry_page(request: Request, session: Session, staff: Staff, entry_id: int, *, picks: list[int],
                amounts: dict[int, str] | None = None, write_off: bool = False, error: str | None = None,
                status_code: int = 200) -> Response:
    scope = _scope(staff.user) if staff.user.role != Role.collector.value else []
    try:
        entry = queue.get_entry(session, entry_id, scope)
    except queue.EntryNotFound:
        raise HTTPException(404)
    company = session.get_one(Company, entry.company_id)
    q = param_text(request.query_params, "q", 100)
    chosen = queue.invoices_for_match(session, entry.company_id, picks)
    results = queue.search_open_invoices(session, entry.company_id, entry.currency, q, exclude=picks) if q else []
    matches = list(session.scalars(select(BankMatch).where(BankMatch.entry_id == entry.id)
                                   .order_by(BankMatch.id.desc())))
    customers = {c.id: c for c in session.scalars(select(Customer).where(
        Customer.id.in_({i.customer_id for i in [*chosen, *results]} or {-1})))}
    picked_query = [("pick", str(i)) for i in picks]
    return render(request, "admin/bank_entry.html", {
        "user": staff.user, "entry": entry, "company": company, "q": q, "chosen": chosen, "results": results,
        "customers": customers, "matches": matches, "can_act": may_act(staff.user), "error": error,
        "amounts": amounts or {}, "write_off": write_off,
        "tolerance": Money(company.write_off_tolerance_minor, entry.currency),
        "add_url": lambda invoice_id: f"/admin/bank/entries/{entry.id}?" + urlencode(
            [*picked_query, ("pick", str(invoice_id)), ("q", q)]),
        "remove_url": lambda invoice_id: f"/admin/bank/entries/{entry.id}?" + urlencode(
            [p for p in picked_query if p[1] != str(invoice_id)] + [("q", q)]),
        "picked_query": picked_query,
        "money_plain": lambda money: str(money.to_decimal()),
        **_labels(staff, clock.today(company.timezone)),
    }, staff.language, status_code=status_code)


@staff_get
def entry_page(request: Request, session: Session, staff: Staff) -> Response:
    if staff.user.role == Role.collector.value:
        raise HTTPException(404)
    picks = _picks(request.query_params.getlist("pick"))
    return _entry_page(request, session, staff, request.path_params["entry_id"], picks=picks)


@staff_post
def match(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    if not may_act(staff.user):
        return forbidden(request, staff)
    entry_id = request.path_params["entry_id"]
    try:
        entry = queue.get_entry(session, entry_id, _scope(staff.user))
    except queue.EntryNotFound:
        raise HTTPException(404)
    picks = _picks([v for v in posted.form.getlist("pick") if isinstance(v, str)])
    amounts = {invoice_id: posted.text(f"amount-{invoice_id}", 40).strip() for invoice_id in picks}
    write_off = posted.text("write_off", 4) == "1"

    def refuse(message: str) -> Rejected:
        session.rollback()
        return Rejected(_entry_page(request, session, staff, entry_id, picks=picks, amounts=amounts,
                                    write_off=write_off, error=message, status_code=400))

    allocations: list[tuple[int, Money]] = []
    for invoice_id in picks:
        amount = typed_amount(amounts[invoice_id], entry.currency)
        if amount is None:
            number = session.scalar(select(Invoice.number).where(Invoice.id == invoice_id)) or str(invoice_id)
            raise refuse(t(staff.language, N_("%(number)s: %(value)s is not an amount in %(currency)s."),
                           number=number, value=amounts[invoice_id] or "—", currency=entry.currency))
        allocations.append((invoice_id, amount))
    try:
        queue.match_manually(session, entry_id, allocations, staff.user, write_off=write_off,
                             settings=request.app.state.settings)
    except UserError as error:
        raise refuse(_message(staff.language, error))
    return RedirectResponse("/admin/bank?done=matched", status_code=303)


routes = [
    Route("/bank", index, methods=["GET"], name="admin:bank"),
    Route("/bank/import", upload, methods=["POST"], name="admin:bank_import"),
    Route("/bank/entries/{entry_id:int}", entry_page, methods=["GET"], name="admin:bank_entry"),
    Route("/bank/entries/{entry_id:int}/accept", accept, methods=["POST"], name="admin:bank_accept"),
    Route("/bank/entries/{entry_id:int}/match", match, methods=["POST"], name="admin:bank_match"),
    Route("/bank/entries/{entry_id:int}/ignore", ignore, methods=["POST"], name="admin:bank_ignore"),
    Route("/bank/entries/{entry_id:int}/restore", restore, methods=["POST"], name="admin:bank_restore"),
    Route("/bank/matches/{match_id:int}/undo", undo, methods=["POST"], name="admin:bank_undo"),
]
