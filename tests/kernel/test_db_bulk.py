"""`kernel.db.insert_rows` writes the same rows as an INSERT of many rows (defaults, JSON, NULLs),
`insert_rows_with_ids` too and gives their ids in order, and `update_rows` changes each row its own
way as an UPDATE per row would, on SQLite and PostgreSQL; on PostgreSQL each in one statement, so
statement triggers (the running totals) fire once, not once per row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
import uuid

import pytest
from sqlalchemy import (Column, Engine, Integer, MetaData, String, Table, bindparam, event, func, insert, select,
                        text, update)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kernel.clock import clock
from kernel.db import (analyze_if_outgrown, insert_rows, insert_rows_with_ids, make_engine, make_sessionmaker,
                       reserve_ids, update_rows)
from ledger.models import AuditEvent, Company, FxRate, Invoice
from tests import factories
from tests.pgserver import PostgresServer

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


def test_rows_inserted_with_their_ids_are_those_an_insert_returning_gives(session: Session) -> None:
    ids = insert_rows_with_ids(session, AUDITS, _rows("test.copied"))
    session.execute(insert(AUDITS), _rows("test.inserted"))
    assert _read(session, "test.copied") == _read(session, "test.inserted")
    by_id = dict(session.execute(select(AUDITS.c.id, AUDITS.c.entity_id).where(AUDITS.c.action == "test.copied")).all())
    assert [by_id[row_id] for row_id in ids] == list(range(1_200))  # in the order of the rows given
    assert ids == sorted(ids) and insert_rows_with_ids(session, AUDITS, []) == []
    later = insert_rows_with_ids(session, AUDITS, _rows("test.later"))
    assert min(later) > max(ids)


INVOICES = Invoice.__table__
assert isinstance(INVOICES, Table)


def _invoices(session: Session, count: int) -> tuple[Company, list[int]]:
    company = factories.company(session)
    customer = factories.customer(session, company)
    insert_rows(session, INVOICES, [dict(
        company_id=company.id, customer_id=customer.id, kind="invoice", number=f"B-{n:05d}", issue_date=date(2026, 1, 1),
        due_date=date(2026, 2, 1), currency="EUR", total_minor=10_000 + n, open_minor=10_000 + n, status="open",
        discount_bps=None if n % 2 else 150, discount_until=None if n % 2 else date(2026, 1, 10)) for n in range(count)])
    ids = list(session.scalars(select(INVOICES.c.id).where(INVOICES.c.company_id == company.id)
                               .order_by(INVOICES.c.number)))
    return company, ids


def _changes(ids: list[int]) -> list[dict[str, Any]]:
    """Every kind of value: dates and NULLs both ways, big integers, text, aware datetimes."""
    moment = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    return [dict(id=invoice_id, due_date=date(2026, 3, 1) + timedelta(days=n % 40),
                 total_minor=(1 << 40) + n, open_minor=(1 << 40) + n - n % 7,
                 status=("open", "partially_paid", "paid")[n % 3],
                 discount_bps=150 if n % 2 else None, discount_until=date(2026, 2, 20) if n % 2 else None,
                 updated_at=moment + timedelta(seconds=n))
            for n, invoice_id in enumerate(ids)]


def _read_invoices(session: Session, company: Company) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in session.execute(
        select(*(c for c in INVOICES.columns if c.name not in ("pdf",)))
        .where(INVOICES.c.company_id == company.id).order_by(INVOICES.c.number))]


def test_updated_rows_are_those_an_update_per_row_writes(session: Session) -> None:
    first, first_ids = _invoices(session, 300)
    second, second_ids = _invoices(session, 300)
    update_rows(session, INVOICES, ("id",), _changes(first_ids))
    names = list(_changes(second_ids)[0])
    session.execute(update(INVOICES).where(INVOICES.c.id == bindparam("k_id"))
                    .values({name: bindparam(f"v_{name}") for name in names if name != "id"}),
                    [{("k_" if name == "id" else "v_") + name: value for name, value in row.items()}
                     for row in _changes(second_ids)])
    updated, reference = _read_invoices(session, first), _read_invoices(session, second)
    assert len(updated) == 300
    # the same values but for the ids and the company
    skip = {i for i, c in enumerate(c for c in INVOICES.columns if c.name != "pdf") if c.name in ("id", "company_id",
                                                                                                  "customer_id")}
    assert [tuple(v for i, v in enumerate(row) if i not in skip) for row in updated] == [
        tuple(v for i, v in enumerate(row) if i not in skip) for row in reference]


def test_an_update_of_many_rows_is_one_statement_on_postgresql(pg_session: Session) -> None:
    company, ids = _invoices(pg_session, 2_500)
    pg_session.execute(text("CREATE TEMPORARY TABLE fired (rows integer) ON COMMIT DROP"))
    pg_session.execute(text("CREATE FUNCTION pg_temp.count_updated() RETURNS trigger AS $$ BEGIN "
                            "INSERT INTO fired SELECT count(*) FROM new_rows; RETURN NULL; END $$ LANGUAGE plpgsql"))
    pg_session.execute(text("CREATE TRIGGER tr_test_count_updated AFTER UPDATE ON invoices REFERENCING "
                            "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.count_updated()"))
    update_rows(pg_session, INVOICES, ("id",), _changes(ids))
    assert pg_session.scalars(text("SELECT rows FROM fired")).all() == [2_500]


def _reltuples(session: Session) -> float:
    return float(session.scalar(text("SELECT reltuples FROM pg_class WHERE oid = 'invoices'::regclass")))


def test_a_table_a_write_outgrew_is_analyzed_on_postgresql(pg_session: Session) -> None:
    """Its triggers' statements are then planned for the table it is, not the empty one."""
    _invoices(pg_session, 2_500)
    analyze_if_outgrown(pg_session, INVOICES, 2_500)
    assert _reltuples(pg_session) >= 2_500


