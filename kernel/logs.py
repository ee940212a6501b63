"""Logs: one line per event (text, or JSON with ENCOURS_LOG_FORMAT=json) with its time, level,
logger and the request it belongs to; and never a secret in them. Magic-link tokens travel in
request paths (`GET /p/<token>`), so an access log line would otherwise hand a working link to
whoever reads the logs; passwords, API keys and card numbers must not land there either."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import IO, Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernel.web import raw_header

_TOKEN_PATH = re.compile(r"/p/(?!renew\b)[^/?#\s\"']+")
MASKED_PATH = "/p/[token]"
HIDDEN = "[hidden]"
ACCESS_LOGGERS = ("uvicorn.access",)

# name=value pairs in query strings, form bodies and messages: the value goes.
_SECRET_PAIR = re.compile(
    r"(?i)\b(token|csrf_token|password|passwd|new_password|secret|client_secret|api_key|apikey|access_token"
    r"|signature|code)=([^&\s\"']+)")
# "password": "…" in JSON or a repr.
_SECRET_ITEM = re.compile(r"(?i)([\"']?(?:password|passwd|token|secret|api_key|access_token)[\"']?\s*:\s*)"
                          r"([\"'])(.*?)\2")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^@/\s]+@")
_API_KEY = re.compile(r"\benc_(?:live|test)_[A-Za-z0-9_-]{8,}")
_STRIPE_CLIENT_SECRET = re.compile(r"(\b(?:pi|seti)_[A-Za-z0-9]+)_secret_[A-Za-z0-9]+")
# Values signed with itsdangerous (magic-link tokens, session cookies) and JWTs: three dot-separated
# URL-safe base64 parts, wherever they appear without their /p/ (an exception's message, a header).
_SIGNED = re.compile(r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_+/=-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{16,}(?![A-Za-z0-9_-])")
# 13 to 19 digits, possibly grouped by spaces or dashes: masked when the Luhn check passes.
_CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")

request_id: ContextVar[str | None] = ContextVar("encours_request_id", default=None)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}")


def _luhn(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def mask_tokens(text: str) -> str:
    return _TOKEN_PATH.sub(MASKED_PATH, text)


# What a match of each pattern must contain, for a test before the pattern's own scan (tens of
# microseconds each on a log line). On an ASCII line the lowered text holds every match of the (?i)
# patterns in lower case, so a plain pattern over it finds each key the (?i) one would; any other
# line goes through each pattern.
_PAIR_KEY = re.compile(r"(?:token|password|passwd|secret|api_key|apikey|signature|code)=")
_ITEM_KEY = re.compile(r"(?:password|passwd|token|secret|api_key)[\"']?\s*:")
# A signed value's last two parts: a dot and 16 URL-safe characters.
_SIGNED_TAIL = re.compile(r"\.[A-Za-z0-9_-]{16}")
# A card number's digits with their separators: at least 13 characters of [0-9 -] from a digit.
_CARD_SPAN = re.compile(r"[0-9][0-9 -]{12}")
# What any pattern's match holds at least one of: a text with none of them has nothing to mask (the
# access log's method, path and HTTP version, nearly always).
_MAYBE_SECRET = re.compile(r"/p/|[.=:]|(?i:bearer|basic)|enc_|_secret_|\d[\d -]{12}")


def mask_secrets(text: str) -> str:
    """`text` with magic-link tokens, passwords, keys, credentials in URLs and card numbers masked."""
    if not _MAYBE_SECRET.search(text):
        return text
    if "/p/" in text:
        text = _TOKEN_PATH.sub(MASKED_PATH, text)
    if "." in text and _SIGNED_TAIL.search(text):
        text = _SIGNED.sub("[signed]", text)
    # Lowered once: the substitutions below leave brackets around what they put in, so they never
    # make a new key of what was around them.
    lowered = text.lower() if text.isascii() else None
    if "=" in text and (lowered is None or _PAIR_KEY.search(lowered)):
        text = _SECRET_PAIR.sub(lambda match: f"{match.group(1)}={HIDDEN}", text)
    if ":" in text and ('"' in text or "'" in text) and (lowered is None or _ITEM_KEY.search(lowered)):
        text = _SECRET_ITEM.sub(lambda match: f"{match.group(1)}{match.group(2)}{HIDDEN}{match.group(2)}", text)
    if lowered is None or "bearer" in lowered or "basic" in lowered:
        text = _BEARER.sub(lambda match: f"{match.group(1)} {HIDDEN}", text)
    if "://" in text and "@" in text:
        text = _URL_PASSWORD.sub(r"\1:***@", text)
    if "enc_" in text:
        text = _API_KEY.sub("enc_[key]", text)
    if "_secret_" in text:
        text = _STRIPE_CLIENT_SECRET.sub(r"\1_secret_[hidden]", text)
    if text.isascii() and not _CARD_SPAN.search(text):
        return text
    return _CARD.sub(_mask_card, text)


class TokenFilter(logging.Filter):
    """Rewrites a record's message and arguments with every secret masked (for handlers that
    do not use our formatters, e.g. uvicorn's own when it configures logging itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_secrets(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple([mask_secrets(arg) if isinstance(arg, str) else arg for arg in record.args])
        elif isinstance(record.args, dict):
            record.args = {key: mask_secrets(value) if isinstance(value, str) else value
                           for key, value in record.args.items()}
        return True


