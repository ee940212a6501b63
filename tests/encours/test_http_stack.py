"""The per-request stack (encours.app, kernel.security, kernel.sessions): security headers on
every kind of response, signed sessions that are only sent back when they change, CSRF on unsafe
requests, and webhooks that get neither session nor CSRF check."""

from __future__ import annotations

import gc
import json
from base64 import b64encode
from dataclasses import replace
from typing import Iterator

import pytest
from itsdangerous import TimestampSigner
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from encours.app import SESSION_COOKIE, create_app
from kernel.security import SecurityHeadersMiddleware
from kernel.sessions import SessionMiddleware
from kernel.settings import Settings, load_settings
from links import tokens
from sandbox.localstripe_server import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET
from tests import factories
from tests.conftest import TEST_SECRET
from tests.fakes.localstripe_server import event_payload, sign

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def _stripe_settings(settings: Settings) -> Settings:
    stripe = load_settings({
        "ENCOURS_DATABASE_URL": settings.database_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
        "ENCOURS_BASE_URL": "http://testserver", "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # never reached
    })
    return replace(settings, **{name: getattr(stripe, name) for name in
                                ("stripe_secret_key", "stripe_publishable_key", "stripe_webhook_secret",
                                 "stripe_api_base")})


def _boom(request: Request) -> Response:
    raise RuntimeError("a bug")


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> Starlette:
    app = create_app(_stripe_settings(settings), sessions=session_factory)
    app.router.routes.append(Route("/test-boom", _boom))
    return app


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as client:
        yield client


def _assert_hardened(response: Response, what: str) -> None:
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp, what
    for name, value in HEADERS.items():
        assert response.headers[name] == value, (what, name)


def _cookie(data: dict[str, object]) -> str:
    """A session cookie as Starlette's SessionMiddleware signed them: sessions outlive the switch."""
    return TimestampSigner(TEST_SECRET).sign(b64encode(json.dumps(data).encode())).decode()


