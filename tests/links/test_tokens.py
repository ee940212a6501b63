from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from encours.clock import clock
from links import tokens
from links.tokens import LinkProblem
from tests import factories
from tests.conftest import TEST_SECRET


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
