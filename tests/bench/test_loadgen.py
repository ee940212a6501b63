"""bench/loadgen.py: the open-loop generator's schedule, percentiles, HTTP parsing, and latency
counted from each request's intended send time (on a clock of the test's own: no real time)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import loadgen

ROOT = Path(__file__).resolve().parents[2]


def test_schedule_is_constant_rate() -> None:
    assert loadgen.schedule(4, 1) == [0.0, 0.25, 0.5, 0.75]
    assert len(loadgen.schedule(800, 10)) == 8000
    assert loadgen.schedule(3, 0.5) == [0.0]
    assert loadgen.schedule(0, 10) == [] and loadgen.schedule(10, 0) == []


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert loadgen.percentile(values, 50) == 50
    assert loadgen.percentile(values, 99) == 99
    assert loadgen.percentile(values, 100) == 100
    assert loadgen.percentile(values, 0) == 1
    assert loadgen.percentile([7.0], 99) == 7
    assert loadgen.percentile([], 50) is None
    # 1,000 values, ten of them slow: the p99 is the last fast one, the p99.9 a slow one
    spread = [1.0] * 990 + [500.0] * 10
    assert loadgen.percentile(spread, 99) == 1.0
    assert loadgen.percentile(spread, 99.9) == 500.0
    assert loadgen.summarize([]) == {"p50_ms": None, "p90_ms": None, "p99_ms": None, "p999_ms": None,
                                     "max_ms": None}


def test_raw_request() -> None:
    assert loadgen.raw_request("h:1", "GET", "/p/x", {"Cookie": "s=1"}) == (
        b"GET /p/x HTTP/1.1\r\nHost: h:1\r\nCookie: s=1\r\n\r\n")
    assert loadgen.raw_request("h:1", "POST", "/w", None, '{"a":"é"}') == (
        b'POST /w HTTP/1.1\r\nHost: h:1\r\nContent-Length: 10\r\n\r\n{"a":"\xc3\xa9"}')


def _read(data: bytes) -> tuple[int, bool, bytes]:
    async def go() -> tuple[int, bool, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        status, keep = await loadgen.read_response(reader)
        return status, keep, await reader.read()

    return asyncio.run(go())


def test_read_response_lengths_chunks_and_close() -> None:
    assert _read(b"HTTP/1.1 303 See Other\r\nContent-Length: 3\r\n\r\nabcNEXT") == (303, True, b"NEXT")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\nNEXT"
    assert _read(chunked) == (200, True, b"NEXT")
    assert _read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok") == (200, False, b"")
    assert _read(b"HTTP/1.0 200 OK\r\n\r\nuntil the end") == (200, False, b"")
    assert _read(b"HTTP/1.1 204 No Content\r\n\r\nNEXT") == (204, True, b"NEXT")
    with pytest.raises(loadgen.ResponseError):
        _read(b"SSH-2.0-OpenSSH\r\n\r\n")


class VirtualClock:
    """Time that moves only when the generator sleeps or the test server says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def _serve(clock: VirtualClock, stall_first: float, seen: list[bytes]) -> asyncio.Server:
    """A keep-alive HTTP server whose first response takes `stall_first` seconds of the virtual
    clock, the others none; every other response a 404, so the status counts are checked too."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            seen.append(head.split(b"\r\n", 1)[0])
            if len(seen) == 1:
                clock.now += stall_first
            status = b"200 OK" if len(seen) % 2 else b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_latency_counts_from_the_intended_send_time() -> None:
    """One connection, 100 requests/s, the first response stalled 0.3 s: the 29 requests due
    meanwhile go out late, and each is charged from when it should have gone out (a closed loop
    would report them as fast). Without that, the p90 here would be 0."""
    clock = VirtualClock()
    seen: list[bytes] = []

    async def go() -> dict[str, object]:
        server = await _serve(clock, 0.3, seen)
        port = server.sockets[0].getsockname()[1]
        try:
            return await loadgen.generate(f"http://127.0.0.1:{port}/x", 100, 0.5, 1,
                                          [{"method": "GET", "path": "/a"}, {"method": "GET", "path": "/b"}],
                                          clock=clock, sleep=clock.sleep)
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(go())
    assert result["scheduled"] == result["completed"] == 50
    assert seen[:3] == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1", b"GET /a HTTP/1.1"]
    assert result["statuses"] == {"200": 25, "404": 25} and result["non_2xx_3xx"] == 25
    # request k (due at k * 10 ms) answered at 300 ms for k < 30, on time after
    expected = sorted([300.0] + [300.0 - 10 * k for k in range(1, 30)] + [0.0] * 20)
    assert result["p50_ms"] == pytest.approx(expected[24], abs=0.01)
    assert result["p90_ms"] == pytest.approx(expected[44], abs=0.01)
    assert result["p99_ms"] == result["max_ms"] == pytest.approx(300.0, abs=0.01)
    assert result["send_lag_p99_ms"] == pytest.approx(290.0, abs=0.01)


def test_command_line_against_a_real_server(tmp_path: Path) -> None:
    """The script as run.py runs it: a real uvicorn serving the bench baseline page, a few
    requests from a file, one JSON document out with its own CPU time."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "bench.baseline:create_app",
                               "--port", str(port), "--log-level", "warning"], cwd=ROOT,
                              env={"BENCH_PAGE_BYTES": "5000", "PATH": "/usr/bin:/bin",
                                   "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/statement", timeout=2)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("uvicorn did not start") from None
                time.sleep(0.1)
        requests = tmp_path / "requests.json"
        requests.write_text(json.dumps([{"method": "GET", "path": "/statement"},
                                        {"method": "GET", "path": "/missing", "headers": {"X-A": "1"}}]))
        output = subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py"), f"http://127.0.0.1:{port}",
                                 "--rate", "40", "--duration", "0.5", "--connections", "2", "--requests",
                                 str(requests)], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    finally:
        server.terminate()
        server.wait(timeout=20)
    result = json.loads(output)
    assert result["scheduled"] == result["completed"] == 20
    assert result["statuses"] == {"200": 10, "404": 10}
    assert result["errors"] == {}
    assert result["loadgen_cpu_s"] >= 0 and result["p99_ms"] >= result["p50_ms"] > 0
