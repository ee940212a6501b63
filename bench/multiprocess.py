"""Two `encours serve` and two `encours worker` processes on one PostgreSQL database, timed
(issue 19; not a test).

    flock /work/bench.lock nice -n -10 .venv/bin/python bench/multiprocess.py               # throwaway server
    .venv/bin/python bench/multiprocess.py --postgres postgresql+psycopg://postgres@127.0.0.1:55432/mp
    .venv/bin/python bench/multiprocess.py --customers 200 --payers 20                      # a quick run

The scenario of `tests/encours/test_multiprocess.py` (`tests/multiprocess.py`), larger: companies and
their customers imported with the CLI, reminders on; both workers find every company's daily plan
due at once and send it to a local SMTP server (aiosmtpd, in this process); debtors open the links
of the first emails and pay by card (localstripe), and each Stripe event is posted to both servers
`--deliveries` times each, concurrently; one worker is killed mid-send and its message sent by the
other after the lease. Figures: reminders sent per second (from the moment the plans fell due to
the last reminder received but the dead worker's), webhook deliveries answered per second and
events applied per second, the CPU seconds of each process; then the same checks as the test
(nothing twice, nothing lost), which must be empty. `--postgres URL` names an EMPTY database (it
is migrated and filled); without it a throwaway server is started (fsync and synchronous commit
on, as in production) and deleted afterwards. A readable table on stderr, one JSON document on
stdout; record the figures in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine  # noqa: E402
from sandbox.localstripe_server import LocalStripe, start_localstripe, stop_localstripe  # noqa: E402
from tests import multiprocess  # noqa: E402
from tests.fakes import receiver  # noqa: E402
from tests.fakes.smtp import CapturingSMTP  # noqa: E402

POSTGRES_CONFIG = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "shared_buffers": "256MB"}


def figures(size: multiprocess.Size, result: multiprocess.Run, smtp: CapturingSMTP) -> dict[str, Any]:
    marks = result.marks
    reminders = sorted(m.received_at for m in smtp.messages
                       if str(m.message["To"]) in result.planned and str(m.message["To"]) != result.held_address)
    reminder_seconds = reminders[-1] - marks["due"] if reminders else 0.0
    posts = len(result.webhook_answers)
    post_seconds = marks["webhooks answered"] - marks["webhooks"]
    return {
        "companies": size.companies, "customers": size.companies * size.customers,
        "reminders_planned": sum(result.planned.values()),
        "reminder_runs": result.reminder_runs,
        "runs_planned_by": dict(sorted(result.plans.items())),
        "reminders_received_when_debtors_began": result.emails_when_paying,
        "emails_received_when_a_worker_was_killed": result.emails_when_killed,
        "setup_s": round(marks["built"] - marks["start"], 1),
        "processes_start_s": round(marks["started"] - marks["built"], 1),
        "reminders_s": round(reminder_seconds, 2),
        "reminders_per_s": round((len(reminders)) / reminder_seconds, 1) if reminder_seconds else 0.0,
        "card_payments": len(result.paid),
        "debtors_s": round(marks["webhooks"] - marks["paying"], 2),
        "webhook_posts": posts,
        "webhook_posts_s": round(post_seconds, 2),
        "webhook_posts_per_s": round(posts / post_seconds, 1) if post_seconds else 0.0,
        "new_events_per_s": round(len(result.paid) / post_seconds, 1) if post_seconds else 0.0,
        "after_the_lease_s": round(marks["all sent"] - marks["quiet"], 2),
        "cpu_s": {name: round(seconds, 2) for name, seconds in result.cpu.items()},
        "emails_received": len(smtp.messages),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companies", type=int, default=3)
    parser.add_argument("--customers", type=int, default=2_000, help="per company")
    parser.add_argument("--payers", type=int, default=100, help="debtors who pay by card")
    parser.add_argument("--deliveries", type=int, default=3, help="times each Stripe event is posted to each server")
    parser.add_argument("--debtors", type=int, default=8, help="debtors acting at the same moment")
    parser.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database (else a throwaway server)")
    args = parser.parse_args(argv)
    size = multiprocess.Size(companies=args.companies, customers=args.customers, payers=args.payers,
                             deliveries=args.deliveries, debtors=args.debtors)
    host = machine()
    folder = Path(tempfile.mkdtemp(prefix="encours-bench-multiprocess-"))
    throwaway = None
    stripe_process = None
    smtp = CapturingSMTP().start()
    try:
        url = args.postgres
        if url is None:
            from tests.pgserver import PostgresServer

            throwaway = PostgresServer(extra_config=POSTGRES_CONFIG)
            url = throwaway.start("encours_multiprocess")
        stripe_process, stripe_url, stripe_files = start_localstripe()
        stripe = LocalStripe(url=stripe_url)
        world = multiprocess.World.make(folder, url, stripe, smtp.url)
        try:
            with receiver.serve_once() as erp:
                start = multiprocess.time.monotonic()
                result = multiprocess.run(world, size, smtp, stripe, erp)
                result.marks["start"] = start
                found = multiprocess.problems(world, result, smtp, erp)
        finally:
            world.kill_all()
        report = {"machine": host, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                  "database": "postgresql (throwaway, fsync on)" if throwaway else "postgresql (given)",
                  **figures(size, result, smtp), "problems": found}
    finally:
        smtp.stop()
        if stripe_process is not None:
            stop_localstripe(stripe_process, *stripe_files)
        if throwaway is not None:
            throwaway.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(table(report), file=sys.stderr)
    print(json.dumps(report, indent=2))


def table(report: dict[str, Any]) -> str:
    lines = [f"2 encours serve + 2 encours worker, {report['database']}, load {report['machine']['loadavg_at_start']}"
             f" -> {report['loadavg_at_end']}",
             f"  {report['customers']:,} customers of {report['companies']} companies: "
             f"{report['reminders_planned']:,} reminders planned, {report['reminder_runs']} runs recorded "
             f"(planned by {report['runs_planned_by']})",
             f"  reminders: {report['reminders_per_s']:,.1f} msg/s ({report['reminders_s']} s from due to the last),"
             f" a worker killed after {report['emails_received_when_a_worker_was_killed']:,} emails",
             f"  debtors: {report['card_payments']} card payments in {report['debtors_s']} s, starting after "
             f"{report['reminders_received_when_debtors_began']:,} emails",
             f"  webhooks: {report['webhook_posts']:,} posts in {report['webhook_posts_s']} s = "
             f"{report['webhook_posts_per_s']:,.1f} posts/s, {report['new_events_per_s']:,.1f} new events/s",
             f"  the dead worker's message sent {report['after_the_lease_s']} s after the clock passed its lease",
             f"  CPU s: {report['cpu_s']}",
             f"  problems: {report['problems'] or 'none'}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
