"""Two `encours serve` and two `encours worker` processes sharing one database while reminders go
out and provider webhooks come in (issue 19): the scenario `tests/encours/test_multiprocess.py`
checks and `bench/multiprocess.py` times at a larger size.

The world is built as an operator builds it (the `encours` CLI: migrate, companies, CSV imports,
reminders on, ERP webhook endpoints), then four real processes share it. At once: each company's
daily reminder plan falls due for both workers (the clock passes the reminder hour: the worker's
own trigger), the emails go to a real SMTP server (aiosmtpd), debtors open the links of the first
emails on either server and pay by card (localstripe), and Stripe's signed event for each payment
reaches BOTH servers several times, concurrently, as providers retry. One reminder is held at the
SMTP server mid-send and the worker sending it is killed there (SIGKILL); the other worker sends
everything else; once every process's clock has passed the dead worker's lease
(ENCOURS_CLOCK_FILE, kernel.clock) the survivor sends that one too. On SQLite, which the README
runs with one worker, the same with one worker, started again after it was killed.

`problems(...)` then lists what is wrong (empty when nothing is): an email planned but not
received, or received twice (by its outbox row: X-Encours-Message and Message-ID); a provider event
stored or applied twice (payments, invoices to the cent, allocation invariants, running totals);
an ERP event not delivered exactly once with a good Encours-Signature; an outbox row or a delivery
left queued or claimed; a process that did not exit cleanly or logged a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.db import make_engine
from ledger import day_totals
from ledger.allocation import invariant_violations
from ledger.models import (
    Checkout, Invoice, OutboxMessage, Payment, Reminder, ReminderClaim, ReminderRun, WebhookDelivery, WebhookEndpoint,
    WebhookEvent,
)
from sandbox.localstripe_server import LocalStripe
from tests.fakes.localstripe_server import event_payload, pay_intent, sign
from tests.fakes.receiver import Receiver
from tests.fakes.smtp import CapturingSMTP

ENCOURS = str(Path(sys.executable).with_name("encours"))
SECRET = "multiprocess-secret-0123456789abcd"
DAY = date(2026, 11, 25)
BEFORE_THE_RUN = datetime(2026, 11, 25, 6, 0, tzinfo=timezone.utc)  # 07:00 in Paris; the reminder hour is 09:00
RUN_TIME = datetime(2026, 11, 25, 8, 30, tzinfo=timezone.utc)  # 09:30 in Paris: every company's plan is due
LEASE = 60  # ENCOURS_OUTBOX_LEASE, seconds of the clock
TIMEOUT = 300.0


class Stuck(AssertionError):
    """A process died, or what the scenario waits for never came."""


@dataclass(frozen=True)
class Size:
    companies: int = 3
    customers: int = 20  # per company
    payers: int = 8  # debtors who open their reminder's link and pay by card
    deliveries: int = 3  # times each Stripe event is sent to each server
    debtors: int = 4  # debtors acting at the same moment
    # `encours worker` processes: 2 on PostgreSQL; 1 on SQLite, as the README says (its killed
    # worker's message is then sent by the worker started again in its place).
    workers: int = 2

    @property
    def codes(self) -> list[str]:
        return [f"CO{n:02d}" for n in range(self.companies)]


@dataclass
class World:
    """The processes of one run, their settings and logs."""

    tmp: Path
    url: str
    env: dict[str, str]
    ports: tuple[int, int]
    logs: dict[str, Path] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def make(cls, tmp: Path, url: str, stripe: LocalStripe, smtp_url: str) -> World:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_"))}
        ports = (_free_port(), _free_port())
        env.update(ENCOURS_DATABASE_URL=url, ENCOURS_SECRET_KEY=SECRET, ENCOURS_BASE_URL=f"http://127.0.0.1:{ports[0]}",
                   ENCOURS_STORAGE_DIR=str(tmp / "files"), ENCOURS_CLOCK_FILE=str(tmp / "clock"),
                   ENCOURS_OUTBOX_LEASE=str(LEASE), ENCOURS_WEBHOOK_ALLOW_PRIVATE="1", ENCOURS_SMTP_URL=smtp_url,
                   PYTHONUNBUFFERED="1", **stripe.settings())
        world = cls(tmp, url, env, ports)
        world.set_clock(BEFORE_THE_RUN)
        return world

    def set_clock(self, moment: datetime) -> None:
        """Every process's "now": written whole, then renamed over the file (never read half-written)."""
        clock_file = Path(self.env["ENCOURS_CLOCK_FILE"])
        draft = clock_file.with_suffix(".draft")
        draft.write_text(moment.isoformat())
        os.replace(draft, clock_file)

    def cli(self, *args: str) -> str:
        result = subprocess.run([ENCOURS, *args], cwd=self.tmp, env=self.env, capture_output=True, text=True,
                                timeout=600, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise Stuck(f"encours {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}")
        return result.stdout

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as out:  # a file, never a pipe nobody reads
            process = subprocess.Popen([ENCOURS, *args], cwd=self.tmp, env=self.env, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def base(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            for name, process in self.processes.items():
                if process.poll() is not None and name != "killed":
                    raise Stuck(f"{name} exited ({process.returncode}) while waiting until {what}:\n"
                                f"{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {name}\n{self.log(name)[-1500:]}" for name in self.logs)
                raise Stuck(f"timed out waiting until {what}\n{tails}")
            time.sleep(0.05)

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@dataclass
class Run:
    """What happened, for the checks and the bench's figures (monotonic seconds)."""

    planned: Counter[str]
    endpoint_secrets: dict[str, str]
    held_address: str
    paid: list[dict[str, Any]] = field(default_factory=list)
    webhook_answers: list[int] = field(default_factory=list)
    killed_pid: int | None = None
    exits: dict[str, int] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    emails_when_paying: int = 0  # reminders received when the debtors began paying
    emails_when_killed: int = 0
    reminder_runs: int = 0  # ReminderRun rows (not dry): one per company and day, whichever worker planned it
    plans: Counter[str] = field(default_factory=Counter)  # worker -> the (company, day) runs it claimed and planned
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of each process, read before it ended

    def mark(self, what: str) -> None:
        self.marks[what] = time.monotonic()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_with_local_port(pids: list[int], port: int) -> int | None:
    """Which of `pids` owns the TCP socket bound locally to 127.0.0.1:`port` (read from /proc)."""
    wanted = f"0100007F:{port:04X}"
    for pid in pids:
        try:
            table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        for line in table:
            columns = line.split()
            if columns[1] == wanted and f"socket:[{columns[9]}]" in inodes:
                return pid
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (and its waited-for children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def verify_signature(secret: str, header: str, body: bytes) -> bool:
    """The ERP's side of Encours-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def build_book(world: World, size: Size, receiver_url: str) -> tuple[Counter[str], dict[str, str]]:
    """Companies, customers, invoices, reminders on, an ERP endpoint for all but the last company;
    then what the planner says today's runs will send (a dry run: one count per address)."""
    world.cli("db", "upgrade")
    customers = ["company,customer_ref,name,email,language,phone,segment"]
    invoices = ["company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until"]
    for index, code in enumerate(size.codes):
        world.cli("company", "create", code, "--name", f"{code} Industrie SAS", "--currency", "EUR")
        world.cli("company", "reminders", code, "on")
        for n in range(size.customers):
            ref = f"{code}-{n:05d}"
            customers.append(f"{code},{ref},Client {ref},ap.{ref.lower()}@client.test,{'fr' if n % 2 else 'en'},,pme")
            # Overdue (the first reminder) and, for some, one not yet due (listed beside it).
            invoices.append(f"{code},{ref},{ref}-1,{DAY - timedelta(days=40)},{DAY - timedelta(days=10)},EUR,"
                            f"{1000 + 17 * n}.{n % 100:02d},,")
            if n % 3 == 0:
                invoices.append(f"{code},{ref},{ref}-2,{DAY - timedelta(days=5)},{DAY + timedelta(days=25)},EUR,"
                                f"{200 + n}.50,,")
    (world.tmp / "customers.csv").write_text("\n".join(customers) + "\n", encoding="utf-8")
    (world.tmp / "invoices.csv").write_text("\n".join(invoices) + "\n", encoding="utf-8")
    world.cli("import", "customers", str(world.tmp / "customers.csv"))
    world.cli("import", "invoices", str(world.tmp / "invoices.csv"))
    secrets = {}
    for code in size.codes[:-1] or size.codes:
        lines = world.cli("webhook", "add", "--company", code, "--url", f"{receiver_url}/erp/{code}").splitlines()
        secrets[f"/erp/{code}"] = lines[1].strip()
    plan = world.cli("remind", "--date", DAY.isoformat(), "--dry-run")
    lines = [line.strip() for line in plan.splitlines() if line.strip().startswith("would send")]
    return Counter(line.split(" -> ")[1].split()[0] for line in lines), secrets


def pay(world: World, stripe: LocalStripe, link: str, index: int) -> dict[str, Any]:
    """A debtor opens its link on one server and pays everything by card through the other (a
    session is good on either); then Stripe's event for the payment, as Stripe would send it."""
    first, other = world.base(index % 2), world.base(1 - index % 2)
    token = link.rsplit("/p/", 1)[1]
    with httpx.Client(timeout=60, headers={"Accept-Language": "en"}) as debtor:
        opened = debtor.get(f"{first}/p/{token}", follow_redirects=False)
        if opened.status_code != 303 or opened.headers["location"] != "/portal":
            raise Stuck(f"the link did not open: {opened.status_code} {opened.text[:300]}")
        statement = debtor.get(f"{other}/portal")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', statement.text)
        invoice_ids = re.findall(r'name="invoice" value="(\d+)"', statement.text)
        if statement.status_code != 200 or not csrf or not invoice_ids:
            raise Stuck(f"no pay form on the statement: {statement.status_code}")
        started = debtor.post(f"{first}/portal/pay", data={"csrf_token": csrf.group(1), "invoice": invoice_ids,
                                                           "method": "card", "action": "pay"}, follow_redirects=False)
        if started.status_code != 303 or not started.headers["location"].endswith("/card"):
            raise Stuck(f"the card checkout did not start: {started.status_code} {started.text[:300]}")
        card = debtor.get(f"{other}{started.headers['location']}")
    secret = re.search(r'data-client-secret="([^"]+)"', card.text)
    if card.status_code != 200 or not secret:
        raise Stuck(f"no PaymentIntent on the card page: {card.status_code}")
    intent_id = secret.group(1).split("_secret_")[0]
    if pay_intent(stripe, intent_id)["status"] != "succeeded":
        raise Stuck(f"{intent_id} was not paid")
    intent = stripe.api("GET", f"/v1/payment_intents/{intent_id}")
    return {"intent": intent_id, "payload": event_payload("payment_intent.succeeded", intent)}


def deliver_everywhere(world: World, payload: bytes, times: int) -> list[int]:
    """The same signed event to both servers, `times` times each, all at once."""
    barrier = threading.Barrier(2 * times)

    def post(index: int) -> int:
        barrier.wait(timeout=60)
        answer = httpx.post(f"{world.base(index % 2)}/webhooks/stripe", content=payload, timeout=60,
                            headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)})
        return answer.status_code

    with ThreadPoolExecutor(max_workers=2 * times) as pool:
        return list(pool.map(post, range(2 * times)))


def run(world: World, size: Size, smtp: CapturingSMTP, stripe: LocalStripe, erp: Receiver) -> Run:
    """The scenario, from an empty database to every process stopped."""
    planned, secrets = build_book(world, size, erp.url)
    # A reminder of the last company, late in the run: held at the SMTP server mid-send.
    result = Run(planned=planned, endpoint_secrets=secrets, held_address=sorted(planned)[-1])
    result.mark("built")
    for index in (0, 1):
        world.start(f"serve{index}", "serve", "--host", "127.0.0.1", "--port", str(world.ports[index]))
    workers = [world.start(f"worker{index}", "worker", "--interval", "1") for index in range(size.workers)]

    def up(index: int) -> bool:
        try:
            return httpx.get(f"{world.base(index)}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    world.wait(lambda: up(0) and up(1), "both servers are ready")
    world.wait(lambda: all("running every" in world.log(f"worker{i}") for i in range(size.workers)),
               "the workers run")
    result.mark("started")

    smtp.hold(result.held_address)
    pids = [worker.pid for worker in workers]

    def kill_the_sender() -> None:
        """SIGKILL, at once, the worker whose message the SMTP server holds at DATA."""
        if smtp.held.wait(TIMEOUT) and smtp.held_peer is not None:
            holder = pid_with_local_port(pids, smtp.held_peer[1])
            if holder is not None:
                cpu = cpu_seconds(holder)
                os.kill(holder, signal.SIGKILL)
                result.cpu["killed worker"] = cpu
                result.killed_pid = holder
                result.emails_when_killed = len(smtp.messages)

    killer = threading.Thread(target=kill_the_sender, daemon=True)
    killer.start()
    world.set_clock(RUN_TIME)  # every company's daily plan is now due, for both workers
    result.mark("due")

    # Debtors act on the first emails while the rest of the run is still going out.
    world.wait(lambda: len(smtp.messages) >= size.payers, f"{size.payers} reminders arrived")
    links: dict[str, str] = {}
    for received in list(smtp.messages):
        found = re.search(r"http://127\.0\.0\.1:\d+/p/[A-Za-z0-9_.\-]+", received.text())
        if found and len(links) < size.payers:
            links.setdefault(str(received.message["To"]), found.group(0))
    result.emails_when_paying = len(smtp.messages)
    result.mark("paying")
    with ThreadPoolExecutor(max_workers=size.debtors) as debtors:
        result.paid = list(debtors.map(lambda item: pay(world, stripe, item[1], item[0]), enumerate(links.values())))
        result.mark("webhooks")
        answers = debtors.map(lambda payment: deliver_everywhere(world, payment["payload"], size.deliveries),
                              result.paid)
        result.webhook_answers = [status for statuses in answers for status in statuses]
    result.mark("webhooks answered")

    killer.join(TIMEOUT)
    if result.killed_pid is None:
        raise Stuck("the held reminder never reached the SMTP server from a worker")
    index = pids.index(result.killed_pid)
    result.exits["killed"] = workers[index].wait(timeout=30)
    world.processes["killed"] = world.processes.pop(f"worker{index}")
    world.logs["killed"] = world.logs.pop(f"worker{index}")
    smtp.release()  # the dead worker's message was never accepted
    if size.workers == 1:  # systemd's Restart= would start it again
        survivor = "worker-restarted"
        world.start(survivor, "worker", "--interval", "1")
    else:
        survivor = f"worker{1 - index}"

    engine = make_engine(world.url)
    try:
        def statuses() -> dict[str, int]:
            with Session(engine) as session:
                return {status: count for status, count in session.execute(
                    select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))}

        def applied() -> bool:
            with Session(engine) as session:
                return session.scalar(select(func.count()).select_from(WebhookEvent)
                                      .where(WebhookEvent.processed_at.is_not(None))) == len(result.paid)

        def quiet() -> bool:  # everything but the dead worker's message is done
            with Session(engine) as session:
                deliveries = session.scalar(select(func.count()).select_from(WebhookDelivery)
                                            .where(WebhookDelivery.status != "sent"))
            return deliveries == 0 and statuses().get("queued", 0) == 1 and applied()

        world.wait(applied, "every provider event is applied")
        result.mark("events applied")
        world.wait(quiet, "all but the dead worker's message are sent")
        result.mark("quiet")
        with Session(engine) as session:
            held = session.execute(select(OutboxMessage.status, OutboxMessage.attempts)
                                   .where(OutboxMessage.to_address == result.held_address)).all()
        if [tuple(row) for row in held] != [("queued", 1)]:
            raise Stuck(f"the dead worker's message is not waiting for its lease: {held}")
        if any(str(m.message["To"]) == result.held_address for m in smtp.messages):
            raise Stuck("the dead worker's message went out before its lease ran out")

        world.set_clock(RUN_TIME + timedelta(seconds=LEASE + 1))  # the lease runs out
        world.wait(lambda: set(statuses()) == {"sent"}, "the dead worker's message is sent")
        result.mark("all sent")
        with Session(engine) as session:
            result.reminder_runs = session.scalar(select(func.count()).select_from(ReminderRun)
                                                  .where(ReminderRun.dry_run.is_(False))) or 0
            names = {process.pid: name for name, process in world.processes.items()}
            result.plans = Counter(names.get(int(holder.rsplit(":", 1)[1]), holder)
                                   for holder in session.scalars(select(ReminderClaim.holder)))
    finally:
        engine.dispose()

    for name in ("serve0", "serve1", survivor):
        result.cpu[name] = cpu_seconds(world.processes[name].pid)
        world.processes[name].send_signal(signal.SIGTERM)
    for name in ("serve0", "serve1", survivor):
        result.exits[name] = world.processes[name].wait(timeout=120)
    return result


def problems(world: World, result: Run, smtp: CapturingSMTP, erp: Receiver) -> list[str]:
    """Everything done twice, lost or left half-done; none is the proof."""
    found: list[str] = []
    engine = make_engine(world.url)
    try:
        with Session(engine) as session:
            found += _mail(session, result, smtp)
            found += _plans(session)
            found += _payments(session, result)
            found += _erp(session, result, erp)
    finally:
        engine.dispose()
    found += _processes(world, result)
    return found


def _mail(session: Session, result: Run, smtp: CapturingSMTP) -> list[str]:
    found = []
    rows = session.execute(select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.to_address,
                                  OutboxMessage.status, OutboxMessage.attempts, OutboxMessage.created_at)).all()
    by_reference = {f"{row.id}.{int(row.created_at.timestamp())}": row for row in rows}
    received = Counter(str(m.message["X-Encours-Message"]) for m in smtp.messages)
    if missing := set(by_reference) - set(received):
        found.append(f"outbox rows never received: {sorted(missing)[:10]}")
    if unknown := set(received) - set(by_reference):
        found.append(f"emails without an outbox row: {sorted(unknown)[:10]}")
    if twice := {reference: count for reference, count in received.items() if count > 1}:
        found.append(f"emails received more than once: {twice}")
    if len({str(m.message["Message-ID"]) for m in smtp.messages}) != len(rows):
        found.append("Message-IDs and outbox rows differ in number")
    if left := [row.id for row in rows if row.status != "sent"]:
        found.append(f"outbox rows not sent: {left[:10]}")
    reminders = Counter(row.to_address for row in rows if row.kind == "reminder")
    if reminders != result.planned:
        found.append(f"reminders queued differ from the plan: missing {result.planned - reminders}, "
                     f"extra {reminders - result.planned}")
    if session.scalar(select(func.count()).select_from(Reminder)) != sum(result.planned.values()):
        found.append("Reminder rows differ from the plan")
    retried = {row.to_address: row.attempts for row in rows if row.attempts != 1}
    if retried != {result.held_address: 2}:
        found.append(f"attempts other than the dead worker's message taken over once: {retried}")
    return found


def _plans(session: Session) -> list[str]:
    """Each company's day planned once, by the one worker that claimed it (dunning.claims)."""
    found = []
    runs = Counter((row.company_id, row.run_date) for row in session.execute(
        select(ReminderRun.company_id, ReminderRun.run_date).where(ReminderRun.dry_run.is_(False))))
    if twice := {key: count for key, count in runs.items() if count != 1}:
        found.append(f"(company, day) runs planned more than once: {twice}")
    claimed = session.execute(select(ReminderClaim.company_id, ReminderClaim.run_date, ReminderClaim.claims,
                                     ReminderClaim.finished_at)).all()
    if {(row.company_id, row.run_date) for row in claimed} != set(runs):
        found.append(f"claims {sorted((row.company_id, row.run_date) for row in claimed)} for runs {sorted(runs)}")
    if odd := [tuple(row) for row in claimed if row.claims != 1 or row.finished_at is None]:
        found.append(f"claims taken over or left unfinished: {odd}")
    return found


def _payments(session: Session, result: Run) -> list[str]:
    found = []
    if set(result.webhook_answers) != {200}:
        found.append(f"webhook deliveries answered {Counter(result.webhook_answers)}")
    events = Counter(session.execute(select(WebhookEvent.event_id)).scalars())
    if len(events) != len(result.paid) or set(events.values()) != {1}:
        found.append(f"provider events stored: {len(events)} ids for {len(result.paid)} events, {events.most_common(3)}")
    failing = session.scalar(select(func.count()).select_from(WebhookEvent).where(
        (WebhookEvent.error.is_not(None)) | (WebhookEvent.processed_at.is_(None))))
    if failing:
        found.append(f"{failing} provider events unprocessed or failed")
    payments = session.execute(select(Payment)).scalars().all()
    if sorted(p.provider_ref or "" for p in payments) != sorted(p["intent"] for p in result.paid):
        found.append(f"{len(payments)} payments for {len(result.paid)} card payments")
    for payment in payments:
        checkout = session.get(Checkout, payment.checkout_id)
        if payment.status != "succeeded" or checkout is None or payment.amount_minor != checkout.amount_minor:
            found.append(f"payment {payment.id}: {payment.status} {payment.amount_minor}")
    paid_customers = {p.customer_id for p in payments}
    for invoice in session.execute(select(Invoice)).scalars():
        if invoice.customer_id in paid_customers and (invoice.status != "paid" or invoice.open_minor != 0):
            found.append(f"invoice {invoice.number} of a payer: {invoice.status}, {invoice.open_minor} open")
        elif invoice.customer_id not in paid_customers and invoice.open_minor != invoice.total_minor:
            found.append(f"invoice {invoice.number} of no payer: {invoice.open_minor} open of {invoice.total_minor}")
    found += [f"allocation invariant: {problem}" for problem in invariant_violations(session)]
    found += [f"running total: {problem}" for problem in day_totals.drift(session)]
    return found


def _erp(session: Session, result: Run, erp: Receiver) -> list[str]:
    found = []
    rows = session.execute(select(WebhookEndpoint.url, WebhookDelivery.audit_event_id, WebhookDelivery.status)
                           .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)).all()
    expected = Counter(("/erp/" + url.rsplit("/", 1)[1], str(event_id)) for url, event_id, _status in rows)
    got = Counter((item.path, item.headers.get("encours-event-id", "")) for item in erp.received)
    if not expected:
        found.append("no ERP event was queued: the check proves nothing")
    if lost := expected - got:
        found.append(f"ERP events never delivered: {list(lost)[:10]}")
    if extra := got - expected:
        found.append(f"ERP events delivered more than once, or unknown: {list(extra)[:10]}")
    if unsent := [row for row in rows if row.status != "sent"]:
        found.append(f"{len(unsent)} ERP deliveries not marked sent")
    for item in erp.received:
        secret = result.endpoint_secrets.get(item.path, "")
        if not verify_signature(secret, item.headers.get("encours-signature", "t=0"), item.body):
            found.append(f"bad Encours-Signature on {item.path}")
        elif str(json.loads(item.body)["id"]) != item.headers.get("encours-event-id"):
            found.append(f"event id header and body differ on {item.path}")
    return found


def _processes(world: World, result: Run) -> list[str]:
    found = []
    if result.exits.get("killed") != -signal.SIGKILL:
        found.append(f"the killed worker ended with {result.exits.get('killed')}")
    for name, code in result.exits.items():
        if name.startswith("serve"):
            # uvicorn shuts down gracefully, then ends by the signal it caught (as systemd expects).
            if code not in (0, -signal.SIGTERM) or "Application shutdown complete" not in world.log(name):
                found.append(f"{name} did not shut down cleanly ({code})")
        elif name.startswith("worker") and code != 0:
            found.append(f"{name} exited with {code}")
    for name in world.logs:
        if "Traceback" in world.log(name):
            found.append(f"a traceback in {name}'s log:\n{world.log(name)[-3000:]}")
    return found
