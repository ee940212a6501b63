"""Two `encours serve` and two `encours worker` processes on one PostgreSQL database, at once:
no work done twice, none lost, and a worker killed mid-send costs nothing (issue 19). The scenario
and its checks are `tests/multiprocess.py` (`bench/multiprocess.py` runs it larger, timed).

On SQLite, as the README runs it: two server processes and ONE worker (killed mid-send too, and
started again)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from sandbox.localstripe_server import LocalStripe
from tests import multiprocess
from tests.fakes import receiver
from tests.fakes.localstripe_server import localstripe, localstripe_server  # noqa: F401
from tests.fakes.smtp import CapturingSMTP

COMPANIES, CUSTOMERS, PAYERS = 2, 25, 8


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, int]:
    """The database's URL and how many workers share it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'multiprocess.sqlite3'}", 1
    return str(request.getfixturevalue("pg_server").create_database("multiprocess")), 2


@pytest.fixture
def world(database: tuple[str, int], tmp_path: Path, localstripe: LocalStripe,  # noqa: F811
          smtp_server: CapturingSMTP) -> Iterator[multiprocess.World]:
    world = multiprocess.World.make(tmp_path, database[0], localstripe, smtp_server.url)
    try:
        yield world
    finally:
        world.kill_all()


def test_two_servers_and_their_workers_share_one_database_without_doing_anything_twice_or_losing_anything(
    world: multiprocess.World, database: tuple[str, int], smtp_server: CapturingSMTP,
    localstripe: LocalStripe,  # noqa: F811
) -> None:
    size = multiprocess.Size(companies=COMPANIES, customers=CUSTOMERS, payers=PAYERS, deliveries=3,
                             workers=database[1])
    with receiver.serve_once() as erp:
        result = multiprocess.run(world, size, smtp_server, localstripe, erp)
        assert multiprocess.problems(world, result, smtp_server, erp) == []
    assert len(result.planned) == COMPANIES * CUSTOMERS and set(result.planned.values()) == {1}
    assert result.killed_pid is not None and len(result.paid) == PAYERS
