"""Bring a PostgreSQL book to the state a server in service is in before `run.py` measures on it.

A fresh copy of the bench book (`CREATE DATABASE … TEMPLATE`) holds its tables that the book
leaves empty (`link_opens`, `audit_events`, `webhook_events`, `webhook_deliveries`, …) analyzed
as empty. The app's hot statements run as server-side prepared statements (psycopg prepares a
statement after five runs), whose generic plan is kept until the tables' statistics change: planned
on an empty `link_opens`, the magic-link check scanned the whole table once per check while a run
filled it, until autovacuum analyzed it (bench/RESULTS.md, 2026-12-05 18:38). A server in service
has long analyzed those tables at their real size, so `run.py` first runs each scenario that
writes them once, short and uncounted, then `VACUUM (ANALYZE)`s the tables that pass wrote, as
autovacuum would within its next round. Costs a real server keeps paying stay in the figures:
autovacuum during a measured run, full-page writes after a checkpoint.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

# Each table's rows written (the cumulative counters a backend sends when it goes idle or ends)
# and what its statistics say it holds.
STATS_SQL = """
SELECT s.relname, s.n_tup_ins + s.n_tup_upd + s.n_tup_del AS written, c.reltuples
FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
WHERE s.schemaname = current_schema()
ORDER BY s.relname
"""

Counters = Sequence[tuple[str, int, float]]


def to_settle(before: Counters, after: Counters) -> tuple[list[str], list[str]]:
    """The tables to `VACUUM (ANALYZE)` after a warm-up, from two readings (`relname`, rows written,
    `reltuples`): those it wrote, and the others still analyzed as empty (whatever the counters,
    which a backend may not have sent yet; an empty table costs nothing to vacuum)."""
    earlier = {name: written for name, written, _ in before}
    written = [name for name, count, _ in after if count > earlier.get(name, 0)]
    return written, [name for name, _, known in after if known <= 0 and name not in written]


def empty(counters: Counters) -> list[str]:
    """The tables whose statistics say they are empty: plans made on them assume so."""
    return [name for name, _, known in counters if known <= 0]


def table_counters(url: str) -> list[tuple[str, int, float]]:
    """Each table's rows written so far and its `reltuples`."""
    from kernel.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return _counters(connection)
    finally:
        engine.dispose()


def vacuum_analyze_written(url: str, before: Counters) -> dict[str, Any]:
    """`VACUUM (ANALYZE)` the tables `to_settle` names since `before` (a `table_counters` reading),
    in autocommit (VACUUM runs outside a transaction). Returns what it did, for the report."""
    from kernel.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            written, still_empty = to_settle(before, _counters(connection))
            started = time.monotonic()
            quote = connection.dialect.identifier_preparer.quote
            for name in written + still_empty:
                connection.exec_driver_sql(f"VACUUM (ANALYZE) {quote(name)}")
            return {"vacuum_analyze_written": written, "vacuum_analyze_empty": still_empty,
                    "vacuum_analyze_s": round(time.monotonic() - started, 2)}
    finally:
        engine.dispose()


def _counters(connection: Any) -> list[tuple[str, int, float]]:
    return [(str(name), int(written), float(known)) for name, written, known in
            connection.exec_driver_sql(STATS_SQL).all()]
