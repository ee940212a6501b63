"""The magic-link exchange on each engine as a server runs it: the app's own engine and pool
(on PostgreSQL the link is checked in autocommit, the open written in a transaction)."""

from __future__ import annotations

from datetime import timedelta
from typing import Callable

import pytest
from anyio import CapacityLimiter, to_thread
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from encours.app import create_app
from kernel import sqlite_writer
from kernel.clock import clock
from kernel.db import PAGE_THREADS, SERVER_POOL_SIZE, make_sessionmaker, unit_of_work
from kernel.settings import load_settings
from ledger.models import AuditEvent, Customer, LinkOpen, WebhookDelivery, WebhookEndpoint
from links import tokens
from tests import factories
from tests.conftest import TEST_SECRET, sqlite_writer_held_elsewhere


def test_a_first_open_is_recorded_once_with_its_event_and_a_repeat_writes_nothing(
    fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    factory = make_sessionmaker(engines(fresh_url))
    with unit_of_work(factory) as session:
        company = factories.company(session)
        customer = factories.customer(session, company)
        session.add(WebhookEndpoint(company_id=company.id, url="https://erp.example/hook", secret="s",
                                    event_types=["link.opened"]))
        contact = customer.primary_contact
        token, contact_id = tokens.make_token(TEST_SECRET, contact), contact.id
    app = create_app(load_settings({"ENCOURS_DATABASE_URL": fresh_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                                    "ENCOURS_BASE_URL": "http://testserver"}))

    def counts() -> tuple[int, int, int]:
        with factory() as session:
            opens = session.scalar(select(func.count()).select_from(LinkOpen).where(LinkOpen.contact_id == contact_id))
            events = session.scalar(select(func.count()).select_from(AuditEvent)
                                    .where(AuditEvent.action == "link.opened", AuditEvent.entity_id == contact_id))
            deliveries = session.scalar(select(func.count()).select_from(WebhookDelivery))
            return int(opens or 0), int(events or 0), int(deliveries or 0)

    with TestClient(app, base_url="http://testserver") as client:
        first = client.get(f"/p/{token}", follow_redirects=False)
        assert (first.status_code, first.headers["location"]) == (303, "/portal")
        assert counts() == (1, 1, 1)  # committed before the answer, its ERP delivery with it
        again = client.get(f"/p/{token}", follow_redirects=False)
        assert again.status_code == 303
        assert client.get("/portal").status_code == 200
    assert counts() == (1, 1, 1)


def _served_app(url: str) -> Starlette:
    return create_app(load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                                     "ENCOURS_BASE_URL": "http://testserver"}))


def test_a_link_revoked_renewed_or_expired_is_refused_at_once(
    fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    factory = make_sessionmaker(engines(fresh_url))
    with unit_of_work(factory) as session:
        customer = factories.customer(session, factories.company(session))
        old, customer_id = tokens.make_token(TEST_SECRET, customer.primary_contact), customer.id
    with TestClient(_served_app(fresh_url), base_url="http://testserver") as client:
        assert client.get(f"/p/{old}", follow_redirects=False).status_code == 303
        assert client.get(f"/p/{old}", follow_redirects=False).status_code == 303  # a repeat: nothing written
        with unit_of_work(factory) as session:
            tokens.revoke_all(session, session.get_one(Customer, customer_id))
        withdrawn = client.get(f"/p/{old}", follow_redirects=False)
        assert (withdrawn.status_code, "/p/renew" in withdrawn.text) == (410, False)  # withdrawn: no new link by email
        assert client.get("/portal", follow_redirects=False).status_code == 401  # the session ended too
        with factory() as session:  # the renewed link: the contact's new version
            renewed = tokens.make_token(TEST_SECRET, session.get_one(Customer, customer_id).primary_contact)
        assert client.get(f"/p/{renewed}", follow_redirects=False).status_code == 303
        assert client.get(f"/p/{old}", follow_redirects=False).status_code == 410
        clock.set(clock.now() + timedelta(days=31))  # past the company's 30 days
        expired = client.get(f"/p/{renewed}", follow_redirects=False)
        assert (expired.status_code, "/p/renew" in expired.text) == (410, True)  # expired: a fresh one offered


def test_a_server_database_gets_no_more_threads_than_pooled_connections(fresh_url: str) -> None:
    """Requests beyond the pool's size opened and closed a connection each under load: on a server
    database the app's event loop runs at most SERVER_POOL_SIZE threads (anyio's default: 40)."""
    with TestClient(_served_app(fresh_url), base_url="http://testserver") as client:
        assert client.portal is not None
        threads = client.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens)
    assert threads == (40 if fresh_url.startswith("sqlite") else SERVER_POOL_SIZE)


def test_a_server_database_renders_the_read_only_pages_in_a_few_threads(
    fresh_url: str, engines: Callable[[str], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 statement pages at once per process cost a fifth more CPU than 4 on PostgreSQL: there the
    debtor's read-only pages take one of PAGE_THREADS tokens; on SQLite anyio's thread pool as before."""
    factory = make_sessionmaker(engines(fresh_url))
    with unit_of_work(factory) as session:
        customer = factories.customer(session, factories.company(session))
        factories.invoice(session, customer, total_minor=100_00)
        link = tokens.make_token(TEST_SECRET, customer.primary_contact)
    app = _served_app(fresh_url)
    limiters: list[object] = []
    run_sync = to_thread.run_sync

    async def recorded(func: Callable[..., object], *args: object, limiter: object = None, **kw: object) -> object:
        if getattr(func, "__name__", "") == "statement_page":
            limiters.append(limiter)
        return await run_sync(func, *args, limiter=limiter, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(to_thread, "run_sync", recorded)
    with TestClient(app, base_url="http://testserver") as client:
        assert client.get(f"/p/{link}", follow_redirects=False).status_code == 303
        page = client.get("/portal")
        assert page.status_code == 200 and "100,00" in page.text
    (limiter,) = limiters
    if fresh_url.startswith("sqlite"):
        assert limiter is None
    else:
        assert isinstance(limiter, CapacityLimiter) and limiter.total_tokens == PAGE_THREADS


def test_an_open_waits_for_the_sqlite_writer_of_the_other_processes(
    fresh_url: str, engines: Callable[[str], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the open is written under the writers' lock the webhook intake takes (a file beside
    the database, shared by `encours serve`'s processes), not in SQLite's busy handler: while
    another process holds it the open waits (bounded) and nothing is written; once let go, it goes in."""
    engine = engines(fresh_url)
    factory = make_sessionmaker(engine)
    with unit_of_work(factory) as session:
        contact = factories.customer(session, factories.company(session)).primary_contact
        token, contact_id = tokens.make_token(TEST_SECRET, contact), contact.id

    def opens() -> int:
        with factory() as session:
            return int(session.scalar(select(func.count()).select_from(LinkOpen)
                                      .where(LinkOpen.contact_id == contact_id)) or 0)

    with TestClient(_served_app(fresh_url), base_url="http://testserver") as client:
        if engine.dialect.name != "sqlite":  # a server database has no lock file: its own locks suffice
            assert client.get(f"/p/{token}", follow_redirects=False).status_code == 303
            assert opens() == 1
            return
        with sqlite_writer_held_elsewhere(str(engine.url.database)):
            monkeypatch.setattr(sqlite_writer, "WRITER_WAIT", 0.2)
            with pytest.raises(TimeoutError, match="another process"):
                client.get(f"/p/{token}", follow_redirects=False)
            assert opens() == 0
        assert client.get(f"/p/{token}", follow_redirects=False).status_code == 303
    assert opens() == 1
