"""Log lines: one per event, with time, level, logger and request id; JSON on demand; no secret."""

from __future__ import annotations

import copy
import io
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from kernel import logs
from kernel.logs import RequestIdMiddleware, configure_logging, mask_secrets


@pytest.mark.parametrize(("text", "secret"), [
    ('"GET /p/InR4LmV5SjFJam94ZlEuYWJj HTTP/1.1" 303', "InR4LmV5SjFJam94ZlEuYWJj"),
    ("POST /admin/login email=a@b.test&password=hunter2-but-longer", "hunter2-but-longer"),
    ("/api/v1/invoices?token=abcdef123456", "abcdef123456"),
    ('{"password": "correct horse battery"}', "correct horse battery"),
    ("Authorization: Bearer enc_live_0123456789abcdef", "0123456789abcdef"),
    ("key enc_live_AbCdEf0123456789 used", "AbCdEf0123456789"),
    ("connecting to smtp://relay:s3cr3t-pass@mail.test:587", "s3cr3t-pass"),
    ("card 4242 4242 4242 4242 declined", "4242 4242 4242 4242"),
    ("card 4000002500003155", "4000002500003155"),
    ("client_secret pi_3Abc_secret_XyZ123", "XyZ123"),
    ("BadSignature: eyJjIjoxLCJ2IjoxfQ.aSecretStamp.aSecretSignature does not match", "aSecretSignature"),
    ("cookie encours_session=eyJ1c2VyIjogMX0=.Zx9aQw.kT3vR2m8Yp0Qh7nWc1Lx5sA9dE", "kT3vR2m8Yp0Qh7nWc1Lx5sA9dE"),
])
def test_secrets_are_masked(text: str, secret: str) -> None:
    assert secret not in mask_secrets(text)


def test_ordinary_numbers_and_paths_stay() -> None:
    text = ("invoice F-2026-0412 of 1234567 minor units, GET /portal/pay/12/card, /p/renew, "
            "sqlalchemy.exc.OperationalError in encours.worker, pay.example.com")
    assert mask_secrets(text) == text
    assert mask_secrets("order 1234567812345678") == "order 1234567812345678"  # not a Luhn number


def _every_pattern(text: str) -> str:
    """mask_secrets as it was before its substring tests: every pattern over every line."""
    text = logs._TOKEN_PATH.sub(logs.MASKED_PATH, text)
    text = logs._SIGNED.sub("[signed]", text)
    text = logs._SECRET_PAIR.sub(lambda match: f"{match.group(1)}={logs.HIDDEN}", text)
    text = logs._SECRET_ITEM.sub(lambda match: f"{match.group(1)}{match.group(2)}{logs.HIDDEN}{match.group(2)}",
                                 text)
    text = logs._BEARER.sub(lambda match: f"{match.group(1)} {logs.HIDDEN}", text)
    text = logs._URL_PASSWORD.sub(r"\1:***@", text)
    text = logs._API_KEY.sub("enc_[key]", text)
    text = logs._STRIPE_CLIENT_SECRET.sub(r"\1_secret_[hidden]", text)
    return logs._CARD.sub(logs._mask_card, text)


_PIECES = ["token", "TOKEN", "Password", "passwd", "new_password", "secret", "client_secret", "API_KEY", "apikey",
           "access_token", "Signature", "code", "Bearer", "BASIC", "basic", "enc_", "live_", "test_", "_secret_",
           "pi_3Abc", "seti_9", "smtp://", "user:pw@", "@", ":", "=", '"', "'", " ", "  ", "-", ".", "/p/", "/p/renew",
           "4242", "4000", "0025", "3155", "1234", "5678", "0", "9", "٣", "K", "ſ", "İ", "é", "\n", "&", "?", "abc",
           "eyJjIjoxLCJ2IjoxfQ", "aSecretStampX", "Zx9aQwQwQwQwQwQwQwQw", "[", "]", "\t", "/", "+", "%", "_",
           "abcdefghijklmnop", "access", "127.0.0.1:51234", '"GET /p/', ' HTTP/1.1" 200', "code=", "token:", '":']


