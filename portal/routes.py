"""What the debtor sees and does. Handlers stay thin: services do the work."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload
from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kernel import i18n
from kernel.clock import clock
from kernel.db import read_connection, statement_connection, unit_of_work
from kernel.security import client_ip
from kernel.sqlite_writer import one_writer
from ledger import statement as statements
from ledger.disputes import disputed_parts
from ledger.models import Company, Contact, Customer, Invoice
from ledger.money import Money
from ledger.storage import FileStorage, ObjectMissing
from payments.checkout import in_progress_by_invoice, statement_checkouts
from payments.collections import mandate_summary
from links import throttle, tokens
from mail import renewal
from links.tokens import LinkProblem
from portal import pdf, statement_view
from portal import staff_view as staff_views
from portal.link_opens import OpenRecorder
from portal.staff_view import STAFF_VIEW_SESSION_KEY

PORTAL_SESSION_KEY = "portal"
LANGUAGE_SESSION_KEY = "lang"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Visit:
    contact: Contact
    customer: Customer
    company: Company
    language: str
    staff_view: bool = False  # staff looking, read-only (portal.staff_view)


def _sessions(request: Request) -> Any:
    return request.app.state.sessions


def _secret(request: Request) -> str:
    return str(request.app.state.settings.secret_key)


def _visitor_language(request: Request) -> str:
    chosen = request.session.get(LANGUAGE_SESSION_KEY)
    return i18n.normalize(chosen) if chosen else i18n.negotiate(request.headers.get("accept-language"))


def current_visit(request: Request, session: Session, *, staff_view: bool = False) -> Visit | None:
    """The debtor's visit from the signed session cookie, re-checked against the database
    so that revoking links also ends open sessions. `staff_view`: a read-only page, which
    staff looking as the customer may see too (every other handler never gets their visit)."""
    data = request.session.get(PORTAL_SESSION_KEY)
    if not isinstance(data, dict):
        return _staff_visit(request, session) if staff_view else None
    contact_id = data.get("contact")
    if not isinstance(contact_id, int):
        return None
    # One query for the contact, its customer and company, which every page reads.
    contact = session.get(Contact, contact_id, options=[joinedload(Contact.customer).joinedload(Customer.company)])
    if (contact is None or contact.link_version != data.get("v") or contact.customer_id != data.get("customer")
            or contact.session_version != data.get("sv", 1)):  # revoked or signed out since
        request.session.pop(PORTAL_SESSION_KEY, None)
        return None
    customer = contact.customer
    language = request.session.get(LANGUAGE_SESSION_KEY) or contact.language
    return Visit(contact=contact, customer=customer, company=customer.company, language=i18n.normalize(language))


def _staff_visit(request: Request, session: Session) -> Visit | None:
    if STAFF_VIEW_SESSION_KEY not in request.session:
        return None
    contact = staff_views.viewed_contact(session, request.session.get(STAFF_VIEW_SESSION_KEY))
    if contact is None:
        request.session.pop(STAFF_VIEW_SESSION_KEY, None)
        return None
    customer = contact.customer
    language = request.session.get(LANGUAGE_SESSION_KEY) or contact.language
    return Visit(contact=contact, customer=customer, company=customer.company, language=i18n.normalize(language),
                 staff_view=True)


def in_staff_view(request: Request) -> bool:
    """Staff look at the portal as a customer (and are no debtor signed in): nothing may change."""
    return STAFF_VIEW_SESSION_KEY in request.session and PORTAL_SESSION_KEY not in request.session


def _message(
    request: Request,
    language: str,
    title: str,
    body: str,
    status_code: int,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    context = {"title": title, "body": body, "company": None, "visit": None, **extra}
    return request.app.state.templates.response(
        request, "portal/message.html", context, language, status_code=status_code, headers=headers
    )


def _t(language: str, message: str) -> str:
    return i18n.gettext(language, message)


def session_required(request: Request) -> Response:
    language = _visitor_language(request)
    if in_staff_view(request):
        return _message(
            request, language, _t(language, "Read-only view"),
            _t(language, "You are looking at this account as the customer sees it: nothing can be changed "
                         "or sent from this view."),
            403,
        )
    return _message(
        request,
        language,
        _t(language, "Please open the link from your email"),
        _t(language, "For your security, your account can only be reached through the personal link "
                     "we sent you by email. Open the latest one to continue."),
        401,
        ask_by_email=True,
    )


def _read_sessions(request: Request) -> Any:
    return request.app.state.read_sessions


async def _read(request: Request, function: Callable[..., Any], *args: Any) -> Any:
    """A short read-only database call: inline on SQLite, where it reads a local file that WAL
    never locks for readers, and a hop to the thread pool cost several times the query; in the
    thread pool on a server database, so that a slow network or a database down never stalls
    the event loop."""
    if request.app.state.reads_inline:
        return function(*args)
    return await run_in_threadpool(function, *args)


def _throttle_key(ip: str) -> str:
    return f"link:{ip}"


def _throttle_rule(request: Request, ip: str) -> tokens.ThrottleRule:
    settings = request.app.state.settings
    return tokens.ThrottleRule(_throttle_key(ip), settings.link_throttle_max, settings.link_throttle_window_seconds)


def _check_link(request: Request, token: str, ip: str, user_agent: str | None) -> tokens.LinkFacts:
    with read_connection(_read_sessions(request)) as connection:
        return tokens.check_link(connection, _secret(request), token, ip, user_agent, _throttle_rule(request, ip))


async def _checked_link(request: Request, token: str, ip: str, user_agent: str | None) -> tokens.LinkFacts:
    """The link checked through the event loop's own connections on PostgreSQL (kernel.loop_reads),
    elsewhere as `_read` runs a read (inline on SQLite)."""
    loop_reads = getattr(request.app.state, "loop_reads", None)
    if loop_reads is not None:
        return await tokens.check_link_on_loop(loop_reads, _secret(request), token, ip, user_agent,
                                               _throttle_rule(request, ip))
    facts: tokens.LinkFacts = await _read(request, _check_link, request, token, ip, user_agent)
    return facts


def _record_failure(request: Request, ip: str) -> None:
    with unit_of_work(_sessions(request)) as session:  # begins with the write: an atomic upsert
        throttle.record_failure(session, _throttle_key(ip), request.app.state.settings.link_throttle_window_seconds)


def _open_recorder(request: Request) -> OpenRecorder:
    recorder = getattr(request.app.state, "open_recorder", None)
    if recorder is None:
        sessions = _sessions(request)

        def write(rows: list[dict[str, Any]]) -> None:
            # One statement on PostgreSQL (tokens.record_opens): a transaction by itself. On SQLite,
            # queued with the webhooks' writers rather than meeting them in SQLite's busy handler.
            with one_writer(sessions), statement_connection(sessions) as connection:
                tokens.record_opens(connection, rows)

        recorder = request.app.state.open_recorder = OpenRecorder(write)
    return recorder


async def open_link(request: Request) -> Response:
    """Exchange a magic link for a portal session.

    Checking the link only reads, in one query (tokens.check_link); the writes (a failure
    counted, a new open recorded) are short transactions of their own after it, in the thread
    pool since they may wait for SQLite's write lock, and a repeated open writes nothing (see
    tokens.OPEN_RECORDED_ONCE_WITHIN). One read-then-write transaction per exchange held
    SQLite's single write lock while the link was checked, and every other exchange, of
    every process, queued behind it.
    """
    token = request.path_params["token"]
    settings = request.app.state.settings
    ip = client_ip(request)
    user_agent = request.headers.get("user-agent")
    check = await _checked_link(request, token, ip, user_agent)
    if check.throttled:
        language = _visitor_language(request)
        return _message(
            request,
            language,
            _t(language, "Too many attempts"),
            _t(language, "Too many invalid links were opened from your connection. Please wait a few "
                         "minutes, then open the link from your latest email."),
            429,
            headers={"Retry-After": str(settings.link_throttle_window_seconds)},
        )
    if not check.ok:
        await run_in_threadpool(_record_failure, request, ip)
        brand = await _read(request, _brand_of_contact, request, check.contact_id) if check.contact_id else None
        return _link_problem(request, check.problem, check.language, token, brand)
    assert check.contact_id is not None
    if not check.recorded:
        await _open_recorder(request).record(tokens.open_row(check, ip, user_agent))
    request.session.clear()  # a fresh session: nothing from an earlier visitor survives
    request.session[PORTAL_SESSION_KEY] = {
        "contact": check.contact_id,
        "customer": check.customer_id,
        "v": check.link_version,
        "sv": check.session_version,
    }
    # 303 to a clean URL: the token leaves the address bar, history and Referer headers.
    return RedirectResponse("/portal", status_code=303, headers={"Cache-Control": "no-store"})


@dataclass(frozen=True)
class Brand:
    """What a page without a visit shows of the company a link names: name, logo, colours, contact."""

    code: str
    name: str
    has_logo: bool
    support_email: str | None


def _brand_of_contact(request: Request, contact_id: int) -> Brand | None:
    with read_connection(_read_sessions(request)) as connection:
        row = connection.execute(
            select(Company.code, Company.name, Company.logo_mime.is_not(None), Company.support_email)
            .join(Customer, Customer.company_id == Company.id).join(Contact, Contact.customer_id == Customer.id)
            .where(Contact.id == contact_id)
        ).first()
    return Brand(row[0], row[1], bool(row[2]), row[3]) if row is not None else None


def _brand_of_code(session: Session, code: str) -> tuple[Company | None, Brand | None]:
    company = session.scalar(select(Company).where(Company.code == code)) if code else None
    if company is None:
        return None, None
    return company, Brand(company.code, company.name, company.has_logo, company.support_email)


def _link_problem(request: Request, problem: LinkProblem | None, contact_language: str | None, token: str,
                  brand: Brand | None = None) -> Response:
    language = i18n.normalize(contact_language) if contact_language else _visitor_language(request)
    # Whoever holds a dead link may ask for a new one by address (mail.renewal.request_link_by_email).
    ask = {"company": brand, "ask_by_email": True}
    if problem is LinkProblem.expired:
        return _message(
            request,
            language,
            _t(language, "This link has expired"),
            _t(language, "Links to your account stay valid for a limited time. We can email a fresh link "
                         "to the address this one was sent to."),
            410,
            renew_token=token,
            **ask,
        )
    if problem is LinkProblem.revoked:
        return _message(
            request,
            language,
            _t(language, "This link was withdrawn"),
            _t(language, "This link no longer opens your account: it was withdrawn. If you need to see your "
                         "account, please contact us and we will send you a new one."),
            410,
            company=brand,  # no new link by email: its address may be the one the withdrawal shuts out
        )
    return _message(
        request,
        language,
        _t(language, "This link is not valid"),
        _t(language, "The link may have been cut or altered. Please open it again from your email, "
                     "copying the whole address."),
        400,
        **ask,
    )


async def renew_link(request: Request) -> Response:
    form = await request.form()
    if "email" in form:
        return await run_in_threadpool(_renew_by_email, request, str(form.get("email", "")).strip(),
                                       str(form.get("company", "")))
    token = str(form.get("token", ""))
    language = await run_in_threadpool(_renew, request, token)
    return _message(
        request,
        language,
        _t(language, "Check your inbox"),
        _t(language, "If this link was one of ours, a fresh one is on its way to the address it was sent "
                     "to. It may take a few minutes to arrive."),
        200,
    )


def _renew_by_email(request: Request, address: str, company_code: str) -> Response:
    """"Email me a new link" by address: the same answer whether the address is known or not."""
    language = _visitor_language(request)
    settings = request.app.state.settings
    with unit_of_work(_sessions(request)) as session:
        company, brand = _brand_of_code(session, company_code)
        if not renewal.is_email(address):
            return _message(
                request, language, _t(language, "Email me a new link"),
                _t(language, "Enter the email address our messages reach you at."), 422,
                company=brand, ask_by_email=True, email_value=address,
                email_error=_t(language, "“%(value)s” is not an email address.") % {"value": address},
            )
        renewal.request_link_by_email(
            session, address, company=company, client=client_ip(request), language=language,
            secret=_secret(request), base_url=settings.base_url, templates=request.app.state.templates,
        )
    return _message(
        request, language, _t(language, "Check your inbox"),
        _t(language, "If this address is on file with us, a link to your account is on its way to it. "
                     "It may take a few minutes to arrive."),
        200, company=brand,
    )


def _renew(request: Request, token: str) -> str:
    settings = request.app.state.settings
    with unit_of_work(_sessions(request)) as session:
        check = tokens.verify(session, _secret(request), token)
        language = i18n.normalize(check.contact.language) if check.contact else _visitor_language(request)
        if check.problem is LinkProblem.expired and check.contact is not None:
            renewal.send_fresh_link(
                session, check.contact, secret=_secret(request), base_url=settings.base_url,
                templates=request.app.state.templates,
            )
        elif check.problem is LinkProblem.invalid:
            throttle.record_failure(session, _throttle_key(client_ip(request)), settings.link_throttle_window_seconds)
    return language


DebtorHandler = Callable[[Request, Session, Visit], Response]


def debtor_page(handler: DebtorHandler) -> Callable[[Request], Response]:
    """Runs `handler` inside a unit of work for the signed-in debtor, or asks for the link."""
    return _debtor_endpoint(handler, _sessions, read_only=False)


def debtor_view(handler: DebtorHandler) -> Callable[[Request], Any]:
    """`debtor_page` for a handler that only reads (see make_sessionmaker's `write`); staff
    looking as the customer see these pages, and only these."""
    return _debtor_endpoint(handler, _read_sessions, read_only=True)


def _debtor_endpoint(handler: DebtorHandler, sessions: Callable[[Request], Any], *,
                     read_only: bool) -> Callable[[Request], Any]:
    @functools.wraps(handler)
    def endpoint(request: Request) -> Response:
        with unit_of_work(sessions(request)) as session:
            # Staff may look at the customer's read-only pages, and only at those.
            visit = current_visit(request, session, staff_view=read_only)
            if visit is None:
                return session_required(request)
            return handler(request, session, visit)

    if not read_only:
        return endpoint

    @functools.wraps(handler)
    async def read_only_page(request: Request) -> Response:
        return await to_thread.run_sync(endpoint, request, limiter=page_limiter(request))

    return read_only_page


_PAGE_LIMITER: RunVar[CapacityLimiter] = RunVar("encours_page_limiter")


def page_limiter(request: Request) -> CapacityLimiter | None:
    """The event loop's few threads for the debtor's read-only pages on a server database
    (kernel.db.PAGE_THREADS; one per loop, as anyio's own pool), else None: anyio's thread pool,
    as Starlette runs a plain function."""
    threads = request.app.state.page_threads
    if threads is None:
        return None
    try:
        return _PAGE_LIMITER.get()
    except LookupError:
        limiter = CapacityLimiter(threads)
        _PAGE_LIMITER.set(limiter)
        return limiter


@debtor_view
def statement_page(request: Request, session: Session, visit: Visit) -> Response:
    today = clock.today(visit.company.timezone)
    statement = statements.build_statement(session, visit.customer, today)
    pick, pick_currency = statement_view.pick_from(
        request.query_params.get("select"), request.query_params.get("currency"), statement
    )
    partial = visit.company.allow_partial_payments
    progress, reserved = statement_checkouts(session, visit.customer)
    return request.app.state.templates.response(
        request,
        "portal/statement.html",
        {
            "visit": visit,
            "company": visit.company,
            "statement": statement,
            "today": today,
            "rows": statement_view.statement_rows(statement, visit.language, today, pick, pick_currency, partial,
                                                  progress, statements.promised_invoices(session, visit.customer.id)),
            "partial": partial,
            "reservations": reserved,
            "money_of": Money,
            "mandate": mandate_summary(session, visit.customer, today),
        },
        visit.language,
        block="statement",
    )


def _owned_invoice(request: Request, session: Session, visit: Visit) -> Invoice:
    invoice = statements.customer_invoice(session, visit.customer.id, request.path_params["invoice_id"])
    if invoice is None:
        raise HTTPException(404)
    return invoice


@debtor_view
def invoice_page(request: Request, session: Session, visit: Visit) -> Response:
    invoice = _owned_invoice(request, session, visit)
    today = clock.today(visit.company.timezone)
    progress = in_progress_by_invoice(session, visit.customer).get(invoice.id)
    disputed_part = disputed_parts(session, invoice_ids=[invoice.id]).get(invoice.id, 0)
    return request.app.state.templates.response(
        request,
        "portal/invoice.html",
        {
            "visit": visit,
            "company": visit.company,
            "invoice": invoice,
            "today": today,
            "days_overdue": statements.days_overdue(invoice.due_date, today),
            "allocations": statements.allocations_for(session, invoice.id),
            "discount": statements.available_discount(invoice, today),
            "progress": statement_view.progress_html(progress, visit.language) if progress else None,
            # Paid from here as from the statement; staff looking as the customer only read.
            "payable": statement_view.payable_here(invoice, progress is not None) and not visit.staff_view,
            "partial": visit.company.allow_partial_payments,
            "placeholder": statement_view.decimal_text(invoice.open_minor - disputed_part, invoice.currency),
            "disputed_part": Money(disputed_part, invoice.currency),
            "promised_for": statements.promised_invoices(session, visit.customer.id).get(invoice.id),
        },
        visit.language,
    )


@debtor_view
def invoice_pdf(request: Request, session: Session, visit: Visit) -> Response:
    invoice = _owned_invoice(request, session, visit)
    content = _original_pdf(request, invoice) or invoice.pdf or pdf.invoice_pdf(
        request.app.state.templates, invoice, visit.language, clock.today(visit.company.timezone)
    )
    return pdf_response(content, f"{safe_filename(invoice.number)}.pdf")


def _original_pdf(request: Request, invoice: Invoice) -> bytes | None:
    """The PDF the ERP sent for the invoice (api PUT /invoices/{number}/pdf), if any."""
    if invoice.pdf_key is None:
        return None
    try:
        return FileStorage(request.app.state.storage).read(invoice.pdf_key)
    except ObjectMissing:
        # The debtor still gets a document: the summary, built from the same figures.
        logger.warning("invoice %s: its original PDF %s is missing from the storage", invoice.id, invoice.pdf_key)
        return None


@debtor_view
def statement_pdf(request: Request, session: Session, visit: Visit) -> Response:
    today = clock.today(visit.company.timezone)
    statement = statements.build_statement(session, visit.customer, today)
    content = pdf.statement_pdf(request.app.state.templates, statement, visit.language)
    return pdf_response(content, f"statement-{safe_filename(visit.customer.ref)}-{today.isoformat()}.pdf")


def pdf_response(content: bytes, filename: str) -> Response:
    return Response(
        content,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{filename}"', "Cache-Control": "no-store"},
    )


def safe_filename(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80] or "document"


async def set_language(request: Request) -> Response:
    form = await request.form()
    language = str(form.get("lang", ""))
    if language in i18n.LANGUAGES:
        request.session[LANGUAGE_SESSION_KEY] = language
    return RedirectResponse(_local_path(str(form.get("next", "/portal"))), status_code=303)


def _local_path(target: str) -> str:
    """Only same-site paths: never an open redirect."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return "/portal"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def sign_out(request: Request) -> Response:
    with unit_of_work(_sessions(request)) as session:
        visit = current_visit(request, session)
        language = visit.language if visit else _visitor_language(request)
        if visit is not None:  # ends it on the server too: a copy of the cookie stops working
            visit.contact.session_version += 1
    request.session.clear()
    return _message(
        request,
        language,
        _t(language, "You are signed out"),
        _t(language, "To come back, open the link from your latest email."),
        200,
    )


# The magic link and its renewal, by their absolute paths: the emailed link stays short.
links = [
    Route("/p/renew", renew_link, methods=["POST"], name="portal:renew"),
    Route("/p/{token:str}", open_link, methods=["GET"], name="portal:open_link"),
]

# Relative to /portal (portal.routing mounts them; /portal itself is portal.routing.home).
routes = [
    Route("/statement.pdf", statement_pdf, methods=["GET"], name="portal:statement_pdf"),
    Route("/invoices/{invoice_id:int}", invoice_page, methods=["GET"], name="portal:invoice"),
    Route("/invoices/{invoice_id:int}/pdf", invoice_pdf, methods=["GET"], name="portal:invoice_pdf"),
    Route("/language", set_language, methods=["POST"], name="portal:language"),
    Route("/sign-out", sign_out, methods=["POST"], name="portal:sign_out"),
]
