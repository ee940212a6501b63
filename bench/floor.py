"""What the app itself spends on the cheapest requests (not a test, not a benchmark of speed):

    .venv/bin/python bench/floor.py [--postgres URL | --sqlite PATH] [--requests 5000] [--cprofile KIND]

Calls the ASGI app directly (no server, no client: a scope, a receive and a send as uvicorn
hands them), one request at a time in the app's lifespan, and prints the process CPU per request
of each kind: `GET /healthz`, a Stripe delivery refused for a bad signature, a missing header, a
body that is not JSON, and a duplicate delivery (its event stored once first), in rounds, the
least CPU of the rounds and their median. What uvicorn's
HTTP parsing costs is not in these figures (`bench/run.py` measures the whole server); what the
middleware, the route and the signature check cost is, at a resolution of a few microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402
from bench.generate import sqlite_path  # noqa: E402
from bench.harness import declined_event, webhook_checkout  # noqa: E402

Request = tuple[str, str, list[tuple[bytes, bytes]], bytes]


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "scheme": "http", "method": method,
            "root_path": "", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000"), *headers], "state": {}}


async def _one(app: Any, request: Request) -> int:
    method, path, headers, body = request
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(method, path, headers), receive, send)
    return status


def _measure(loop: asyncio.AbstractEventLoop, app: Any, request: Request, n: int, expect: int,
             profile: bool) -> float:
    async def go() -> None:
        for _ in range(n):
            status = await _one(app, request)
            assert status == expect, (request[1], status)

    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    loop.run_until_complete(go())
    cpu = time.process_time() - started
    if profiler:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats(os.environ.get("SORT", "tottime")).print_stats(35)
    return 1000 * cpu / n


def in_process_app(url: str, event_prefix: str) -> tuple[Any, Any, bytes]:
    """The app on `url` as `encours serve` builds it (Stripe configured as `bench/run.py` does), its
    settings, and a signed Stripe decline of the bench's webhook checkout under a new event id."""
    from encours.app import create_app
    from kernel.logs import configure_logging
    from kernel.settings import load_settings

    ctx = run.Context(url=url, duration=1, connections=1, threads=1, workers=1)
    env = run._stripe_env(ctx)
    os.environ.update(env)
    settings = load_settings(env)
    # As `encours serve` logs (a refused delivery writes a warning), to nowhere.
    configure_logging(settings.log_format, settings.log_level, stream=open(os.devnull, "w"))  # noqa: SIM115
    app = create_app(settings)
    return app, settings, declined_event(webhook_checkout(url), f"{event_prefix}_{os.urandom(4).hex()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--sqlite", metavar="PATH", default=str(sqlite_path(50_000, 1_000_000)))
    parser.add_argument("--requests", type=int, default=5000, help="of each kind, over all rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--cprofile", metavar="KIND", help="print cProfile's top functions for this kind on stderr")
    parser.add_argument("--only", metavar="KIND", action="append", help="measure only these kinds")
    args = parser.parse_args()
    url = args.postgres or f"sqlite:///{args.sqlite}"

    app, _settings, body = in_process_app(url, "evt_floor")
    json_type = (b"content-type", b"application/json")

    def signed(payload: bytes, secret: str = run.WEBHOOK_SECRET) -> list[tuple[bytes, bytes]]:
        return [(b"stripe-signature", run.stripe_signature(payload, secret).encode()), json_type,
                (b"content-length", str(len(payload)).encode())]

    kinds: dict[str, tuple[Request, int]] = {
        "healthz": (("GET", "/healthz", [], b""), 200),
        "refused": (("POST", "/webhooks/stripe", signed(body, "whsec_not_ours"), body), 400),
        "no_header": (("POST", "/webhooks/stripe", [json_type, (b"content-length", str(len(body)).encode())], body),
                      400),
        "not_json": (("POST", "/webhooks/stripe", signed(b"{not json"), b"{not json"), 400),
        "duplicate": (("POST", "/webhooks/stripe", signed(body), body), 200),
    }
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    results: dict[str, Any] = {"url": url.split("@")[-1], "requests": args.requests}
    try:
        assert loop.run_until_complete(_one(app, kinds["duplicate"][0])) == 200  # stored once: then duplicates
        chosen = {kind: value for kind, value in kinds.items() if not args.only or kind in args.only}
        for request, expect in chosen.values():  # warm-up: caches, the pool, prepared statements
            _measure(loop, app, request, 200, expect, False)
        # The kinds interleaved, round after round, and the least CPU of each kept: on a shared
        # machine a round slowed by another process's load says nothing about the code.
        rounds: dict[str, list[float]] = {kind: [] for kind in chosen}
        for number in range(args.rounds):
            for kind, (request, expect) in chosen.items():
                rounds[kind].append(_measure(loop, app, request, args.requests // args.rounds, expect,
                                             args.cprofile == kind and number == 0))
        for kind, figures in rounds.items():
            results[f"{kind}_cpu_ms_per_request"] = round(min(figures), 4)
            results[f"{kind}_cpu_ms_median"] = round(sorted(figures)[len(figures) // 2], 4)
    finally:
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
