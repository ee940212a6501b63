"""Migrations bring an empty database to exactly what the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from encours.db import alembic_config, make_engine, upgrade
from ledger.models import Base, Company
from tests.pgserver import PostgresServer


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def _revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _check_at_head(url: str) -> None:
    engine = make_engine(url)
    try:
        assert _revision(engine) == _head()
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
        assert _differences(engine) == []
    finally:
        engine.dispose()


def _check_upgrade(url: str) -> None:
    engine = make_engine(url)
    try:
        assert _revision(engine) is None
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    upgrade(url)
    _check_at_head(url)
    upgrade(url)  # a second run finds nothing to do
    _check_at_head(url)


def test_upgrade_brings_an_empty_sqlite_file_to_head(tmp_path: Path) -> None:
    _check_upgrade(f"sqlite:///{tmp_path / 'empty.sqlite3'}")


@pytest.mark.postgres
def test_upgrade_brings_an_empty_postgresql_database_to_head(pg_server: PostgresServer) -> None:
    _check_upgrade(pg_server.create_database("migrations_empty"))


def test_sqlite_engine_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pragmas.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        # every pooled connection, not only the first one
        connections = [engine.connect() for _ in range(3)]
        try:
            for connection in connections:
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        finally:
            for connection in connections:
                connection.close()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_pg_session_is_one_transaction_rolled_back_afterwards(pg_session: Session, pg_engine: Engine) -> None:
    pg_session.add(Company(code="PG-ROLLBACK", name="Rolled back", base_currency="EUR"))
    pg_session.commit()  # a savepoint of the test's transaction
    assert pg_session.scalar(select(Company.name).where(Company.code == "PG-ROLLBACK")) == "Rolled back"
    assert pg_engine.dialect.name == "postgresql"
    with pg_engine.connect() as other:  # nothing is visible outside the test's transaction
        assert other.scalar(select(Company.id).where(Company.code == "PG-ROLLBACK")) is None
