"""Faults while `encours worker` delivers the outbox, counted at a real SMTP server.

A real worker process delivers to aiosmtpd from a PostgreSQL server of this test's own; the
worker is killed with SIGKILL mid-run, then the database's connections are cut and the server
itself crashes and restarts, each while messages are going out. What we guarantee: nothing is
lost; nothing is sent twice because of a database outage; a killed worker can resend at most
the one message that was in flight (the SMTP server had accepted it, our write had not
committed), under the same Message-ID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Callable, Iterator

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.db import make_engine, upgrade
from ledger.models import OutboxMessage
from tests.fakes.smtp import CapturingSMTP
from tests.pgserver import PostgresError, PostgresNotInstalled, PostgresServer

ENCOURS = Path(sys.executable).with_name("encours")
SECRET = "faults-test-secret-0123456789abcd"
COUNT = 600
LEASE_SECONDS = 12  # ENCOURS_OUTBOX_LEASE: how long the killed worker's message in flight waits
TIMEOUT = 90.0

pytestmark = pytest.mark.postgres


@pytest.fixture
def crashable_server() -> Iterator[PostgresServer]:
    """A server of our own, since we crash it; commits durable as in production (the shared test
    server turns synchronous_commit off, which a crash would turn into lost commits)."""
    server = PostgresServer(extra_config={"synchronous_commit": "on"})
    try:
        server.start("faults")
    except (PostgresNotInstalled, PostgresError) as error:
        pytest.fail(str(error), pytrace=False)
    yield server
    server.stop()


def _queue(url: str) -> None:
    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            session.add_all(OutboxMessage(kind="reminder", to_address=f"ap{n}@client.test", subject=f"Relance {n}",
                                          body_text=f"Message {n}") for n in range(COUNT))
    finally:
        engine.dispose()


def _statuses(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            rows = session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
            return {status: count for status, count in rows}
    finally:
        engine.dispose()


def _start_worker(url: str, smtp_url: str, cwd: Path, log: IO[str]) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_"))}
    environ.update(ENCOURS_DATABASE_URL=url, ENCOURS_SECRET_KEY=SECRET, ENCOURS_SMTP_URL=smtp_url,
                   ENCOURS_OUTBOX_LEASE=str(LEASE_SECONDS), PYTHONUNBUFFERED="1")
    return subprocess.Popen([str(ENCOURS), "worker", "--interval", "1"], cwd=cwd, env=environ,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True)


def _wait(condition: Callable[[], bool], what: str, log_path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}; worker log:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.005)


def _cut_connections(server: PostgresServer) -> int:
    """pg_terminate_backend on every connection to the test's database: a failover's effect."""
    with psycopg.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres",
                         autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = 'faults' AND pid <> pg_backend_pid()").fetchall()
    return len(rows)


def test_a_killed_worker_and_a_crashed_database_lose_nothing_and_resend_at_most_the_message_in_flight(
    crashable_server: PostgresServer, smtp_server: CapturingSMTP, tmp_path: Path
) -> None:
    url = crashable_server.url("faults")
    upgrade(url)
    _queue(url)
    received = lambda: len(smtp_server.messages)  # noqa: E731
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        first = _start_worker(url, smtp_server.url, tmp_path, log)
        try:
            _wait(lambda: received() >= 100, "the first worker has sent 100 messages", log_path)
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
        at_kill = received()
        assert at_kill < COUNT, "the worker finished before it was killed: the test proves nothing"

        second = _start_worker(url, smtp_server.url, tmp_path, log)
        try:
            _wait(lambda: received() >= at_kill + 150, "the second worker is sending", log_path)
            assert _cut_connections(crashable_server) >= 1
            cut_at = received()
            _wait(lambda: received() >= cut_at + 150, "sending resumed after the connections were cut", log_path)
            crashed_at = received()
            crashable_server.restart("immediate")
            assert crashed_at < COUNT - 50, "the outbox was nearly empty when the database crashed"
            _wait(lambda: _statuses(url) == {"sent": COUNT}, "every message is recorded sent", log_path)
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(timeout=30)
            except subprocess.TimeoutExpired:
                second.kill()
                raise

    subjects = Counter(str(message.message["Subject"]) for message in smtp_server.messages)
    assert set(subjects) == {f"Relance {n}" for n in range(COUNT)}, "a message was lost"
    duplicated = {subject: count for subject, count in subjects.items() if count > 1}
    # One crash of a worker: at most the message in flight went out twice; the outages cost nothing.
    assert len(smtp_server.messages) - COUNT == sum(count - 1 for count in duplicated.values()) <= 1, duplicated
    assert len({str(message.message["Message-ID"]) for message in smtp_server.messages}) == COUNT
    log_text = log_path.read_text()
    assert "database unavailable" in log_text, "the outage never reached a write of an outcome"
