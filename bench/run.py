"""Benchmarks of Encours (not tests): `make bench`, or

    .venv/bin/python bench/run.py [--duration 10] [--connections 32] [--workers 1] [--only statement_page]
    .venv/bin/python bench/run.py --small        # a 2,000-customer book, 5 s runs: while developing
    .venv/bin/python bench/run.py --postgres postgresql+psycopg://user@host/encours_bench

Each scenario serves the app with uvicorn on 127.0.0.1 (a free port, its own process), puts load
on it with `wrk` (Debian package `wrk`), and reports figures beside their target. Where a
target is a ratio, the baseline is measured in the same run under the same server settings,
since the machine may be shared and noisy. Prints a readable table on stderr and one JSON
document on stdout. Nothing here is asserted: targets are reported as met or missed.

A scenario is a function `(Context) -> list[Figure]` in SCENARIOS; add new ones there
(webhook intake, reminder run: to come with their features).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench.generate import STATEMENT_CUSTOMER, ensure_book  # noqa: E402
from encours.db import make_engine  # noqa: E402
from ledger.models import Contact, Customer  # noqa: E402
from links import tokens  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
PYTHON = sys.executable


@dataclass
class Figure:
    scenario: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    url: str  # the book's database
    duration: int
    connections: int
    threads: int
    workers: int
    warmup: int = 2


# --- the server and the load -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """uvicorn in its own process group, with the same settings for the app and its baselines."""

    def __init__(self, factory: str, workers: int, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [PYTHON, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
        # stderr to a file, never a pipe nobody reads: a full pipe would block the server's logging
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=self.log)

    def wait(self, path: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.base + path, timeout=5).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                error = self.errors()
                raise SystemExit(f"server {self.process.args} did not start: {error[-2000:]}")
            time.sleep(0.3)

    def errors(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def error_counts(self) -> dict[str, int]:
        """Exceptions the server logged, by their last line, e.g. 'database is locked'."""
        counts: dict[str, int] = {}
        for line in self.errors().splitlines():
            match = re.match(r"^(\w+(?:\.\w+)*(?:Error|Exception)): (.*)$", line)
            if match and not match.group(1).startswith("sqlalchemy."):
                key = f"{match.group(1)}: {match.group(2)[:80]}"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def pids(self) -> list[int]:
        """The processes that serve requests: the uvicorn workers, or the one process."""
        children = []
        try:
            for child in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split():
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    children.append(int(child))
        except OSError:
            pass
        return children or [self.process.pid]

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (and their threads), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / ticks


def measured(server: Server, url: str, ctx: Context, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """wrk on `url`, with the server's CPU time per request: a figure that a loaded machine
    distorts much less than requests/s (it still pays for cache misses and switches)."""
    pids = server.pids()
    before = _cpu_seconds(pids)
    result = wrk(url, ctx, headers)
    spent = _cpu_seconds(pids) - before
    result["server_cpu_ms_per_request"] = round(1000 * spent / result["requests"], 2) if result["requests"] else None
    return result


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RSSSampler(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak_kib = {pid: _rss_kib(pid) for pid in pids}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            for pid in self.pids:
                self.peak_kib[pid] = max(self.peak_kib[pid], _rss_kib(pid))

    def stop(self) -> dict[int, int]:
        self._halt.set()
        self.join()
        return self.peak_kib


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, ctx: Context, headers: dict[str, str] | None = None, duration: int | None = None) -> dict[str, Any]:
    """One wrk run; requests/s, latency percentiles (ms), errors."""
    command = ["wrk", f"-t{ctx.threads}", f"-c{ctx.connections}", f"-d{duration or ctx.duration}s", "--latency",
               "--timeout", "10s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for percentile in ("50", "90", "99"):
        match = re.search(rf"^\s+{percentile}(?:\.000)?%\s+(\S+)", output, re.M)
        result[f"p{percentile}_ms"] = round(_ms(match.group(1)), 2) if match else None
    requests = re.search(r"(\d+) requests in", output)
    result["requests"] = int(requests.group(1)) if requests else None
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx_3xx"] = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(r"Socket errors: (.*)", output)
    result["socket_errors"] = errors.group(1).strip() if errors else ""
    return result


# --- helpers over the book -----------------------------------------------------------------------


def _statement_contact(url: str) -> Contact:
    engine = make_engine(url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            contact = session.scalars(
                select(Contact).join(Customer).where(Customer.ref == STATEMENT_CUSTOMER, Contact.is_primary)
            ).one()
            session.expunge(contact)
            return contact
    finally:
        engine.dispose()


def _app_env(ctx: Context) -> dict[str, str]:
    return {"ENCOURS_DATABASE_URL": ctx.url, "ENCOURS_SECRET_KEY": SECRET, "ENCOURS_BASE_URL": "http://127.0.0.1",
            "ENCOURS_LINK_THROTTLE_MAX": "1000000"}


def _session_cookie(base: str, token: str) -> str:
    response = httpx.get(f"{base}/p/{token}", follow_redirects=False, timeout=30)
    assert response.status_code == 303, (response.status_code, response.text[:500])
    cookie = response.headers["set-cookie"].split(";", 1)[0]
    return cookie


# --- scenarios --------------------------------------------------------------------------------


def statement_page(ctx: Context) -> list[Figure]:
    """The portal statement of BENCH-200 (200 open invoices) beside a bare Starlette + Jinja2 page
    of the same size; server RSS under that load."""
    contact = _statement_contact(ctx.url)
    token = tokens.make_token(SECRET, contact)
    with Server("encours.app:create_app_from_env", ctx.workers, _app_env(ctx)) as server:
        server.wait("/healthz")
        cookie = _session_cookie(server.base, token)
        page = httpx.get(f"{server.base}/portal", headers={"Cookie": cookie}, timeout=30)
        assert page.status_code == 200 and STATEMENT_CUSTOMER not in page.url.path, page.status_code
        size = len(page.content)
        rows = page.text.count("<tr")
        wrk(f"{server.base}/portal", ctx, {"Cookie": cookie}, duration=ctx.warmup)
        sampler = RSSSampler(server.pids())
        sampler.start()
        app = measured(server, f"{server.base}/portal", ctx, {"Cookie": cookie})
        peak = sampler.stop()
        app["server_errors"] = server.error_counts()
    with Server("bench.baseline:create_app", ctx.workers, {"BENCH_PAGE_BYTES": str(size)}) as baseline_server:
        baseline_server.wait("/statement")
        baseline_size = len(httpx.get(f"{baseline_server.base}/statement", timeout=30).content)
        wrk(f"{baseline_server.base}/statement", ctx, duration=ctx.warmup)
        baseline = measured(baseline_server, f"{baseline_server.base}/statement", ctx)
    ratio = app["requests_per_s"] / baseline["requests_per_s"] if baseline["requests_per_s"] else 0.0
    cpu_app, cpu_base = app["server_cpu_ms_per_request"], baseline["server_cpu_ms_per_request"]
    cpu_ratio = cpu_base / cpu_app if cpu_app and cpu_base else 0.0
    rss_mb = max(peak.values()) / 1024
    return [
        Figure("statement_page", "requests/s", round(app["requests_per_s"], 1), "req/s",
               detail={**app, "page_bytes": size, "table_rows": rows}),
        Figure("statement_page", "baseline requests/s", round(baseline["requests_per_s"], 1), "req/s",
               detail={**baseline, "page_bytes": baseline_size}),
        Figure("statement_page", "ratio to baseline", round(100 * ratio, 1), "%", "≥ 40 %", ratio >= 0.40),
        Figure("statement_page", "server CPU per request", cpu_app or -1, "ms"),
        Figure("statement_page", "baseline server CPU per request", cpu_base or -1, "ms"),
        Figure("statement_page", "ratio by CPU per request (baseline / app)", round(100 * cpu_ratio, 1), "%",
               "(≥ 40 %)", cpu_ratio >= 0.40),
        Figure("statement_page", f"p99 latency at {ctx.connections} connections", app["p99_ms"] or -1, "ms",
               "< 50 ms", app["p99_ms"] is not None and app["p99_ms"] < 50),
        Figure("memory", "server RSS under statement load (peak, per process)", round(rss_mb, 1), "MB",
               "≤ 250 MB", rss_mb <= 250, {"peak_kib_by_pid": {str(k): v for k, v in peak.items()}}),
    ]


def magic_link_exchange(ctx: Context) -> list[Figure]:
    """`GET /p/{token}`: verify, record the open, set the session cookie, 303 to /portal."""
    contact = _statement_contact(ctx.url)
    token = tokens.make_token(SECRET, contact)
    with Server("encours.app:create_app_from_env", ctx.workers, _app_env(ctx)) as server:
        server.wait("/healthz")
        _session_cookie(server.base, token)  # a 303, not an error page
        wrk(f"{server.base}/p/{token}", ctx, duration=ctx.warmup)
        result = measured(server, f"{server.base}/p/{token}", ctx)
        result["server_errors"] = server.error_counts()
    ok = result["non_2xx_3xx"] == 0
    figures = [Figure("magic_link", "exchange /p/{token} → 303", round(result["requests_per_s"], 1), "req/s",
                      "≥ 2,000 req/s", ok and result["requests_per_s"] >= 2000, result)]
    cpu = result["server_cpu_ms_per_request"]
    if cpu:
        figures.append(Figure("magic_link", "server CPU per exchange", cpu, "ms",
                              detail={"req_per_s_per_busy_core": round(1000 / cpu)}))
    if not ok:  # e.g. SQLite's "database is locked" under concurrent writes: an error page is not a figure
        figures.append(Figure("magic_link", "responses other than 303 (errors)", result["non_2xx_3xx"], "",
                              "0", False))
    return figures


def dashboard(ctx: Context) -> list[Figure]:
    """The back-office dashboard, in-process (see bench/dashboard.py): median and p95 of a few runs,
    wall-clock and CPU time, for an admin over every company and for one company."""
    from bench.dashboard import TARGET_MS, measure

    results = measure(ctx.url)
    figures = []
    for key, label in (("service_all_companies", "build_dashboard, 3 companies"),
                       ("service_one_company", "build_dashboard, one company"),
                       ("page_all_companies", "GET /admin, 3 companies (p95)"),
                       ("page_one_company", "GET /admin?company=BENCH-FR (p95)")):
        r = results[key]
        figures.append(Figure("dashboard", label, r["wall_p95_ms"], "ms", f"≤ {TARGET_MS} ms",
                              r["wall_p95_ms"] <= TARGET_MS, r))
        figures.append(Figure("dashboard", "  CPU p95 of the same", r["cpu_p95_ms"], "ms", f"(≤ {TARGET_MS} ms)",
                              r["cpu_p95_ms"] <= TARGET_MS))
    return figures


SCENARIOS: list[Callable[[Context], list[Figure]]] = [statement_page, magic_link_exchange, dashboard]


# --- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in load]}


def table(figures: list[Figure]) -> str:
    lines = [f"{'scenario':<16} {'metric':<52} {'value':>12}  {'target':<16} result", "-" * 108]
    for f in figures:
        verdict = "" if f.met is None else ("met" if f.met else "MISSED")
        lines.append(f"{f.scenario:<16} {f.metric:<52} {f.value:>9,.1f} {f.unit:<3} {f.target:<16} {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per measurement (default 10)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (app and baseline alike)")
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--small", action="store_true", help="2,000 customers / 40,000 invoices, 5 s runs")
    parser.add_argument("--postgres", metavar="URL", help="run against a PostgreSQL book (built there if missing)")
    parser.add_argument("--postgres-throwaway", action="store_true",
                        help="start a throwaway PostgreSQL server (Debian's postgresql, as the tests do) "
                             "and build the book there; everything is deleted afterwards")
    parser.add_argument("--only", action="append", metavar="SCENARIO",
                        help=f"run only these ({', '.join(s.__name__ for s in SCENARIOS)})")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is missing (Debian package `wrk`; `make bench` installs it)")
    if args.small:
        args.customers, args.invoices, args.duration = 2_000, 40_000, min(args.duration, 5)
    throwaway = None
    if args.postgres_throwaway:
        from tests.pgserver import PostgresServer

        throwaway = PostgresServer()
        args.postgres = throwaway.start("encours_bench")
    try:
        _run(args)
    finally:
        if throwaway is not None:
            throwaway.stop()


def _run(args: argparse.Namespace) -> None:
    book = ensure_book(args.customers, args.invoices, args.postgres)
    ctx = Context(url=book["url"], duration=args.duration, connections=args.connections, threads=args.threads,
                  workers=args.workers)
    scenarios = [s for s in SCENARIOS if not args.only or s.__name__ in args.only]
    if args.postgres:  # the book's URL without a password, in the report
        book["url"] = re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", book["url"])
    started = datetime.now(timezone.utc)
    host = machine()
    figures: list[Figure] = []
    for scenario in scenarios:
        print(f"bench: {scenario.__name__} …", file=sys.stderr, flush=True)
        figures.extend(scenario(ctx))
    report = {
        "date": started.isoformat(timespec="seconds"),
        "machine": {**host, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "book": {k: v for k, v in book.items() if k != "rows"},
        "settings": {"duration_s": ctx.duration, "connections": ctx.connections, "wrk_threads": ctx.threads,
                     "uvicorn_workers": ctx.workers, "database": "postgresql" if args.postgres else "sqlite"},
        "figures": [asdict(f) for f in figures],
    }
    print(table(figures), file=sys.stderr)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
