"""`kernel.db.background_writes`: the bulk writes of `insert_rows` and `update_rows` sent by a thread
while the caller goes on, on PostgreSQL, in the order written and in the caller's transaction: what
they write is what they write in place, a later statement sees them, a failed one is raised in the
caller and, rolled back, leaves nothing. Elsewhere (SQLite) they are written in place."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from sqlalchemy import Table, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from kernel.db import background_writes, insert_rows, make_engine, make_sessionmaker, unit_of_work, update_rows
from ledger.models import AuditEvent
from tests.kernel.test_db_bulk import session  # noqa: F401 (the fixture: a session on each engine)

AUDITS = AuditEvent.__table__
assert isinstance(AUDITS, Table)


def _rows(action: str, count: int = 1_200) -> list[dict[str, Any]]:
    return [dict(actor_type="system", actor=None if n % 3 else "test", action=action, entity_type="test",
                 entity_id=n, before=None if n % 2 else {"n": n, "text": "l'été\t\"x\"\n"}, after=[n])
            for n in range(count)]


def _read(session: Session, action: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in session.execute(
        select(AUDITS.c.actor, AUDITS.c.entity_id, AUDITS.c.before, AUDITS.c.after, AUDITS.c.entity_type)
        .where(AUDITS.c.action == action).order_by(AUDITS.c.entity_id))]


def _ids(session: Session, action: str) -> list[dict[str, Any]]:
    return [dict(id=row_id, entity_type=f"moved-{row_id % 7}") for row_id in session.scalars(
        select(AUDITS.c.id).where(AUDITS.c.action == action))]


def test_writes_in_the_background_are_those_written_in_place(session: Session) -> None:
    insert_rows(session, AUDITS, _rows("test.in_place"))
    update_rows(session, AUDITS, ("id",), _ids(session, "test.in_place"))
    with background_writes(session):
        insert_rows(session, AUDITS, _rows("test.background"))
        update_rows(session, AUDITS, ("id",), _ids(session, "test.background"))  # the read waits for the rows
    in_place = _read(session, "test.in_place")
    assert len(in_place) == 1_200 and {row[4] for row in in_place} == {f"moved-{n}" for n in range(7)}
    background = _read(session, "test.background")
    assert [row[:4] for row in background] == [row[:4] for row in in_place]
    assert {row[4] for row in background} == {f"moved-{n}" for n in range(7)}


def test_a_statement_after_queued_writes_sees_them_all_in_order(pg_session: Session) -> None:
    with background_writes(pg_session):
        for part in range(5):
            insert_rows(pg_session, AUDITS, _rows(f"test.part{part}", 3_000))
        ids = _ids(pg_session, "test.part0")
        update_rows(pg_session, AUDITS, ("id",), ids)
        insert_rows(pg_session, AUDITS, _rows("test.after_update", 10))
        counted = pg_session.scalar(select(func.count()).select_from(AUDITS).where(AUDITS.c.action.like("test.%")))
        moved = pg_session.scalar(select(func.count()).select_from(AUDITS).where(AUDITS.c.entity_type.like("moved-%")))
    assert counted == 15_010 and moved == 3_000


def test_the_writes_go_through_another_thread_on_postgresql_only(session: Session) -> None:
    threads: set[str] = set()
    connection = session.connection().connection.driver_connection
    if session.get_bind().dialect.name == "postgresql":
        original = type(connection).cursor

        def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
            threads.add(threading.current_thread().name)
            return original(self, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(type(connection), "cursor", cursor)
            with background_writes(session):
                insert_rows(session, AUDITS, _rows("test.threads", 10))
        assert threads == {"encours-background-writes"}
    else:
        with background_writes(session):
            insert_rows(session, AUDITS, _rows("test.threads", 10))
    assert len(_read(session, "test.threads")) == 10


def test_a_failed_write_is_raised_in_the_caller_and_nothing_stays(pg_fresh_url: str) -> None:
    engine = make_engine(pg_fresh_url)
    sessions = make_sessionmaker(engine)
    try:
        bad = _rows("test.bad", 5)
        bad[3]["customer_id"] = 999_999  # no such customer: the foreign key refuses the COPY
        for row in bad:
            row.setdefault("customer_id", None)
        with pytest.raises((DBAPIError, psycopg.Error), match="customer"):
            with unit_of_work(sessions) as session, background_writes(session):
                insert_rows(session, AUDITS, _rows("test.good", 2_000))
                insert_rows(session, AUDITS, bad)
                insert_rows(session, AUDITS, _rows("test.later", 10))  # skipped: the write before failed
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(AUDITS)) == 0
            with background_writes(session):  # the connection went back to the pool usable
                insert_rows(session, AUDITS, _rows("test.next", 3))
            session.commit()
            assert session.scalar(select(func.count()).select_from(AUDITS)) == 3
    finally:
        engine.dispose()
