from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from kernel.clock import clock
from links import tokens
from links.tokens import LinkProblem
from tests import factories
from tests.conftest import TEST_SECRET
from tests.kernel.test_loop_reads import as_asked


def _contact(session: Session):
    company = factories.company(session, link_lifetime_days=30)
    customer = factories.customer(session, company)
    return customer.primary_contact


def test_fresh_token_verifies(session: Session) -> None:
    contact = _contact(session)
    check = tokens.verify(session, TEST_SECRET, tokens.make_token(TEST_SECRET, contact))
    assert check.ok and check.contact is contact


def test_tampered_and_truncated_tokens_are_invalid(session: Session) -> None:
    token = tokens.make_token(TEST_SECRET, _contact(session))
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (flipped, token[:-5], token[:10], "", "not-a-token", token + "x"):
        check = tokens.verify(session, TEST_SECRET, bad)
        assert check.problem is LinkProblem.invalid and check.contact is None


def test_token_signed_with_another_secret_is_invalid(session: Session) -> None:
    token = tokens.make_token("another-secret-entirely-0000", _contact(session))
    assert tokens.verify(session, TEST_SECRET, token).problem is LinkProblem.invalid


def test_token_expires_after_company_lifetime(session: Session) -> None:
    contact = _contact(session)
    token = tokens.make_token(TEST_SECRET, contact)
    start = clock.now()
    clock.set(start + timedelta(days=30) - timedelta(seconds=1))
    assert tokens.verify(session, TEST_SECRET, token).ok
    clock.set(start + timedelta(days=30, seconds=2))
    check = tokens.verify(session, TEST_SECRET, token)
    assert check.problem is LinkProblem.expired and check.contact is contact


def test_revoking_invalidates_every_earlier_token(session: Session) -> None:
    contact = _contact(session)
    first = tokens.make_token(TEST_SECRET, contact)
    second = tokens.make_token(TEST_SECRET, contact)
    tokens.revoke_all(session, contact.customer)
    for token in (first, second):
        assert tokens.verify(session, TEST_SECRET, token).problem is LinkProblem.revoked
    assert tokens.verify(session, TEST_SECRET, tokens.make_token(TEST_SECRET, contact)).ok


def test_token_for_deleted_contact_is_invalid(session: Session) -> None:
    contact = _contact(session)
    token = tokens.make_token(TEST_SECRET, contact)
    session.delete(contact)
    session.flush()
    assert tokens.verify(session, TEST_SECRET, token).problem is LinkProblem.invalid


RULE = tokens.ThrottleRule("link:192.0.2.7", limit=3, window_seconds=600)


def test_check_link_reads_the_links_facts_and_the_throttle_in_one_go(session: Session) -> None:
    from links import throttle

    contact = _contact(session)
    token = tokens.make_token(TEST_SECRET, contact)
    connection = session.connection()  # the exchange reads through a Core connection
    facts = tokens.check_link(connection, TEST_SECRET, token, "192.0.2.7", "Mail client", RULE)
    assert facts.ok and (facts.contact_id, facts.link_version, facts.recorded) == (contact.id, 1, False)
    tokens.record_open(session, contact.id, "192.0.2.7", "Mail client")
    assert tokens.check_link(connection, TEST_SECRET, token, "192.0.2.7", "Mail client", RULE).recorded
    assert not tokens.check_link(connection, TEST_SECRET, token, "192.0.2.7", "Browser", RULE).recorded
    for _ in range(RULE.limit):
        throttle.record_failure(session, RULE.key, RULE.window_seconds)
    good = tokens.check_link(connection, TEST_SECRET, token, "192.0.2.7", "Mail client", RULE)
    assert good.ok and not good.throttled  # a good link always opens, even from that client
    contact.link_version += 1  # a revoked link from a throttled client
    session.flush()
    revoked = tokens.check_link(connection, TEST_SECRET, token, "192.0.2.7", None, RULE)
    assert revoked.throttled and not revoked.ok
    contact.link_version -= 1
    session.flush()
    bad = tokens.check_link(connection, TEST_SECRET, token[:-2], "192.0.2.7", None, RULE)
    assert bad.throttled and bad.problem is LinkProblem.invalid
    other = tokens.ThrottleRule("link:192.0.2.8", RULE.limit, RULE.window_seconds)
    assert tokens.check_link(connection, TEST_SECRET, token, "192.0.2.8", None, other).ok
    clock.set(clock.now() + timedelta(seconds=RULE.window_seconds))
    assert tokens.check_link(connection, TEST_SECRET, token, "192.0.2.7", None, RULE).ok  # the window is over


def test_check_link_refuses_revoked_expired_and_unknown_links(session: Session) -> None:
    contact = _contact(session)
    token = tokens.make_token(TEST_SECRET, contact)
    assert tokens.check_link(session, TEST_SECRET, token, None, None, RULE).ok
    contact.link_version += 1
    session.flush()
    revoked = tokens.check_link(session, TEST_SECRET, token, None, None, RULE)
    assert revoked.problem is LinkProblem.revoked and revoked.language == contact.language
    fresh = tokens.make_token(TEST_SECRET, contact)
    clock.set(clock.now() + timedelta(days=31))
    assert tokens.check_link(session, TEST_SECRET, fresh, None, None, RULE).problem is LinkProblem.expired
    session.delete(contact)
    session.flush()
    gone = tokens.check_link(session, TEST_SECRET, fresh, None, None, RULE)
    assert gone.problem is LinkProblem.invalid and not gone.throttled and gone.language is None


def test_the_exchanges_connection_path_gives_the_facts_a_session_gives(session: Session) -> None:
    # On PostgreSQL a Core connection runs the check on the driver's cursor (kernel.db.first_row).
    contact = _contact(session)
    token = tokens.make_token(TEST_SECRET, contact)
    connection = session.connection()

    def both(ip: str | None, agent: str | None) -> tokens.LinkFacts:
        through_connection = tokens.check_link(connection, TEST_SECRET, token, ip, agent, RULE)
        assert through_connection == tokens.check_link(session, TEST_SECRET, token, ip, agent, RULE)
        return through_connection

    assert both(None, None).ok and not both(None, None).recorded
    tokens.record_open(session, contact.id, None, None)
    assert both(None, None).recorded and not both("192.0.2.7", None).recorded  # NULL is NULL, not any address
    contact.link_version += 1
    session.flush()
    assert both("192.0.2.7", "Mail client").problem is LinkProblem.revoked
    contact.link_version -= 1
    session.flush()
    clock.set(clock.now() + timedelta(days=31))
    assert both(None, None).problem is LinkProblem.expired


def test_the_batched_check_asks_the_single_checks_own_clauses() -> None:
    """`LINK_FACTS_ASKED` is built of `_LINK_FACTS`'s clauses (the contact's columns, the recorded
    open, the throttle), each parameter a column of the questions: one spelling of the facts."""
    single = as_asked(tokens._LINK_FACTS)
    columns = single[len("SELECT "):single.rindex(" \nFROM ")]
    for statement in (tokens.LINK_FACTS_ASKED.many, tokens.LINK_FACTS_ASKED.one):
        assert as_asked(statement).startswith(f"SELECT q.n, {columns} \nFROM "), as_asked(statement)
