"""Back-office: each company's settings (admin only). Thin: `ledger.companies.update_settings`
checks every field, applies all-or-nothing and audits before/after.

The company's dispute reasons are managed on the same page by its admins and managers
(`ledger.disputes`: add, rename, reorder, deactivate; a reason a dispute carries is never
deleted). A manager, who may not open the rest of the settings, gets the page with that
section alone (`/admin/settings/{code}/reasons`).

Provider keys are never shown: only whether each method's provider is configured
(`payments.registry.provider_for(method).is_configured(settings)`).
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

from admin.access import Rejected, Staff, forbidden, is_admin, scoped_companies, staff_get, staff_post
from admin.routes import render
from kernel import i18n
from kernel.i18n import N_
from ledger import companies as company_service
from ledger import disputes as dispute_service
from ledger.companies import MAX_LOGO_BYTES, CompanySettings
from ledger.models import Company, DisputeReason, Role
from payments.base import UnknownMethod
from payments.registry import provider_for
from payments.bank_transfer import pretty_iban
from kernel.web import Posted
from reconciliation import accounts as bank_accounts
from kernel.user_error import UserError, UserErrors

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
    "reminders_enabled": N_("Send reminders"),
    "reminders_need_approval": N_("Approve each day's reminders before they are sent"),
    "reminder_gap_days": N_("Fewest days between two reminders to a customer"),
    "default_discount_percent": N_("Default early-payment discount (%)"),
    "default_discount_days": N_("Days after issue to earn it"),
    "promise_horizon_days": N_("Furthest promise to pay (days)"),
    "promise_grace_days": N_("Grace days after a promised date"),
    "link_lifetime_days": N_("Link lifetime (days)"),
    "transfer_expiry_days": N_("Days a bank transfer is awaited before its invoices are freed"),
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
        "reminders_enabled": "1" if company.reminders_enabled else "",
        "reminders_need_approval": "1" if company.reminders_need_approval else "",
        "reminder_gap_days": str(company.reminder_gap_days),
        "default_discount_percent": "" if bps is None else f"{bps / 100:g}",  # display only: bps are stored
        "default_discount_days": "" if company.default_discount_days is None else str(company.default_discount_days),
        "allow_partial_payments": "1" if company.allow_partial_payments else "",
        "promise_horizon_days": str(company.promise_horizon_days),
        "promise_grace_days": str(company.promise_grace_days),
        "link_lifetime_days": str(company.link_lifetime_days),
        "transfer_expiry_days": str(company.transfer_expiry_days), "base_currency": company.base_currency,
        "timezone": company.timezone, "country": company.country,
    }


def _manages_reasons(staff: Staff) -> bool:
    return staff.user.role in (Role.admin.value, Role.manager.value)


@staff_get
def index(request: Request, session: Session, staff: Staff) -> Response:
    """Admins: every company's settings. Managers: their companies, for the dispute reasons."""
    if not _manages_reasons(staff):
        return forbidden(request, staff)
    query = scoped_companies(select(Company), staff.user).order_by(Company.name, Company.id)
    rows = list(session.scalars(query))
    return render(request, "admin/settings_list.html", {"user": staff.user, "rows": rows,
                                                        "reasons_only": not is_admin(staff.user)}, staff.language)


REASON_NOTICES = {
    "reasons": N_("Dispute reasons saved."),
    "deleted": N_("The reason was deleted."),
    "kept": N_("Disputes carry this reason: it was deactivated, not deleted."),
}


