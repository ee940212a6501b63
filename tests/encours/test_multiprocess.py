"""Two `encours serve` and two `encours worker` processes on one PostgreSQL database, at once:
no work done twice, none lost, and a worker killed mid-send costs nothing (issue 19). The scenario
and its checks are `tests/multiprocess.py` (`bench/multiprocess.py` runs it larger, timed).

SQLite is not run: the README supports one worker per SQLite file (several server processes
beside it are `tests/encours/test_concurrency.py`'s `encours serve --workers 2`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from sandbox.localstripe_server import LocalStripe
from tests import multiprocess
from tests.fakes import receiver
from tests.fakes.localstripe_server import localstripe, localstripe_server  # noqa: F401
from tests.fakes.smtp import CapturingSMTP
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.postgres


@pytest.fixture
def world(pg_server: PostgresServer, tmp_path: Path, localstripe: LocalStripe,  # noqa: F811
          smtp_server: CapturingSMTP) -> Iterator[multiprocess.World]:
    world = multiprocess.World.make(tmp_path, pg_server.create_database("multiprocess"), localstripe, smtp_server.url)
    try:
        yield world
    finally:
        world.kill_all()


def test_two_servers_and_two_workers_share_one_database_without_doing_anything_twice_or_losing_anything(
    world: multiprocess.World, smtp_server: CapturingSMTP, localstripe: LocalStripe,  # noqa: F811
) -> None:
    size = multiprocess.Size(companies=2, customers=25, payers=8, deliveries=3)
    with receiver.serve_once() as erp:
        result = multiprocess.run(world, size, smtp_server, localstripe, erp)
        assert multiprocess.problems(world, result, smtp_server, erp) == []
    assert len(result.planned) == 2 * 25 and set(result.planned.values()) == {1}
    assert result.killed_pid is not None and len(result.paid) == 8
