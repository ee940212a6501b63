"""One time zone for every date staff read: the company's. A card payment at 23:30 UTC is the next
day in Paris, on the payments list, the payment page, the webhooks log and the event's page alike."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.clock import clock
from ledger.models import Invoice
from tests.admin.staff_book import book, signed_in, worker_env  # noqa: F401 - fixtures
from tests.admin.test_invoices_payments import paid_by_card

LATE_EVENING = datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc)


@pytest.fixture
def late_payment(session: Session, session_factory, book, worker_env):  # type: ignore[no-untyped-def]
    clock.set(LATE_EVENING)
    invoice = session.scalar(select(Invoice).where(Invoice.number == "N-1"))
    return paid_by_card(session, session_factory, book["mine"], invoice)


def shown(language: str, zone: str) -> str:
    return format_datetime(LATE_EVENING, "short", tzinfo=ZoneInfo(zone), locale=language)


@pytest.mark.parametrize("language", ["fr", "en"])
def test_a_late_evening_payment_reads_the_same_everywhere(new_client, late_payment, language: str) -> None:  # type: ignore[no-untyped-def]
    payment, event = late_payment
    paris, utc = shown(language, "Europe/Paris"), shown(language, "UTC")
    assert paris != utc
    client = signed_in(new_client, "admin@x.test", language)
    pages = {
        "payments list": client.get("/admin/payments").text,
        "payment page": client.get(f"/admin/payments/{payment.id}").text,
        "webhooks log": client.get("/admin/webhooks").text,
        "event page": client.get(f"/admin/webhooks/{event.id}").text,
    }
    for name, html in pages.items():
        text = unescape(html)
        assert paris in text, name
        assert utc not in text, name


def test_the_audit_trail_reads_in_the_company_zone(new_client, late_payment) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test", "fr")
    text = unescape(client.get("/admin/audit?action=payment.").text)
    assert shown("fr", "Europe/Paris") in text
    assert "(UTC)" not in text
    assert not re.search(r"2026-11-25 23:30", text)
