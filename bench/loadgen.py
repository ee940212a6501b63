"""An open-loop, constant-rate HTTP/1.1 load generator: latency without coordinated omission.

    .venv/bin/python bench/loadgen.py http://127.0.0.1:8000 --rate 800 --duration 10 --requests requests.json

Request i is due at `start + i / rate`, whatever happened to the ones before it. Each of the
keep-alive connections takes the next due request, waits for its time if it is early, sends it
and reads the whole response; the latency is measured from the request's *intended* send time,
so a server that stalls is charged for every request that should have gone out meanwhile (a
closed loop, `wrk` or `autocannon`, sends nothing while it waits and so measures only the
requests it managed to send: "coordinated omission"). When every connection is busy, due
requests wait in this process and that wait is counted too.

No packaged tool does this here: wrk2 and vegeta are not in Debian 12, `hey -q` and
`autocannon -R` pace each connection but time from the actual send, httperf opens a connection
per rate tick and prints no percentiles. Prints one JSON document: latency percentiles (ms),
status counts, how late the sends were, and this process's own CPU time, so a reader can
tell when the generator, not the server, was the bottleneck.

`--requests` is a JSON list of {"method", "path", "headers", "body"} sent in turn (cycling);
without it, `GET` of the URL's path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit


def schedule(rate: float, duration: float) -> list[float]:
    """Intended send times (seconds from the start) of a constant-rate run: i / rate."""
    if rate <= 0 or duration <= 0:
        return []
    count = int(math.floor(rate * duration + 1e-9))
    return [i / rate for i in range(count)]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values: the smallest value with at least
    q % of the values at or below it. None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(latencies_ms: list[float]) -> dict[str, float | None]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {"p50_ms": rounded(percentile(latencies_ms, 50)), "p90_ms": rounded(percentile(latencies_ms, 90)),
            "p99_ms": rounded(percentile(latencies_ms, 99)), "p999_ms": rounded(percentile(latencies_ms, 99.9)),
            "max_ms": rounded(max(latencies_ms) if latencies_ms else None)}


def raw_request(host: str, method: str, path: str, headers: dict[str, str] | None = None,
                body: str | bytes | None = None) -> bytes:
    """One HTTP/1.1 request on a keep-alive connection, as bytes."""
    data = body.encode() if isinstance(body, str) else (body or b"")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if data or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


class ResponseError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole response; (status, whether the server keeps the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ResponseError(f"not an HTTP/1.x response: {lines[0]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    keep = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection":
            keep = "close" not in value
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    elif status >= 200 and status not in (204, 304):
        await reader.read()  # delimited by the end of the connection
        keep = False
    return status, keep


@dataclass
class Run:
    """The shared state of one run: the next request to send, and what came back."""

    start: float
    intended: list[float]
    requests: list[bytes]
    # perf_counter, not uvloop's loop.time(), which counts whole milliseconds; both replaceable
    # so that a test can run on a clock of its own.
    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    next_index: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)  # each latency's request number
    send_lag_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def take(self) -> int | None:
        if self.next_index >= len(self.intended):
            return None
        self.next_index += 1
        return self.next_index - 1


async def _connection(run: Run, host: str, port: int, timeout: float) -> None:
    clock = run.clock
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while (index := run.take()) is not None:
        due = run.start + run.intended[index]
        early = due - clock()
        if early > 0:
            await run.sleep(early)
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            run.send_lag_ms.append(max(0.0, clock() - due) * 1000)
            writer.write(run.requests[index % len(run.requests)])
            status, keep = await asyncio.wait_for(read_response(reader), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ResponseError, ValueError) as error:
            name = type(error).__name__
            run.errors[name] = run.errors.get(name, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        run.latencies_ms.append((clock() - due) * 1000)
        run.indexes.append(index)
        run.statuses[status] = run.statuses.get(status, 0) + 1
        if not keep:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def generate(url: str, rate: float, duration: float, connections: int,
                   requests: list[dict[str, Any]] | None = None, timeout: float = 10.0,
                   clock: Callable[[], float] = time.perf_counter,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, each: bool = False) -> dict[str, Any]:
    """The run's figures; with `each`, also every request's number, intended send time
    (`started_at_unix_s` + seconds) and latency, in the order they completed (`bench/p99_parts.py`)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    authority = f"{host}:{port}"
    specs = requests or [{"method": "GET", "path": parts.path or "/"}]
    raw = [raw_request(authority, s.get("method", "GET"), s["path"], s.get("headers"), s.get("body")) for s in specs]
    run = Run(start=clock() + 0.05, intended=schedule(rate, duration), requests=raw, clock=clock, sleep=sleep)
    started_at = time.time() + (run.start - clock())
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    began = clock()
    await asyncio.gather(*(_connection(run, host, port, timeout) for _ in range(connections)))
    wall = clock() - began
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    done = len(run.latencies_ms)
    ok = sum(n for status, n in run.statuses.items() if 200 <= status < 400)
    result = {
        "rate_per_s": rate, "duration_s": duration, "connections": connections, "scheduled": len(run.intended),
        "completed": done, "achieved_per_s": round(done / wall, 1) if wall else None, "wall_s": round(wall, 2),
        **summarize(run.latencies_ms),
        "send_lag_p99_ms": summarize(run.send_lag_ms)["p99_ms"],
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())}, "non_2xx_3xx": done - ok,
        "errors": run.errors, "requests": done,
        "loadgen_cpu_s": round(cpu, 3), "loadgen_cpu_ms_per_request": round(1000 * cpu / done, 3) if done else None,
        "loadgen_cpu_share_of_a_core": round(cpu / wall, 3) if wall else None,
    }
    if each:
        result["started_at_unix_s"] = started_at
        result["each"] = [[index, round(run.intended[index], 4), round(latency, 2)]
                          for index, latency in zip(run.indexes, run.latencies_ms)]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second, constant")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--timeout", type=float, default=10, help="seconds before a response counts as an error")
    parser.add_argument("--requests", metavar="FILE", help="JSON list of {method, path, headers, body}, cycled")
    args = parser.parse_args(argv)
    requests = json.loads(open(args.requests).read()) if args.requests else None
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover - Windows
        pass
    result = run(generate(args.url, args.rate, args.duration, args.connections, requests, args.timeout))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
