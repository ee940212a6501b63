"""Real concurrency on PostgreSQL (and SQLite where it matters): threads, each with its own
engine or pooled connection, started together behind a barrier. Every test has a database of
its own, with committed data, since the work has to be visible across connections."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from mail.outbox import DeliveryReport, deliver_due, parse_smtp_url
from encours.app import create_app
from kernel.clock import clock
from kernel.db import make_engine, make_sessionmaker, unit_of_work
from kernel.settings import load_settings
from ledger.models import LinkOpen, OutboxMessage, Throttle
from links import throttle, tokens
from tests import factories
from tests.conftest import TEST_SECRET
from tests.databases import together
from tests.fakes.smtp import CapturingSMTP

MAIL_FROM = "Encours <relances@encours.test>"
ENCOURS = str(Path(sys.executable).with_name("encours"))
REPO = Path(__file__).resolve().parents[2]


# --- outbox: two workers never send one message twice ----------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_outbox_workers_send_each_message_exactly_once(
    pg_fresh_url: str, engines: Callable[[str], Engine], smtp_server: CapturingSMTP, workers: int
) -> None:
    count = 60
    with unit_of_work(make_sessionmaker(engines(pg_fresh_url))) as session:
        for n in range(count):
            session.add(OutboxMessage(kind="reminder", to_address=f"ap{n}@client.test", subject=f"Relance {n}",
                                      body_text=f"Message {n}"))
    smtp = parse_smtp_url(smtp_server.url)

    def work(index: int) -> list[DeliveryReport]:
        factory = make_sessionmaker(engines(pg_fresh_url))  # one engine, one connection per worker
        reports = []
        while True:  # small batches, so the workers keep racing for the next message
            report = deliver_due(factory, smtp, MAIL_FROM, limit=5)
            reports.append(report)
            if report.sent == 0:
                return reports

    reports = together(workers, work)

    sent_per_worker = [sum(r.sent for r in worker_reports) for worker_reports in reports]
    assert sum(sent_per_worker) == count
    assert all(r.retried == r.failed == 0 for worker_reports in reports for r in worker_reports)
    subjects = [received.message["Subject"] for received in smtp_server.messages]
    assert len(subjects) == count and len(set(subjects)) == count
    assert len({received.message["Message-ID"] for received in smtp_server.messages}) == count
    with make_sessionmaker(engines(pg_fresh_url))() as session:
        rows = session.execute(select(OutboxMessage.status, OutboxMessage.attempts)).all()
    assert rows and all(row == ("sent", 1) for row in rows)


# --- throttle counters count every failure ------------------------------------------------------


@pytest.mark.postgres
def test_concurrent_failures_are_all_counted(fresh_url: str, engines: Callable[[str], Engine]) -> None:
    threads = 16
    rounds = 3
    key = "link:203.0.113.7"

    def work(index: int) -> list[int]:
        factory = make_sessionmaker(engines(fresh_url))
        seen = []
        for _ in range(rounds):
            with unit_of_work(factory) as session:
                seen.append(throttle.record_failure(session, key, window_seconds=600))
        return seen

    counts = together(threads, work)

    with make_sessionmaker(engines(fresh_url))() as session:
        assert session.get(Throttle, key).count == threads * rounds  # type: ignore[union-attr]
        assert throttle.is_blocked(session, key, limit=threads * rounds, window_seconds=600)
    # each failure saw its own number: none was lost, none counted twice
    assert sorted(n for seen in counts for n in seen) == list(range(1, threads * rounds + 1))


# --- magic links: a link opened many times at once (mail scanners, double clicks) ----------------


@pytest.mark.postgres
def test_concurrent_opens_of_a_magic_link_all_succeed(pg_fresh_url: str, engines: Callable[[str], Engine]) -> None:
    _check_concurrent_opens(pg_fresh_url, engines)


def test_concurrent_opens_of_a_magic_link_on_sqlite(sqlite_fresh_url: str, engines: Callable[[str], Engine]) -> None:
    _check_concurrent_opens(sqlite_fresh_url, engines)


def _check_concurrent_opens(fresh_url: str, engines: Callable[[str], Engine]) -> None:
    opens = 12
    factory = make_sessionmaker(engines(fresh_url))
    with unit_of_work(factory) as session:
        company = factories.company(session)
        customer = factories.customer(session, company)
        factories.invoice(session, customer, total_minor=4321_00)
        contact = customer.primary_contact
        token = tokens.make_token(TEST_SECRET, contact)
        contact_id = contact.id
        customer_name = customer.name
    settings = load_settings(
        {"ENCOURS_DATABASE_URL": fresh_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
         "ENCOURS_BASE_URL": "http://testserver"}
    )
    app = create_app(settings)  # its own engine: a pool that hands each thread a connection

    def work(index: int) -> tuple[int, str, int, str]:
        with TestClient(app, base_url="http://testserver") as client:
            response = client.get(f"/p/{token}", follow_redirects=False)
            portal = client.get("/portal")
            return response.status_code, response.headers.get("location", ""), portal.status_code, portal.text

    results = together(opens, work)

    for status, location, portal_status, portal_text in results:
        assert (status, location, portal_status) == (303, "/portal", 200)
        assert customer_name in portal_text
    with factory() as session:
        recorded = session.scalar(select(func.count()).select_from(LinkOpen).where(LinkOpen.contact_id == contact_id))
    # One browser opening one link: recorded once (tokens.OPEN_RECORDED_ONCE_WITHIN), though
    # opens checked at the same moment may each find none recorded yet and each add one.
    assert recorded is not None and 1 <= recorded <= opens


# --- several server processes: `encours serve --workers 2` ------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_workers(pid: int) -> list[int]:
    """The uvicorn worker processes under `pid` (not multiprocessing's resource tracker)."""
    workers = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    for child in children:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
        except OSError:
            pass
    return workers


def test_serve_with_two_workers_shares_nothing_in_process_memory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'workers.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCOURS_")}
    env.update(ENCOURS_DATABASE_URL=url, ENCOURS_SECRET_KEY=TEST_SECRET, ENCOURS_BASE_URL="http://127.0.0.1")
    subprocess.run([ENCOURS, "db", "upgrade"], env=env, check=True, capture_output=True, cwd=REPO)
    engine = make_engine(url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            customer = factories.customer(session, factories.company(session))
            factories.invoice(session, customer, total_minor=777_00)
            token = tokens.make_token(TEST_SECRET, customer.primary_contact)
            name = customer.name
    finally:
        engine.dispose()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")  # a file, not a pipe nobody reads, which could fill and block
    server = subprocess.Popen([ENCOURS, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                              env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:  # both workers up: two children, and the port answers
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2).status_code == 200 and len(_server_workers(server.pid)) >= 2
            except httpx.TransportError:
                ready = False
            if ready:
                break
            assert server.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "server did not start two workers"
            time.sleep(0.3)
        assert len(_server_workers(server.pid)) == 2

        # every request on a new connection: the kernel spreads them over both processes, and a
        # session cookie signed by one process must be good in the other
        for _ in range(10):
            assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
            opened = httpx.get(f"{base}/p/{token}", timeout=5, follow_redirects=False)
            assert opened.status_code == 303 and opened.headers["location"] == "/portal"
            cookies = dict(opened.cookies)
            assert cookies
            for _ in range(3):
                page = httpx.get(f"{base}/portal", cookies=cookies, timeout=5)
                assert page.status_code == 200 and name in page.text
        assert httpx.get(f"{base}/portal", timeout=5, follow_redirects=False).status_code != 200  # no cookie
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_failures_count_again_from_one_after_the_window(both_databases_session_factory: sessionmaker[Session]) -> None:
    """The atomic upsert keeps the fixed-window rule: a failure after the window starts a new one."""
    start = clock.now()
    with both_databases_session_factory() as session:
        assert [throttle.record_failure(session, "k", 600) for _ in range(3)] == [1, 2, 3]
        row = session.get(Throttle, "k")
        assert row is not None and row.count == 3
        clock.set(start + timedelta(seconds=599))
        assert throttle.record_failure(session, "k", 600) == 4
        assert throttle.is_blocked(session, "k", limit=4, window_seconds=600)
        clock.set(start + timedelta(seconds=1200))
        assert not throttle.is_blocked(session, "k", limit=4, window_seconds=600)
        assert throttle.record_failure(session, "k", 600) == 1
        assert row.count == 1 and row.window_start == start + timedelta(seconds=1200)  # the loaded row follows
        assert throttle.record_failure(session, "other", 600) == 1
