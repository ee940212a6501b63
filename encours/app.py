"""The application factory: the composition root of the web side."""

from __future__ import annotations

import gc
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from anyio import to_thread
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from encours.error_reports import init_error_reports
from encours.metrics import MetricsMiddleware, metrics
from kernel import errors
from kernel.body_limit import MIB, BodyLimitMiddleware
from kernel.logs import RequestIdMiddleware, configure_logging, install_token_filter
from kernel.db import PAGE_THREADS, SERVER_POOL_SIZE, make_engine, make_sessionmaker, schema_problem, unit_of_work
from kernel.loop_reads import LoopReads
from kernel.security import DEFAULT_CSP, CSRFMiddleware, SecurityHeadersMiddleware, extend_csp
from kernel.sessions import SessionMiddleware
from kernel.clock import clock
from kernel.routing import Prefix
from kernel.settings import Settings, clock_file_from_env, load_settings
from kernel.storage import storage_from_settings
from kernel.templating import Templates
from ledger.models import Company
from admin import routing as admin_routing
from api import routing as api_routing
from mail import routing as mail_routing
from payments import routing as payments_routing
from payments import registry as payment_providers
from portal import branding
from portal import routing as portal_routing

STATIC_DIR = Path(__file__).resolve().parent / "static"
logger = logging.getLogger(__name__)
SESSION_COOKIE = "encours_session"
SESSION_MAX_AGE = 12 * 60 * 60
# Providers sign webhooks: they carry no cookie, so they get no session and no CSRF check.
# The ERP authenticates each API request with a bearer key: no cookie, so no CSRF either.
# /metrics is read by Prometheus with its own bearer token.
WEBHOOK_PREFIX = "/webhooks/"
NO_SESSION_PREFIXES = (WEBHOOK_PREFIX, "/api/", "/metrics")
# Request bodies, by path prefix: what each place needs and no more (multipart adds a little to
# each file). Forms are small; uploads have their own limits, checked again on each file.
FORM_BODY_LIMIT = 1 * MIB
BODY_LIMITS = {
    WEBHOOK_PREFIX: 1 * MIB,
    "/portal/requests": 55 * MIB,  # a dispute: up to 5 attachments of 10 MB
    "/admin/disputes": 55 * MIB,
    "/admin/imports": 21 * MIB,  # CSV imports: 20 MB
    "/admin/settings": 2 * MIB,  # a logo: 512 KB
    "/admin/fx/import": 3 * MIB,  # an FX CSV: 2 MB
    "/admin/bank": 51 * MIB,  # bank statements: 50 MB
    "/api/": 5 * MIB,  # the ERP API: bulk requests of up to 1,000 items
}


