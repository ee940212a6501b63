"""Back-office: the dashboard (`/admin`) and the dated exchange-rate table (`/admin/fx`).

Thin: `admin.dashboard_service` computes the figures, `ledger.fx` keeps the rates.
Scoping: the companies come from `scoped_companies`, and a collector's figures cover only the
customers assigned to it (as `scoped` does for every other page).
"""

from __future__ import annotations

from typing import Any

from babel.numbers import format_decimal
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin.access import Rejected, Staff, companies_of, is_admin, staff_get, staff_post
from admin.dashboard_service import BUCKETS, METHODS, Scope, bank_state, build_dashboard
from admin.routes import ROLE_LABELS, render, t
from mail import retry
from kernel import i18n
from kernel.i18n import N_
from ledger import fx
from ledger.models import Customer, FxRate, Role, User
from ledger.money import CurrencyError, check_currency
from kernel.user_error import UserErrors
from kernel.web import Posted

METHOD_LABELS = {
    "card": N_("Card"),
    "instant_transfer": N_("Instant bank transfer"),
    "direct_debit": N_("Direct debit"),
    "bank_transfer": N_("Bank transfer"),
    "cheque": N_("Cheque"),
    "bill_of_exchange": N_("Bill of exchange (LCR)"),
    "cash": N_("Cash"),
    "set_off": N_("Set-off (compensation)"),
}
MAX_FX_FILE_BYTES = 2 * 1024 * 1024


# --- dashboard ----------------------------------------------------------------------------------


def _collectors(session: Session, company_ids: list[int]) -> list[User]:
    assigned = select(Customer.collector_id).where(Customer.collector_id.is_not(None),
                                                   Customer.company_id.in_(company_ids or [-1]))
    return list(session.scalars(select(User).where(User.id.in_(assigned), User.role == Role.collector.value)
                                .order_by(User.email)))


@staff_get
def home(request: Request, session: Session, staff: Staff) -> Response:
    user = staff.user
    params = request.query_params
    visible = companies_of(session, user)
    company_code = params.get("company", "")[:32]
    chosen = [c for c in visible if c.code == company_code] if company_code else visible
    is_collector = user.role == Role.collector.value
    collectors = [] if is_collector else _collectors(session, [c.id for c in visible])
    collector_id: int | None = user.id if is_collector else None
    collector_param = params.get("collector", "")[:12]
    if not is_collector and collector_param.isdigit() and int(collector_param) in {u.id for u in collectors}:
        collector_id = int(collector_param)
    currency = ""
    try:
        currency = check_currency(params["currency"]) if params.get("currency") else ""
    except CurrencyError:
        currency = ""
    currencies = sorted({c.base_currency for c in visible}
                        | set(session.scalars(select(FxRate.base).distinct()))
                        | set(session.scalars(select(FxRate.quote).distinct()))
                        | ({currency} if currency else set()))
    dashboard = build_dashboard(session, Scope(tuple(c.id for c in chosen), collector_id, currency or None))
    context: dict[str, Any] = {
        "user": user,
        "role": t(staff.language, ROLE_LABELS.get(user.role, user.role)),
        "dashboard": dashboard,
        "companies": visible,
        "company_code": company_code,
        "collectors": collectors,
        "collector_id": collector_id if not is_collector else None,
        "is_collector": is_collector,
        "currencies": currencies,
        "currency": currency,
        "buckets": BUCKETS,
        "methods": METHODS,
        "method_labels": METHOD_LABELS,
        "unknown_company": bool(company_code) and not chosen,
        "failed_mail": retry.failed_messages(session, [c.id for c in chosen], user.id if is_collector else None),
        # Bank figures are the company's, not a collector's customers'.
        "bank": {} if is_collector else bank_state(session, [c.id for c in chosen], currency or None),
        "number": lambda value: format_decimal(value, format="#,##0.0", locale=i18n.FORMAT_LOCALES[i18n.normalize(staff.language)]),
    }
    return request.app.state.templates.response(request, "admin/dashboard.html", context, staff.language,
                                                block="dashboard_body")


