"""`kernel.db.insert_rows` writes the same rows as an INSERT of many rows (defaults, JSON, NULLs),
and `update_rows` changes each row its own way, on SQLite and PostgreSQL; on PostgreSQL each in one
statement, so statement triggers (the running totals) fire once, not once per row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timezone
from typing import Any

import pytest
from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from kernel.clock import clock
from kernel.db import insert_rows, reserve_ids, update_rows
from ledger.models import AuditEvent, FxRate

AUDITS = AuditEvent.__table__
assert isinstance(AUDITS, Table)


@pytest.fixture
def session(both_databases_session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with both_databases_session_factory() as session:
        yield session


def _rows(action: str) -> list[dict[str, Any]]:
    return [dict(actor_type="system", actor=None if n % 3 else "test", action=action, entity_type="test",
                 entity_id=n, before=None if n % 2 else {"status": "open", "n": n, "text": "l'été\t\"x\"\n"},
                 after=[n, "b\\c"]) for n in range(1_200)]


def _read(session: Session, action: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in session.execute(
        select(AUDITS.c.actor_type, AUDITS.c.actor, AUDITS.c.entity_type, AUDITS.c.entity_id, AUDITS.c.customer_id,
               AUDITS.c.before, AUDITS.c.after, AUDITS.c.created_at.is_not(None))
        .where(AUDITS.c.action == action).order_by(AUDITS.c.entity_id))]


def test_the_rows_are_written_as_an_insert_writes_them(session: Session) -> None:
    insert_rows(session, AUDITS, _rows("test.copied"))
    session.execute(insert(AUDITS), _rows("test.inserted"))
    copied = _read(session, "test.copied")
    assert len(copied) == 1_200 and copied == _read(session, "test.inserted")
    insert_rows(session, AUDITS, [])  # nothing to write: nothing written
    assert len(_read(session, "test.copied")) == 1_200


def test_statement_triggers_fire_once_on_postgresql(pg_session: Session) -> None:
    pg_session.execute(text("CREATE TEMPORARY TABLE fired (rows integer) ON COMMIT DROP"))
    pg_session.execute(text("CREATE FUNCTION test_count_rows() RETURNS trigger AS $$ BEGIN "
                            "INSERT INTO fired SELECT count(*) FROM new_rows; RETURN NULL; END $$ LANGUAGE plpgsql"))
    pg_session.execute(text("CREATE TRIGGER tr_test_count_rows AFTER INSERT ON audit_events "
                            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION test_count_rows()"))
    insert_rows(pg_session, AUDITS, _rows("test.copied"))
    assert pg_session.scalars(text("SELECT rows FROM fired")).all() == [1_200]


def test_each_row_is_updated_its_own_way(session: Session) -> None:
    insert_rows(session, AUDITS, _rows("test.copied"))
    update_rows(session, AUDITS, ("action", "entity_id"), [
        dict(action="test.copied", entity_id=n, actor=f"changed {n}", after={"n": n}, customer_id=None)
        for n in range(0, 1_200, 2)])
    update_rows(session, AUDITS, ("action", "entity_id"), [])
    read = _read(session, "test.copied")
    assert [row[1] for row in read[:4]] == ["changed 0", None, "changed 2", "test"]
    assert [row[6] for row in read[:3]] == [{"n": 0}, [1, "b\\c"], {"n": 2}]
    assert len(read) == 1_200


def test_statement_triggers_fire_once_per_update_on_postgresql(pg_session: Session) -> None:
    insert_rows(pg_session, AUDITS, _rows("test.copied"))
    pg_session.execute(text("CREATE TEMPORARY TABLE fired (rows integer) ON COMMIT DROP"))
    pg_session.execute(text("CREATE FUNCTION test_count_updated() RETURNS trigger AS $$ BEGIN "
                            "INSERT INTO fired SELECT count(*) FROM new_rows; RETURN NULL; END $$ LANGUAGE plpgsql"))
    pg_session.execute(text("CREATE TRIGGER tr_test_count_updated AFTER UPDATE ON audit_events REFERENCING "
                            "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION test_count_updated()"))
    update_rows(pg_session, AUDITS, ("action", "entity_id"), [
        dict(action="test.copied", entity_id=n, actor="changed") for n in range(1_500)])
    assert pg_session.scalars(text("SELECT rows FROM fired")).all() == [1_200]


def test_updated_rows_are_stamped_as_an_update_stamps_them(session: Session) -> None:
    """A column's Python `onupdate` (an `updated_at`) is set on every updated row, and only on them."""
    rates = FxRate.__table__
    assert isinstance(rates, Table)
    clock.set(datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc))
    try:
        insert_rows(session, rates, [dict(base="EUR", quote=quote, rate="1.5", valid_on=date(2026, 3, 1))
                                     for quote in ("USD", "GBP", "CHF")])
        ids = {quote: rate_id for quote, rate_id in session.execute(select(rates.c.quote, rates.c.id))}
        clock.set(datetime(2026, 3, 2, 10, 30, tzinfo=timezone.utc))
        update_rows(session, rates, ("id",), [dict(id=ids["USD"], rate="1.1", valid_on=date(2026, 3, 2)),
                                              dict(id=ids["GBP"], rate="0.8", valid_on=date(2026, 3, 2))])
        read = {quote: (rate, valid_on, _utc(updated_at)) for quote, rate, valid_on, updated_at
                in session.execute(select(rates.c.quote, rates.c.rate, rates.c.valid_on, rates.c.updated_at))}
    finally:
        clock.reset()
    assert read == {"USD": ("1.1", date(2026, 3, 2), datetime(2026, 3, 2, 10, 30)),
                    "GBP": ("0.8", date(2026, 3, 2), datetime(2026, 3, 2, 10, 30)),
                    "CHF": ("1.5", date(2026, 3, 1), datetime(2026, 3, 1, 9, 0))}


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def test_reserved_ids_take_rows_and_the_next_row_follows_them(session: Session) -> None:
    insert_rows(session, AUDITS, _rows("test.before"))
    reserved = reserve_ids(session, AUDITS, 300)
    assert len(reserved) == 300 and reserved == sorted(set(reserved))
    assert min(reserved) > session.scalars(select(func.max(AUDITS.c.id))).one()
    insert_rows(session, AUDITS, [dict(row, id=audit_id) for audit_id, row in zip(reserved, _rows("test.given"))])
    session.execute(insert(AUDITS), _rows("test.after")[:5])  # ids as the database gives them
    given = session.scalars(select(AUDITS.c.id).where(AUDITS.c.action == "test.given").order_by(AUDITS.c.id)).all()
    after = session.scalars(select(AUDITS.c.id).where(AUDITS.c.action == "test.after")).all()
    assert given == reserved and min(after) > max(reserved) and len(after) == 5
    assert reserve_ids(session, AUDITS, 0) == []
