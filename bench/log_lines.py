"""What one log line costs, in-process (not a test): the CPU per line (process time; the least of the
rounds, and their median) of logging a line as `encours serve` logs it, through the logging machinery
to a file: uvicorn's access-log line (its logger's TokenFilter, then our handler and formatter) for
`GET /portal` and for `GET /p/<token>`, and the refused webhook's warning line; with our text and JSON
formatters, and with a plain `logging.Formatter` of the same fields as the floor.

    .venv/bin/python bench/log_lines.py [--lines 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernel import logs  # noqa: E402

TOKEN = "eyJjIjoxMjMsInYiOjF9.Z3mK2w.h0bZ8x1mN4Qe7rT9yU2iO5pA3sD6fG8hJ"
ACCESS = '%s - "%s %s HTTP/%s" %d'
LINES: dict[str, tuple[str, str, tuple[object, ...]]] = {
    "access GET /portal": ("uvicorn.access", ACCESS, ("127.0.0.1:51234", "GET", "/portal", "1.1", 200)),
    "access GET /p/<token>": ("uvicorn.access", ACCESS, ("127.0.0.1:51234", "GET", f"/p/{TOKEN}", "1.1", 303)),
    "webhook refused (warning)": ("encours.payments.webhooks", "stripe webhook refused: %s",
                                  ("No signatures found matching the expected signature for payload",)),
}


def _handler(formatter: logging.Formatter, stream: object) -> logging.Handler:
    handler = logs.configure_logging(stream=stream)  # type: ignore[arg-type]
    handler.setFormatter(formatter)
    return handler


def _per_line_us(logger: logging.Logger, message: str, args: tuple[object, ...], lines: int) -> float:
    level = logging.WARNING if "refused" in message else logging.INFO
    started = time.process_time()
    for _ in range(lines):
        logger.log(level, message, *args)
    return (time.process_time() - started) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000, help="per line kind, formatter and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logs.install_token_filter()
    token = logs.request_id.set("8f14e45fceea167a5a36dedd4bea2543")
    formatters: dict[str, Callable[[], logging.Formatter]] = {
        "text (kernel.logs.TextFormatter)": logs.TextFormatter,
        "json (kernel.logs.JsonFormatter)": logs.JsonFormatter,
        "plain logging.Formatter": lambda: logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryFile("w") as stream:
        for label, make in formatters.items():
            _handler(make(), stream)
            results[label] = {}
            for kind, (name, message, values) in LINES.items():
                logger = logging.getLogger(name)
                _per_line_us(logger, message, values, 1000)  # warm
                rounds = [_per_line_us(logger, message, values, args.lines) for _ in range(args.rounds)]
                results[label][kind] = {"least_us": round(min(rounds), 2), "median_us": round(statistics.median(rounds), 2)}
                print(f"{label:34} {kind:28} {min(rounds):7.2f} µs (median {statistics.median(rounds):.2f})",
                      file=sys.stderr)
    logs.request_id.reset(token)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
