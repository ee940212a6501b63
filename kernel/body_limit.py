"""A cap on every request body, by path prefix: checked on Content-Length, then while streaming.

Without it a client could post hundreds of megabytes that the server holds in memory before
anyone looks at them (a webhook's signature is only checked on the whole body).
"""

from __future__ import annotations

import json

from typing import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernel.web import raw_header

MIB = 1024 * 1024


class _TooLarge(Exception):
    pass


def _describe(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit >= MIB and limit % MIB == 0 else f"{limit} bytes"


class BodyLimitMiddleware:
    """413 for a request whose body is larger than the limit of the longest prefix its path starts
    with (`default` otherwise). Runs inside Starlette's error middleware and outside everything
    that reads a body (CSRF reads forms), so no body is read past its limit anywhere."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, int], default: int,
                 problem_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limits = sorted(limits.items(), key=lambda item: len(item[0]), reverse=True)
        self.default = default
        # JSON APIs answer errors as RFC 9457 problems, whoever refuses the request.
        self.problem_prefixes = problem_prefixes

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        problem = scope["path"].startswith(self.problem_prefixes) if self.problem_prefixes else False
        declared = raw_header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _refuse(send, 400, "Invalid Content-Length", problem)
                return
            if int(declared) > limit:
                await _refuse(send, 413, f"Request body too large: the limit here is {_describe(limit)}", problem)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a body longer than its Content-Length said, or chunked
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, f"Request body too large: the limit here is {_describe(limit)}", problem)


async def _refuse(send: Send, status: int, text: str, problem: bool = False) -> None:
    if problem:
        title = "Request body too large" if status == 413 else "Bad request"
        body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": text}).encode("utf-8")
        content_type = b"application/problem+json"
    else:
        body, content_type = text.encode("utf-8"), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode("latin-1")),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
