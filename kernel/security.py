"""HTTP hardening: security headers on every response and CSRF on every unsafe request."""

from __future__ import annotations

import secrets

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_SESSION_KEY = "csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_CSRF_BODY = 64 * 1024 * 1024

DEFAULT_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "frame-src": ["'none'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "object-src": ["'none'"],
}


def csp_header(directives: dict[str, list[str]]) -> str:
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def extend_csp(base: dict[str, list[str]], additions: dict[str, list[str]]) -> dict[str, list[str]]:
    """`base` with more sources per directive (a page that loads a provider's script, say);
    an added source replaces a directive's 'none'."""
    merged = {name: list(values) for name, values in base.items()}
    for name, sources in additions.items():
        values = [value for value in merged.get(name, list(base.get("default-src", []))) if value != "'none'"]
        merged[name] = values + [source for source in sources if source not in values]
    return merged


HSTS = "max-age=31536000; includeSubDomains"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Portal URLs can carry tokens and ids: never leak them to other sites.
    "referrer-policy": "no-referrer",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
    "cross-origin-opener-policy": "same-origin",
}


class SecurityHeadersMiddleware:
    """Adds the security headers to every response that does not set its own (a page that needs a
    wider CSP sends its own Content-Security-Policy). The headers are encoded once, at start-up."""

    def __init__(self, app: ASGIApp, csp: dict[str, list[str]] | None = None, hsts: bool = False) -> None:
        self.app = app
        pairs = {"content-security-policy": csp_header(csp or DEFAULT_CSP), **SECURITY_HEADERS}
        if hsts:  # only when served over https: a browser would otherwise refuse an http-only site
            pairs["strict-transport-security"] = HSTS
        self.headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs.items()]
        self.names = frozenset(name for name, _ in self.headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                own = {name.lower() for name, _ in headers} & self.names
                headers.extend([pair for pair in self.headers if pair[0] not in own] if own else self.headers)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get(CSRF_SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_SESSION_KEY] = token
    return str(token)


class LazyCSRFToken:
    """`csrf_token(request)` for templates, made when the page prints it: a page without a
    form (an error page, a redirect's message) leaves the session, and so the cookie, alone."""

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request

    def __str__(self) -> str:
        return csrf_token(self.request)

    __html__ = __str__  # a token is URL-safe base64: nothing to escape


class CSRFMiddleware:
    """Refuses unsafe requests without the session's token (form field or X-CSRF-Token header).

    Runs inside SessionMiddleware. Webhooks are exempt: providers sign them instead.
    """

    def __init__(self, app: ASGIApp, exempt_prefixes: tuple[str, ...] = ("/webhooks/",)) -> None:
        self.app = app
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or scope["path"].startswith(self.exempt_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        expected = scope.get("session", {}).get(CSRF_SESSION_KEY)
        headers = Headers(scope=scope)
        given = headers.get(CSRF_HEADER)
        body = b""
        more_body = True
        if given is None:
            chunks = []
            size = 0
            while more_body:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_CSRF_BODY:
                    await PlainTextResponse("Request too large", status_code=413)(scope, receive, send)
                    return
                chunks.append(chunk)
                more_body = message.get("more_body", False)
            body = b"".join(chunks)
            given = await _form_token(scope, body)
        if not expected or not given or not secrets.compare_digest(str(expected), str(given)):
            await _csrf_failure(scope, receive, send)
            return
        if not body and headers.get(CSRF_HEADER) is not None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


async def _form_token(scope: Scope, body: bytes) -> str | None:
    content_type = Headers(scope=scope).get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return None
    request = Request(scope, _replay(body, None))
    try:
        form = await request.form()
    except Exception:
        return None
    value = form.get(CSRF_FIELD)
    await form.close()
    return value if isinstance(value, str) else None


def _replay(body: bytes, receive: Receive | None) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if receive is not None:
            return await receive()
        return {"type": "http.disconnect"}

    return replay


async def _csrf_failure(scope: Scope, receive: Receive, send: Send) -> None:
    from kernel.errors import csrf_failure_response

    request = Request(scope, receive)
    response = csrf_failure_response(request)
    await response(scope, receive, send)


def client_ip(request: Request) -> str:
    """The client's address: the peer's, or what a trusted proxy forwarded (the app factory
    applies ENCOURS_FORWARDED_ALLOW_IPS before any route sees the request)."""
    return request.client.host if request.client else "unknown"


