"""Fixtures for tests that need databases of their own, with committed data visible across
connections (threads, processes): a fresh, migrated database per test on each engine, engines
disposed of at the end, and threads released together behind a barrier."""

from __future__ import annotations

import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest
from sqlalchemy import Engine

from kernel.db import make_engine, upgrade
from tests.pgserver import PostgresServer

T = TypeVar("T")


def together(count: int, work: Callable[[int], T]) -> list[T]:
    """Run work(0..count-1) on `count` threads released at the same moment; re-raise any error."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait(timeout=30)
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


# Migrating a database to the head took 0.8-1 s a test on 2 cores; a copy of one migrated per
# session (per xdist worker) takes milliseconds and is the same database: the migrations themselves
# are tested on databases of their own (tests/encours/test_migrations.py).
PG_TEMPLATE = "fresh_template"


@pytest.fixture(scope="session")
def pg_migrated_template(pg_server: PostgresServer) -> str:
    """The name of a database migrated to the head, to copy (nothing stays connected to it)."""
    upgrade(pg_server.create_database(PG_TEMPLATE))
    return PG_TEMPLATE


@pytest.fixture(scope="session")
def sqlite_migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the head, to copy."""
    path = tmp_path_factory.mktemp("template") / "fresh.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


def pg_migrated_copy(pg_server: PostgresServer, template: str, prefix: str = "fresh") -> str:
    """A new database on `pg_server`, a copy of the migrated `template`; returns its URL."""
    return pg_server.create_database(f"{prefix}_{uuid.uuid4().hex[:16]}", template=template)


def sqlite_migrated_copy(template: Path, target: Path) -> str:
    """`target`, a copy of the migrated `template`; returns its URL."""
    # The migration closed every connection, so the write-ahead log was checkpointed into the
    # file and removed: the file alone is the whole database.
    assert not template.with_name(template.name + "-wal").exists(), "the template is still open"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def pg_fresh_url(pg_server: PostgresServer, pg_migrated_template: str) -> str:
    return pg_migrated_copy(pg_server, pg_migrated_template)


@pytest.fixture
def sqlite_fresh_url(tmp_path: Path, sqlite_migrated_template: Path) -> str:
    return sqlite_migrated_copy(sqlite_migrated_template, tmp_path / "fresh.sqlite3")


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def fresh_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_fresh_url" if request.param == "postgres" else "sqlite_fresh_url"))


@pytest.fixture
def engines() -> Iterator[Callable[[str], Engine]]:
    """make(url) -> an engine of its own (as another process has), disposed of after the test."""
    made: list[Engine] = []

    def make(url: str) -> Engine:
        made.append(make_engine(url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()
