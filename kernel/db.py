"""Database engine, sessions and migrations."""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Iterator

from sqlalchemy import (
    ClauseElement, Connection, Dialect, Engine, Select, Table, and_, bindparam, create_engine, event, insert, make_url, text, update,
)
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


SQLITE_MMAP_BYTES = 1 << 30  # address space only: pages are shared with the OS cache, not copied


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINTs; SQLAlchemy emits BEGIN instead (_sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL persists in the file: readers never wait for the writer (a no-op for :memory:).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Read the file through the OS page cache shared by every connection and process, instead of
    # copying pages into each connection's small private cache: a query over a large book spent
    # more time in read() calls than in SQLite (bench/RESULTS.md).
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.close()


SQLITE_BEGIN_OPTION = "sqlite_begin"


def _sqlite_begin(connection: Any) -> None:
    # Straight to the driver: through exec_driver_sql, with its events and result set-up, the BEGIN
    # cost more than a short query.
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION)
    connection.connection.driver_connection.execute(f"BEGIN {mode}" if mode else "BEGIN")


# A server connection that sat idle in the pool this long is pinged before use (a database restart
# or an idle timeout may have closed it meanwhile); one in steady use is not: a ping on every
# checkout was a round trip added to every request (bench/RESULTS.md, 2026-12-05 pgspeed).
PING_AFTER_IDLE_SECONDS = 2.0
# Connections kept open per process: as many as requests may use at once (the app limits anyio's
# thread pool to this many threads on a server database, encours.app). Beyond the pool's size a
# connection was opened and closed again for each request under load, and a PostgreSQL
# connection costs milliseconds to open. The overflow is for work that holds two at once.
SERVER_POOL_SIZE = 20
SERVER_POOL_OVERFLOW = 20
# Threads of one process rendering the debtor's read-only pages at once on a server database (the
# rest wait their turn on the event loop): 16 at once, each waiting on its statements in turn, cost
# the statement page a fifth more CPU in the app and PostgreSQL than 4 did (bench/RESULTS.md,
# 2026-12-06 page13). A page is mostly rendering: 4 keep a core busy.
PAGE_THREADS = 4
_IDLE_SINCE = "encours_idle_since"


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Any:
    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out another (a new one if need be).
            raise DisconnectionError(f"pooled connection lost while idle: {error}") from error

    return checkout


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    options = kwargs if "poolclass" in kwargs else {"pool_size": SERVER_POOL_SIZE,
                                                    "max_overflow": SERVER_POOL_OVERFLOW, **kwargs}
    engine = create_engine(url, **options)
    event.listen(engine, "checkin", _checked_in)
    event.listen(engine, "checkout", _ping_if_idle(engine))
    return engine


def first_row(connection: Connection, statement: Select[Any], params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """`connection.execute(statement, params).first()` as a plain tuple, for the hottest reads, run
    as `driver_rows` runs a statement (compiled once, on the driver's own cursor: SQLAlchemy's
    execution and result set-up cost more than the query itself, bench/RESULTS.md, 2026-12-05
    pglinks and loop9), reading one row. The columns come back as the driver reads them: on SQLite
    a boolean as an integer, a datetime as text; on SQLite the read is its own implicit
    transaction (no BEGIN is sent)."""
    found: tuple[Any, ...] | None = _on_driver(connection, statement, params, _fetch_one)
    return found


def _fetch_one(cursor: Any) -> tuple[Any, ...] | None:
    row = cursor.fetchone()
    return tuple(row) if row is not None else None


@dataclass(frozen=True)
class _DriverStatement:
    sql: str
    order: tuple[str, ...] | None  # a positional paramstyle's parameter names, in order
    defaults: Mapping[str, Any]  # the statement's own values (a literal compared with, say)
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]  # the columns' type conversions


@functools.lru_cache(maxsize=64)
def _driver_statement(statement: ClauseElement, dialect: Dialect) -> _DriverStatement:
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    processors = []
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors.append((name, process))
    order = tuple(compiled.positiontup or ()) if compiled.positional else None
    defaults = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
    return _DriverStatement(str(compiled), order, defaults, tuple(processors))


