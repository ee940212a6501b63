"""bench/profile_server.py: py-spy's collapsed stacks of a served worker split into the parts of a request."""

from __future__ import annotations

from pathlib import Path

from bench import profile_server

_LOOP = "Runner.run (asyncio/runners.py:118);run_forever (loop.c:33192);Handle__run (loop.c:1)"
_CYCLE = f"{_LOOP};RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:409)"
_ENDPOINT = f"{_CYCLE};MetricsMiddleware.__call__ (encours/metrics.py:80);_Endpoint.__call__ (payments/webhook_routes.py:190)"


def test_each_sample_goes_to_the_innermost_part_it_names_and_idle_ones_to_none(tmp_path: Path) -> None:
    raw = tmp_path / "stacks.txt"
    raw.write_text("\n".join([
        f"{_LOOP};uv__io_poll (linux.c:1);epoll_pwait (libc.so.6) 40",  # idle: left out
        f"{_ENDPOINT};webhook (payments/webhook_routes.py:66);StripeProvider.verify (payments/stripe.py:195);"
        "loads (json/__init__.py:346) 7",
        f"{_ENDPOINT};Response.__call__ (starlette/responses.py:160);"
        "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:549);write (libc.so.6) 5",
        f"{_ENDPOINT};webhook (payments/webhook_routes.py:75);intake_on_loop (payments/webhooks.py:500);"
        "_Link.run (kernel/loop_reads.py:160);PQsendQueryPrepared (libpq.so.5);send (libc.so.6) 3",
        f"{_ENDPOINT};webhook (payments/webhook_routes.py:58) 2",
        f"{_CYCLE};ProxyHeadersMiddleware.__call__ (uvicorn/middleware/proxy_headers.py:40) 4",
        f"{_LOOP};HttpToolsProtocol.data_received (uvicorn/protocols/http/httptools_impl.py:150) 6",
        f"{_LOOP};gc_collect_main (libpython3.11.so.1.0) 1",
        f"{_LOOP} 2",
    ]) + "\n")

    parts, busy = profile_server.split(raw)

    assert busy == 30
    assert parts == {
        "signature check + JSON (verify)": 7,
        "kernel: writes to the client (response)": 5,
        "kernel: sends to PostgreSQL": 3,
        "endpoint's own Python": 2,
        "ASGI layers: middleware, router": 4,
        "uvicorn: HTTP parsing, request cycle": 6,
        "garbage collection": 1,
        "other (event loop, tasks)": 2,
    }