def test_security_headers_on_every_kind_of_response(session: Session, client: TestClient) -> None:
    customer = factories.customer(session, factories.company(session))
    token = tokens.make_token(TEST_SECRET, customer.primary_contact)
    responses = {
        "json": client.get("/healthz"),
        "redirect": client.get(f"/p/{token}", follow_redirects=False),
        "page": client.get("/portal"),
        "404": client.get("/nowhere"),
        "405": client.put("/healthz"),
        "400 bad link": client.get("/p/garbage"),
        "403 csrf": client.post("/portal/language", data={"language": "fr"}),
        "static": client.get("/static/css/portal.css"),
        "500": client.get("/test-boom"),
        "webhook": client.post("/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}),
    }
    assert responses["500"].status_code == 500 and responses["404"].status_code == 404
    assert responses["403 csrf"].status_code == 403
    for what, response in responses.items():
        _assert_hardened(response, what)


def test_a_page_keeps_its_own_csp_and_gets_the_other_headers() -> None:
    async def card(scope, receive, send):  # type: ignore[no-untyped-def]
        await PlainTextResponse("card", headers={"Content-Security-Policy": "script-src https://js.example"})(
            scope, receive, send)

    response = TestClient(SecurityHeadersMiddleware(card)).get("/")
    assert response.headers.get_list("content-security-policy") == ["script-src https://js.example"]
    for name, value in HEADERS.items():
        assert response.headers[name] == value


def test_an_unchanged_session_is_not_sent_again(session: Session, client: TestClient) -> None:
    customer = factories.customer(session, factories.company(session))
    token = tokens.make_token(TEST_SECRET, customer.primary_contact)
    first = client.get(f"/p/{token}", follow_redirects=False)
    assert "set-cookie" in first.headers
    # The same link again: the session it makes is the one the browser holds.
    again = client.get(f"/p/{token}", follow_redirects=False)
    assert again.status_code == 303 and "set-cookie" not in again.headers
    page = client.get("/portal")  # creates the CSRF token: a change, sent back
    assert page.status_code == 200 and "set-cookie" in page.headers
    page = client.get("/portal")
    assert page.status_code == 200 and "set-cookie" not in page.headers
    assert "Cookie" in page.headers["vary"]


def test_requests_that_never_touch_the_session_send_no_cookie(client: TestClient) -> None:
    for path in ("/healthz", "/static/css/portal.css"):
        response = client.get(path)
        assert "set-cookie" not in response.headers, path
        assert "Cookie" not in response.headers.get("vary", ""), path


def test_sessions_signed_in_starlettes_format_are_read(session: Session, client: TestClient) -> None:
    customer = factories.customer(session, factories.company(session))
    contact = customer.primary_contact
    session.commit()
    client.cookies.set(SESSION_COOKIE, _cookie({"portal": {"contact": contact.id, "customer": customer.id,
                                                           "v": contact.link_version}}))
    assert client.get("/portal").status_code == 200


def test_a_forged_or_garbled_session_cookie_is_an_empty_session(session: Session, client: TestClient) -> None:
    customer = factories.customer(session, factories.company(session))
    contact = customer.primary_contact
    session.commit()
    data = {"portal": {"contact": contact.id, "customer": customer.id, "v": contact.link_version}}
    forged = TimestampSigner("not-our-secret-0123456789abcdef").sign(b64encode(json.dumps(data).encode())).decode()
    for value in (forged, "garbage", _cookie(data)[:-3], TimestampSigner(TEST_SECRET).sign(b"!!notbase64").decode()):
        client.cookies.set(SESSION_COOKIE, value)
        response = client.get("/portal")
        assert response.status_code == 401, value
        client.cookies.clear()


def test_signing_out_ends_the_visit(session: Session, client: TestClient) -> None:
    customer = factories.customer(session, factories.company(session))
    client.get(f"/p/{tokens.make_token(TEST_SECRET, customer.primary_contact)}", follow_redirects=False)
    page = client.get("/portal")
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post("/portal/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 200 and "set-cookie" in response.headers
    assert client.get("/portal").status_code == 401


def test_session_middleware_sends_a_cookie_only_for_a_change() -> None:
    async def endpoint(request: Request) -> Response:
        action = request.path_params["action"]
        if action == "set":
            request.session["n"] = {"a": 1}
        elif action == "same":
            request.session.clear()
            request.session["n"] = {"a": 1}
        elif action == "nested":  # a change inside a value, which no __setitem__ sees
            request.session["n"]["a"] = 2
            request.session["n"] = request.session["n"]
        elif action == "clear":
            request.session.clear()
        return PlainTextResponse(json.dumps(dict(request.session)))

    app = SessionMiddleware(Starlette(routes=[Route("/{action}", endpoint), Route("/webhooks/{action}", endpoint)]), secret_key=TEST_SECRET,
                            session_cookie="s", max_age=3600, exempt_prefixes=("/webhooks/",))
    with TestClient(app) as client:
        assert "set-cookie" not in client.get("/read").headers  # nothing to keep
        first = client.get("/set")
        assert first.headers["set-cookie"].startswith("s=") and "httponly" in first.headers["set-cookie"]
        assert "Max-Age=3600" in first.headers["set-cookie"] and "samesite=lax" in first.headers["set-cookie"]
        assert "set-cookie" not in client.get("/read").headers
        assert "set-cookie" not in client.get("/same").headers  # written, but to what it was
        changed = client.get("/nested")
        assert "set-cookie" in changed.headers and client.get("/read").json() == {"n": {"a": 2}}
        cleared = client.get("/clear")
        assert cleared.headers["set-cookie"].startswith("s=null;") and "1970" in cleared.headers["set-cookie"]
        assert client.get("/read").json() == {}
        with pytest.raises(AssertionError, match="SessionMiddleware must be installed"):
            client.get("/webhooks/read")  # no session at all there


def test_csrf_is_checked_on_posts_by_form_field_or_htmx_header(session: Session, client: TestClient) -> None:
    customer = factories.customer(session, factories.company(session))
    client.get(f"/p/{tokens.make_token(TEST_SECRET, customer.primary_contact)}", follow_redirects=False)
    csrf = client.get("/portal").text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert client.post("/portal/language", data={"language": "fr"}).status_code == 403
    assert client.post("/portal/language", data={"language": "fr", "csrf_token": "x" + csrf}).status_code == 403
    assert client.post("/portal/language", data={"language": "fr"},
                       headers={"X-CSRF-Token": csrf, "HX-Request": "true"}, follow_redirects=False).status_code < 400
    assert client.post("/portal/language", data={"language": "en", "csrf_token": csrf},
                       follow_redirects=False).status_code < 400


def test_webhooks_get_no_session_and_no_csrf_check(session: Session, client: TestClient) -> None:
    customer = factories.customer(session, factories.company(session))
    client.get(f"/p/{tokens.make_token(TEST_SECRET, customer.primary_contact)}", follow_redirects=False)
    assert client.cookies.get(SESSION_COOKIE)  # a browser's session, sent along: ignored
    payload = event_payload("customer.created", {"id": "cus_test", "object": "customer"})
    response = client.post("/webhooks/stripe", content=payload,
                           headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)})
    assert response.status_code == 200, response.text
    assert "set-cookie" not in response.headers and "Cookie" not in response.headers.get("vary", "")
    _assert_hardened(response, "webhook")
    refused = client.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": "t=1,v1=00"})
    assert refused.status_code == 400  # the provider's signature is the check, not a CSRF token


