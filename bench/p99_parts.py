"""What the statement page's open-loop p99 is made of (not a test):

    .venv/bin/python bench/p99_parts.py [--postgres URL] [--rate 75] [--duration 20] [--workers 2]

The app served as `bench/run.py` serves it (uvicorn, `--workers` processes), each process's app
wrapped by this module's `create_app`, which notes for every request its id, its process, when the
app got it and how long the app took to answer it (wall), and every garbage collection's pause;
`bench/loadgen.py` at a constant rate, each request with an id of its own, each latency kept. Prints
the client's p50/p99 beside the app's, what the slowest 1 % spent outside the app (in the kernel's
queues, the event loop's turn, the load generator), how many of them overlapped a collection in
their process, and the requests each process served.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOTES = "BENCH_P99_NOTES"  # the folder each serving process writes its notes to


def create_app() -> Any:
    """`encours.app.create_app_from_env()` with its requests and collections noted (see above)."""
    from encours.app import create_app_from_env

    app = create_app_from_env()
    folder = Path(os.environ[NOTES])
    # A line at a time: uvicorn's workers end through os._exit, without flushing a buffer.
    notes = open(folder / f"{os.getpid()}.jsonl", "w", buffering=1)
    started: list[float] = []

    def collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.time(), time.perf_counter()]
        elif started:
            notes.write(json.dumps({"gc": info["generation"], "at": started[0],
                                    "ms": round((time.perf_counter() - started[1]) * 1000, 3)}) + "\n")

    gc.callbacks.append(collection)

    async def noted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request = dict(scope["headers"]).get(b"x-request-id", b"").decode()
        at, began = time.time(), time.perf_counter()
        await app(scope, receive, send)
        notes.write(json.dumps({"id": request, "pid": os.getpid(), "at": at,
                                "ms": round((time.perf_counter() - began) * 1000, 3)}) + "\n")

    return noted


def main() -> None:
    from bench import run
    from bench.loadgen import generate, percentile
    from bench.generate import ensure_book
    from links import tokens

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--rate", type=float, default=75)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    book = ensure_book(postgres=args.postgres)
    ctx = run.Context(url=book["url"], duration=int(args.duration), connections=32, threads=2, workers=args.workers)
    folder = Path(tempfile.mkdtemp(prefix="encours-p99-"))
    token = tokens.make_token(run.SECRET, run._statement_contact(ctx.url))
    with run.Server("bench.p99_parts:create_app", args.workers, {**run._app_env(ctx), NOTES: str(folder)}) as server:
        server.wait("/healthz")
        cookie = run._session_cookie(server.base, token)
        run.wrk(f"{server.base}/portal", ctx, {"Cookie": cookie}, duration=5)  # warm, as run.py does
        time.sleep(2)
        count = int(args.rate * args.duration)
        requests = [{"method": "GET", "path": "/portal", "headers": {"Cookie": cookie, "X-Request-ID": f"q{i}"}}
                    for i in range(count)]
        result = asyncio.run(generate(server.base, args.rate, args.duration, 32, requests, each=True))
    app: dict[str, dict[str, Any]] = {}
    pauses: list[dict[str, Any]] = []
    for file in folder.glob("*.jsonl"):
        for line in file.read_text().splitlines():
            note = json.loads(line)
            if "gc" in note:
                pauses.append({**note, "pid": int(file.stem)})
            elif note["id"].startswith("q"):
                app[note["id"]] = note
    start = result["started_at_unix_s"]
    end = start + args.duration + 5
    pauses = [p for p in pauses if start <= p["at"] <= end]  # not start-up's collect, nor the warm-up's
    spans: dict[int, list[tuple[float, float]]] = {}
    for note in app.values():
        spans.setdefault(note["pid"], []).append((note["at"], note["at"] + note["ms"] / 1000))
    rows = []
    for index, due, latency in result["each"]:
        note = app.get(f"q{index}")
        if note is None:
            continue
        outside = latency - note["ms"]
        overlapped = [p for p in pauses if p["pid"] == note["pid"]
                      and p["at"] < note["at"] + note["ms"] / 1000 and p["at"] + p["ms"] / 1000 > note["at"]]
        rows.append({"latency": latency, "app": note["ms"], "outside": outside, "pid": note["pid"],
                     "due": due, "waited_to_start": (note["at"] - (start + due)) * 1000,
                     "gc_ms": sum(p["ms"] for p in overlapped),
                     "gen2": sum(1 for p in overlapped if p["gc"] == 2),
                     # requests of the same process in the app at some moment of this one (itself excluded)
                     "beside": sum(1 for a, b in spans[note["pid"]] if a < note["at"] + note["ms"] / 1000
                                   and b > note["at"]) - 1})
    if not rows:
        raise SystemExit(f"no request noted by the serving processes (in {folder})")
    rows.sort(key=lambda row: row["latency"])
    slowest = rows[-max(1, len(rows) // 100):]

    def quantile(values: list[float], q: float) -> float:
        """As `bench/run.py` reads its open loops' p50 and p99 (`loadgen.percentile`, q in 0..1)."""
        return round(percentile(values, 100 * q) or 0.0, 2)

    by_pid: dict[int, int] = {}
    for row in rows:
        by_pid[row["pid"]] = by_pid.get(row["pid"], 0) + 1
    report = {
        "rate_per_s": args.rate, "requests": len(rows),
        "client_p50_ms": quantile([r["latency"] for r in rows], 0.5), "client_p99_ms": quantile([r["latency"] for r in rows], 0.99),
        "app_p50_ms": quantile([r["app"] for r in rows], 0.5), "app_p99_ms": quantile([r["app"] for r in rows], 0.99),
        "slowest_1pc": {"n": len(slowest), "latency_median_ms": round(statistics.median(r["latency"] for r in slowest), 2),
                        "app_median_ms": round(statistics.median(r["app"] for r in slowest), 2),
                        "before_the_app_median_ms": round(statistics.median(r["waited_to_start"] for r in slowest), 2),
                        "collection_ms_median": round(statistics.median(r["gc_ms"] for r in slowest), 2),
                        "with_a_full_collection": sum(1 for r in slowest if r["gen2"]),
                        "requests_beside_median": statistics.median(r["beside"] for r in slowest),
                        "by_process": sorted(sum(1 for r in slowest if r["pid"] == pid) for pid in spans),
                        "due_s": sorted(round(r["due"], 2) for r in slowest)},
        "first_requests": [{key: round(value, 2) for key, value in row.items() if key != "pid"}
                           for row in sorted(rows, key=lambda row: row["due"])[:8]],
        "all_requests": {"collection_ms_median": round(statistics.median(r["gc_ms"] for r in rows), 2),
                         "requests_beside_median": statistics.median(r["beside"] for r in rows)},
        "collections_during_the_load": {f"gen{g}": {"n": sum(1 for p in pauses if p["gc"] == g),
                                    "max_ms": max((p["ms"] for p in pauses if p["gc"] == g), default=0),
                                    "total_ms": round(sum(p["ms"] for p in pauses if p["gc"] == g), 1)} for g in (0, 1, 2)},
        "requests_by_process": sorted(by_pid.values()),
        "machine": {"loadavg": os.getloadavg(), "calibration_ms": run.cpu.calibration_ms()},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
