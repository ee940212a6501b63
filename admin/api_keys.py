"""Back-office: the ERP's API keys (admin only). Thin: `ledger.api_keys` does the work and the
audit trail. A new key is shown once, as `encours apikey create` prints it once (`admin.reveal`, as
the ERP webhook endpoints' secrets): only the id of its sealed reveal row waits in the session
(`ledger.api_keys.hold_for_reveal`), deleted as it is shown."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin.customers import moment
from admin.access import Rejected, Staff, staff_get, staff_post
from admin.reveal import ShownOnce
from admin.routes import render
from kernel import i18n
from kernel.web import Posted
from kernel.user_error import UserError
from ledger.api_keys import company_keys, create_key, hold_for_reveal, reveal_once, revoke_key
from ledger.models import ApiKey, Company

BASE = "/admin/api-keys"
# The reveal row whose key the next page shows, once.
NEW_KEY = ShownOnce("api_key_reveal")


def _list(request: Request, session: Session, staff: Staff, *, status_code: int = 200, error: str | None = None,
          form: dict[str, Any] | None = None, created: tuple[ApiKey, str] | None = None) -> Response:
    companies = list(session.scalars(select(Company).order_by(Company.name, Company.id)))
    notice = i18n.gettext(staff.language, "Key revoked: requests made with it are refused from now on.") \
        if request.query_params.get("done") == "revoked" else None
    return render(request, "admin/api_keys.html", {
        "user": staff.user, "keys": company_keys(session), "companies": companies, "error": error,
        "notice": notice, "created": created, "moment": moment(staff.language, "UTC"),
        "form": form or {"company": companies[0].code if len(companies) == 1 else "", "name": "", "read_only": False},
    }, staff.language, status_code=status_code)


@staff_get(admin_only=True)
def list_keys(request: Request, session: Session, staff: Staff) -> Response:
    created = None
    reveal = NEW_KEY.take(request)
    if reveal is not None:
        created = reveal_once(session, reveal, user_id=staff.user.id,
                              secret=str(request.app.state.settings.secret_key))
    return _list(request, session, staff, created=created)


@staff_post(admin_only=True)
def create(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    form = {"company": posted.text("company", 32), "name": posted.text("name", 200),
            "read_only": posted.text("read_only", 1) == "1"}
    try:
        row, key = create_key(session, form["company"], form["name"], read_only=bool(form["read_only"]),
                              created_by=staff.user.email)
    except UserError as error:
        raise Rejected(_list(request, session, staff, status_code=400, form=form,
                             error=i18n.gettext(staff.language, "The key was not created: %(reason)s",
                                                reason=error.render(staff.language)))) from None
    NEW_KEY.hold(request, hold_for_reveal(session, row, key, user_id=staff.user.id,
                                          secret=str(request.app.state.settings.secret_key)))
    return RedirectResponse(BASE, 303)


def _key(session: Session, key_id: int) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise HTTPException(404)
    return row


@staff_get(admin_only=True)
def revoke_confirm(request: Request, session: Session, staff: Staff) -> Response:
    return render(request, "admin/api_key_revoke.html",
                  {"user": staff.user, "key": _key(session, request.path_params["key_id"])}, staff.language)


@staff_post(admin_only=True)
def revoke(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    row = _key(session, request.path_params["key_id"])
    if posted.text("confirm", 1) != "1":
        raise Rejected(render(request, "admin/api_key_revoke.html", {"user": staff.user, "key": row},
                              staff.language, status_code=400))
    revoke_key(session, row.company.code, row.name, revoked_by=staff.user.email)
    return RedirectResponse(f"{BASE}?done=revoked", 303)


routes = [
    Route("/api-keys", list_keys, methods=["GET"], name="admin:api_keys"),
    Route("/api-keys", create, methods=["POST"], name="admin:api_key_create"),
    Route("/api-keys/{key_id:int}/revoke", revoke_confirm, methods=["GET"], name="admin:api_key_revoke_confirm"),
    Route("/api-keys/{key_id:int}/revoke", revoke, methods=["POST"], name="admin:api_key_revoke"),
]
