"""Fixtures for tests that need databases of their own, with committed data visible across
connections (threads, processes): a fresh, migrated database per test on each engine, engines
disposed of at the end, and threads released together behind a barrier."""

from __future__ import annotations

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


@pytest.fixture
def pg_fresh_url(pg_server: PostgresServer) -> str:
    url = pg_server.create_database(f"fresh_{uuid.uuid4().hex[:16]}")
    upgrade(url)
    return url


@pytest.fixture
def sqlite_fresh_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    upgrade(url)
    return url


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
