"""Back-office: ERP imports by upload (admins, and managers for their companies).

The same all-or-nothing importer as `encours import` (`ledger.csv_import`): every bad line is
listed with its number and reason and nothing is written; otherwise a summary of what was
created, updated and left unchanged. A manager's file may only name its own companies.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin import auth
from admin.access import Rejected, Staff, forbidden, is_admin, staff_get, staff_post
from admin.routes import render
from kernel import i18n
from kernel.user_error import UserErrors
from ledger.csv_import import CUSTOMER_COLUMNS, INVOICE_COLUMNS, import_csv
from ledger.models import Role, User
from kernel.web import Posted

KINDS = ("customers", "invoices")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def may_import(user: User) -> bool:
    return user.role in (Role.admin.value, Role.manager.value)


def _page(request: Request, staff: Staff, context: dict[str, Any], status_code: int = 200) -> Response:
    return render(request, "admin/imports.html", {
        "user": staff.user, "kind": "customers", "report": None, "errors": [], "problem": None, "filename": "",
        "columns": {"customers": ",".join(CUSTOMER_COLUMNS), "invoices": ",".join(INVOICE_COLUMNS) + "[,type]"},
        "companies": [] if is_admin(staff.user) else [c.code for c in staff.user.companies],
        **context,
    }, staff.language, status_code=status_code)


@staff_get
def index(request: Request, session: Session, staff: Staff) -> Response:
    if not may_import(staff.user):
        return forbidden(request, staff)
    return _page(request, staff, {})


@staff_post
def upload(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    if not may_import(staff.user):
        return forbidden(request, staff)
    kind = posted.text("kind", 16)
    if kind not in KINDS:
        kind = "customers"
    value = posted.form.get("file")
    t = staff.language
    if not isinstance(value, UploadFile) or not value.filename:
        raise Rejected(_page(request, staff, {"kind": kind, "problem": i18n.gettext(t, "Choose a CSV file to import.")},
                             status_code=400))
    value.file.seek(0)
    raw = value.file.read(MAX_UPLOAD_BYTES + 1)
    filename = value.filename[:200]
    if len(raw) > MAX_UPLOAD_BYTES:
        raise Rejected(_page(request, staff, {"kind": kind, "filename": filename, "problem": i18n.gettext(
            t, "The file is larger than %(size)s MB; split it into smaller files.",
            size=MAX_UPLOAD_BYTES // (1024 * 1024))}, status_code=400))
    allowed = None if is_admin(staff.user) else [c.code for c in auth.visible_companies(session, staff.user)]
    try:
        report = import_csv(session, kind, raw, allowed_companies=allowed, actor=staff.user.email,  # type: ignore[arg-type]
                            filename=filename)
    except UserErrors as failed:
        errors = failed.by_line(t)  # in the reader's language
        raise Rejected(_page(request, staff, {"kind": kind, "filename": filename, "errors": errors},
                             status_code=400)) from None
    return _page(request, staff, {"kind": kind, "filename": filename, "report": report})


routes = [
    Route("/imports", index, methods=["GET"], name="admin:imports"),
    Route("/imports", upload, methods=["POST"], name="admin:import_upload"),
]
