"""payments' running totals on PostgreSQL moved by a row trigger that fires only when they move;
the webhook events' pending index holds the unprocessed ones only

Revision ID: 0041_payment_moves
Revises: 0040_mend
Create Date: 2026-12-05 22:20:00
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0041_payment_moves"
down_revision = "0040_mend"
branch_labels = None
depends_on = None

# 0026_pg_totals moved payment_days once per UPDATE statement of payments, from its transition
# tables. PostgreSQL fires such a trigger for every UPDATE of the table, even one that moves no
# column payment_days reads (a webhook's new decline reason, a card, a receipt number), and a
# trigger with transition tables takes neither a column list nor a WHEN condition. A row trigger
# with a WHEN condition is not even queued when its condition is false: payment_days is moved
# only for the rows whose totals' columns changed, by the same deltas (the old row out, the new
# one in, one upsert per key in key order), at the end of the statement as before. Payments are
# updated one row per statement (the ORM's flush, the webhooks' Core writes); INSERT and DELETE
# keep 0026's statement triggers (the bank import inserts payments by the thousand).


def _migration(name: str) -> ModuleType:
    """An earlier migration of this chain, for its definitions (they must stay word for word)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_encours_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_NAME = "payments_totals_update"


def _row_body(totals: ModuleType) -> str:
    rows = [totals._payment("(SELECT OLD.*)", "-"), totals._payment("(SELECT NEW.*)", "")]
    return totals._upsert("payment_days", totals._PAY_KEY, totals._PAY_SUMS, rows)


def _moved(columns: tuple[str, ...]) -> str:
    old = ", ".join(f"OLD.{c}" for c in columns)
    new = ", ".join(f"NEW.{c}" for c in columns)
    return f"({old}) IS DISTINCT FROM ({new})"


def _drop() -> None:
    op.execute(f"DROP TRIGGER IF EXISTS tr_{_NAME} ON payments")
    op.execute(f"DROP FUNCTION IF EXISTS encours_{_NAME}()")


# ix_webhook_events_pending indexed every event by (processed_at, next_attempt_at), but only the
# unprocessed ones are ever looked up by it (the worker's retries, the back-office's failed count):
# each event stored processed, nearly every one, added an entry nobody reads.
_PENDING = "ix_webhook_events_pending"
_UNPROCESSED = "processed_at IS NULL"


def upgrade() -> None:
    op.drop_index(_PENDING, table_name="webhook_events")
    # The same columns (with next_attempt_at alone, SQLite's planner chose the (provider, event_id)
    # index for the worker's query and read every event of the provider).
    op.create_index(_PENDING, "webhook_events", ["processed_at", "next_attempt_at"],
                    sqlite_where=sa.text(_UNPROCESSED), postgresql_where=sa.text(_UNPROCESSED))
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite keeps 0010's row triggers
    totals = _migration("0026_pg_totals")
    _drop()
    op.execute(f"CREATE FUNCTION encours_{_NAME}() RETURNS trigger AS $$ BEGIN {_row_body(totals)} "
               f"RETURN NULL; END $$ LANGUAGE plpgsql")
    op.execute(f"CREATE TRIGGER tr_{_NAME} AFTER UPDATE OF {', '.join(totals._PAYMENT)} ON payments "
               f"FOR EACH ROW WHEN ({_moved(totals._PAYMENT)}) EXECUTE FUNCTION encours_{_NAME}()")


def downgrade() -> None:
    op.drop_index(_PENDING, table_name="webhook_events")
    op.create_index(_PENDING, "webhook_events", ["processed_at", "next_attempt_at"])
    if op.get_bind().dialect.name == "sqlite":
        return
    _drop()
    for name, table, event, tables, body in _migration("0026_pg_totals")._statement_triggers():
        if name == _NAME:
            op.execute(f"CREATE FUNCTION encours_{name}() RETURNS trigger AS $$ BEGIN {' '.join(body)} "
                       f"RETURN NULL; END $$ LANGUAGE plpgsql")
            op.execute(f"CREATE TRIGGER tr_{name} AFTER {event} ON {table} REFERENCING {tables} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION encours_{name}()")
