"""Back-office: reports per collector over a chosen period (`admin.reports_service`).

Every staff role reads it for the companies it may see; a collector sees its own line only.
"""

from __future__ import annotations

from datetime import date

from babel.numbers import format_decimal
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin import reports_service as service
from admin.access import Staff, companies_of, staff_get
from admin.routes import render, t
from kernel import i18n
from kernel.clock import clock
from kernel.i18n import N_
from ledger.models import Role


def _day(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw) if len(raw) == 10 else None
    except ValueError:
        return None


@staff_get
def reports(request: Request, session: Session, staff: Staff) -> Response:
    companies = companies_of(session, staff.user)
    params = request.query_params
    company = next((c for c in companies if c.code == params.get("company", "")), companies[0] if companies else None)
    error = None
    report = None
    first = last = None
    if company is not None:
        today = clock.today(company.timezone)
        default_first = date(today.year - (1 if today.month <= 5 else 0), (today.month - 6) % 12 + 1, 1)
        raw_first, raw_last = params.get("from", "")[:20], params.get("to", "")[:20]
        first = _day(raw_first) if raw_first else default_first
        last = _day(raw_last) if raw_last else today
        if first is None:
            error = t(staff.language, N_("The start of the period %(value)s is not a date."), value=raw_first)
        elif last is None:
            error = t(staff.language, N_("The end of the period %(value)s is not a date."), value=raw_last)
        elif first > last:
            error = t(staff.language, N_("The period starts after it ends."))
        elif len(service.month_ends(first, last)) > service.MAX_MONTHS:
            error = t(staff.language, N_("A report covers at most %(count)s months."), count=service.MAX_MONTHS)
        else:
            only = [staff.user.id] if staff.user.role == Role.collector.value else None
            report = service.build_report(session, company, first, last, only)
    return render(request, "admin/reports.html", {
        "user": staff.user, "companies": companies, "company": company, "report": report, "error": error,
        "first": first, "last": last,
        "number": lambda value: format_decimal(value, format="#,##0.0",
                                               locale=i18n.FORMAT_LOCALES[i18n.normalize(staff.language)]),
    }, staff.language, status_code=400 if error else 200)


routes = [Route("/reports", reports, methods=["GET"], name="admin:reports")]
