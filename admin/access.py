"""Who may see and do what in the back-office, and the plumbing every staff page shares.

An admin sees everything and alone manages users and settings; a manager or a viewer sees
the companies it is given; a collector sees the customers assigned to it. A viewer reads
and never acts (403). What a user may not see answers 404, as if it did not exist.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo

from babel.dates import format_datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from admin.routes import staff_language, render, signed_in_staff, to_login, to_password
from kernel.db import unit_of_work
from ledger.models import Company, Customer, Role, User
from kernel.web import Posted, Rejected, read_posted


def scoped(query: Select[Any], user: User) -> Select[Any]:
    """Restricts a query that joins Customer to what `user` may see."""
    if user.role == Role.admin.value:
        return query
    if user.role == Role.collector.value:
        return query.where(Customer.collector_id == user.id)
    return query.where(Customer.company_id.in_([c.id for c in user.companies] or [-1]))


def scoped_companies(query: Select[Any], user: User) -> Select[Any]:
    """Restricts a query that joins Company to the companies `user` may see (a collector: its own
    companies, i.e. those of the customers assigned to it)."""
    if user.role == Role.admin.value:
        return query
    if user.role == Role.collector.value:
        mine = select(Customer.company_id).where(Customer.collector_id == user.id)
        ids = [c.id for c in user.companies]
        return query.where(Company.id.in_(mine) | Company.id.in_(ids or [-1]))
    return query.where(Company.id.in_([c.id for c in user.companies] or [-1]))


DEFAULT_ZONE = "Europe/Paris"


def moment(language: str, timezone: str) -> Any:
    """Formats an aware datetime in the company's timezone, the reader's language."""
    zone = ZoneInfo(timezone)
    return lambda at: format_datetime(at, "short", tzinfo=zone, locale=language)


def staff_zone(session: Session, user: User) -> str:
    """The time zone of what `user` reads when a date is no one company's: the zone most of its
    companies are in (the first by name on a tie), Europe/Paris when it has none."""
    zones = Counter(company.timezone for company in companies_of(session, user))
    return zones.most_common(1)[0][0] if zones else DEFAULT_ZONE


def companies_of(session: Session, user: User) -> list[Company]:
    """The companies `user` may see, by name: the filter lists of the back-office pages."""
    return list(session.scalars(scoped_companies(select(Company), user).order_by(Company.name, Company.id)))


def visible_customer(session: Session, user: User, customer_id: int) -> Customer:
    customer = session.scalar(scoped(select(Customer), user).where(Customer.id == customer_id))
    if customer is None:
        raise HTTPException(404)
    return customer


def can_act(user: User) -> bool:
    return user.role != Role.viewer.value


def is_admin(user: User) -> bool:
    return user.role == Role.admin.value


@dataclass(frozen=True)
class Staff:
    user: User
    language: str


def forbidden(request: Request, staff: Staff) -> Response:
    return render(request, "admin/forbidden.html", {"user": staff.user}, staff.language, status_code=403)


def staff_get(handler: Callable[[Request, Session, Staff], Response] | None = None, *,
              admin_only: bool = False) -> Any:
    """A GET page for signed-in staff (the login page otherwise); `admin_only` pages answer 403 to others."""

    def wrap(handler: Callable[[Request, Session, Staff], Response]) -> Callable[[Request], Response]:
        @functools.wraps(handler)
        def endpoint(request: Request) -> Response:
            with unit_of_work(request.app.state.sessions) as session:
                user = signed_in_staff(request, session)
                if user is None:
                    return to_login(request)
                if user.must_change_password:
                    return to_password(request)
                staff = Staff(user, staff_language(request))
                if admin_only and not is_admin(user):
                    return forbidden(request, staff)
                return handler(request, session, staff)

        endpoint.admin_only = admin_only  # type: ignore[attr-defined]  # read by the role-matrix test
        return endpoint

    return wrap(handler) if handler is not None else wrap


def staff_post(handler: Callable[[Request, Session, Staff, Posted], Response] | None = None, *,
               admin_only: bool = False) -> Any:
    """Reads the (multipart) form, then acts in one unit of work; a viewer (or a non-admin on an
    `admin_only` action) gets 403; `Rejected` rolls everything back."""

    def wrap(handler: Callable[[Request, Session, Staff, Posted], Response]) -> Callable[[Request],
                                                                                         Awaitable[Response]]:
        def run(request: Request, posted: Posted) -> Response:
            with unit_of_work(request.app.state.sessions) as session:
                user = signed_in_staff(request, session)
                if user is None:
                    return to_login(request)
                if user.must_change_password:
                    return to_password(request)
                staff = Staff(user, staff_language(request))
                if not can_act(user) or (admin_only and not is_admin(user)):
                    return forbidden(request, staff)
                try:
                    return handler(request, session, staff, posted)
                except Rejected as rejected:
                    session.rollback()
                    return rejected.response

        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            posted = await read_posted(request)
            try:
                return await run_in_threadpool(run, request, posted)
            finally:
                await posted.form.close()

        endpoint.admin_only = admin_only  # type: ignore[attr-defined]
        return endpoint

    return wrap(handler) if handler is not None else wrap
