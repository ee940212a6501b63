"""Back-office: every list as a CSV or Excel file, with the filters of the page it comes from.

`/admin/exports/{list}.{csv|xlsx}?<the page's query string>`. The rows are read and written in
batches while the response streams (a session of its own: the request's is closed by then);
the download is on the audit trail before the first byte goes out.
"""

from __future__ import annotations

from typing import Any, Iterator

from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from admin import exports_service as service
from admin import spreadsheets
from admin.access import Staff, staff_get
from admin.audit import ACTOR_TYPES, describe_changes, record_type
from admin.book import METHOD_LABELS, PAYMENT_STATUS_LABELS, PROVIDER_LABELS
from admin.routes import t
from kernel.clock import clock
from kernel.db import unit_of_work
from kernel.templating import status_label
from ledger import audit
from ledger.models import User
from portal.disputes import CASE_STATUSES
from portal.disputes import reason_label as case_reason

CASE_KINDS = {"dispute": "Dispute", "question": "Question"}


def labels(language: str) -> service.Labels:
    def gettext(message: str) -> str:
        return t(language, message)

    def label(kind: str, code: Any) -> str:
        if kind == "invoice_status":
            return status_label(code, gettext)
        if kind == "kind":
            return gettext("Credit note") if code == "credit_note" else gettext("Invoice")
        if kind == "method":
            return gettext(METHOD_LABELS[code]) if code in METHOD_LABELS else code
        if kind == "provider":
            return gettext(PROVIDER_LABELS[code]) if code in PROVIDER_LABELS else code
        if kind == "payment_status":
            return gettext(PAYMENT_STATUS_LABELS[code]) if code in PAYMENT_STATUS_LABELS else code
        if kind == "case_status":
            return gettext(CASE_STATUSES[code]) if code in CASE_STATUSES else code
        if kind == "case_kind":
            return gettext(CASE_KINDS[code]) if code in CASE_KINDS else code
        if kind == "reason":
            return case_reason(code, language)
        if kind == "actor_type":
            return gettext(ACTOR_TYPES[code]) if code in ACTOR_TYPES else code
        if kind == "record_type":
            return record_type(language, code)
        if kind == "action":
            return audit.action_label(language, code)
        return str(code)

    return label


def _rows(request: Request, user_id: int, export: service.Export, language: str) -> Iterator[list[Any]]:
    # A read session: on SQLite a long download never holds the one write lock.
    with unit_of_work(request.app.state.read_sessions) as session:
        user = session.get_one(User, user_id)
        extra: dict[str, Any] = {}
        if export.name == "audit":
            extra["describe"] = lambda event: describe_changes(session, event, language)
        yield from export.rows(session, user, request.query_params, labels(language), **extra)


@staff_get
def download(request: Request, session: Session, staff: Staff) -> Response:
    export = service.EXPORTS.get(request.path_params["list"])
    file_format = request.path_params["format"]
    if export is None or file_format not in spreadsheets.FORMATS:
        raise HTTPException(404)
    service.record_export(session, staff.user, export, file_format, request.url.query)
    language = staff.language
    header = [t(language, column) for column in export.columns]
    rows = _rows(request, staff.user.id, export, language)
    title = t(language, export.title)
    body = spreadsheets.csv_chunks(header, rows) if file_format == "csv" \
        else spreadsheets.xlsx_chunks(title, header, rows)
    filename = f"{export.name}-{clock.today('Europe/Paris').isoformat()}.{file_format}"
    return StreamingResponse(body, media_type=spreadsheets.FORMATS[file_format], headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff"})


routes = [
    Route("/exports/{list}.{format}", download, methods=["GET"], name="admin:export"),
]
