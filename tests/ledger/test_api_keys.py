"""A new API key waits, sealed, for the one page that shows it: to the user who created it, once,
for a few minutes, and only under the secret it was sealed with. On SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.clock import clock
from ledger.api_keys import REVEAL_WITHIN, authenticate, create_key, hold_for_reveal, reveal_once
from ledger.models import ApiKeyReveal, User
from tests import factories

SECRET = "test-secret-key-0123456789"


def _held(session: Session) -> tuple[User, User, str, int]:
    factories.company(session, code="NORTH")
    creator, other = (User(email=f"{name}@x.test", password_hash="-", role="admin") for name in ("root", "other"))
    session.add_all([creator, other])
    session.flush()
    row, key = create_key(session, "NORTH", "Sage X3", created_by=creator.email)
    return creator, other, key, hold_for_reveal(session, row, key, user_id=creator.id, secret=SECRET)


def test_the_key_is_shown_once_to_its_creator_and_the_row_never_holds_it_clear(session: Session) -> None:
    creator, _, key, reveal_id = _held(session)
    sealed = session.scalars(select(ApiKeyReveal.sealed)).one()
    assert key.encode() not in sealed and key[len("enc_live_"):].encode() not in sealed
    shown = reveal_once(session, reveal_id, user_id=creator.id, secret=SECRET)
    assert shown is not None and shown[1] == key and shown[0].name == "Sage X3"
    assert authenticate(session, shown[1]) is not None
    assert reveal_once(session, reveal_id, user_id=creator.id, secret=SECRET) is None  # once
    assert session.scalars(select(ApiKeyReveal)).all() == []


def test_another_user_gets_nothing_and_leaves_it_to_its_creator(session: Session) -> None:
    creator, other, key, reveal_id = _held(session)
    assert reveal_once(session, reveal_id, user_id=other.id, secret=SECRET) is None
    shown = reveal_once(session, reveal_id, user_id=creator.id, secret=SECRET)
    assert shown is not None and shown[1] == key


def test_under_another_secret_or_moved_to_another_key_it_does_not_open_and_is_gone(session: Session) -> None:
    creator, _, _, reveal_id = _held(session)
    assert reveal_once(session, reveal_id, user_id=creator.id, secret="another-secret") is None
    assert session.scalars(select(ApiKeyReveal)).all() == []
    row, key = create_key(session, "NORTH", "Cegid", created_by=creator.email)
    first = hold_for_reveal(session, row, key, user_id=creator.id, secret=SECRET)
    second_row, _ = create_key(session, "NORTH", "Divalto", created_by=creator.email)
    moved = session.get_one(ApiKeyReveal, first)
    moved.api_key_id = second_row.id  # a sealed key of one key's row read as another's
    session.flush()
    assert reveal_once(session, first, user_id=creator.id, secret=SECRET) is None


def test_a_key_nobody_came_back_for_is_dropped_once_stale(session: Session) -> None:
    creator, _, _, reveal_id = _held(session)
    clock.set(clock.now() + REVEAL_WITHIN)
    assert session.get(ApiKeyReveal, reveal_id) is not None  # not yet
    clock.set(clock.now() + REVEAL_WITHIN)
    row, key = create_key(session, "NORTH", "Cegid", created_by=creator.email)
    fresh = hold_for_reveal(session, row, key, user_id=creator.id, secret=SECRET)  # drops the stale one
    session.expire_all()
    assert session.scalars(select(ApiKeyReveal.api_key_id)).all() == [row.id]
    shown = reveal_once(session, fresh, user_id=creator.id, secret=SECRET)
    assert shown is not None and shown[1] == key
    clock.set(clock.now() + REVEAL_WITHIN + REVEAL_WITHIN)
    row, key = create_key(session, "NORTH", "Divalto", created_by=creator.email)
    late = hold_for_reveal(session, row, key, user_id=creator.id, secret=SECRET)
    clock.set(clock.now() + REVEAL_WITHIN + REVEAL_WITHIN)
    assert reveal_once(session, late, user_id=creator.id, secret=SECRET) is None  # came back too late
