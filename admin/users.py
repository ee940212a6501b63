"""Back-office: staff accounts (admin only). Thin: `admin.staff_accounts` does the work and the audit trail.

A generated password is shown once, on the page answering the POST (never in a URL), as
`encours user create` prints it once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin.access import Rejected, Staff, staff_get, staff_post
from admin.routes import ROLE_LABELS, render
from admin import staff_accounts as users
from kernel import i18n
from kernel.forms import parse
from kernel.user_error import UserError, UserErrors
from ledger.models import Company, Role, User
from kernel.web import Posted

ROLES = [r.value for r in Role]


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(404)
    return user


def _message(language: str, error: UserError | UserErrors) -> str:
    return error.render(language)


def _context(session: Session, staff: Staff) -> dict[str, Any]:
    return {
        "user": staff.user,
        "roles": [(r, i18n.gettext(staff.language, ROLE_LABELS[r])) for r in ROLES],
        "role_label": lambda r: i18n.gettext(staff.language, ROLE_LABELS.get(r, r)),
        "companies": list(session.scalars(select(Company).order_by(Company.name, Company.id))),
    }


def _list(request: Request, session: Session, staff: Staff, *, status_code: int = 200, error: str | None = None,
          form: dict[str, Any] | None = None, created: tuple[User, str] | None = None) -> Response:
    accounts = list(session.scalars(select(User).order_by(User.email)))
    return render(request, "admin/users.html", {
        **_context(session, staff), "accounts": accounts, "error": error,
        "form": form or {"email": "", "role": "collector", "companies": []}, "created": created,
    }, staff.language, status_code=status_code)


@staff_get(admin_only=True)
def list_users(request: Request, session: Session, staff: Staff) -> Response:
    return _list(request, session, staff)


def _codes(posted: Posted) -> list[str]:
    return [v[:32] for v in posted.form.getlist("companies") if isinstance(v, str) and v][:200]


@staff_post(admin_only=True)
def create(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    form = {"email": posted.text("email", 254), "role": posted.text("role", 16), "companies": _codes(posted)}
    password = users.generate_password()
    try:
        typed = parse(users.StaffUserForm, form)
        account = users.create_user(session, email=typed.email, role=typed.role.value, password=password,
                                    one_time=True,
                                    company_codes=typed.companies, actor=staff.user)
    except (UserError, UserErrors) as error:
        raise Rejected(_list(request, session, staff, status_code=400, error=_message(staff.language, error),
                             form=form)) from None
    return _list(request, session, staff, created=(account, password))


def _page(request: Request, session: Session, staff: Staff, account: User, *, status_code: int = 200,
          error: str | None = None, password: str | None = None) -> Response:
    notice = {
        "saved": i18n.gettext(staff.language, "Changes saved."),
        "unchanged": i18n.gettext(staff.language, "Nothing changed."),
        "deactivated": i18n.gettext(staff.language, "Account deactivated: its sessions have ended."),
        "activated": i18n.gettext(staff.language, "Account reactivated."),
    }.get(request.query_params.get("done", ""))
    return render(request, "admin/user.html", {
        **_context(session, staff), "account": account, "error": error, "password": password, "notice": notice,
        "account_codes": {c.code for c in account.companies},
    }, staff.language, status_code=status_code)


@staff_get(admin_only=True)
def show(request: Request, session: Session, staff: Staff) -> Response:
    return _page(request, session, staff, _user(session, request.path_params["user_id"]))


def _fail(request: Request, session: Session, staff: Staff, user_id: int, error: UserError | UserErrors) -> Rejected:
    session.rollback()
    return Rejected(_page(request, session, staff, _user(session, user_id), status_code=400,
                          error=_message(staff.language, error)))


@staff_post(admin_only=True)
def update(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    account = _user(session, request.path_params["user_id"])
    try:
        typed = parse(users.StaffRoleForm, {"role": posted.text("role", 16), "companies": _codes(posted)})
        changed = users.update_user(session, actor=staff.user, user=account, role=typed.role.value,
                                    company_codes=typed.companies)
    except (UserError, UserErrors) as error:
        raise _fail(request, session, staff, account.id, error) from None
    return RedirectResponse(f"/admin/users/{account.id}?done={'saved' if changed else 'unchanged'}", 303)


@staff_post(admin_only=True)
def set_active(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    account = _user(session, request.path_params["user_id"])
    active = posted.text("active", 1) == "1"
    try:
        users.set_active(session, actor=staff.user, user=account, active=active)
    except UserError as error:
        raise _fail(request, session, staff, account.id, error) from None
    return RedirectResponse(f"/admin/users/{account.id}?done={'activated' if active else 'deactivated'}", 303)


@staff_post(admin_only=True)
def reset_password(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    account = _user(session, request.path_params["user_id"])
    if account.id == staff.user.id:  # one's own password is changed knowing the current one
        return RedirectResponse("/admin/password", 303)
    password = users.reset_password(session, actor=staff.user, user=account)
    return _page(request, session, staff, account, password=password)


routes = [
    Route("/users", list_users, methods=["GET"], name="admin:users"),
    Route("/users", create, methods=["POST"], name="admin:user_create"),
    Route("/users/{user_id:int}", show, methods=["GET"], name="admin:user"),
    Route("/users/{user_id:int}", update, methods=["POST"], name="admin:user_update"),
    Route("/users/{user_id:int}/active", set_active, methods=["POST"], name="admin:user_active"),
    Route("/users/{user_id:int}/password", reset_password, methods=["POST"], name="admin:user_password"),
]
