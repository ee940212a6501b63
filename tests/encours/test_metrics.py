"""/metrics: requests by route template and status, latency, outbox depth and age, webhook
events by state, the worker's heartbeat and reminder runs; read with prometheus_client's parser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours import worker
from encours.app import create_app
from kernel.clock import clock
from kernel.settings import Settings, load_settings
from ledger.models import OutboxMessage, ReminderRun, WebhookEvent
from tests.conftest import TEST_SECRET

TOKEN = "metrics-token-0123456789"
ENCOURS = str(Path(sys.executable).with_name("encours"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _settings(db_url: str, **extra: str) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver",
                          "ENCOURS_SMTP_URL": f"smtp://127.0.0.1:{_closed_port()}"} | extra)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_scrape_reports_requests_outbox_webhooks_heartbeats_and_reminders(
    db_url: str, session: Session, session_factory: sessionmaker[Session],
) -> None:
    settings = _settings(db_url, ENCOURS_METRICS_TOKEN=TOKEN)
    now = clock.now()
    session.add_all([
        OutboxMessage(kind="reminder", to_address="a@client.test", subject="S", body_text="B",
                      created_at=now - timedelta(hours=2), next_attempt_at=now - timedelta(hours=2)),
        OutboxMessage(kind="reminder", to_address="b@client.test", subject="S", body_text="B", status="sent"),
        OutboxMessage(kind="reminder", to_address="c@client.test", subject="S", body_text="B", status="failed"),
        ReminderRun(run_date=now.date(), started_at=now, finished_at=now, queued=3),
        ReminderRun(run_date=now.date(), started_at=now, dry_run=True),
    ])
    session.commit()
    # A real worker run: the SMTP server is down, so the message stays queued (retried later).
    report = worker.run_once(settings, session_factory)
    assert report.outbox.retried == 1
    session.add_all([
        WebhookEvent(provider="stripe", event_id="evt_1", event_type="t", body="{}", processed_at=now),
        WebhookEvent(provider="stripe", event_id="evt_2", event_type="t", body="{}", processed_at=now,
                     outcome="not_ours"),
        WebhookEvent(provider="gocardless", event_id="EV3", event_type="t", body="{}", error="boom",
                     next_attempt_at=now + timedelta(minutes=5)),
    ])
    session.commit()

    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(settings, sessions=session_factory)) as client:
        # Request counters live for the whole process (other tests' apps count too): compare.
        before = _samples(client.get("/metrics", headers=auth).text)
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        assert client.get("/portal/pay/12345", follow_redirects=False).status_code in (302, 303, 401, 403, 404)
        assert client.get("/no/such/page").status_code == 404
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        response = client.get("/metrics", headers=auth)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    def added(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return samples[key] - before.get(key, 0.0)

    assert added("encours_http_requests_total", method="GET", route="/healthz", status="200") == 3
    assert added("encours_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert added("encours_http_requests_total", method="GET", route="/metrics", status="401") == 2
    assert added("encours_http_requests_total", method="GET", route="/metrics", status="200") == 1  # `before`
    pay_routes = {dict(labels)["route"] for name, labels in samples if name == "encours_http_requests_total"}
    assert "/portal/pay/{checkout_id:int}" in pay_routes and not any("12345" in route for route in pay_routes)
    assert added("encours_http_request_duration_seconds_count", method="GET", route="/healthz") == 3
    assert added("encours_http_request_duration_seconds_bucket", method="GET", route="/healthz", le="+Inf") == 3

    assert value("encours_outbox_messages", status="queued") == 1
    assert value("encours_outbox_messages", status="sent") == 1
    assert value("encours_outbox_messages", status="failed") == 1
    assert value("encours_outbox_due_messages") == 0  # retried in a minute
    assert value("encours_outbox_oldest_queued_age_seconds") == 2 * 3600

    assert value("encours_webhook_events", provider="stripe", state="processed") == 1
    assert value("encours_webhook_events", provider="stripe", state="not_ours") == 1
    assert value("encours_webhook_events", provider="gocardless", state="failed") == 1

    for job in ("promises", "overdue_days", "transfers", "reminders", "webhooks", "direct_debits", "outbox"):
        assert value("encours_worker_last_run_timestamp_seconds", job=job) == now.timestamp()
        assert value("encours_worker_last_success_timestamp_seconds", job=job) == now.timestamp()
        assert value("encours_worker_job_failing", job=job) == 0

    assert value("encours_reminder_runs", state="finished") == 1  # the dry run is not counted
    assert value("encours_reminders_queued") == 3
    assert value("encours_reminder_last_run_timestamp_seconds") == now.timestamp()


def test_a_failing_job_is_marked_and_keeps_its_last_success(
    db_url: str, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(db_url, ENCOURS_METRICS_TOKEN=TOKEN)
    worker.run_once(settings, session_factory)
    succeeded_at = clock.now()
    clock.set(succeeded_at + timedelta(minutes=1))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("collections are broken")

    monkeypatch.setattr(worker, "collect_direct_debits", broken)
    with pytest.raises(RuntimeError):
        worker.run_once(settings, session_factory)
    with TestClient(create_app(settings, sessions=session_factory)) as client:
        samples = _samples(client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text)
    job = (("job", "direct_debits"),)
    assert samples[("encours_worker_job_failing", job)] == 1
    assert samples[("encours_worker_last_run_timestamp_seconds", job)] == clock.now().timestamp()
    assert samples[("encours_worker_last_success_timestamp_seconds", job)] == succeeded_at.timestamp()


def test_metrics_are_off_without_a_token(db_url: str, session_factory: sessionmaker[Session]) -> None:
    with TestClient(create_app(_settings(db_url), sessions=session_factory)) as client:
        assert client.get("/metrics").status_code == 404


def test_two_server_processes_report_the_sum_of_their_requests(tmp_path: Path) -> None:
    """`encours serve --workers 2`: whichever process answers the scrape reports both processes'
    requests (prometheus_client's multiprocess mode)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale from an earlier run")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "PROMETHEUS_"))}
    env |= {"ENCOURS_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}", "ENCOURS_SECRET_KEY": "s" * 32,
            "ENCOURS_METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    subprocess.run([ENCOURS, "db", "upgrade"], env=env, check=True, capture_output=True)
    port = _closed_port()
    server = subprocess.Popen([ENCOURS, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        for _ in range(40):  # a new connection each: the kernel hands them to either process
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        scrapes = [_samples(httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                                      timeout=5).text) for _ in range(6)]
    finally:
        server.terminate()
        server.wait(timeout=20)
    healthz = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
    assert {scrape[("encours_http_requests_total", healthz)] for scrape in scrapes} == {40}
    assert not (metrics_dir / "counter_999999.db").exists()
    writers = {path.name.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
    assert len(writers) == 2, writers  # both processes served requests
