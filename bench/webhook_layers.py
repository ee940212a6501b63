"""What a duplicate webhook delivery costs, layer by layer, in-process (not a test, not a benchmark of speed):

    .venv/bin/python bench/webhook_layers.py [--postgres URL | --sqlite PATH] [--requests 3000] [--rounds 5]

The app in its lifespan on the bench book, on uvloop as uvicorn runs it, one Stripe event stored
once and then delivered again and again: the CPU per delivery (process time; the least of the
rounds, and their median) of the whole ASGI app, of the webhook route's ASGI app (what Starlette's
router calls), of the endpoint alone, and of each piece the endpoint runs for a duplicate (the
signature and JSON, the loop read, the answer). What is left between those is the route's own
Python above the floor. uvicorn's HTTP parsing is not in these figures (`bench/floor.py` and
`bench/run.py` say what the whole server costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402
from bench.floor import _one, _scope, in_process_app  # noqa: E402
from bench.generate import sqlite_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--sqlite", metavar="PATH", default=str(sqlite_path(50_000, 1_000_000)))
    parser.add_argument("--requests", type=int, default=3000, help="per layer and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = args.postgres or f"sqlite:///{args.sqlite}"

    from starlette.datastructures import Headers
    from starlette.requests import Request
    from starlette.routing import Route, request_response

    from payments import webhook_routes
    from payments.registry import webhook_providers
    from payments.webhooks import decode_headers, intake_on_loop

    app, settings, body = in_process_app(url, "evt_layers")
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"Stripe/1.0 (+https://stripe.com/docs/webhooks)"),
               (b"stripe-signature", run.stripe_signature(body).encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"accept", b"*/*; q=0.5, application/xml")]
    route = next(r for r in app.routes if isinstance(r, Route) and r.path == "/webhooks/{provider:str}")
    provider = webhook_providers()["stripe"]

    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())

    def route_scope() -> dict[str, Any]:
        # What the router hands the route: the app, the path's parameters, the exception handlers.
        scope = _scope("POST", "/webhooks/stripe", headers[1:])
        scope.update(app=app, path_params={"provider": "stripe"}, endpoint=route.endpoint,
                     router=app.router)
        scope["starlette.exception_handlers"] = ({}, {})
        return scope

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    loop_reads = app.state.loop_reads if getattr(app.state, "loop_reads", None) is not None else None
    events = provider.verify(settings, Headers(scope=route_scope()), body)
    stored_headers = decode_headers(Headers(scope=route_scope()))

    async def whole() -> None:
        assert await _one(app, ("POST", "/webhooks/stripe", headers[1:], body)) == 200

    async def route_app() -> None:
        await route.app(route_scope(), receive, send)

    async def endpoint() -> None:
        response = await webhook_routes.webhook(Request(route_scope(), receive))
        assert response.status_code == 200

    forged = [(b"stripe-signature", run.stripe_signature(body, "whsec_not_ours").encode()) if name == b"stripe-signature"
              else (name, value) for name, value in headers[1:]]

    def refused_scope() -> dict[str, Any]:
        scope = route_scope()
        scope["headers"] = [(b"host", b"127.0.0.1:8000"), *forged]
        return scope

    async def route_app_refused() -> None:
        await route.app(refused_scope(), receive, send)

    # The route as Starlette wraps a function endpoint (session 12's route), beside it in the same
    # process: the two compared on the same machine of the same moment.
    wrapped = request_response(webhook_routes.webhook)

    async def wrapped_app() -> None:
        await wrapped(route_scope(), receive, send)

    async def wrapped_app_refused() -> None:
        await wrapped(refused_scope(), receive, send)

    async def endpoint_refused() -> None:
        response = await webhook_routes.webhook(Request(refused_scope(), receive))
        assert response.status_code == 400

    async def verify() -> None:
        provider.verify(settings, Headers(scope=route_scope()), body)

    async def loop_read() -> None:
        assert loop_reads is not None
        assert await intake_on_loop(loop_reads, provider, events[0], stored_headers) == "duplicate"

    async def headers_decoded() -> None:
        decode_headers(Headers(scope=route_scope()))

    async def request_and_body() -> None:
        await Request(route_scope(), receive).body()

    async def lookup() -> None:
        webhook_providers().get("stripe")
        provider.is_configured(settings)

    async def answer() -> None:
        await webhook_routes._duplicates(1)(route_scope(), receive, send)

    async def scope_only() -> None:
        route_scope()

    layers: dict[str, Callable[[], Awaitable[None]]] = {
        "whole app (ASGI, every middleware)": whole, "webhook route's ASGI app": route_app,
        "the same, as request_response(webhook) wraps it": wrapped_app,
        "endpoint (Request built, body read, answer built)": endpoint,
        "verify (signature, JSON, ProviderEvent)": verify, "decode_headers(request.headers)": headers_decoded,
        "Request + await body()": request_and_body, "provider lookup + is_configured": lookup,
        "answer built and sent": answer,
        "a refused delivery (no database): the route's ASGI app": route_app_refused,
        "a refused delivery: the same, as request_response(webhook) wraps it": wrapped_app_refused,
        "a refused delivery: the endpoint": endpoint_refused, "(the scope this script builds, to subtract)": scope_only,
    }
    if loop_reads is not None:
        layers["loop read (intake_on_loop, a duplicate)"] = loop_read

    def measure(layer: Callable[[], Awaitable[None]], n: int) -> float:
        async def go() -> None:
            for _ in range(n):
                await layer()

        started = time.process_time()
        loop.run_until_complete(go())
        return 1_000_000 * (time.process_time() - started) / n

    results: dict[str, Any] = {"url": url.split("@")[-1], "requests": args.requests, "rounds": args.rounds}
    try:
        assert loop.run_until_complete(_one(app, ("POST", "/webhooks/stripe", headers[1:], body))) == 200
        for layer in layers.values():
            measure(layer, 300)
        # The layers interleaved, round after round; the least of each kept (a round slowed by
        # another process says nothing of the code) and the median beside it.
        rounds: dict[str, list[float]] = {name: [] for name in layers}
        for _ in range(args.rounds):
            for name, layer in layers.items():
                rounds[name].append(measure(layer, args.requests))
        results["us_per_delivery"] = {name: {"least": round(min(v), 1), "median": round(sorted(v)[len(v) // 2], 1)}
                                      for name, v in rounds.items()}
    finally:
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
