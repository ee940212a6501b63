"""Back-office: "My day", a collector's worklist (`admin.my_day_service`).

A collector sees its own; an admin or a manager picks a collector of its companies.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin import my_day_service as service
from admin.access import Staff, can_act, companies_of, staff_get
from admin.customers import moment
from admin.customers_service import collectors_of
from admin.routes import render, t
from kernel.i18n import format_day
from ledger.models import Role, User


@staff_get
def my_day(request: Request, session: Session, staff: Staff) -> Response:
    companies = companies_of(session, staff.user)
    company_ids = [company.id for company in companies]
    collectors: list[User] = []
    collector: User | None = None
    if staff.user.role == Role.collector.value:
        collector = staff.user
    else:
        collectors = collectors_of(session, company_ids)
        raw = request.query_params.get("collector", "")
        collector = next((user for user in collectors if str(user.id) == raw), None)
    day = service.build_my_day(session, collector.id, company_ids) if collector is not None else None
    language = staff.language
    return render(request, "admin/my_day.html", {
        "user": staff.user, "collectors": collectors, "collector": collector, "worklist": day,
        "can_act": can_act(staff.user) and collector is not None,
        "back": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "reason_text": lambda reason: t(language, reason.message, **{
            key: format_day(value.date() if isinstance(value, datetime) else value, language)
            for key, value in reason.values.items()}),
        "moment": lambda at, company: moment(language, company.timezone)(at),
    }, language)


routes = [Route("/my-day", my_day, methods=["GET"], name="admin:my_day")]
