"""From `encours remind` to the debtor's statement: the real command on the demo, the outbox delivered
to a real SMTP server, the link taken from the captured email and opened in Chromium."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from mail.outbox import deliver_due, parse_smtp_url
from kernel.clock import clock
from ledger.models import Customer, OutboxMessage, Reminder
from tests.e2e.conftest import LiveDemo
from tests.fakes.smtp import CapturingSMTP

HREF = re.compile(r'href="(?P<link>http://127\.0\.0\.1:\d+/p/[^"]+)"')


def plain(text: str) -> str:
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def test_reminder_email_link_opens_the_customers_statement(
    make_page: object, live_demo: LiveDemo, smtp_server: CapturingSMTP
) -> None:
    with live_demo.engine.connect() as connection:
        before = connection.scalar(select(func.coalesce(func.max(OutboxMessage.id), 0)))

    out = live_demo.cli("remind", "--dry-run")
    assert "would send C-" in out
    out = live_demo.cli("remind")
    assert re.search(r"^DURAND \d{4}-\d\d-\d\d: \d+ planned, \d+ queued", out, re.MULTILINE), out

    with live_demo.engine.connect() as connection:
        queued = connection.execute(
            select(OutboxMessage.to_address, OutboxMessage.next_attempt_at, Customer.ref, Customer.name)
            .join(Reminder, Reminder.outbox_id == OutboxMessage.id)
            .join(Customer, Customer.id == OutboxMessage.customer_id)
            .where(OutboxMessage.id > before, OutboxMessage.kind == "reminder")
            .order_by(OutboxMessage.id)
        ).all()
    assert queued, out
    # One message per customer, each to its own contact.
    assert len({row.ref for row in queued}) == len(queued)

    # The command ran on the system clock; deliver once its messages are due on ours.
    clock.set(max(row.next_attempt_at for row in queued))
    report = deliver_due(sessionmaker(live_demo.engine), parse_smtp_url(smtp_server.url),
                         "Durand Industrie <relances@durand.test>", limit=500)
    assert report.sent >= len(queued) and report.failed == 0

    target = next((row for row in queued if row.ref == "C-MARTIN"), queued[0])
    [email] = [m for m in smtp_server.messages if m.rcpt_tos == [target.to_address]]
    assert email.message.get_content_type() == "multipart/alternative"
    text = email.text()
    html = email.html() or ""
    match = HREF.search(html)
    assert match is not None, html
    link = match["link"]
    assert link.startswith(live_demo.base_url + "/p/") and link in text
    assert re.search(r"(F-2026|UK)-\d{4,5}", text), text  # the invoice table

    page = make_page()  # type: ignore[operator]
    response = page.goto(link)
    assert response is not None and response.status == 200
    assert page.url == f"{live_demo.base_url}/portal"
    expect(page.locator("main")).to_be_visible()
    assert target.name in plain(page.content())
