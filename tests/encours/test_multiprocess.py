"""Two `encours serve` and two `encours worker` processes on one PostgreSQL database, at once:
no work done twice, none lost (issue 19).

The world is built as an operator builds it (the `encours` CLI: migrate, companies, CSV imports,
reminders on, an ERP webhook endpoint), then four real processes share it while, at the same
time, each company's daily reminder plan falls due (the workers' own trigger: the clock passes
the company's reminder hour), the emails go out to a real SMTP server, debtors open the links of
those emails on either server and pay by card (localstripe), and Stripe's signed events for those
payments reach BOTH servers, each several times and concurrently, as providers retry. One worker
is killed (SIGKILL) while it is sending; the one message it held is sent by the other once its
lease has run out (the test moves every process's clock: ENCOURS_CLOCK_FILE), exactly once.

Then it counts: every email planned was received once, and every outbox row matches one received
email (Message-ID); every provider event was stored once and applied once (one payment per
checkout, invoices settled to the cent, the ledger's invariants and running totals exact); every
ERP event reached the receiver once, correctly signed; nothing is left queued or claimed; the
processes exit cleanly and wrote no traceback.

SQLite is not run here: the README supports one worker on a SQLite file, and several server
processes beside it (tests/encours/test_concurrency.py serves one file with two).
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.db import make_engine
from ledger import day_totals
from ledger.allocation import invariant_violations
from ledger.models import (
    Checkout, Invoice, OutboxMessage, Payment, Reminder, WebhookDelivery, WebhookEndpoint, WebhookEvent,
)
from sandbox.localstripe_server import LocalStripe
from tests.fakes import receiver as fake_receiver
from tests.fakes.localstripe_server import event_payload, localstripe, localstripe_server, pay_intent, sign  # noqa: F401
from tests.fakes.smtp import CapturingSMTP
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.postgres

ENCOURS = str(Path(sys.executable).with_name("encours"))
SECRET = "multiprocess-secret-0123456789abcd"
DAY = date(2026, 11, 25)
BEFORE_THE_RUN = datetime(2026, 11, 25, 6, 0, tzinfo=timezone.utc)  # 07:00 in Paris: reminder hour is 09:00
RUN_TIME = datetime(2026, 11, 25, 8, 30, tzinfo=timezone.utc)  # 09:30 in Paris: every company's plan is due
COMPANIES = ("ALPHA", "BRAVO", "CHARLIE")
CUSTOMERS = 40  # per company
PAYERS = 12  # debtors who open their reminder's link and pay by card
DELIVERIES = 3  # times each Stripe event is sent to each server
LEASE = 60  # ENCOURS_OUTBOX_LEASE, seconds of the clock
TIMEOUT = 120.0


@dataclass
class World:
    """The processes and fakes of one run, and what the test needs to drive them."""

    tmp: Path
    url: str
    env: dict[str, str]
    clock_file: Path
    ports: tuple[int, int]
    logs: dict[str, Path] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def set_clock(self, moment: datetime) -> None:
        """Every process's "now": written whole, then renamed over the file (never read half-written)."""
        draft = self.clock_file.with_suffix(".draft")
        draft.write_text(moment.isoformat())
        os.replace(draft, self.clock_file)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run([ENCOURS, *args], cwd=self.tmp, env={**self.env, **(env or {})}, capture_output=True,
                                text=True, timeout=180, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"encours {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
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
                    pytest.fail(f"{name} exited ({process.returncode}) while waiting until {what}:\n"
                                f"{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {name}\n{self.log(name)[-1500:]}" for name in self.logs)
                pytest.fail(f"timed out waiting until {what}\n{tails}")
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_with_local_port(pids: list[int], port: int) -> int | None:
    """Which of `pids` owns the TCP socket bound locally to 127.0.0.1:`port` (from /proc)."""
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


@contextmanager
def _receiver() -> Iterator[fake_receiver.Receiver]:
    yield from fake_receiver.serve()


def _verify_signature(secret: str, header: str, body: bytes) -> bool:
    """The ERP's side of Encours-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _book(world: World) -> None:
    """Companies, customers, invoices, reminders on, one ERP endpoint per company; its secrets."""
    world.cli("db", "upgrade")
    customers = ["company,customer_ref,name,email,language,phone,segment"]
    invoices = ["company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until"]
    for letter, code in zip("abc", COMPANIES):
        world.cli("company", "create", code, "--name", f"{code.title()} SAS", "--currency", "EUR")
        world.cli("company", "reminders", code, "on")
        for n in range(CUSTOMERS):
            ref = f"{letter.upper()}-{n:03d}"
            customers.append(f"{code},{ref},Client {ref},ap.{letter}{n:03d}@client.test,{'fr' if n % 2 else 'en'},,pme")
            # Overdue (the first reminder), and for some a second invoice not yet due (listed with it).
            invoices.append(f"{code},{ref},{ref}-1,{DAY - timedelta(days=40)},{DAY - timedelta(days=10)},EUR,"
                            f"{1000 + 17 * n}.{n % 100:02d},,")
            if n % 3 == 0:
                invoices.append(f"{code},{ref},{ref}-2,{DAY - timedelta(days=5)},{DAY + timedelta(days=25)},EUR,"
                                f"{200 + n}.50,,")
    (world.tmp / "customers.csv").write_text("\n".join(customers) + "\n", encoding="utf-8")
    (world.tmp / "invoices.csv").write_text("\n".join(invoices) + "\n", encoding="utf-8")
    world.cli("import", "customers", str(world.tmp / "customers.csv"))
    world.cli("import", "invoices", str(world.tmp / "invoices.csv"))


def _add_endpoints(world: World, receiver_url: str) -> dict[str, str]:
    secrets = {}
    for code in COMPANIES[:2]:
        lines = world.cli("webhook", "add", "--company", code, "--url", f"{receiver_url}/erp/{code}",
                          env={"ENCOURS_WEBHOOK_ALLOW_PRIVATE": "1"}).splitlines()
        secrets[f"/erp/{code}"] = lines[1].strip()
    return secrets


def _planned(world: World) -> Counter[str]:
    """What the planner says today's runs will send: one line per (customer, address)."""
    plan = world.cli("remind", "--date", DAY.isoformat(), "--dry-run")
    lines = [line.strip() for line in plan.splitlines() if line.strip().startswith("would send")]
    return Counter(line.split(" -> ")[1].split()[0] for line in lines)


def _pay(world: World, stripe: LocalStripe, link: str, index: int) -> dict[str, object]:
    """A debtor opens its link on one server, pays everything by card on the other; Stripe's event
    for the payment, signed, as it would send it."""
    first, other = world.base(index % 2), world.base(1 - index % 2)
    token = link.rsplit("/p/", 1)[1]
    with httpx.Client(timeout=30, headers={"Accept-Language": "en"}) as debtor:
        opened = debtor.get(f"{first}/p/{token}", follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == "/portal", opened.text[:500]
        statement = debtor.get(f"{other}/portal")  # the session cookie is good on either server
        assert statement.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', statement.text)
        invoice_ids = re.findall(r'name="invoice" value="(\d+)"', statement.text)
        assert csrf and invoice_ids
        started = debtor.post(f"{first}/portal/pay", data={"csrf_token": csrf.group(1), "invoice": invoice_ids,
                                                           "method": "card", "action": "pay"}, follow_redirects=False)
        assert started.status_code == 303 and started.headers["location"].endswith("/card"), started.text[:500]
        card = debtor.get(f"{other}{started.headers['location']}")
        assert card.status_code == 200
    secret = re.search(r'data-client-secret="([^"]+)"', card.text)
    assert secret, "no PaymentIntent on the card page"
    intent_id = secret.group(1).split("_secret_")[0]
    assert pay_intent(stripe, intent_id)["status"] == "succeeded"
    intent = stripe.api("GET", f"/v1/payment_intents/{intent_id}")
    return {"intent": intent_id, "payload": event_payload("payment_intent.succeeded", intent)}


def _deliver_everywhere(world: World, payload: bytes) -> list[int]:
    """The same signed event to both servers, DELIVERIES times each, all at once."""
    barrier = threading.Barrier(2 * DELIVERIES)

    def post(index: int) -> int:
        barrier.wait(timeout=30)
        answer = httpx.post(f"{world.base(index % 2)}/webhooks/stripe", content=payload, timeout=30,
                            headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)})
        return answer.status_code

    with ThreadPoolExecutor(max_workers=2 * DELIVERIES) as pool:
        return list(pool.map(post, range(2 * DELIVERIES)))