@pytest.fixture
def pg_things(pg_server: PostgresServer) -> Iterator[tuple[Table, Engine]]:
    """A table in a PostgreSQL database of its own (no other test has told analyze_if_outgrown of it)."""
    things = Table("things", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(20)))
    engine = make_engine(pg_server.create_database(f"things_{uuid.uuid4().hex[:16]}"))
    things.metadata.create_all(engine)
    yield things, engine
    engine.dispose()


def test_the_statistics_are_read_again_only_once_writes_outnumber_them(pg_things: tuple[Table, Engine]) -> None:
    """Asked after each API request's write, it asks the server nothing while the table's
    statistics still count more rows than were written since it last read them, and analyzes the
    table again once a write outgrows them."""
    things, engine = pg_things
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def write(count: int) -> tuple[float, list[str]]:
        with Session(engine) as session:
            session.execute(insert(things), [{"name": f"n{n}"} for n in range(count)])
            statements.clear()
            analyze_if_outgrown(session, things, count)
            asked = list(statements)
            session.commit()
            return float(session.scalar(text("SELECT reltuples FROM pg_class WHERE oid = 'things'::regclass"))), asked

    known, asked = write(2_500)
    assert known >= 2_500 and asked[-1] == "ANALYZE things"  # outgrown: analyzed
    for _ in range(4):
        assert write(500)[1] == []  # 2,000 written since: nothing asked
    assert len(write(1_000)[1]) == 1  # 3,000 since: read again, not outgrown
    known, asked = write(4_000)
    assert known >= 8_000 and asked[-1] == "ANALYZE things"  # outgrown again


def test_analyze_if_outgrown_does_nothing_on_sqlite(session: Session) -> None:
    _invoices(session, 10)
    analyze_if_outgrown(session, INVOICES, 10)
    if session.get_bind().dialect.name == "sqlite":
        assert session.scalar(text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")) == 0


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


@pytest.fixture
def sqlite_things(tmp_path: Path) -> Iterator[tuple[Table, Engine]]:
    """A table in a SQLite file of its own, for two connections to it."""
    things = Table("things", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(20)))
    engine = make_engine(f"sqlite:///{tmp_path / 'things.sqlite3'}")
    things.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(things), [{"name": "one"}, {"name": "two"}])
    yield things, engine
    engine.dispose()


def test_ids_reserved_on_sqlite_are_kept_from_another_writer(sqlite_things: tuple[Table, Engine]) -> None:
    """The write lock is taken with them, even in a transaction that had only read: another
    writer waits instead of taking the first reserved id."""
    things, engine = sqlite_things
    with make_sessionmaker(engine, write=False)() as session:
        reserved = reserve_ids(session, things, 2)
        assert reserved == [3, 4]
        with engine.connect() as other:
            other.exec_driver_sql("PRAGMA busy_timeout=50")
            with pytest.raises(OperationalError, match="database is locked"):
                other.execute(insert(things), {"name": "other writer"})
            other.rollback()
        insert_rows(session, things, [{"id": reserved[0], "name": "three"}, {"id": reserved[1], "name": "four"}])
        session.commit()
    with engine.connect() as connection:
        assert connection.execute(select(things.c.id, things.c.name).order_by(things.c.id)).all() == [
            (1, "one"), (2, "two"), (3, "three"), (4, "four")]


def test_reserving_ids_outside_a_transaction_on_sqlite_is_refused(sqlite_things: tuple[Table, Engine]) -> None:
    things, engine = sqlite_things
    with engine.connect() as connection, Session(bind=connection) as session:
        session.execute(select(things.c.id)).all()
        connection.connection.driver_connection.execute("COMMIT")  # type: ignore[union-attr]  # as autocommit leaves it
        with pytest.raises(RuntimeError, match=r"reserve_ids\(things\) on SQLite outside a transaction"):
            reserve_ids(session, things, 2)
