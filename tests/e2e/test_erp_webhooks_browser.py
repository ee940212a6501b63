"""An admin registers two ERP webhook endpoints in the back-office (the secret shown once, a reload
adding nothing), a bank transfer is matched the way staff do it, the real worker sends the payment
event to a local receiver that checks the Encours-Signature with that secret; the log shows one
delivered and one failed (the receiver answered 500); "Send again" queues it and the next run
delivers it."""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.conftest import DESKTOP, ENCOURS, LiveDemo, serve_demo
from tests.e2e.test_admin_browser import _sign_in
from tests.e2e.test_bank_browser import _customer_with_invoices, _statement
from tests.e2e.test_portal_browser import MakePage, _describe, _serious_violations

pytestmark = pytest.mark.e2e


@dataclass
class Erp:
    """A local ERP receiving webhooks: each path has its signing secret; a request whose
    Encours-Signature does not verify is refused (400), a path marked down answers 500."""

    server: ThreadingHTTPServer
    secrets: dict[str, str] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    verified: list[tuple[str, str, bytes]] = field(default_factory=list)  # path, event id, body
    refused: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def on(self, path: str) -> list[tuple[str, str, bytes]]:
        return [item for item in self.verified if item[0] == path]


def _verifies(secret: str, header: str, body: bytes) -> bool:
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if "t" not in parts or "v1" not in parts:
        return False
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
def erp() -> Iterator[Erp]:
    erp: Erp

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            secret = erp.secrets.get(self.path)
            if secret is None or not _verifies(secret, self.headers.get("Encours-Signature", ""), body):
                erp.refused.append(self.path)
                status = 400
            elif self.path in erp.down:
                status = 500
            else:
                erp.verified.append((self.path, self.headers.get("Encours-Event-Id", ""), body))
                status = 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    erp = Erp(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield erp
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    """A demo of its own that may send to the receiver on 127.0.0.1, as an ERP on the LAN."""
    with serve_demo(tmp_path_factory.mktemp("erp-webhooks-demo"), {"ENCOURS_WEBHOOK_ALLOW_PRIVATE": "true"}) as own:
        yield own


def _worker(demo: LiveDemo) -> str:
    """The real worker, once, as cron or systemd runs it; one attempt per delivery before it fails."""
    env = {**demo.env(), "ENCOURS_WEBHOOK_ALLOW_PRIVATE": "true", "ENCOURS_WEBHOOK_MAX_ATTEMPTS": "1",
           "ENCOURS_WEBHOOK_TIMEOUT": "5", "ENCOURS_SMTP_URL": "smtp://127.0.0.1:9"}
    done = subprocess.run([str(ENCOURS), "worker", "--once"], cwd=demo.directory, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _add_endpoint(page: Page, url: str) -> str:
    """Register `url` for payment events alone; the signing secret the page shows once."""
    form = page.locator("form", has=page.get_by_role("button", name="Add the endpoint"))
    form.get_by_label("Company").select_option("DURAND")
    form.get_by_label("URL (https://…)").fill(url)
    form.get_by_label("All events").uncheck()
    form.get_by_label("payment.succeeded").check()
    form.get_by_role("button", name="Add the endpoint").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Endpoint {url} added for DURAND")
    secret = page.locator("#new-webhook-secret").inner_text()
    assert secret.startswith("whsec_")
    return secret


def _row(page: Page, path: str) -> Locator:
    return page.locator("#delivery-results tbody tr", has_text=path)


def test_admin_registers_endpoints_the_worker_delivers_signed_events_and_a_failure_is_sent_again(
        make_page: MakePage, demo: LiveDemo, erp: Erp, tmp_path: Path) -> None:
    _customer_with_invoices(demo, tmp_path)
    email = "webhooks-admin@durand.example"
    password = demo.staff(email, "admin")
    page = make_page(viewport=DESKTOP, locale="en-GB")
    problems: list[str] = []
    _sign_in(page, demo, email, password)
    expect(page).to_have_url(f"{demo.base_url}/admin")

    page.get_by_role("link", name="ERP webhooks", exact=True).click()
    expect(page.locator("h1")).to_have_text("ERP webhooks")
    erp.secrets["/erp"] = _add_endpoint(page, erp.url + "/erp")
    found = _serious_violations(page)
    if found:
        problems.append(_describe("endpoint added, secret shown", found))
    # The page showing the secret came by a redirect: reloading it posts nothing again.
    expect(page).to_have_url(f"{demo.base_url}/admin/webhooks/endpoints")
    page.reload()
    expect(page.locator("#new-webhook-secret")).to_have_count(0)  # shown once
    expect(page.get_by_role("region", name="Endpoints").locator("tbody tr")).to_have_count(1)
    page.goto(f"{demo.base_url}/admin/webhooks/endpoints")
    expect(page.locator("#new-webhook-secret")).to_have_count(0)
    erp.secrets["/down"] = _add_endpoint(page, erp.url + "/down")
    erp.down.add("/down")
    endpoints = page.get_by_role("region", name="Endpoints")
    expect(endpoints.locator("tbody tr", has_text="/erp")).to_contain_text("payment.succeeded")
    expect(endpoints.locator("tbody tr", has_text="/down")).to_contain_text("payment.succeeded")

    # A customer's transfer comes in on the bank statement; staff accept the match it suggests.
    page.get_by_role("link", name="Bank", exact=True).click()
    page.get_by_label(re.compile("Statement file")).set_input_files(str(_statement(tmp_path)))
    page.get_by_role("button", name="Import", exact=True).click()
    entry = page.locator("tr.bank-entry", has_text="QUINCAILLERIE LENOIR")
    entry.get_by_role("button", name="Accept").click()
    expect(entry).to_contain_text("Matched")

    assert "1 sent, 0 to retry, 1 failed" in _worker(demo)
    [(_, event_id, body)] = erp.on("/erp")
    assert b'"type":"payment.succeeded"' in body and erp.refused == []

    page.get_by_role("link", name="ERP webhooks", exact=True).click()
    expect(_row(page, "/erp")).to_contain_text("Sent")
    expect(_row(page, "/erp")).to_contain_text("204")
    failed = _row(page, "/down")
    expect(failed).to_contain_text("Failed")
    expect(failed).to_contain_text("HTTP 500")
    expect(failed.locator("td.num").first).to_have_text("1")  # attempts
    expect(failed.get_by_role("rowheader")).to_contain_text(f"payment.succeeded #{event_id}")

    # The log filtered by state and by endpoint, swapped in by htmx (the page stays).
    page.evaluate("window.__stillHere = true")
    page.get_by_label("Show", exact=True).select_option(label="Failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#delivery-results tbody tr")).to_have_count(1)
    expect(_row(page, "/down")).to_be_visible()
    expect(page).to_have_url(re.compile(r"status=failed"))
    page.get_by_label("Show", exact=True).select_option(label="All")
    page.get_by_label("Endpoint", exact=True).select_option(label=f"{erp.url}/erp (DURAND)")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#delivery-results tbody tr")).to_have_count(1)
    expect(_row(page, "/erp")).to_be_visible()
    assert page.evaluate("window.__stillHere") is True
    found = _serious_violations(page)
    if found:
        problems.append(_describe("delivery log", found))

    # The ERP is fixed; the admin sends the failed delivery again and the next run delivers it.
    erp.down.clear()
    page.goto(f"{demo.base_url}/admin/webhooks/endpoints?status=failed")
    _row(page, "/down").get_by_role("button", name=re.compile("Send again")).click()
    expect(page.get_by_role("status").first).to_contain_text("The delivery is queued")
    expect(_row(page, "/down")).to_contain_text("To send")
    assert "1 sent, 0 to retry, 0 failed" in _worker(demo)
    [(_, again_id, again_body)] = erp.on("/down")
    assert (again_id, again_body) == (event_id, body)  # the same event, signed with its endpoint's secret
    page.reload()
    expect(_row(page, "/down")).to_contain_text("Sent")
    expect(_row(page, "/down").locator("td.num").first).to_have_text("1")
    assert len(erp.on("/erp")) == 1 and erp.refused == []
    assert not problems, "\n".join(problems)
