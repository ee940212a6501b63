from __future__ import annotations


import asyncio
import gc
import socket
import subprocess
import sys
import threading
from datetime import datetime, timezone
from types import SimpleNamespace

from contextlib import contextmanager
from typing import Iterator

import pytest
from argon2 import PasswordHasher
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from admin import staff_accounts
from kernel.clock import clock
from kernel.db import make_engine, upgrade
from kernel.settings import Settings, load_settings

pytest_plugins = ["tests.fakes.smtp", "tests.databases"]

TEST_SECRET = "test-secret-key-0123456789abcdef"

# No per-example deadline anywhere: tests never assert a time, and a 2-core CI machine running
# browsers beside them once took 301 ms for an example hypothesis allows 200 ms by default.
hypothesis_settings.register_profile("encours", deadline=None)
hypothesis_settings.load_profile("encours")


# What staff passwords are hashed with outside the tests (tests/admin/test_users.py checks its cost).
PRODUCTION_PASSWORD_HASHER = staff_accounts._hasher


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashes() -> Iterator[None]:
    """Real argon2, at its smallest cost: at the production cost a hash or a check took 0.5 s of
    a loaded 2-core machine, and most back-office tests create several users and sign them in.
    Commands run in a subprocess (the CLI, the demo) still hash at the production cost."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(staff_accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        yield


@pytest.fixture(autouse=True)
def no_browser_loop_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """pytest-playwright's sync API keeps its event loop marked running in the worker's thread from
    the first browser test to the end of the session: a later test of the same worker calling
    `asyncio.run` (the loop reads, the link checks on the loop) then failed, or not, by where xdist
    happened to send it (15 failures in one CI run, none in the one before). Tests that use no
    browser run with no loop marked running, as they would alone; the browser's loop is put back after."""
    left = asyncio._get_running_loop()
    if left is None or "playwright" in request.fixturenames:
        yield
        return
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(left)


@pytest.fixture(scope="session", autouse=True)
def young_collection_before_freezing() -> Iterator[None]:
    """The app's lifespan collects the whole heap, then freezes what start-up built (encours.app):
    once per server process in production, but in a test process once per app started (hundreds),
    each a walk of every object the suite holds: 15 % of the CPU of tests/admin/test_settings.py.
    Here it collects the youngest generation only; the freeze stays real (tests/encours/
    test_http_stack.py checks it), and `encours serve`'s whole start-up, full collection included,
    is checked in a process of its own (tests/encours/test_serve.py)."""
    import encours.app

    quick = SimpleNamespace(collect=lambda: gc.collect(0), freeze=gc.freeze, unfreeze=gc.unfreeze)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encours.app, "gc", quick)
        yield


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
    yield from _rolled_back_sessions(engine)


@pytest.fixture(params=["sqlite", "postgres"])
def both_databases_session_factory(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    """`session_factory` on SQLite, then on PostgreSQL: packages opt in through their conftest."""
    engine = request.getfixturevalue("engine" if request.param == "sqlite" else "pg_engine")
    yield from _rolled_back_sessions(engine)


def _rolled_back_sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
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


# --- PostgreSQL: a throwaway server per test session (per xdist worker), see tests/pgserver.py ---

from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator["PostgresServer"]:
    from tests.pgserver import PostgresError, PostgresNotInstalled, PostgresServer

    problem = None
    try:
        server = PostgresServer()
        server.start()
    except (PostgresNotInstalled, PostgresError) as error:
        problem = str(error)
    if problem is not None:  # a missing database must fail the tests that need it, never skip them
        pytest.fail(problem, pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server: "PostgresServer") -> str:
    """SQLAlchemy URL of an empty database on the session's PostgreSQL server."""
    return pg_server.url()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_session_factory(pg_engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Like `session_factory`, on PostgreSQL: everything is rolled back after the test."""
    yield from _rolled_back_sessions(pg_engine)


@pytest.fixture
def pg_session(pg_session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with pg_session_factory() as session:
        yield session


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a database that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@contextmanager
def sqlite_writer_held_elsewhere(database: str) -> Iterator[None]:
    """Another process holding the writers' lock file of this SQLite database (`kernel.sqlite_writer`,
    as a second `encours serve` process would) until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.readline()", f"{database}.writer-lock"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("\n", timeout=30)


@contextmanager
def statements_run(engine: Engine) -> Iterator[list[str]]:
    """The SQL of every statement `engine` runs inside the block, in order."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
