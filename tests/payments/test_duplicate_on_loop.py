"""POST /webhooks/stripe on PostgreSQL as a server runs it: whether an event is stored already is
read once, on the event loop (kernel.loop_reads), so a duplicate never reaches the thread pool nor
the app's pool, and a new event is not read twice."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from sqlalchemy import Engine, event, func, select
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.db import make_sessionmaker
from kernel.settings import load_settings
from ledger.models import WebhookEvent
from payments import webhooks
from sandbox.localstripe_server import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET
from tests.conftest import TEST_SECRET
from tests.fakes.localstripe_server import event_payload, sign
from tests.kernel.test_loop_reads import as_asked

pytestmark = pytest.mark.postgres


def test_a_duplicate_is_told_on_the_loop_and_a_new_event_read_once(
    pg_fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    app = create_app(load_settings({
        "ENCOURS_DATABASE_URL": pg_fresh_url, "ENCOURS_SECRET_KEY": TEST_SECRET, "ENCOURS_BASE_URL": "http://testserver",
        "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_BASE": "http://127.0.0.1:9",  # never reached
    }))
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(app.state.sessions.kw["bind"], "before_cursor_execute", record)
    payload = event_payload("customer.created", {"id": "cus_1", "object": "customer"}, "evt_loop_dup")

    def deliver() -> Any:
        return client.post("/webhooks/stripe", content=payload,
                           headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)})

    with TestClient(app, base_url="http://testserver") as client:
        first = deliver()
        assert first.status_code == 200 and first.json()["outcomes"] == ["processed"]
        assert not [s for s in seen if s.startswith("SELECT webhook_events.event_id")]  # read on the loop only
        seen.clear()
        again = deliver()
        assert again.status_code == 200 and again.json()["outcomes"] == ["duplicate"]
        assert seen == []  # nothing through the app's pool (nor the thread pool)
        assert client.portal is not None
        assert client.portal.call(app.state.loop_reads.open_connections) == 1
    with make_sessionmaker(engines(pg_fresh_url))() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1


def test_the_batched_read_asks_the_single_reads_own_condition() -> None:
    """`STORED_ASKED` is built of `_STORED_ONE`'s condition, each parameter a column of the questions."""
    condition = as_asked(webhooks._STORED_ONE).split("\nWHERE ")[1]
    for statement in (webhooks.STORED_ASKED.many, webhooks.STORED_ASKED.one):
        assert f"\nWHERE {condition})" in as_asked(statement), as_asked(statement)