_HEALTHY = json.dumps({"status": "ok"}, separators=(",", ":")).encode("utf-8")  # as JSONResponse renders it


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Never the database: a database outage must take every
    process out of the load balancer (readiness), not get them all restarted. On the event loop:
    a plain function would hop to the thread pool and back for each probe."""
    return Response(_HEALTHY, media_type="application/json", headers={"Cache-Control": "no-store"})


def readyz(request: Request) -> Response:
    """Readiness: the database answers and this code can run on its schema (its migrations'
    head, or a later schema during a rolling upgrade: kernel.db.schema_problem)."""
    headers = {"Cache-Control": "no-store"}
    try:
        with request.app.state.read_sessions() as session:
            session.execute(text("SELECT 1"))
            reason = schema_problem(session.connection())
            session.rollback()
    except (SQLAlchemyError, OSError) as error:
        logger.warning("readyz: database unreachable: %s", error)
        return JSONResponse({"status": "unavailable", "reason": "database unreachable"}, 503, headers=headers)
    except Exception:  # whatever else goes wrong, the load balancer reads JSON, never an HTML 500
        logger.exception("readyz: checking the database failed")
        return JSONResponse({"status": "unavailable", "reason": "readiness check failed"}, 503, headers=headers)
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason}, 503, headers=headers)
    return JSONResponse({"status": "ok"}, headers=headers)


def brand_css(request: Request) -> Response:
    with unit_of_work(request.app.state.sessions) as session:
        company = session.query(Company).filter_by(code=request.path_params["code"]).one_or_none()
        if company is None:
            raise HTTPException(404)
        css = branding.stylesheet(company.brand_color)
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=300"})


def brand_logo(request: Request) -> Response:
    with unit_of_work(request.app.state.sessions) as session:
        company = session.query(Company).filter_by(code=request.path_params["code"]).one_or_none()
        if company is None or not company.logo or not company.logo_mime:
            raise HTTPException(404)
        content, mime = company.logo, company.logo_mime
    return Response(content, media_type=mime, headers={"Cache-Control": "public, max-age=300"})


class _PathSwitch:
    """Requests whose path starts with `prefix` to `matched`, every other one to `rest`."""

    def __init__(self, prefix: str, matched: ASGIApp, rest: ASGIApp) -> None:
        self.prefix = prefix
        self.matched = matched
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.matched(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


class _App(Starlette):
    """Starlette with the security headers outside its ServerErrorMiddleware, so that a 500
    page carries them too (a user middleware runs inside it); and the machine-to-machine
    webhooks (`/webhooks/…`, `webhook_routes`) through a stack of their own."""

    def __init__(self, *, csp: dict[str, list[str]], forwarded_allow_ips: str, hsts: bool,
                 webhook_routes: list[BaseRoute], **kwargs: Any) -> None:
        self.csp = csp
        self.forwarded_allow_ips = forwarded_allow_ips
        self.hsts = hsts
        self.webhook_routes = webhook_routes
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        # A provider's delivery carries no cookie and reads no page: no session, no CSRF check, no
        # walk past the pages' routes. What it shares with every request: the request id, the
        # metrics, the forwarded client address, the security headers, the body limit and the
        # errors as the app answers them (bench/RESULTS.md, 2026-12-05 floor10).
        error_handler = self.exception_handlers.get(500) or self.exception_handlers.get(Exception)
        handlers = {key: value for key, value in self.exception_handlers.items() if key not in (500, Exception)}
        webhooks = ServerErrorMiddleware(
            BodyLimitMiddleware(ExceptionMiddleware(Router(self.webhook_routes), handlers=handlers, debug=self.debug),
                                limits={}, default=BODY_LIMITS[WEBHOOK_PREFIX]),
            handler=error_handler, debug=self.debug)
        # The request id outermost: every log line of the request carries it, a 500's included.
        # Forwarded headers next: the client address every throttle counts by, only from trusted proxies.
        return RequestIdMiddleware(MetricsMiddleware(ProxyHeadersMiddleware(
            SecurityHeadersMiddleware(_PathSwitch(WEBHOOK_PREFIX, webhooks, super().build_middleware_stack()),
                                      csp=self.csp, hsts=self.hsts),
            trusted_hosts=self.forwarded_allow_ips,
        )))


def create_app(settings: Settings, sessions: sessionmaker[Session] | None = None) -> Starlette:
    install_token_filter()  # magic-link tokens never reach the access log
    payment_providers.check_settings(settings)  # a missing webhook secret stops the start, never skips checks
    engine = None
    read_sessions = sessions  # sessions given by the caller (tests) serve both
    if sessions is None:
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        read_sessions = make_sessionmaker(engine, write=False)
    # The hottest reads on a server database run on the event loop (kernel.loop_reads).
    loop_reads = LoopReads(engine) if engine is not None and engine.dialect.name == "postgresql" else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # What start-up built lives as long as the app: kept out of the full garbage collections,
        # which otherwise walk all of it every few dozen large responses (bench/RESULTS.md, 2026-12-05).
        gc.collect()
        gc.freeze()
        if engine is not None and engine.dialect.name != "sqlite":
            # No more threads than pooled connections: with anyio's 40 threads on a pool of 20,
            # connections beyond the pool were opened and closed again under load, 22 in 8 s with
            # one process (bench/RESULTS.md, 2026-12-05 opens8). Set in the server's event loop.
            to_thread.current_default_thread_limiter().total_tokens = SERVER_POOL_SIZE
        try:
            yield
        finally:
            gc.unfreeze()  # an app stopped in a longer-lived process (tests) can be collected
            if loop_reads is not None:
                await loop_reads.close()
        if engine is not None:
            engine.dispose()

    # /webhooks is shared by two packages (the relay's bounces, the providers' deliveries), so
    # each lists its own absolute path; the bounces go first, before /webhooks/{provider}.
    webhook_routes = [*mail_routing.routes, *payments_routing.routes]
    routes = [
        Route("/healthz", healthz, name="healthz"),
        Route("/readyz", readyz, name="readyz"),
        Route("/metrics", metrics, name="metrics"),
        Route("/brand/{code:str}.css", brand_css, name="brand_css"),
        Route("/brand/{code:str}/logo", brand_logo, name="brand_logo"),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        # Listed for url_path_for and the route table; served through the app's webhook stack.
        *webhook_routes,
        *portal_routing.links,  # /p/{token} and /p/renew: the emailed link stays short
        # Each package's routes under the prefix it owns; the bare prefix is a page of its own.
        portal_routing.home,
        Prefix(portal_routing.PREFIX, routes=portal_routing.routes),
        admin_routing.home,
        Prefix(admin_routing.PREFIX, routes=admin_routing.routes),
        Prefix(api_routing.PREFIX, routes=api_routing.routes),
    ]
    middleware = [
        Middleware(BodyLimitMiddleware, limits=BODY_LIMITS, default=FORM_BODY_LIMIT, problem_prefixes=("/api/",)),
        Middleware(
            SessionMiddleware,
            secret_key=str(settings.secret_key),
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE,
            same_site="lax",
            https_only=settings.https,
            exempt_prefixes=NO_SESSION_PREFIXES,
        ),
        Middleware(CSRFMiddleware, exempt_prefixes=NO_SESSION_PREFIXES),
    ]
    app = _App(
        # The pay form may be redirected to GoCardless's authorisation page.
        csp=extend_csp(DEFAULT_CSP, payment_providers.content_security_policy(settings)),
        forwarded_allow_ips=settings.forwarded_allow_ips,
        hsts=settings.https,
        routes=routes,
        webhook_routes=webhook_routes,
        middleware=middleware,
        exception_handlers={HTTPException: errors.http_exception, 500: errors.server_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.storage = storage_from_settings(settings)  # uploads' bytes: shared by every instance when s3
    app.state.sessions = sessions
    app.state.read_sessions = read_sessions  # for handlers that only read: see make_sessionmaker
    # A short read may run on the event loop when it reads a local SQLite file (see portal.routes._read).
    bind = engine if engine is not None else sessions.kw.get("bind")  # none: an app only listed, never served
    app.state.reads_inline = bind is not None and bind.dialect.name == "sqlite"
    app.state.loop_reads = loop_reads
    # The debtor's read-only pages in a few threads of their own on a server database (portal.routes).
    app.state.page_threads = None if bind is None or bind.dialect.name == "sqlite" else PAGE_THREADS
    app.state.templates = Templates()
    return app


def create_app_from_env() -> Starlette:
    """The app of `encours serve`, in each server process (uvicorn's workers are new processes)."""
    settings = load_settings()
    clock_file = clock_file_from_env()
    if clock_file is not None:  # tests that start servers set their "now" (kernel.clock)
        clock.follow(clock_file)
    configure_logging(settings.log_format, settings.log_level)
    init_error_reports(settings, component="serve")  # before the app exists: the SDK hooks Starlette
    return create_app(settings)  # its lifespan freezes the start-up heap (uvicorn runs it)
