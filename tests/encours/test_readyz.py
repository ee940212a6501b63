"""GET /healthz is liveness only; GET /readyz also wants a reachable database at the migrations' head."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.db import make_engine, make_sessionmaker, migration_heads, upgrade
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
