"""GET /healthz is liveness only (no database); GET /readyz also wants a reachable database whose schema
this code runs on: its migrations' head, or a later one (rolling upgrades)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.db import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revisions,
    make_engine,
    make_sessionmaker,
    migration_heads,
    upgrade,
)
from kernel.settings import Settings, load_settings
from tests.conftest import TEST_SECRET
from tests.pgserver import PostgresServer


def _settings(url: str) -> Settings:
    return load_settings(
        {"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": TEST_SECRET, "ENCOURS_BASE_URL": "http://testserver"}
    )


def _get(url: str, path: str) -> tuple[int, dict[str, object], str]:
    with TestClient(create_app(_settings(url)), base_url="http://testserver") as client:
        response = client.get(path)
        return response.status_code, response.json(), response.headers.get("cache-control", "")


def test_readyz_is_200_on_a_migrated_database(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with TestClient(create_app(settings, sessions=session_factory)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_is_503_on_a_database_never_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    status, body, cache = _get(url, "/readyz")
    assert status == 503
    assert body["status"] == "unavailable" and "not migrated" in str(body["reason"])
    assert cache == "no-store"
    # liveness does not care about the schema
    assert _get(url, "/healthz")[0] == 200


def test_readyz_is_503_on_a_database_behind_the_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'behind.sqlite3'}"
    upgrade(url, "0001")
    status, body, _ = _get(url, "/readyz")
    assert status == 503
    assert "0001" in str(body["reason"]) and all(head in str(body["reason"]) for head in migration_heads())
    upgrade(url)
    assert _get(url, "/readyz") == (200, {"status": "ok"}, "no-store")


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no-such-dir" / "x.sqlite3"  # SQLite cannot create a file there
    app = create_app(_settings(f"sqlite:///{missing_dir}"))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "database unreachable"}


@pytest.mark.postgres
def test_readyz_on_postgresql_before_and_after_upgrade(pg_server: PostgresServer) -> None:
    url = pg_server.create_database("readyz_states")
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        with TestClient(create_app(_settings(url), sessions=factory)) as client:
            response = client.get("/readyz")
            assert response.status_code == 503 and "not migrated" in response.json()["reason"]
            assert client.get("/healthz").status_code == 200
            upgrade(url)
            response = client.get("/readyz")
            assert response.status_code == 200 and response.json() == {"status": "ok"}
    finally:
        engine.dispose()


UNREACHABLE = "postgresql+psycopg://nobody:s3cret@127.0.0.1:1/nowhere"


def test_with_the_database_down_healthz_is_200_and_readyz_503_both_json() -> None:
    with TestClient(create_app(_settings(UNREACHABLE)), raise_server_exceptions=False) as client:
        live, ready = client.get("/healthz"), client.get("/readyz")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable", "reason": "database unreachable"})
    for response in (live, ready):
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"


# A later release's migration, as it would ship: expand only (a new nullable column).
LATER_MIGRATION = '''
from alembic import op
import sqlalchemy as sa

revision = "0099_later_release"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("companies", sa.Column("later_setting", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("companies") as batch:
        batch.drop_column("later_setting")
'''


def _upgrade_as_a_later_release(url: str, tmp_path: Path) -> None:
    """`encours db upgrade` of the next release: our migrations plus one more."""
    from alembic import command

    scripts = tmp_path / "later-migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (head,) = migration_heads()
    (scripts / "versions" / "0099_later_release.py").write_text(LATER_MIGRATION.replace("{head}", head))
    config = alembic_config(url)
    config.set_main_option("script_location", str(scripts))
    command.upgrade(config, "heads")


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_an_old_process_stays_ready_once_a_later_release_migrated_the_database(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'rolling.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_server").create_database("readyz_rolling")
    upgrade(url)
    _upgrade_as_a_later_release(url, tmp_path)
    status, body, _ = _get(url, "/readyz")
    assert (status, body) == (200, {"status": "ok"})
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert current_revisions(connection) == {"0099_later_release"}  # unknown to this code
    finally:
        engine.dispose()


def test_a_revision_of_another_lineage_is_not_ready(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'foreign.sqlite3'}"
    upgrade(url, "0001")  # a database whose line of revisions never reached our head
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'f00d_elsewhere'"))
    finally:
        engine.dispose()
    status, body, _ = _get(url, "/readyz")
    assert status == 503 and "f00d_elsewhere" in str(body["reason"])