def install_token_filter(logger_names: tuple[str, ...] = ACCESS_LOGGERS) -> None:
    """Adds the filter to each logger once (the app factory may run more than once per process)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, TokenFilter) for existing in logger.filters):
            logger.addFilter(TokenFilter())


# The last second written, and its text: lines come many to a second.
_second: tuple[float, str] = (math.nan, "")


def _timestamp(record: logging.LogRecord) -> str:
    """`2026-12-05T06:00:00.123Z`: the record's time rounded to the microsecond as datetime rounds a
    timestamp (half to even, carried into the second), then cut to the millisecond."""
    global _second
    created = record.created
    if not created >= 0:  # before 1970 (or not a number): datetime itself
        return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
    fraction, whole = math.modf(created)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1.0, micro - 1_000_000
    second, text = _second
    if whole != second:
        text = datetime.fromtimestamp(whole, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "")
        _second = (whole, text)
    return f"{text}.{micro // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-12-05T06:00:00.123Z INFO encours.worker [req-id] message`, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name} [{request_id.get() or '-'}] " \
               f"{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return mask_secrets(line)


# Attributes every LogRecord has: anything else was passed with `extra=` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message, exception, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": request_id.get(),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        # Masked after encoding: a secret cannot hide in an escape the patterns would miss.
        return mask_secrets(json.dumps(entry, ensure_ascii=False, default=str))


class _EncoursHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(log_format: str = "text", level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """One handler on the root logger, which every logger (uvicorn's included, when it is run
    with log_config=None) reaches; returns it. Safe to call again: the previous one is replaced."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, _EncoursHandler):
            root.removeHandler(existing)
    handler = _EncoursHandler(stream or sys.stderr)
    handler.addFilter(AlreadyLogged())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()  # uvicorn's own set-up, if it ran: one line per event, ours
        logger.propagate = True
    return handler


class RequestIdMiddleware:
    """Gives each request an id (the client's or proxy's `X-Request-ID` when it is sane, else a
    new one), puts it on every log line written while the request runs, and echoes it in the
    response's `X-Request-ID` header, so a user's report can be found in the logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = raw_header(scope, b"x-request-id")
        sane = given is not None and _SANE_REQUEST_ID.fullmatch(given) and not _TOKEN_PATH.search(given)
        current = given if sane and given is not None else _new_request_id()
        reset = request_id.set(current)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = current
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            # Logged here, with the request's id; the server's own report of it is then dropped
            # (AlreadyLogged), so the error is one line, not two.
            _errors.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            setattr(error, _LOGGED, True)
            raise
        finally:
            request_id.reset(reset)


def _new_request_id() -> str:
    """128 random bits as 32 hex digits, the shape of `uuid4().hex` at a fifth of its cost."""
    return os.urandom(16).hex()


_errors = logging.getLogger("encours.errors")
_LOGGED = "_encours_logged"


class AlreadyLogged(logging.Filter):
    """Drops a server's report of an exception RequestIdMiddleware already logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return record.name == _errors.name or not getattr(error, _LOGGED, False)