def test_an_oversized_webhook_is_refused_before_it_is_read(session: Session, client: TestClient) -> None:
    from sqlalchemy import func, select

    from encours.app import BODY_LIMITS
    from ledger.models import WebhookEvent

    body = b"{" + b" " * BODY_LIMITS["/webhooks/"] + b"}"
    response = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": "t=1,v1=00"})
    assert response.status_code == 413 and "1 MiB" in response.text
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def test_a_streamed_body_is_cut_at_its_limit_whatever_its_length_said(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b"x" * (512 * 1024)

    response = client.post("/portal/language", content=chunks(), headers={"content-type": "text/plain"})
    assert response.status_code == 413
    assert client.post("/portal/language", content=b"x" * (2 * 1024 * 1024)).status_code == 413


def test_body_limits_by_prefix_the_longest_first() -> None:
    from kernel.body_limit import MIB, BodyLimitMiddleware

    seen: list[int] = []

    async def echo(scope, receive, send):  # type: ignore[no-untyped-def]
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        seen.append(size)
        await PlainTextResponse(str(size))(scope, receive, send)

    limited = BodyLimitMiddleware(echo, {"/up": 2 * MIB, "/up/small": 10}, default=100)
    client = TestClient(limited)
    assert client.post("/up/big", content=b"x" * MIB).status_code == 200
    assert client.post("/up/small", content=b"x" * 11).status_code == 413
    assert client.post("/form", content=b"x" * 100).status_code == 200
    assert client.post("/form", content=iter([b"x" * 60, b"x" * 60])).status_code == 413
    assert seen == [MIB, 100]  # the refused bodies never reached the app whole


def test_hsts_is_sent_when_the_base_url_is_https(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    plain = TestClient(create_app(settings, sessions=session_factory), base_url="http://testserver")
    assert "strict-transport-security" not in plain.get("/healthz").headers
    secure = create_app(replace(settings, base_url="https://pay.example.com"), sessions=session_factory)
    response = TestClient(secure, base_url="https://testserver").get("/admin/login")
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")
    assert "strict-transport-security" in TestClient(secure, base_url="https://testserver").get("/nowhere").headers


def test_what_start_up_built_is_kept_out_of_full_collections_while_the_app_runs(app: Starlette) -> None:
    with TestClient(app, base_url="http://testserver"):
        frozen = gc.get_freeze_count()
        assert frozen > 1_000  # the app, its routes, templates, models: everything alive at start-up
    assert gc.get_freeze_count() == 0  # stopped: collectable again, as in a test process running many apps