@given(st.lists(st.sampled_from(_PIECES), max_size=24))
@settings(max_examples=3000, deadline=None)
def test_the_substring_tests_mask_what_every_pattern_masks(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert mask_secrets(text) == _every_pattern(text)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("json", "INFO", stream=stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _app() -> Starlette:
    def hello(request: Request) -> PlainTextResponse:
        logging.getLogger("encours.test").info("hello from %s", request.url.path)
        return PlainTextResponse("hi")

    def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("the route broke")

    return Starlette(routes=[Route("/hello", hello), Route("/boom", boom)])


def test_json_lines_carry_the_request_id_which_the_response_echoes(captured: io.StringIO) -> None:
    with TestClient(RequestIdMiddleware(_app())) as client:
        mine = client.get("/hello", headers={"X-Request-ID": "lb-7f3a.42"})
        generated = client.get("/hello")
        forged = client.get("/hello", headers={"X-Request-ID": "bad id\twith spaces"})
    assert mine.headers["x-request-id"] == "lb-7f3a.42"
    assert len(generated.headers["x-request-id"]) == 32 and generated.headers["x-request-id"] != "lb-7f3a.42"
    assert forged.headers["x-request-id"] not in ("bad id\twith spaces", generated.headers["x-request-id"])
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    ours = [line for line in lines if line["logger"] == "encours.test"]
    assert [line["request_id"] for line in ours] == [mine.headers["x-request-id"], generated.headers["x-request-id"],
                                                     forged.headers["x-request-id"]]
    assert {line["level"] for line in ours} == {"INFO"} and ours[0]["message"] == "hello from /hello"
    assert all(line["time"].endswith("Z") for line in ours)


def test_an_unhandled_error_is_one_json_line_with_its_traceback_and_request_id(captured: io.StringIO) -> None:
    with TestClient(RequestIdMiddleware(_app()), raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "req-500"
    errors = [json.loads(line) for line in captured.getvalue().splitlines()]
    errors = [line for line in errors if line["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["request_id"] == "req-500"
    assert "RuntimeError: the route broke" in errors[0]["exception"]


def test_text_lines_read_time_level_logger_request_and_message() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("text", "INFO", stream=stream)
    try:
        logging.getLogger("encours.worker").warning("message %s failed: %s", 7, "550 no such user")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    timestamp, level_name, logger, request, *message = stream.getvalue().strip().split(" ")
    assert timestamp.endswith("Z") and "T" in timestamp
    assert (level_name, logger, request, " ".join(message)) == ("WARNING", "encours.worker", "[-]",
                                                                "message 7 failed: 550 no such user")


# --- a log line byte for byte what it was before tail14's cheaper timestamp and masking ------------


def _timestamp_before(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _filtered_before(record: logging.LogRecord) -> logging.LogRecord:
    """TokenFilter before tail14 (every string argument through every pattern)."""
    record = copy.copy(record)
    if isinstance(record.msg, str):
        record.msg = _every_pattern(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_every_pattern(arg) if isinstance(arg, str) else arg for arg in record.args)
    return record


def _text_before(record: logging.LogRecord) -> str:
    line = f"{_timestamp_before(record)} {record.levelname} {record.name} [{logs.request_id.get() or '-'}] " \
           f"{record.getMessage()}"
    if record.exc_info:
        line += "\n" + logging.Formatter().formatException(record.exc_info)
    return _every_pattern(line)


def _json_before(record: logging.LogRecord) -> str:
    entry: dict[str, Any] = {"time": _timestamp_before(record), "level": record.levelname, "logger": record.name,
                             "request_id": logs.request_id.get(), "message": record.getMessage()}
    if record.exc_info:
        entry["exception"] = logging.Formatter().formatException(record.exc_info)
    for key, value in vars(record).items():
        if key not in logs._STANDARD and key not in entry and not key.startswith("_"):
            entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    return _every_pattern(json.dumps(entry, ensure_ascii=False, default=str))


_TOKEN = "eyJjIjoxMjMsInYiOjF9.Z3mK2w.h0bZ8x1mN4Qe7rT9yU2iO5pA3sD6fG8hJ"
_ACCESS = '%s - "%s %s HTTP/%s" %d'
_RECORDS: list[tuple[str, str, tuple[object, ...], float]] = [
    ("uvicorn.access", _ACCESS, ("127.0.0.1:51234", "GET", "/portal", "1.1", 200), 1796549400.0),
    ("uvicorn.access", _ACCESS, ("127.0.0.1:51234", "GET", f"/p/{_TOKEN}", "1.1", 303), 1796549400.9995),
    ("uvicorn.access", _ACCESS, ("10.0.0.7:443", "GET", "/p/renew", "1.1", 200), 1796549400.9999995),
    ("uvicorn.access", _ACCESS, ("[::1]:8000", "POST", "/admin/login?password=hunter2&next=/", "1.1", 303),
     1796549401.0004999),
    ("uvicorn.access", _ACCESS, ("127.0.0.1:1", "GET", "/api/v1/x?token=abc&api_key=enc_live_0123456789abcdef",
                                 "1.1", 401), 1796549401.123456),
    ("uvicorn.access", _ACCESS, ("127.0.0.1:1", "GET", '/x?password:"a', "1.1", 404), 0.0005),
    ("encours.payments.webhooks", "stripe webhook refused: %s", ("No signatures found matching the payload",),
     1796549402.5),
    ("encours.worker", "card %s declined for %s", ("4242 4242 4242 4242", "Authorization: Bearer abc.def"),
     1796549403.25),
    ("encours.mail", "smtp://relay:s3cr3t@mail.test:587 said %r", ({"password": "x", "token": _TOKEN},), 1e9),
    ("encours.worker", "pi_3Abc_secret_XyZ123 for %s: ٣٣٣٣ ٣٣٣٣ ٣٣٣٣ ٣٣٣٣ ſecret=KEY", ("Ünïcode",), 1796549404.0),
]


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("request_id", [None, "8f14e45fceea167a5a36dedd4bea2543", "lb-7f3a.42/abcd=efgh"])
@pytest.mark.parametrize(("name", "message", "args", "created"), _RECORDS)
def test_a_line_is_byte_for_byte_what_it_was(log_format: str, request_id: str | None, name: str, message: str,
                                             args: tuple[object, ...], created: float) -> None:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)
    record.created = created
    formatter = logs.JsonFormatter() if log_format == "json" else logs.TextFormatter()
    before = _json_before if log_format == "json" else _text_before
    reset = logs.request_id.set(request_id)
    try:
        expected = before(_filtered_before(record))
        filtered = copy.copy(record)
        assert logs.TokenFilter().filter(filtered)
        assert formatter.format(filtered) == expected
    finally:
        logs.request_id.reset(reset)


def test_a_line_with_its_traceback_is_what_it_was() -> None:
    try:
        raise ValueError("password=hunter2 in /p/" + _TOKEN)
    except ValueError:
        record = logging.LogRecord("encours.errors", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())
    for formatter, before in ((logs.TextFormatter(), _text_before), (logs.JsonFormatter(), _json_before)):
        assert formatter.format(copy.copy(record)) == before(record)


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)
       | st.integers(0, 4_102_444_800).map(lambda second: second + 0.9995)
       | st.integers(0, 4_102_444_800).map(lambda second: second + 0.9999995))
@settings(max_examples=3000, deadline=None)
def test_the_cached_timestamp_reads_as_datetime_writes_it(created: float) -> None:
    record = logging.makeLogRecord({})
    record.created = created
    assert logs._timestamp(record) == _timestamp_before(record)
