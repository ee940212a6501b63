"""Migrations bring an empty database to exactly what the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, inspect, select
from sqlalchemy.orm import Session

from kernel.db import alembic_config, downgrade, make_engine, upgrade
from ledger.models import Base, Company, Contact, Customer, Invoice
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


# --- upgrades from every earlier revision, with data, and the downgrade round trip ----------------


def _revisions_oldest_first() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


EARLIER = [None, *_revisions_oldest_first()[:-1]]  # None: an empty database
STAMP = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)

# The rows a book has at any revision; a column is only written where that revision has it.
ROWS: dict[str, dict[str, object]] = {
    "companies": {"id": 1, "code": "OLD", "name": "Ancienne SAS", "base_currency": "EUR", "country": "FR",
                  "timezone": "Europe/Paris", "brand_color": "#123456", "link_lifetime_days": 30,
                  "created_at": STAMP},
    "customers": {"id": 1, "company_id": 1, "ref": "C-OLD", "name": "Client d'avant", "language": "fr",
                  "segment": "pme", "created_at": STAMP},
    "contacts": {"id": 1, "customer_id": 1, "email": "ap@old.test", "language": "fr", "is_primary": True,
                 "link_version": 2, "created_at": STAMP},
    "invoices": {"id": 1, "company_id": 1, "customer_id": 1, "kind": "invoice", "number": "F-OLD-1",
                 "issue_date": date(2026, 10, 1), "due_date": date(2026, 10, 31), "currency": "EUR",
                 "total_minor": 1234_56, "open_minor": 1000_00, "status": "partially_paid",
                 "discount_bps": 200, "discount_until": date(2026, 10, 15), "created_at": STAMP,
                 "updated_at": STAMP},
}


def _insert_old_rows(engine: Engine) -> None:
    metadata = MetaData()
    metadata.reflect(engine, only=list(ROWS))
    with engine.begin() as connection:
        for name, values in ROWS.items():
            table = metadata.tables[name]
            connection.execute(table.insert().values({k: v for k, v in values.items() if k in table.c}))


def _check_old_rows_survived(engine: Engine) -> None:
    with Session(engine) as session:
        company = session.scalars(select(Company).where(Company.code == "OLD")).one()
        assert company.name == "Ancienne SAS" and company.brand_color == "#123456"
        customer = session.scalars(select(Customer).where(Customer.ref == "C-OLD")).one()
        assert customer.company_id == company.id and customer.name == "Client d'avant"
        contact = session.scalars(select(Contact).where(Contact.customer_id == customer.id)).one()
        assert contact.email == "ap@old.test" and contact.link_version == 2 and contact.is_primary
        invoice = session.scalars(select(Invoice).where(Invoice.number == "F-OLD-1")).one()
        assert (invoice.total_minor, invoice.open_minor, invoice.status) == (1234_56, 1000_00, "partially_paid")
        assert (invoice.discount_bps, invoice.discount_until) == (200, date(2026, 10, 15))
        # NOT NULL columns added since then got their server defaults, read back through the models
        inspector = inspect(engine)
        for name, model_row in (("companies", company), ("customers", customer), ("contacts", contact),
                                ("invoices", invoice)):
            for column in inspector.get_columns(name):
                if not column["nullable"] and column["name"] not in ROWS[name]:
                    assert getattr(model_row, column["name"]) is not None, (name, column["name"])


def _check_upgrade_from(url: str, revision: str | None) -> None:
    if revision is not None:
        upgrade(url, revision)
    engine = make_engine(url)
    try:
        assert _revision(engine) == revision
        if revision is not None:
            _insert_old_rows(engine)
        upgrade(url)
        _check_at_head(url)
        if revision is not None:
            _check_old_rows_survived(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", EARLIER, ids=lambda r: f"from-{r or 'empty'}")
def test_sqlite_upgrades_from_each_earlier_revision_keeping_the_rows(tmp_path: Path, revision: str | None) -> None:
    _check_upgrade_from(f"sqlite:///{tmp_path / 'old.sqlite3'}", revision)


@pytest.mark.postgres
@pytest.mark.parametrize("revision", EARLIER, ids=lambda r: f"from-{r or 'empty'}")
def test_postgresql_upgrades_from_each_earlier_revision_keeping_the_rows(
    pg_server: PostgresServer, revision: str | None
) -> None:
    _check_upgrade_from(pg_server.create_database(f"migrations_from_{revision or 'empty'}".lower()), revision)


def _check_round_trip(url: str) -> None:
    """head → each earlier revision → head, with rows in the tables every revision has."""
    upgrade(url, _revisions_oldest_first()[0])
    engine = make_engine(url)
    try:
        _insert_old_rows(engine)
        upgrade(url)
        for revision in reversed(EARLIER[1:]):
            downgrade(url, revision)
            assert _revision(engine) == revision
            upgrade(url)
            _check_at_head(url)
            _check_old_rows_survived(engine)
        downgrade(url, "base")
        assert _revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)
        _check_at_head(url)
    finally:
        engine.dispose()


def test_sqlite_downgrade_then_upgrade_round_trip(tmp_path: Path) -> None:
    _check_round_trip(f"sqlite:///{tmp_path / 'round.sqlite3'}")


@pytest.mark.postgres
def test_postgresql_downgrade_then_upgrade_round_trip(pg_server: PostgresServer) -> None:
    _check_round_trip(pg_server.create_database("migrations_round_trip"))


def _check_default_reasons_migration(url: str) -> None:
    """0011b gives each company without dispute reasons the default list; one with reasons keeps its own."""
    from ledger.disputes import DEFAULT_REASONS
    from ledger.models import DisputeReason

    upgrade(url, "0010_dashboard_days")
    engine = make_engine(url)
    try:
        _insert_old_rows(engine)
        metadata = MetaData()
        metadata.reflect(engine, only=["companies", "dispute_reasons"])
        with engine.begin() as connection:
            connection.execute(metadata.tables["companies"].insert().values(
                {**ROWS["companies"], "id": 2, "code": "CHOSEN", "name": "Choisie SAS"}))
            connection.execute(metadata.tables["dispute_reasons"].insert().values(
                company_id=2, code="late", label_fr="Livrée en retard", label_en="Delivered late", active=True,
                position=0))
        upgrade(url)
        with Session(engine) as session:
            def codes(company_id: int) -> list[str]:
                return list(session.scalars(select(DisputeReason.code).where(DisputeReason.company_id == company_id)
                                            .order_by(DisputeReason.position)))
            assert codes(1) == [code for code, _fr, _en in DEFAULT_REASONS]
            assert codes(2) == ["late"]
        upgrade(url)  # again: nothing more
        with Session(engine) as session:
            assert len(session.scalars(select(DisputeReason).where(DisputeReason.company_id == 1)).all()) == len(
                DEFAULT_REASONS)
    finally:
        engine.dispose()


def test_sqlite_companies_without_reasons_get_the_defaults(tmp_path: Path) -> None:
    _check_default_reasons_migration(f"sqlite:///{tmp_path / 'reasons.sqlite3'}")


@pytest.mark.postgres
def test_postgresql_companies_without_reasons_get_the_defaults(pg_server: PostgresServer) -> None:
    _check_default_reasons_migration(pg_server.create_database("migrations_default_reasons"))