@pytest.fixture
def world(pg_server: PostgresServer, tmp_path: Path, localstripe: LocalStripe) -> Iterator[World]:  # noqa: F811
    url = pg_server.create_database("multiprocess")
    clock_file = tmp_path / "clock"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_"))}
    ports = (_free_port(), _free_port())
    env.update(ENCOURS_DATABASE_URL=url, ENCOURS_SECRET_KEY=SECRET, ENCOURS_BASE_URL=f"http://127.0.0.1:{ports[0]}",
               ENCOURS_STORAGE_DIR=str(tmp_path / "files"), ENCOURS_CLOCK_FILE=str(clock_file),
               ENCOURS_OUTBOX_LEASE=str(LEASE), ENCOURS_WEBHOOK_ALLOW_PRIVATE="1", PYTHONUNBUFFERED="1",
               **localstripe.settings())
    world = World(tmp_path, url, env, clock_file, ports)
    world.set_clock(BEFORE_THE_RUN)
    try:
        yield world
    finally:
        for process in world.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_two_servers_and_two_workers_share_one_database_without_doing_anything_twice_or_losing_anything(
    world: World, smtp_server: CapturingSMTP, localstripe: LocalStripe,  # noqa: F811
) -> None:
    began = time.monotonic()
    phase = lambda what: print(f"{time.monotonic() - began:6.1f} s  {what}", flush=True)  # noqa: E731
    _book(world)
    phase("book")
    planned = _planned(world)
    phase("planned")
    assert len(planned) == len(COMPANIES) * CUSTOMERS and set(planned.values()) == {1}, planned
    with _receiver() as erp:
        endpoint_secrets = _add_endpoints(world, erp.url)
        world.env["ENCOURS_SMTP_URL"] = smtp_server.url
        for index in (0, 1):
            world.start(f"serve{index}", "serve", "--host", "127.0.0.1", "--port", str(world.ports[index]))
        workers = [world.start(f"worker{index}", "worker", "--interval", "1") for index in (0, 1)]

        def up(index: int) -> bool:
            try:
                return httpx.get(f"{world.base(index)}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        world.wait(lambda: up(0) and up(1), "both servers are ready")
        world.wait(lambda: all("running every" in world.log(f"worker{i}") for i in (0, 1)), "both workers run")
        phase("started")

        # One reminder is held at the SMTP server mid-send, and the worker sending it killed (-9) there.
        held_address = "ap.b017@client.test"
        smtp_server.hold(held_address)
        pids = [worker.pid for worker in workers]
        killed: list[int] = []

        def kill_the_sender() -> None:
            if smtp_server.held.wait(TIMEOUT) and smtp_server.held_peer is not None:
                holder = _pid_with_local_port(pids, smtp_server.held_peer[1])
                if holder is not None:
                    os.kill(holder, signal.SIGKILL)
                    killed.append(holder)

        killer = threading.Thread(target=kill_the_sender, daemon=True)
        killer.start()
        world.set_clock(RUN_TIME)  # every company's daily plan is now due, for both workers

        # Debtors act on the first emails while the rest of the run is still going out.
        world.wait(lambda: len(smtp_server.messages) >= PAYERS, f"{PAYERS} reminders arrived")
        links = []
        for received in list(smtp_server.messages):
            found = re.search(r"http://127\.0\.0\.1:\d+/p/[A-Za-z0-9_.\-]+", received.text())
            if found and received.message["To"] not in {link[0] for link in links}:
                links.append((str(received.message["To"]), found.group(0)))
        phase("first emails")
        links = links[:PAYERS]
        assert len(links) == PAYERS
        with ThreadPoolExecutor(max_workers=4) as debtors:
            paid = list(debtors.map(lambda item: _pay(world, localstripe, item[1][1], item[0]), enumerate(links)))
            answers = list(debtors.map(lambda payment: _deliver_everywhere(world, payment["payload"]), paid))
        assert all(status == 200 for statuses in answers for status in statuses), answers
        phase("paid")

        killer.join(TIMEOUT)
        assert killed, "the held reminder never reached the SMTP server from a worker"
        index = pids.index(killed[0])
        assert workers[index].wait(timeout=10) == -signal.SIGKILL
        world.processes["killed"] = world.processes.pop(f"worker{index}")
        world.logs["killed"] = world.logs.pop(f"worker{index}")
        survivor_name = f"worker{1 - index}"
        smtp_server.release()  # the dead worker's message was never accepted

        engine = make_engine(world.url)
        try:
            def outbox() -> dict[str, int]:
                with Session(engine) as session:
                    return dict(session.execute(select(OutboxMessage.status, func.count())  # type: ignore[arg-type]
                                                .group_by(OutboxMessage.status)).all())

            def held_row() -> OutboxMessage | None:
                with Session(engine) as session:
                    return session.scalar(select(OutboxMessage).where(OutboxMessage.to_address == held_address,
                                                                      OutboxMessage.kind == "reminder"))

            def settled() -> bool:
                with Session(engine) as session:
                    events = session.execute(select(WebhookEvent.processed_at.is_not(None))).scalars().all()
                    deliveries = session.scalar(select(func.count()).select_from(WebhookDelivery)
                                                .where(WebhookDelivery.status != "sent"))
                statuses = outbox()
                return (len(events) == PAYERS and all(events) and deliveries == 0
                        and statuses.get("queued", 0) == 1 and set(statuses) <= {"sent", "queued"})

            # The survivor sends everything else, and the ERP deliveries; the held message waits for its lease.
            world.wait(settled, "all but the dead worker's message are sent and every event applied")
            phase("settled")
            row = held_row()
            assert row is not None and row.status == "queued" and row.attempts == 1
            assert all(str(m.message["To"]) != held_address for m in smtp_server.messages)

            world.set_clock(RUN_TIME + timedelta(seconds=LEASE + 1))  # the lease runs out
            world.wait(lambda: outbox() == {"sent": sum(outbox().values())}, "the held message is sent")
            row = held_row()
            assert row is not None and row.status == "sent" and row.attempts == 2

            for name in ("serve0", "serve1", survivor_name):
                world.processes[name].send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then ends by the signal it caught (as systemd expects).
            for name in ("serve0", "serve1"):
                assert world.processes[name].wait(timeout=60) in (0, -signal.SIGTERM), world.log(name)[-3000:]
                assert "Application shutdown complete" in world.log(name)
            assert world.processes[survivor_name].wait(timeout=60) == 0, world.log(survivor_name)[-3000:]

            phase("stopped")
            _check_mail(engine, smtp_server, planned)
            _check_payments(engine, paid)
            _check_erp(engine, erp, endpoint_secrets)
        finally:
            engine.dispose()

    for name in world.logs:
        assert "Traceback" not in world.log(name), f"{name}:\n{world.log(name)[-5000:]}"


def _check_mail(engine: object, smtp_server: CapturingSMTP, planned: Counter[str]) -> None:
    with Session(engine) as session:  # type: ignore[call-overload]
        rows = session.execute(select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.to_address,
                                      OutboxMessage.status, OutboxMessage.created_at)).all()
        reminders = session.scalar(select(func.count()).select_from(Reminder))
    by_reference = {f"{row.id}.{int(row.created_at.timestamp())}": row for row in rows}
    received = Counter(str(m.message["X-Encours-Message"]) for m in smtp_server.messages)
    assert set(received) == set(by_reference), "an email went out without its outbox row, or a row was never sent"
    assert set(received.values()) == {1}, {ref: n for ref, n in received.items() if n > 1}
    assert len({str(m.message["Message-ID"]) for m in smtp_server.messages}) == len(rows)
    reminder_addresses = Counter(row.to_address for row in rows if row.kind == "reminder")
    assert reminder_addresses == planned, "the reminders sent are not exactly those planned"
    assert reminders == sum(planned.values())


