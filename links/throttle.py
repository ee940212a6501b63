"""Fixed-window failure counters kept in the database, so every server process shares them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Exists, bindparam, case, exists, select, type_coerce
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from kernel.clock import clock
from ledger.models import Throttle


_COUNTER = select(Throttle.window_start, Throttle.count).where(Throttle.key == bindparam("key"))


def is_blocked(session: Session | Connection, key: str, limit: int, window_seconds: int) -> bool:
    # A plain row, not an ORM object: asked on every magic-link exchange, where loading an
    # object cost several times the query.
    row = session.execute(_COUNTER, {"key": key}).first()
    if row is None:
        return False
    window_start, count = row  # unpacked: `row.count` reads as the tuple method to a type checker
    if clock.now() - window_start >= timedelta(seconds=window_seconds):
        return False
    return count >= limit


def blocked_clause(key: Any = None, limit: Any = None, since: Any = None) -> Exists:
    """SQL for `is_blocked`, to ask it within another query (the magic-link exchange reads it with the
    link's facts in one statement): the client's `key`, the `limit` and `since` (now minus the window)
    by default the parameters `throttle_key`, `throttle_limit` and `throttle_since` (`blocked_params`),
    or the columns of a batch's questions on the event loop (`links.tokens.LINK_FACTS_ASKED`)."""
    table = Throttle.__table__
    return exists().where(
        table.c.key == (bindparam("throttle_key") if key is None else key),
        table.c.count >= (bindparam("throttle_limit") if limit is None else limit),
        table.c.window_start > (bindparam("throttle_since", type_=table.c.window_start.type) if since is None
                                else since),
    )


def blocked_params(key: str, limit: int, window_seconds: int) -> dict[str, Any]:
    return {"throttle_key": key, "throttle_limit": limit,
            "throttle_since": clock.now() - timedelta(seconds=window_seconds)}


def record_failure(session: Session, key: str, window_seconds: int) -> int:
    """Count one failure; returns the count in the current window.

    One atomic upsert, so concurrent failures from several threads or processes are all
    counted: with a read-then-insert, two first failures both insert (a unique violation on
    PostgreSQL), and on SQLite a read-then-write transaction fails with "database is locked"
    once another writer has committed since it read.
    """
    now = clock.now()
    expired = now - timedelta(seconds=window_seconds)
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    table = Throttle.metadata.tables[Throttle.__tablename__]
    upsert = insert(table).values(key=key, window_start=now, count=1)
    statement = upsert.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "count": case((table.c.window_start <= expired, 1), else_=table.c.count + 1),
            "window_start": case(
                (table.c.window_start <= expired, type_coerce(now, table.c.window_start.type)),
                else_=table.c.window_start,
            ),
        },
    ).returning(table.c.count)
    count = session.execute(statement).scalar_one()
    loaded = session.identity_map.get(identity_key(Throttle, key))
    if loaded is not None:  # keep an object this session already holds in step with the database
        session.refresh(loaded)
    return int(count)