# --- exchange rates -----------------------------------------------------------------------------


def _fx_page(request: Request, session: Session, staff: Staff, *, errors: list[str] | None = None,
             line_errors: list[tuple[int, list[str]]] | None = None, notice: str | None = None,
             form: dict[str, str] | None = None, status_code: int = 200) -> Response:
    return render(request, "admin/fx.html", {
        "user": staff.user,
        "rates": fx.list_rates(session),
        "can_edit": is_admin(staff.user),
        "errors": errors or [],
        "line_errors": line_errors or [],
        "notice": notice,
        "form": form or {},
    }, staff.language, status_code=status_code)


@staff_get
def fx_page(request: Request, session: Session, staff: Staff) -> Response:
    done = request.query_params.get("done", "")
    notice = None
    if done in ("created", "updated", "unchanged"):
        notice = {
            "created": t(staff.language, "Rate added."),
            "updated": t(staff.language, "Rate corrected."),
            "unchanged": t(staff.language, "That rate was already in the table; nothing changed."),
        }[done]
    elif done == "imported":
        notice = t(staff.language, "File imported: %(created)s added, %(updated)s corrected, %(unchanged)s unchanged.",
                    created=request.query_params.get("c", "0")[:9], updated=request.query_params.get("u", "0")[:9],
                    unchanged=request.query_params.get("n", "0")[:9])
    return _fx_page(request, session, staff, notice=notice)


# The rates are shared by every company (each one's dashboard converts with them): only an
# admin, who sees all companies, keeps them; everyone else reads them.
@staff_post(admin_only=True)
def fx_add(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    form = {k: posted.text(k, 40) for k in ("valid_on", "base", "quote", "rate")}
    try:
        outcome = fx.set_rate(session, actor=staff.user.email, **form)
    except UserErrors as error:
        raise Rejected(_fx_page(request, session, staff, form=form, status_code=400,
                                errors=[p.render(staff.language) for p in error]))
    return RedirectResponse(f"/admin/fx?done={outcome}", status_code=303)


def _line_errors(failed: UserErrors, language: str) -> list[tuple[int | None, list[str]]]:
    return [(line, [problems]) for line, problems in failed.by_line(language)]


@staff_post(admin_only=True)
def fx_import(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    language = staff.language
    if not posted.uploads or not posted.uploads[0].content:
        raise Rejected(_fx_page(request, session, staff, status_code=400,
                                errors=[t(language, "Choose a CSV file to import.")]))
    raw = posted.uploads[0].content
    if len(raw) > MAX_FX_FILE_BYTES:
        raise Rejected(_fx_page(request, session, staff, status_code=400,
                                errors=[t(language, "The file is larger than %(mb)s MB.", mb=2)]))
    try:
        table = fx.read_rates(raw)
    except UserErrors as unreadable:
        raise Rejected(_fx_page(request, session, staff, status_code=400,
                                errors=[t(language, "The file could not be read; nothing was imported.")],
                                line_errors=_line_errors(unreadable, language))) from None
    try:
        report = fx.import_rates(session, table, actor=staff.user.email)
    except UserErrors as failed:
        raise Rejected(_fx_page(request, session, staff, status_code=400,
                                errors=[t(language, "Nothing was imported: fix these lines and import the file again.")],
                                line_errors=_line_errors(failed, language))) from None
    return RedirectResponse(f"/admin/fx?done=imported&c={report.created}&u={report.updated}&n={report.unchanged}",
                            status_code=303)


routes = [
    Route("/fx", fx_page, methods=["GET"], name="admin:fx"),
    Route("/fx", fx_add, methods=["POST"], name="admin:fx_add"),
    Route("/fx/import", fx_import, methods=["POST"], name="admin:fx_import"),
]