def _check_payments(engine: object, paid: list[dict[str, object]]) -> None:
    with Session(engine) as session:  # type: ignore[call-overload]
        events = Counter(session.execute(select(WebhookEvent.event_id)).scalars())
        assert len(events) == len(paid) and set(events.values()) == {1}
        assert session.scalar(select(func.count()).select_from(WebhookEvent)
                              .where(WebhookEvent.error.is_not(None))) == 0
        payments = session.execute(select(Payment)).scalars().all()
        assert sorted(p.provider_ref for p in payments) == sorted(str(p["intent"]) for p in paid)
        for payment in payments:
            checkout = session.get_one(Checkout, payment.checkout_id)
            assert payment.status == "succeeded" and payment.amount_minor == checkout.amount_minor
        paid_customers = {p.customer_id for p in payments}
        invoices = session.execute(select(Invoice)).scalars().all()
        for invoice in invoices:
            if invoice.customer_id in paid_customers:
                assert invoice.status == "paid" and invoice.open_minor == 0, invoice.number
            else:
                assert invoice.open_minor == invoice.total_minor, invoice.number
        assert invariant_violations(session) == []
        assert day_totals.drift(session) == []


def _check_erp(engine: object, erp: fake_receiver.Receiver, secrets: dict[str, str]) -> None:
    with Session(engine) as session:  # type: ignore[call-overload]
        rows = session.execute(select(WebhookEndpoint.url, WebhookDelivery.audit_event_id)
                               .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)).all()
    expected = Counter(("/erp/" + url.rsplit("/", 1)[1], str(event_id)) for url, event_id in rows)
    got = Counter((item.path, item.headers["encours-event-id"]) for item in erp.received)
    assert expected and got == expected, (expected - got, got - expected)
    for item in erp.received:
        assert _verify_signature(secrets[item.path], item.headers["encours-signature"], item.body)
        assert json.loads(item.body)["id"] == int(item.headers["encours-event-id"])
