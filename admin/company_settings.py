"""Back-office: each company's settings (admin only). Thin: `ledger.companies.update_settings`
checks every field, applies all-or-nothing and audits before/after.

Provider keys are never shown: only whether each method's provider is configured
(`payments.base.provider_for(method).is_configured(settings)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin.access import Rejected, Staff, staff_get, staff_post
from admin.routes import render
from kernel import i18n
from kernel.i18n import N_
from ledger import companies as company_service
from ledger.companies import MAX_LOGO_BYTES, SettingsRejected
from ledger.models import Company
from payments.base import UnknownMethod, provider_for
from payments.bank_transfer import pretty_iban
from kernel.web import Posted
from reconciliation import accounts as bank_accounts
from reconciliation.errors import ReconciliationError

METHOD_LABELS = {
    "card": N_("Card"),
    "instant_transfer": N_("Instant bank transfer"),
    "direct_debit": N_("Direct debit"),
    "bank_transfer": N_("Bank transfer"),
}
FIELD_LABELS = {
    "name": N_("Name shown to debtors"),
    "brand_color": N_("Brand colour"),
    "logo": N_("Logo"),
    "iban": N_("IBAN"),
    "bic": N_("BIC"),
    "address": N_("Postal address"),
    "support_email": N_("Support address shown to debtors"),
    "collections_email": N_("Collections team address"),
    "reminder_from": N_("Reminder sender address"),
    "reminder_hour": N_("Hour of the daily reminder run"),
    "default_discount_percent": N_("Default early-payment discount (%)"),
    "default_discount_days": N_("Days after issue to earn it"),
    "promise_horizon_days": N_("Furthest promise to pay (days)"),
    "promise_grace_days": N_("Grace days after a promised date"),
    "link_lifetime_days": N_("Link lifetime (days)"),
    "base_currency": N_("Base currency"),
    "timezone": N_("Timezone"),
    "country": N_("Country"),
}


@dataclass(frozen=True)
class MethodStatus:
    method: str
    label: str
    enabled: bool
    configured: bool


def _company(session: Session, code: str) -> Company:
    company = session.scalar(select(Company).where(Company.code == code))
    if company is None:
        raise HTTPException(404)
    return company


def _methods(request: Request, company: Company, language: str, form: Any = None) -> list[MethodStatus]:
    found = []
    for method in company_service.METHODS:
        try:
            configured = provider_for(method).is_configured(request.app.state.settings)
        except UnknownMethod:
            configured = False
        enabled = bool(form.get(f"method_{method}")) if form is not None else method not in (company.disabled_methods
                                                                                               or [])
        found.append(MethodStatus(method, i18n.gettext(language, METHOD_LABELS[method]), enabled, configured))
    return found


def _form_values(company: Company) -> dict[str, str]:
    bps = company.default_discount_bps
    return {
        "name": company.name, "brand_color": company.brand_color, "iban": pretty_iban(company.iban or ""),
        "bic": company.bic or "", "address": company.address or "", "support_email": company.support_email or "",
        "collections_email": company.collections_email or "", "reminder_from": company.reminder_from or "",
        "reminder_hour": str(company.reminder_hour),
        "default_discount_percent": "" if bps is None else f"{bps / 100:g}",  # display only: bps are stored
        "default_discount_days": "" if company.default_discount_days is None else str(company.default_discount_days),
        "allow_partial_payments": "1" if company.allow_partial_payments else "",
        "promise_horizon_days": str(company.promise_horizon_days),
        "promise_grace_days": str(company.promise_grace_days),
        "link_lifetime_days": str(company.link_lifetime_days), "base_currency": company.base_currency,
        "timezone": company.timezone, "country": company.country,
    }


@staff_get(admin_only=True)
def index(request: Request, session: Session, staff: Staff) -> Response:
    rows = list(session.scalars(select(Company).order_by(Company.name, Company.id)))
    return render(request, "admin/settings_list.html", {"user": staff.user, "rows": rows}, staff.language)


def _page(request: Request, session: Session, staff: Staff, company: Company, *, values: dict[str, str], form: Any = None,
          errors: list[tuple[str, str, str]] | None = None, status_code: int = 200,
          account_error: str | None = None, account_form: dict[str, str] | None = None) -> Response:
    saved = request.query_params.get("done") == "saved"
    done = request.query_params.get("done", "")
    return render(request, "admin/settings.html", {
        "accounts": bank_accounts.list_accounts(session, company.code),
        "account_error": account_error, "account_form": account_form or {},
        "account_notice": i18n.gettext(staff.language, ACCOUNT_NOTICES[done]) if done in ACCOUNT_NOTICES else None,
        "user": staff.user, "company": company, "values": values, "errors": errors or [],
        "error_fields": {f for f, _, _ in errors or []}, "methods": _methods(request, company, staff.language, form),
        "saved": saved, "max_logo_kb": MAX_LOGO_BYTES // 1024,
        "label": lambda field: i18n.gettext(staff.language, FIELD_LABELS[field]),
    }, staff.language, status_code=status_code)


@staff_get(admin_only=True)
def show(request: Request, session: Session, staff: Staff) -> Response:
    company = _company(session, request.path_params["code"])
    return _page(request, session, staff, company, values=_form_values(company))


def _upload(posted: Posted, name: str, limit: int) -> bytes | None:
    value = posted.form.get(name)
    if not isinstance(value, UploadFile) or not value.filename:
        return None
    value.file.seek(0)
    return value.file.read(limit + 1)  # one byte more than allowed says "too large" without holding more


@staff_post(admin_only=True)
def save(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    company = _company(session, request.path_params["code"])
    form = {key: value[:2000] for key, value in posted.form.items() if isinstance(value, str)}
    try:
        company_service.update_settings(session, company, form, logo=_upload(posted, "logo", MAX_LOGO_BYTES),
                                        remove_logo=bool(form.get("remove_logo")), actor=staff.user.email)
    except SettingsRejected as rejected:
        errors = [(p.field, i18n.gettext(staff.language, FIELD_LABELS[p.field]),
                   i18n.gettext(staff.language, p.message, **p.values)) for p in rejected.problems]
        raise Rejected(_page(request, session, staff, company, values=form, form=form, errors=errors,
                             status_code=400)) from None
    return RedirectResponse(f"/admin/settings/{company.code}?done=saved", status_code=303)


ACCOUNT_NOTICES = {
    "account_added": N_("Bank account added: statements naming it are booked to this company."),
    "account_deactivated": N_("Bank account deactivated."),
    "account_activated": N_("Bank account reactivated."),
}


@staff_post(admin_only=True)
def add_account(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    company = _company(session, request.path_params["code"])
    form = {name: posted.text(name, 100).strip() for name in ("iban", "bic", "currency", "label")}
    try:
        bank_accounts.add_account(session, company.code, iban=form["iban"], bic=form["bic"] or None,
                                  currency=form["currency"] or None, label=form["label"] or None,
                                  actor=staff.user.email)
    except ReconciliationError as error:
        session.rollback()
        company = _company(session, company.code)
        raise Rejected(_page(request, session, staff, company, values=_form_values(company), status_code=400,
                             account_error=i18n.gettext(staff.language, error.message, **error.values),
                             account_form=form)) from None
    return RedirectResponse(f"/admin/settings/{company.code}?done=account_added#bank-accounts", status_code=303)


@staff_post(admin_only=True)
def account_active(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    company = _company(session, request.path_params["code"])
    active = posted.text("active", 2) == "1"
    try:
        bank_accounts.set_account_active(session, request.path_params["account_id"], [company.id], active,
                                         staff.user.email)
    except ReconciliationError:
        raise HTTPException(404) from None
    done = "account_activated" if active else "account_deactivated"
    return RedirectResponse(f"/admin/settings/{company.code}?done={done}#bank-accounts", status_code=303)


routes = [
    Route("/admin/settings", index, methods=["GET"], name="admin:settings"),
    Route("/admin/settings/{code:str}", show, methods=["GET"], name="admin:company_settings"),
    Route("/admin/settings/{code:str}", save, methods=["POST"], name="admin:company_settings_save"),
    Route("/admin/settings/{code:str}/accounts", add_account, methods=["POST"], name="admin:bank_account_add"),
    Route("/admin/settings/{code:str}/accounts/{account_id:int}/active", account_active, methods=["POST"],
          name="admin:bank_account_active"),
]
