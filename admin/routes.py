"""Back-office pages. Handlers stay thin: `admin.auth` does the work."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin import auth
from kernel import i18n
from kernel.db import unit_of_work
from kernel.security import client_ip
from mail import notifications
from kernel.i18n import N_
from admin.staff_accounts import MIN_PASSWORD_LENGTH
from ledger.models import User

STAFF_SESSION_KEY = "staff"
LANGUAGE_SESSION_KEY = "lang"
HOME = "/admin"
LOGIN = "/admin/login"
PASSWORD = "/admin/password"
ROLE_LABELS = {
    "admin": N_("Administrator"),
    "manager": N_("Manager"),
    "collector": N_("Collector"),
    "viewer": N_("Viewer"),
}


def _sessions(request: Request) -> Any:
    return request.app.state.sessions


def staff_language(request: Request) -> str:
    chosen = request.session.get(LANGUAGE_SESSION_KEY)
    return i18n.normalize(chosen) if chosen else i18n.negotiate(request.headers.get("accept-language"))


def t(language: str, message: str, **values: object) -> str:
    return i18n.gettext(language, message, **values)


def safe_next(target: str | None) -> str:
    """Only back-office paths of this site: never an open redirect."""
    target = (target or "").strip()
    if not target or "\\" in target or any(ord(ch) < 32 for ch in target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path.startswith("//"):
        return HOME
    if parts.path != HOME and not parts.path.startswith(HOME + "/"):
        return HOME
    if parts.path.startswith(LOGIN) or any(seg in (".", "..") for seg in unquote(parts.path).split("/")):
        return HOME
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _rotate(request: Request) -> None:
    """A fresh session: nothing from before survives but the chosen language."""
    language = request.session.get(LANGUAGE_SESSION_KEY)
    request.session.clear()
    if language:
        request.session[LANGUAGE_SESSION_KEY] = language


def signed_in_staff(request: Request, session: Session) -> User | None:
    user = auth.current_user(session, request.session.get(STAFF_SESSION_KEY))
    if user is None:
        request.session.pop(STAFF_SESSION_KEY, None)
    return user


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN}?next={quote(safe_next(target), safe='/')}", status_code=303,
                            headers={"Cache-Control": "no-store"})


def render(request: Request, name: str, context: dict[str, Any], language: str, status_code: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    return request.app.state.templates.response(
        request, name, {"user": None, **context}, language, status_code=status_code, headers=headers
    )


def _login_page(request: Request, language: str, *, email: str = "", next_path: str = HOME,
                error: str | None = None, status_code: int = 200,
                headers: dict[str, str] | None = None) -> Response:
    return render(
        request, "admin/login.html", {"email": email, "next": next_path, "error": error}, language,
        status_code=status_code, headers=headers,
    )


async def login(request: Request) -> Response:
    language = staff_language(request)
    if request.method == "GET":
        next_path = safe_next(request.query_params.get("next"))
        with unit_of_work(_sessions(request)) as session:
            if signed_in_staff(request, session) is not None:
                return RedirectResponse(next_path, status_code=303)
        return _login_page(request, language, next_path=next_path)
    form = await request.form()
    email = str(form.get("email", ""))[:254]
    password = str(form.get("password", ""))[:1024]
    next_path = safe_next(str(form.get("next", "")))
    ip = client_ip(request)
    with unit_of_work(_sessions(request)) as session:
        outcome = auth.authenticate(
            session, email, password, ip,
            on_repeated_failures=lambda user, count: notifications.notify_login_failures(
                session, user, failures=count, ip=ip, language=language, templates=request.app.state.templates))
        if outcome.blocked:
            minutes = max(1, (outcome.retry_after + 59) // 60)
            return _login_page(
                request, language, email=email, next_path=next_path, status_code=429,
                error=i18n.translations(language).ngettext(
                    "Too many attempts. Please wait %(num)s minute and try again.",
                    "Too many attempts. Please wait %(num)s minutes and try again.",
                    minutes,
                ) % {"num": minutes},
                headers={"Retry-After": str(outcome.retry_after)},
            )
        if outcome.user is None:
            return _login_page(
                request, language, email=email, next_path=next_path, status_code=401,
                error=t(language, "Wrong email or password"),
            )
        data = auth.session_data(outcome.user)
    _rotate(request)
    request.session[STAFF_SESSION_KEY] = data
    return RedirectResponse(next_path, status_code=303, headers={"Cache-Control": "no-store"})


def logout(request: Request) -> Response:
    with unit_of_work(_sessions(request)) as session:
        user = signed_in_staff(request, session)
        if user is not None:  # ends this session on the server too: a copy of the cookie stops working
            auth.end_sessions(user)
    _rotate(request)
    return RedirectResponse(LOGIN, status_code=303, headers={"Cache-Control": "no-store"})


def to_password(request: Request) -> Response:
    """A user holding a one-time password goes to the password page first, then where it was going."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "") \
        if request.method == "GET" else HOME
    return RedirectResponse(f"{PASSWORD}?next={quote(safe_next(target), safe='/')}", status_code=303,
                            headers={"Cache-Control": "no-store"})


async def password(request: Request) -> Response:
    language = staff_language(request)
    if request.method == "POST":
        form = await request.form()
        current = str(form.get("current_password", ""))[:1024]
        new = str(form.get("new_password", ""))[:1024]
        confirm = str(form.get("confirm_password", ""))[:1024]
        next_path = safe_next(str(form.get("next", "")))
    else:
        next_path = safe_next(request.query_params.get("next"))
    with unit_of_work(_sessions(request)) as session:
        user = signed_in_staff(request, session)
        if user is None:
            return to_login(request)
        forced = user.must_change_password
        page = {"user": user, "min_length": MIN_PASSWORD_LENGTH, "forced": forced,
                "next": next_path if next_path != PASSWORD else HOME}
        if request.method == "GET":
            changed = request.query_params.get("changed") == "1"
            return render(request, "admin/password.html", {**page, "errors": [], "changed": changed}, language)
        problems = auth.change_password(session, user, current, new, confirm)
        if problems:
            errors = [t(language, p, count=MIN_PASSWORD_LENGTH) if "%(count)s" in p else t(language, p)
                      for p in problems]
            return render(request, "admin/password.html", {**page, "errors": errors, "changed": False},
                          language, status_code=400)
        data = auth.session_data(user)
    _rotate(request)  # this session carries on under the new fingerprint; every other one ends
    request.session[STAFF_SESSION_KEY] = data
    target = page["next"] if forced else f"{PASSWORD}?changed=1"
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


routes = [
    Route("/login", login, methods=["GET", "POST"], name="admin:login"),
    Route("/logout", logout, methods=["POST"], name="admin:logout"),
    Route("/password", password, methods=["GET", "POST"], name="admin:password"),
]
