"""Where one kind of request spends the served app's CPU, in the server itself (not a test):

    .venv/bin/pip install py-spy          # into the venv, not the project's dependencies
    .venv/bin/python bench/profile_server.py --postgres URL --kind duplicate [--seconds 10] [--raw FILE]

The app as `bench/run.py` serves it (uvicorn, one worker, httptools and uvloop), `wrk` sending one
kind of request for `--seconds` + 4 s: a Stripe event stored once and then delivered again and
again (`duplicate`), new events that change nothing (`new`), a delivery with a wrong signature
(`refused`) or `GET /healthz`; meanwhile `py-spy record --native` samples the worker 500 times a
second. Prints the server's CPU per request (as `bench/run.py` reads it, from /proc) and that CPU
split by what each sample was doing (the innermost frame that names a part, `PARTS`), in µs per
request: the kernel's socket calls, uvicorn's HTTP, the ASGI layers, the signature check, the
loop's read, … (samples waiting in `epoll_pwait` are idle and left out). py-spy pauses the worker
to sample it: read the split as shares, the CPU per request without a profiler from `bench/run.py`.
Run it under the bench lock like any other load (`bench/README.md`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import cpu, run  # noqa: E402
from bench.generate import sqlite_path  # noqa: E402
from bench.harness import declined_event, webhook_checkout  # noqa: E402

# (part, what an innermost-first frame name contains): the first part any frame of a sample names,
# the frames looked at innermost first. Socket calls are told by the sample's innermost frame alone.
SOCKET_CALLS = (("write (libc", "kernel: writes to the client (response)"),
                ("send (libc", "kernel: sends to PostgreSQL"),
                ("recv (libc", "kernel: reads"), ("read (libc", "kernel: reads"))
PARTS = (
    ("gc_collect", "garbage collection"),
    ("Logger.", "logging"),
    ("StripeProvider.verify", "signature check + JSON (verify)"),
    ("Request.body", "body received"),
    ("intake_on_loop", "loop read / write (Python, psycopg)"),
    ("LoopReads", "loop read / write (Python, psycopg)"),
    ("_Link.", "loop read / write (Python, psycopg)"),
    ("pq.cpython", "loop read / write (Python, psycopg)"),
    ("run_in_threadpool", "thread pool (handler, ORM, SQLite)"),
    ("worker (thread", "thread pool (handler, ORM, SQLite)"),
    ("data_received", "uvicorn: HTTP parsing, request cycle"),
    ("on_response_complete", "uvicorn: HTTP parsing, request cycle"),
    ("RequestResponseCycle.send", "uvicorn: response sent (Python)"),
    ("Response.__call__", "answer built, middleware send wrappers"),
    ("webhook (webhook_routes", "endpoint's own Python"),
    ("healthz (app", "endpoint's own Python"),
    ("run_asgi", "ASGI layers: middleware, router"),
)
IDLE = "epoll_pwait"
FRAME = re.compile(r"(.*?) \((.*?)(:\d+)?\)$")


def split(raw: Path) -> tuple[dict[str, int], int]:
    """Samples by part, and the busy samples, from py-spy's raw (collapsed stacks) output."""
    parts: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        names = []
        for frame in stack.split(";"):
            found = FRAME.match(frame)
            names.append(f"{found.group(1)} ({found.group(2).rsplit('/', 1)[-1]}" if found else frame)
        if IDLE in names[-1]:
            continue
        busy += int(count)
        parts[_part(names)] += int(count)
    return dict(parts), busy


def _part(names: list[str]) -> str:
    for needle, part in SOCKET_CALLS:
        if names[-1].startswith(needle):
            return part
    for name in reversed(names):
        for needle, part in PARTS:
            if needle in name:
                return part
    return "other (event loop, tasks)"


def _per_request(ticks: int, requests: int) -> float:
    return round(1000 * ticks / os.sysconf("SC_CLK_TCK") / requests, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--sqlite", metavar="PATH", default=str(sqlite_path(50_000, 1_000_000)))
    parser.add_argument("--kind", choices=("duplicate", "new", "refused", "healthz"), default="duplicate")
    parser.add_argument("--seconds", type=int, default=10, help="sampled; the load runs 4 s longer")
    parser.add_argument("--raw", metavar="FILE", help="keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    url = args.postgres or f"sqlite:///{args.sqlite}"
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        sys.exit(f"{spy} is missing: .venv/bin/pip install py-spy")
    ctx = run.Context(url=url, duration=args.seconds + 4, connections=32, threads=2, workers=1)
    checkout = webhook_checkout(url)
    tag = os.urandom(4).hex()
    payload = declined_event(checkout, f"evt_profile_{tag}")
    if args.kind == "new":
        bodies = [declined_event(checkout, f"evt_profile_{tag}_{n}") for n in range(8_000 * ctx.duration)]
        lines = [("POST", "/webhooks/stripe", run.stripe_signature(body), body.decode()) for body in bodies]
    elif args.kind == "refused":
        lines = [("POST", "/webhooks/stripe", run.stripe_signature(payload, secret="whsec_not_ours"),
                  payload.decode())]
    elif args.kind == "healthz":
        lines = [("GET", "/healthz", "", "")]
    else:
        lines = [("POST", "/webhooks/stripe", run.stripe_signature(payload), payload.decode())]
    raw = Path(args.raw) if args.raw else Path(tempfile.mkstemp(suffix=".txt")[1])
    with run.Server(run.APP, 1, run._stripe_env(ctx)) as server:
        server.wait("/healthz")
        if args.kind == "duplicate":
            import httpx

            first = httpx.post(server.base + "/webhooks/stripe", content=payload, timeout=30,
                               headers={"Stripe-Signature": lines[0][2], "Content-Type": "application/json"})
            assert first.status_code == 200, (first.status_code, first.text[:300])
        worker = server.pids()[0]

        def record() -> None:
            time.sleep(2)  # past wrk's connections opening
            subprocess.run([str(spy), "record", "--native", "--rate", "500", "--duration", str(args.seconds),
                            "--pid", str(worker), "--format", "raw", "--output", str(raw)],
                           check=True, capture_output=True)

        recorder = threading.Thread(target=record)
        recorder.start()
        before = cpu.read_stat(worker)
        result = run.wrk_list(server.base, ctx, server, lines)
        after = cpu.read_stat(worker)
        recorder.join()
    assert before is not None and after is not None, "the worker ended under load"
    parts, busy = split(raw)
    cpu_ms = result["server_cpu_ms_per_request"]
    report: dict[str, Any] = {
        "kind": args.kind, "url": url.split("@")[-1], "requests_per_s": result["requests_per_s"],
        "server_cpu_ms_per_request": cpu_ms, "busy_samples": busy,
        # From /proc, the whole load: what the worker spent in the kernel (its socket calls) and in user space.
        "worker_user_ms_per_request": _per_request(after.utime - before.utime, result["requests"]),
        "worker_kernel_ms_per_request": _per_request(after.stime - before.stime, result["requests"]),
        "us_per_request": {part: round(1000 * cpu_ms * count / busy, 1)
                           for part, count in sorted(parts.items(), key=lambda item: -item[1])},
    }
    print(json.dumps(report, indent=2))
    if not args.raw:
        raw.unlink()


if __name__ == "__main__":
    main()
