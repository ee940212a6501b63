"""The magic-link exchange on PostgreSQL as a server runs it: the link checked on the event loop
(kernel.loop_reads), with the same answers and rows as the thread pool's check; a database that
does not answer or refuses fails that request cleanly while the loop answers others; the loop's
connections closed when the app stops."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import timedelta
from typing import Callable

import httpx
import pytest
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.clock import clock
from kernel.db import make_sessionmaker, read_connection, unit_of_work
from kernel.settings import load_settings
from ledger.models import Contact, Customer
from links import throttle, tokens
from tests import factories
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.postgres


def _served_app(url: str) -> Starlette:
    return create_app(load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                                     "ENCOURS_BASE_URL": "http://testserver"}))


def _connections(engine: Engine) -> int:
    """The other sessions on the test database, once closed ones are gone: a backend leaves
    pg_stat_activity a moment after its client closed the socket (longer on a loaded machine)."""
    count = 0
    for _ in range(200):
        with engine.connect() as connection:
            count = int(connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalar_one())
        if count == 0:
            break
        time.sleep(0.05)
    return count


def test_the_check_on_the_loop_gives_the_thread_pools_facts_for_every_kind_of_link(
    pg_fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    engine = engines(pg_fresh_url)
    factory = make_sessionmaker(engine)
    with unit_of_work(factory) as session:
        customer = factories.customer(session, factories.company(session))
        good, customer_id = tokens.make_token(TEST_SECRET, customer.primary_contact), customer.id
    app = _served_app(pg_fresh_url)
    rule = tokens.ThrottleRule("link:192.0.2.9", 2, 600)

    def both(token: str) -> tuple[tokens.LinkFacts, tokens.LinkFacts]:
        with read_connection(make_sessionmaker(engine, write=False)) as connection:
            in_thread = tokens.check_link(connection, TEST_SECRET, token, "192.0.2.9", "Mail", rule)
        on_loop = asyncio.run(_on_loop(app, token, rule))
        return in_thread, on_loop

    cases = {"good": good, "not ours": good[:-3] + "abc", "garbage": "x.y.z",
             "no contact": tokens.make_token(TEST_SECRET, Contact(id=999_999, link_version=1))}
    for name, token in cases.items():
        in_thread, on_loop = both(token)
        assert in_thread == on_loop, name
    with unit_of_work(factory) as session:  # an open recorded: the next one from that browser is a repeat
        tokens.record_open(session, session.get_one(Customer, customer_id).primary_contact.id, "192.0.2.9", "Mail")
        for _ in range(2):  # the client throttled
            throttle.record_failure(session, rule.key, rule.window_seconds)
    for name, token in cases.items():
        in_thread, on_loop = both(token)
        assert in_thread == on_loop, name
        assert in_thread.throttled == (name != "good") and (name != "good" or in_thread.recorded)
    with unit_of_work(factory) as session:
        tokens.revoke_all(session, session.get_one(Customer, customer_id))
        renewed = tokens.make_token(TEST_SECRET, session.get_one(Customer, customer_id).primary_contact)
    in_thread, on_loop = both(good)
    assert in_thread == on_loop and in_thread.throttled  # withdrawn, from a throttled client
    clock.set(clock.now() + timedelta(days=31))  # past the link's lifetime and the throttle's window
    in_thread, on_loop = both(renewed)
    assert in_thread == on_loop and in_thread.problem is tokens.LinkProblem.expired


async def _on_loop(app: Starlette, token: str, rule: tokens.ThrottleRule) -> tokens.LinkFacts:
    try:
        return await tokens.check_link_on_loop(app.state.loop_reads, TEST_SECRET, token, "192.0.2.9", "Mail", rule)
    finally:
        await app.state.loop_reads.close()


def test_links_checked_together_each_get_the_thread_pools_facts(
    pg_fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    """Many exchanges at once on one loop go in one statement (kernel.loop_reads): each gets its
    own link's facts, as the thread pool's check reads them one at a time."""
    engine = engines(pg_fresh_url)
    factory = make_sessionmaker(engine)
    with unit_of_work(factory) as session:
        company = factories.company(session)
        contacts = [factories.customer(session, company).primary_contact for _ in range(6)]
        good = [tokens.make_token(TEST_SECRET, contact) for contact in contacts]
        tokens.revoke_all(session, contacts[1].customer)  # its link withdrawn
        tokens.record_open(session, contacts[2].id, "192.0.2.1", "Mail")  # opened already from one browser
        for _ in range(2):  # one client throttled
            throttle.record_failure(session, "link:192.0.2.66", 600)
    unknown = tokens.make_token(TEST_SECRET, Contact(id=999_999, link_version=1))
    links = [*good, unknown, good[0][:-3] + "abc", "x.y.z"]
    cases = [(token, ip, agent) for token in links for ip in ("192.0.2.1", "192.0.2.66")
             for agent in ("Mail", None)]
    app = _served_app(pg_fresh_url)

    def rule(ip: str) -> tokens.ThrottleRule:
        return tokens.ThrottleRule(f"link:{ip}", 2, 600)

    async def together() -> list[tokens.LinkFacts]:
        try:
            return await asyncio.gather(*(tokens.check_link_on_loop(app.state.loop_reads, TEST_SECRET, token, ip,
                                                                    agent, rule(ip)) for token, ip, agent in cases))
        finally:
            await app.state.loop_reads.close()

    on_loop = asyncio.run(together())
    with read_connection(make_sessionmaker(engine, write=False)) as connection:
        one_by_one = [tokens.check_link(connection, TEST_SECRET, token, ip, agent, rule(ip)) for token, ip, agent in cases]
    assert on_loop == one_by_one
    kinds = {(facts.ok, facts.problem, facts.throttled, facts.recorded) for facts in one_by_one}
    assert kinds == {(True, None, False, False), (True, None, False, True), (False, None, True, False),
                     (False, tokens.LinkProblem.invalid, True, False), (False, tokens.LinkProblem.revoked, False, False), (False, tokens.LinkProblem.invalid, False, False)}


def test_a_link_is_checked_on_the_loop_and_its_connections_close_with_the_app(
    pg_fresh_url: str, engines: Callable[[str], Engine]
) -> None:
    engine = engines(pg_fresh_url)
    with unit_of_work(make_sessionmaker(engine)) as session:
        token = tokens.make_token(TEST_SECRET, factories.customer(session, factories.company(session)).primary_contact)
    app = _served_app(pg_fresh_url)
    with TestClient(app, base_url="http://testserver") as client:
        assert client.get(f"/p/{token}", follow_redirects=False).status_code == 303
        assert client.get(f"/p/{token}", follow_redirects=False).status_code == 303
        assert client.portal is not None
        assert client.portal.call(app.state.loop_reads.open_connections) == 1  # the check's, kept
    assert _connections(engine) == 0  # the app's pool and the loop's connections, all closed


def _refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("database", ["silent", "refused"])
def test_a_database_that_hangs_or_refuses_fails_the_link_cleanly_while_others_are_answered(
    database: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue("silent_port") if database == "silent" else _refused_port()
    app = _served_app(f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing")
    app.state.loop_reads.timeout = 1.0
    token = tokens.make_token(TEST_SECRET, Contact(id=1, link_version=1))

    async def visit() -> tuple[int, list[int], bool]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            link = asyncio.create_task(client.get(f"/p/{token}"))
            others = []
            for _ in range(3):  # answered while the link waits for the database
                others.append((await client.get("/healthz")).status_code)
                await asyncio.sleep(0.05)
            pending = not link.done()
            answer = await asyncio.wait_for(link, 10)
            await app.state.loop_reads.close()
            return answer.status_code, others, pending

    status, others, pending = asyncio.run(visit())
    assert status == 500 and others == [200, 200, 200]
    assert pending == (database == "silent")
