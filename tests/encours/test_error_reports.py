"""SENTRY_DSN: an unhandled error in a route reaches the Sentry endpoint as one event, with
nothing secret in it. The endpoint is a local HTTP server standing in for Sentry's ingest API
(the DSN points at it); the app is built by `encours serve`'s own factory in a fresh process, so
the SDK is initialised exactly as it is in production."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from itsdangerous import URLSafeTimedSerializer

from encours.error_reports import before_send
from kernel.settings import SettingsError, load_settings
from tests.conftest import TEST_SECRET

TOKEN = URLSafeTimedSerializer(TEST_SECRET, salt="portal-link").dumps({"c": 42, "v": 1})
PASSWORD = "Correct-Horse-Battery-Staple-9"

# Run in a fresh interpreter: the SDK's hooks are process-wide.
SERVE_ONE_ERROR = f"""
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient
import sentry_sdk
from encours.app import create_app_from_env

def broken(request: Request):
    link = request.query_params["link"]
    raise RuntimeError(f"cannot verify link {{link}}")

app = create_app_from_env()
app.webhook_routes.insert(0, Route("/webhooks/test-boom", broken, methods=["GET", "POST"]))  # served by their own stack
with TestClient(app, raise_server_exceptions=False) as client:
    response = client.post("/webhooks/test-boom?link={TOKEN}", data={{"password": "{PASSWORD}"}},
                           headers={{"Authorization": "Bearer {TOKEN}", "X-Request-ID": "req-sentry-1"}},
                           cookies={{"encours_session": "{TOKEN}"}})
    assert response.status_code == 500, response.status_code
    assert client.get("/healthz").status_code == 200
sentry_sdk.flush(timeout=10)
print("done")
"""


class _Ingest(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":  # the SDK's choice when brotli is importable (fonttools pulls it in)
            import brotli

            body = brotli.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding:
            raise AssertionError(f"unexpected Content-Encoding {encoding}")
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ingest() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []
    handler = type("Ingest", (_Ingest,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://publickey@127.0.0.1:{server.server_address[1]}/42", received
    finally:
        server.shutdown()
        server.server_close()


def _items(envelope: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(item header, item payload) of a Sentry envelope: a header line, then header/payload pairs."""
    lines = envelope.split(b"\n")[1:]
    items = []
    while len(lines) >= 2 and lines[0].strip():
        header = json.loads(lines[0])
        items.append((header, json.loads(lines[1]) if lines[1].strip() else {}))
        lines = lines[2:]
    return items


def test_an_unhandled_error_is_one_event_without_the_token(tmp_path: Path,
                                                           ingest: tuple[str, list[tuple[str, bytes]]]) -> None:
    dsn, received = ingest
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "SENTRY_"))}
    env |= {"ENCOURS_DATABASE_URL": f"sqlite:///{tmp_path / 'e.sqlite3'}", "ENCOURS_SECRET_KEY": TEST_SECRET,
            "SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "test"}
    done = subprocess.run([sys.executable, "-c", SERVE_ONE_ERROR], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "done" in done.stdout, done.stderr
    assert received and all(path == "/api/42/envelope/" for path, _ in received)
    events = [payload for _, body in received for header, payload in _items(body) if header.get("type") == "event"]
    assert len(events) == 1, events
    event = events[0]
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["environment"] == "test" and event["tags"]["component"] == "serve"
    assert event["request"]["method"] == "POST" and "data" not in event["request"]
    everything = b"".join(body for _, body in received)
    assert TOKEN.encode() not in everything and TOKEN.split(".")[-1].encode() not in everything
    assert PASSWORD.encode() not in everything
    assert b"cannot verify link" in everything  # the error itself is there, its secret is not


def test_before_send_scrubs_what_an_integration_may_add() -> None:
    event = {"request": {"url": f"https://pay.example.com/p/{TOKEN}", "query_string": "password=hunter22",
                         "headers": {"Authorization": "Bearer enc_live_abcdefgh1234", "Cookie": "s=1",
                                     "User-Agent": "curl"},
                         "data": {"password": PASSWORD}, "cookies": {"encours_session": TOKEN}},
             "breadcrumbs": {"values": [{"message": f"GET /p/{TOKEN} 303"}]},
             "extra": {"card": "4242 4242 4242 4242"}}
    text = json.dumps(before_send(event, {}))
    for secret in (TOKEN, "hunter22", "enc_live_abcdefgh1234", PASSWORD, "4242 4242 4242 4242"):
        assert secret not in text
    assert "curl" in text and "/p/[token]" in text


def test_a_malformed_dsn_stops_the_start() -> None:
    with pytest.raises(SettingsError, match="SENTRY_DSN"):
        load_settings({"ENCOURS_SECRET_KEY": TEST_SECRET, "SENTRY_DSN": "not a dsn"})