def driver_rows(connection: Connection, statement: ClauseElement, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """`connection.execute(statement, params).all()` as plain tuples, for the hottest statements:
    compiled once per dialect, the parameters converted by their columns' types as SQLAlchemy
    converts them (aware datetimes, JSON), then run on the driver's own cursor, in the
    connection's transaction: SQLAlchemy's execution and result set-up cost more than such a
    statement (bench/RESULTS.md, 2026-12-05 hooks8). Every parameter is a named `bindparam`;
    the rows come back as the driver reads them (no result type conversion)."""
    rows: list[tuple[Any, ...]] = _on_driver(
        connection, statement, params,
        lambda cursor: [tuple(row) for row in cursor.fetchall()] if cursor.description is not None else [])
    return rows


def driver_sql(statement: ClauseElement, dialect: Dialect, params: Mapping[str, Any]) -> tuple[str, Any]:
    """`statement`'s SQL for `dialect`'s driver (compiled once per dialect) and its arguments:
    `params` with the statement's own values, converted by their columns' types as SQLAlchemy
    converts them. What `driver_rows` sends, for a driver connection of one's own."""
    prepared = _driver_statement(statement, dialect)
    values = {**prepared.defaults, **params}
    for name, process in prepared.processors:
        values[name] = process(values[name])
    return prepared.sql, values if prepared.order is None else [values[name] for name in prepared.order]


def _on_driver(connection: Connection, statement: ClauseElement, params: Mapping[str, Any],
               read: Callable[[Any], Any]) -> Any:
    """`statement` compiled once per dialect, its parameters converted, run on the driver's cursor
    of `connection`; `read(cursor)` takes what it returned."""
    sql, arguments = driver_sql(statement, connection.dialect, params)
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if connection._has_events or connection.engine._has_events:  # what watches statements sees these too
            connection.dispatch.before_cursor_execute(connection, cursor, sql, arguments, None, False)
        cursor.execute(sql, arguments)
        return read(cursor)
    finally:
        cursor.close()


_WRITER = "encours_background_writer"


class _Writer:
    """One thread sending writes on a driver connection, in the order given. A failed write skips
    the rest and is raised in the caller's thread by the next `drain`."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.jobs: queue.Queue[Callable[[Any], object] | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="encours-background-writes", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                if self.error is None:
                    job(self.driver)
            except BaseException as error:  # raised again in the caller's thread
                self.error = error
            finally:
                self.jobs.task_done()

    def drain(self) -> None:
        self.jobs.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join()


def _writer_of(connection: Connection) -> _Writer | None:
    writer: _Writer | None = connection.info.get(_WRITER)
    return writer


def _send(connection: Connection, job: Callable[[Any], object]) -> None:
    """Run `job(driver connection)` now, or queue it for the connection's background writer."""
    writer = _writer_of(connection)
    if writer is not None:
        writer.jobs.put(job)
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    job(driver)


_DRAIN_BEFORE = ("before_cursor_execute", "commit", "rollback", "savepoint", "rollback_savepoint",
                 "release_savepoint")


@contextmanager
def background_writes(session: Session) -> Iterator[None]:
    """Within the block, on PostgreSQL, the bulk writes of `insert_rows` and `update_rows` need no
    answer: they are queued for a thread that sends them on the session's connection, in order,
    while the caller goes on building the next rows; the server checks one batch's foreign keys
    while the next is built (bench/RESULTS.md, 2026-12-05 bank8). Any other statement on that
    connection, and the end of the block, first waits for what is queued, so everything runs in
    the order written, in the caller's one transaction; a write that failed is raised there (then
    the caller rolls back: nothing half written stays). Elsewhere the writes run as they come."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    session.flush()
    connection = session.connection()
    if _writer_of(connection) is not None:  # nested: the outer block's writer serves
        yield
        return
    driver = connection.connection.driver_connection
    writer = _Writer(driver)

    def drain(*_args: Any, **_kwargs: Any) -> None:
        writer.drain()

    connection.info[_WRITER] = writer
    for name in _DRAIN_BEFORE:
        event.listen(connection, name, drain)
    try:
        yield
        writer.drain()
    finally:
        for name in _DRAIN_BEFORE:
            event.remove(connection, name, drain)
        connection.info.pop(_WRITER, None)
        try:
            writer.drain()  # after an error: nothing may still be using the connection
        except BaseException:  # the first error is the one already on its way
            pass
        writer.stop()


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """New rows of one table, each with the same keys, as `session.execute(insert(table), rows)`
    writes them (Python-side column defaults and type conversions included).

    On PostgreSQL, one COPY: an executemany is one statement per row there, so the table's
    statement triggers (the running totals, migrations 0019_bank_perf and 0026_pg_totals) would
    fire once per row; multi-row INSERTs cost more to build than the rows (bench/RESULTS.md)."""
    if not rows:
        return
    session.flush()
    connection = session.connection()
    dialect = connection.dialect
    given = list(rows[0])
    filled = [c for c in table.columns if c.name not in given and c.default is not None]
    if dialect.name != "postgresql" or any(
            not (c.default.is_scalar or c.default.is_callable) for c in filled):  # type: ignore[union-attr]
        session.execute(insert(table), list(rows))
        return
    columns = [table.c[name] for name in given] + filled
    processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    defaults = [c.default for c in filled]
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in columns)
    sql = f"COPY {dialect.identifier_preparer.format_table(table)} ({names}) FROM STDIN"
    data = []
    for row in rows:
        written = [row[name] for name in given]
        written += [default.arg if default.is_scalar else default.arg(None)  # type: ignore[union-attr]
                    for default in defaults]
        data.append([process(value) if process is not None else value
                     for process, value in zip(processors, written)])

    def copy_rows(driver: Any) -> None:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            for values in data:
                copy.write_row(values)

    _send(connection, copy_rows)


def insert_rows_with_ids(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """`insert_rows` for a table with an integer `id` from a sequence: the new rows' ids, in the
    order of `rows`. On PostgreSQL the ids are drawn from the sequence first, in one query, and the
    rows go in with them in one COPY; elsewhere an INSERT … RETURNING."""
    if not rows:
        return []
    if session.get_bind().dialect.name != "postgresql":
        return list(session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), list(rows)))
    ids = reserve_ids(session, table, len(rows))
    insert_rows(session, table, [{"id": row_id, **row} for row_id, row in zip(ids, rows)])
    return ids


# Per database (its URL) and table: what the table's statistics said it holds when last read, and
# the rows analyze_if_outgrown was told of since. Statistics only grow the figure (ANALYZE of more
# rows); a table emptied while the process runs is seen late, when writes outnumber the old figure.
_KNOWN_ROWS: dict[tuple[str, str], list[float]] = {}


def analyze_if_outgrown(session: Session, table: Table, written: int) -> None:
    """On PostgreSQL, ANALYZE `table` when `written` new rows outnumber what its statistics say it
    holds (never analyzed: -1). A connection plans the statements of its triggers once and keeps
    the plans until the table's statistics change: planned on an empty table, the running totals'
    recount read the whole table once per row it touched, more with every batch of a first load,
    until autovacuum analyzed it (bench/RESULTS.md, 2026-12-05). Inside the transaction, which it
    sees whole (its lock, held to the end, only keeps out another ANALYZE or VACUUM of the table):
    in practice the first batch of a first load (ANALYZE reads a sample of at most 30,000 rows).
    The statistics are read again only once the rows written since the last reading, in this
    process, outnumber what they said: an API request of 1,000 invoices into a book of millions
    asks nothing (bench/RESULTS.md, 2026-12-05 18:38)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    key = (bind.engine.url.render_as_string(hide_password=True), table.name)
    known = _KNOWN_ROWS.get(key)
    if known is not None:
        known[1] += written
        if known[1] <= known[0]:
            return
    rows = float(session.execute(text("SELECT reltuples FROM pg_class WHERE oid = CAST(:name AS regclass)"),
                                 {"name": table.name}).scalar_one())
    if rows < written:
        session.execute(text(f"ANALYZE {bind.dialect.identifier_preparer.format_table(table)}"))
        rows = float(written)  # at least: the sample saw them
    _KNOWN_ROWS[key] = [rows, 0.0]


UPDATE_ROWS_BATCH = 20_000


def update_rows(session: Session, table: Table, keys: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of one table each changed its own way: a row gives the `keys` columns that find it and
    the new values of its other columns (the same columns in every row). Python-side `onupdate`
    values (an `updated_at`) are set as an UPDATE through Core sets them.

    On PostgreSQL one UPDATE … FROM unnest(…) per 20,000 rows, each column sent as one array
    parameter, elsewhere an executemany: there an executemany is one statement per row, each
    parsed, planned and run on its own, and each firing the table's statement triggers (the
    running totals, migration 0026_pg_totals); a VALUES list of bound rows cost more to compile
    and send than the update itself (bench/RESULTS.md)."""
    if not rows:
        return
    names = list(rows[0])
    changed = [name for name in names if name not in keys]
    stamped = [c for c in table.columns if c.name not in names and c.onupdate is not None]
    if session.get_bind().dialect.name != "postgresql" or any(
            not (c.onupdate.is_scalar or c.onupdate.is_callable) for c in stamped):  # type: ignore[union-attr]
        session.execute(update(table).where(and_(*(table.c[key] == bindparam(f"k_{key}") for key in keys)))
                        .values({name: bindparam(f"v_{name}") for name in changed}),
                        [{f"{'k' if name in keys else 'v'}_{name}": row[name] for name in names} for row in rows])
        return
    session.flush()
    connection = session.connection()
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    columns = [table.c[name] for name in names]
    processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    sets = [f"{quote(name)} = moved.{quote(name)}" for name in changed]
    sets += [f"{quote(c.name)} = %(s{n})s::{c.type.compile(dialect=dialect)}" for n, c in enumerate(stamped)]
    sql = (f"UPDATE {target} SET {', '.join(sets)} FROM unnest("
           + ", ".join(f"%(c{n})s::{c.type.compile(dialect=dialect)}[]" for n, c in enumerate(columns))
           + f") AS moved ({', '.join(quote(name) for name in names)}) WHERE "
           + " AND ".join(f"{target}.{quote(key)} = moved.{quote(key)}" for key in keys))
    stamps = {f"s{n}": c.onupdate.arg if c.onupdate.is_scalar else c.onupdate.arg(None)  # type: ignore[union-attr]
              for n, c in enumerate(stamped)}
    for start in range(0, len(rows), UPDATE_ROWS_BATCH):
        part = rows[start:start + UPDATE_ROWS_BATCH]
        arrays = {f"c{n}": [row[name] for row in part] if process is None else [process(row[name]) for row in part]
                  for n, (name, process) in enumerate(zip(names, processors))}
        params = {**arrays, **stamps}
        if _writer_of(connection) is None:
            connection.exec_driver_sql(sql, params)
        else:
            _send(connection, functools.partial(_execute, sql, params))


def _execute(sql: str, params: Mapping[str, Any], driver: Any) -> None:
    driver.execute(sql, params)


def reserve_ids(session: Session, table: Table, count: int) -> list[int]:
    """`count` new ids of `table`'s integer primary key `id`, ascending, for rows written next with
    their ids given (so nothing has to read them back). On PostgreSQL taken from the column's
    sequence, which never gives them again; on SQLite the ids after the largest one, as SQLite
    picks them, with the database's write lock taken first and held to the end of the transaction,
    so no other writer can take them meanwhile: refused (RuntimeError) outside a transaction, and a
    read-only transaction that cannot take the lock fails as any write of it would."""
    if count <= 0:
        return []
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        return sorted(session.execute(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)"),
            {"table": table.name, "count": count}).scalars())
    connection = session.connection()
    if not connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        raise RuntimeError(f"reserve_ids({table.name}) on SQLite outside a transaction: another writer "
                           "could take the ids before they are written")
    quoted = connection.dialect.identifier_preparer.format_table(table)
    connection.exec_driver_sql(f"UPDATE {quoted} SET id = id WHERE 0")  # a write that changes nothing: the lock
    top = connection.exec_driver_sql(f"SELECT COALESCE(MAX(id), 0) FROM {quoted}").scalar_one()
    return list(range(top + 1, top + 1 + count))


def make_sessionmaker(engine: Engine, *, write: bool = True) -> sessionmaker[Session]:
    """Sessions for units of work (requests, commands, the worker).

    On SQLite they begin IMMEDIATE: a deferred transaction that reads, then writes after
    another writer committed, fails at once with "database is locked" (busy_timeout cannot
    help). IMMEDIATE waits for the one write lock up front instead. Readers outside these
    sessions still never wait, thanks to WAL.

    `write=False` gives sessions for work that only reads (a page, checking a link): a plain
    deferred BEGIN, so on SQLite they neither wait for nor hold the one write lock (holding it
    while a page renders queued every other request of every process behind it). Such a
    session must not write: SQLite would refuse once another writer has committed. On
    PostgreSQL they run without a transaction (autocommit): at READ COMMITTED each statement
    takes its own snapshot inside a transaction too, so a reader sees exactly what it saw
    before, without the BEGIN and ROLLBACK round trips.
    """
    if engine.dialect.name == "sqlite" and write:
        engine = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    elif engine.dialect.name == "postgresql" and not write:
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_connection(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A Core connection for one short read, from the database of `factory` (read sessions):
    for a hot path where a Session's bookkeeping cost more than its query. Nothing is committed.
    When `factory` is bound to a connection (tests: one rolled-back transaction), that one."""
    bind = factory.kw["bind"]
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.connect() as connection:
        yield connection


@contextmanager
def write_connection(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A Core connection in a transaction of `factory` (write sessions: BEGIN IMMEDIATE on
    SQLite), committed on success, rolled back on error: for one hot write, such as an INSERT,
    that needs no Session. When `factory` is bound to a connection (tests), a savepoint of it."""
    bind = factory.kw["bind"]
    if isinstance(bind, Connection):
        with bind.begin_nested():
            yield bind
        return
    with bind.begin() as connection:
        yield connection


@contextmanager
def statement_connection(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A Core connection of `factory`'s database for ONE writing statement that is a whole
    transaction by itself (an `INSERT ... ON CONFLICT DO NOTHING`, say): on PostgreSQL in
    autocommit, where the statement commits as it returns, without the BEGIN and COMMIT round
    trips; elsewhere (SQLite: BEGIN IMMEDIATE, tests: a savepoint) as `write_connection`."""
    bind = factory.kw["bind"]
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        with bind.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
        return
    with write_connection(factory) as connection:
        yield connection


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _foreign_keys_off(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.execute("PRAGMA foreign_keys=OFF")


# pg_advisory_lock key of `encours db upgrade/downgrade` ("encours" in ASCII, as a bigint).
MIGRATION_LOCK_KEY = int.from_bytes(b"encours", "big")


@contextmanager
def _sqlite_migration_lock(url: str) -> Iterator[None]:
    """An exclusive lock on a file beside the database: a second run waits for the first."""
    import fcntl

    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _migrate(url: str, action: str, revision: str) -> None:
    """Run alembic's upgrade/downgrade, one run at a time per database: a concurrent run waits
    (PostgreSQL: a session advisory lock on the migrating connection; SQLite: a file lock), then
    finds the work done.

    On SQLite, with foreign keys off while it runs: batch migrations rebuild a table as copy,
    DROP, rename, and with foreign keys on, dropping a table that other rows reference fails (or
    would cascade). SQLite ignores `PRAGMA foreign_keys` inside a transaction, so it is set as
    each connection opens, and the keys are checked once the migration is done.
    """
    from alembic import command

    config = alembic_config(url)
    run = getattr(command, action)
    sqlite = make_url(url).get_backend_name() == "sqlite"
    engine = make_engine(url)
    if sqlite:
        event.listen(engine, "connect", _foreign_keys_off)
    try:
        with (_sqlite_migration_lock(url) if sqlite else contextlib.nullcontext()), engine.connect() as connection:
            if not sqlite:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                connection.commit()
            try:
                config.attributes["connection"] = connection
                run(config, revision)
                connection.commit()
                if sqlite:
                    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    connection.rollback()
                    if problems:
                        raise RuntimeError(
                            f"{action} to {revision} left rows with broken foreign keys: {problems[:5]}")
            finally:
                if not sqlite:
                    try:
                        connection.rollback()
                        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                        connection.commit()
                    except SQLAlchemyError:  # a broken connection: closing it (dispose) releases the lock
                        pass
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "heads") -> None:
    _migrate(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    _migrate(url, "downgrade", revision)


@functools.cache
def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://"))


@functools.cache
def migration_heads() -> frozenset[str]:
    """The head revision(s) of the migration scripts (read once per process)."""
    return frozenset(_scripts().get_heads())


@functools.cache
def _lineage(revision: str) -> frozenset[str] | None:
    """`revision` and its ancestors among our scripts; None when the code does not know it."""
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        return frozenset(script.revision for script in _scripts().iterate_revisions(revision, "base"))
    except (CommandError, RevisionError):
        return None


def current_revisions(connection: Connection) -> frozenset[str]:
    from alembic.runtime.migration import MigrationContext

    return frozenset(MigrationContext.configure(connection).get_current_heads())


def schema_problem(connection: Connection) -> str | None:
    """None when this code can run on the database's schema, else a short reason.

    Migrations are written expand-then-contract (README, "Rolling upgrades"), so code runs on
    its own head and on any later schema: the database's revision is the code's head or a
    descendant of it. A revision this code does not know counts as later when the database's
    `schema_revisions` (every revision applied) holds the code's head. Behind the head, or
    on a line of revisions that never passed through it: not ready."""
    current = current_revisions(connection)
    heads = migration_heads()
    if current == heads:
        return None
    if not current:
        return "database not migrated (run `encours db upgrade`)"
    reached: set[str] = set()
    unknown = False
    for revision in current:
        lineage = _lineage(revision)
        if lineage is None:
            unknown = True
        else:
            reached |= lineage
    if unknown and not heads <= reached:
        reached |= _applied_revisions(connection)
    if heads <= reached:
        return None
    return f"database at revision {', '.join(sorted(current))}, migrations head is {', '.join(sorted(heads))}"


def _applied_revisions(connection: Connection) -> set[str]:
    from sqlalchemy import inspect

    if not inspect(connection).has_table("schema_revisions"):
        return set()
    return set(connection.execute(text("SELECT revision FROM schema_revisions")).scalars())


def check_connection(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