def _page(request: Request, session: Session, staff: Staff, company: Company, *, values: dict[str, str], form: Any = None,
          errors: list[tuple[str, str, str]] | None = None, status_code: int = 200,
          reasons: list[DisputeReason] | None = None, reason_error: str | None = None,
          reason_labels: tuple[str, str] = ("", ""), reasons_only: bool = False,
          account_error: str | None = None, account_form: dict[str, str] | None = None) -> Response:
    done = request.query_params.get("done", "")
    return render(request, "admin/settings.html", {
        "accounts": bank_accounts.list_accounts(session, company.code),
        "account_error": account_error, "account_form": account_form or {},
        "account_notice": i18n.gettext(staff.language, ACCOUNT_NOTICES[done]) if done in ACCOUNT_NOTICES else None,
        "user": staff.user, "company": company, "values": values, "errors": errors or [],
        "error_fields": {f for f, _, _ in errors or []},
        "methods": [] if reasons_only else _methods(request, company, staff.language, form),
        "saved": done == "saved", "max_logo_kb": MAX_LOGO_BYTES // 1024,
        "label": lambda field: i18n.gettext(staff.language, FIELD_LABELS[field]),
        "reasons": reasons if reasons is not None else dispute_service.all_reasons(session, company.id),
        "reason_notice": i18n.gettext(staff.language, REASON_NOTICES[done]) if done in REASON_NOTICES else None,
        "reason_error": reason_error, "new_reason": reason_labels, "reasons_only": reasons_only,
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
        settings = CompanySettings.from_form(form, logo=_upload(posted, "logo", MAX_LOGO_BYTES))
    except UserErrors as rejected:
        errors = [(p.field or "", i18n.gettext(staff.language, FIELD_LABELS[p.field]) if p.field in FIELD_LABELS
                   else "", p.render(staff.language)) for p in rejected]
        raise Rejected(_page(request, session, staff, company, values=form, form=form, errors=errors,
                             status_code=400)) from None
    company_service.update_settings(session, company, settings, actor=staff.user.email)
    return RedirectResponse(f"/admin/settings/{company.code}?done=saved", status_code=303)


def _reasons_company(session: Session, staff: Staff, code: str) -> Company:
    """The company, if this admin or manager may manage its reasons; 404 otherwise (a manager of
    another company learns nothing of it)."""
    company = session.scalar(scoped_companies(select(Company).where(Company.code == code), staff.user))
    if company is None:
        raise HTTPException(404)
    return company


def _reasons_page(request: Request, session: Session, staff: Staff, company: Company, **extra: Any) -> Response:
    if is_admin(staff.user):
        return _page(request, session, staff, company, values=_form_values(company), **extra)
    return _page(request, session, staff, company, values={}, reasons_only=True, **extra)


@staff_get
def reasons(request: Request, session: Session, staff: Staff) -> Response:
    if not _manages_reasons(staff):
        return forbidden(request, staff)
    return _reasons_page(request, session, staff, _reasons_company(session, staff, request.path_params["code"]))


@staff_post
def change_reasons(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    """One change to the list: `action` is add, rename, up, down, activate, deactivate or delete."""
    if not _manages_reasons(staff):
        return forbidden(request, staff)
    company = _reasons_company(session, staff, request.path_params["code"])
    form = {key: value[:2000] for key, value in posted.form.items() if isinstance(value, str)}
    action, actor = form.get("action", ""), staff.user.email
    label_fr, label_en = form.get("label_fr", ""), form.get("label_en", "")
    done = "reasons"
    try:
        if action == "add":
            dispute_service.add_reason(session, company, label_fr=label_fr, label_en=label_en, actor=actor)
        else:
            reason_id = form.get("reason_id", "")
            try:
                # Bounded: a forged id beyond PostgreSQL's integer range is simply not found.
                wanted = int(reason_id) if reason_id.isdigit() and len(reason_id) <= 9 else 0
                reason = dispute_service.find_reason(session, company, wanted)
            except LookupError:
                raise HTTPException(404) from None
            if action == "rename":
                dispute_service.rename_reason(session, company, reason, label_fr=label_fr, label_en=label_en,
                                              actor=actor)
            elif action in ("up", "down"):
                dispute_service.move_reason(session, company, reason, offset=-1 if action == "up" else 1, actor=actor)
            elif action in ("activate", "deactivate"):
                dispute_service.set_reason_active(session, company, reason, active=action == "activate", actor=actor)
            elif action == "delete":
                done = "deleted" if dispute_service.remove_reason(session, company, reason, actor=actor) else "kept"
            else:
                raise HTTPException(400)
    except UserError as rejected:
        message = rejected.render(staff.language)
        raise Rejected(_reasons_page(request, session, staff, company, reason_error=message, status_code=400,
                                     reason_labels=(label_fr, label_en) if action == "add" else ("", ""))) from None
    page = f"/admin/settings/{company.code}" if is_admin(staff.user) else f"/admin/settings/{company.code}/reasons"
    return RedirectResponse(f"{page}?done={done}#reasons", status_code=303)


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
    except UserError as error:
        session.rollback()
        company = _company(session, company.code)
        raise Rejected(_page(request, session, staff, company, values=_form_values(company), status_code=400,
                             account_error=error.render(staff.language),
                             account_form=form)) from None
    return RedirectResponse(f"/admin/settings/{company.code}?done=account_added#bank-accounts", status_code=303)


@staff_post(admin_only=True)
def account_active(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    company = _company(session, request.path_params["code"])
    active = posted.text("active", 2) == "1"
    try:
        bank_accounts.set_account_active(session, request.path_params["account_id"], [company.id], active,
                                         staff.user.email)
    except UserError:
        raise HTTPException(404) from None
    done = "account_activated" if active else "account_deactivated"
    return RedirectResponse(f"/admin/settings/{company.code}?done={done}#bank-accounts", status_code=303)


routes = [
    Route("/settings", index, methods=["GET"], name="admin:settings"),
    Route("/settings/{code:str}", show, methods=["GET"], name="admin:company_settings"),
    Route("/settings/{code:str}", save, methods=["POST"], name="admin:company_settings_save"),
    Route("/settings/{code:str}/reasons", reasons, methods=["GET"], name="admin:dispute_reasons"),
    Route("/settings/{code:str}/reasons", change_reasons, methods=["POST"],
          name="admin:dispute_reasons_change"),
    Route("/settings/{code:str}/accounts", add_account, methods=["POST"], name="admin:bank_account_add"),
    Route("/settings/{code:str}/accounts/{account_id:int}/active", account_active, methods=["POST"],
          name="admin:bank_account_active"),
]
