from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from encours.clock import clock
from encours.db import make_engine, upgrade
from encours.settings import Settings, load_settings

TEST_SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("db") / "encours.sqlite3"
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions joined to one outer transaction, rolled back after the test.

    Code under test may commit: its commits become savepoints of that transaction.
    """
    connection = engine.connect()
    outer = connection.begin()
    factory = sessionmaker(bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint")
    yield factory
    outer.rollback()
    connection.close()


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[None]:
    clock.set(datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc))
    yield
    clock.reset()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return load_settings(
        {
            "ENCOURS_DATABASE_URL": db_url,
            "ENCOURS_SECRET_KEY": TEST_SECRET,
            "ENCOURS_BASE_URL": "http://testserver",
        }
    )
