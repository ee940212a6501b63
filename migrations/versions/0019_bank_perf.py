"""bank reconciliation at scale: who matched an entry, and the dashboard's bank figures as running totals

Revision ID: 0019_bank_perf
Revises: 0013b_manual_payments
Create Date: 2026-12-05 07:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_bank_perf"
down_revision = "0025_webhook_endpoints"
branch_labels = None
depends_on = None

# The dashboard's reconciliation state read every credit entry of a company, joined to its
# matches, on each load. Instead: `bank_entries.matched_by` says who matched an entry (the rule,
# or a person), written with its state, and `bank_entry_days` holds the credits per company,
# currency, what became of them and day, moved by triggers on bank_entries by the exact delta of
# what changed: row by row on SQLite (as migration 0010's tables are), once per statement on
# PostgreSQL (see `_moved`).

_KEY = "company_id, currency, kind, day"
_OPEN = "state IN ('unmatched', 'suggested')"  # the queue's "open" filter, word for word (SQLite matches it so)
_FAR_FUTURE = "'9999-12-31'"  # an entry with neither booking nor value date
_COUNTED = ("company_id", "currency", "amount_minor", "credit_debit", "reversal", "state", "matched_by",
            "booking_date", "value_date")


def _kind(row: str) -> str:
    """What became of a credit, as the dashboard groups it; NULL for what it does not count (money
    out, returned transfers)."""
    return (f"(CASE WHEN {row}.credit_debit <> 'CRDT' OR {row}.reversal THEN NULL "
            f"WHEN {row}.state = 'matched' THEN (CASE WHEN {row}.matched_by = 'person' THEN 'by_hand' "
            f"ELSE 'automatic' END) "
            f"WHEN {row}.state = 'ignored' THEN 'set_aside' "
            f"WHEN {row}.state IN ('unmatched', 'suggested') THEN 'unmatched' ELSE NULL END)")


def _day(row: str) -> str:
    return f"COALESCE({row}.booking_date, {row}.value_date, {_FAR_FUTURE})"


def _move(row: str, sign: str) -> str:
    """Add (sign "") or take away (sign "-") the row's credit; an upsert with a WHERE, as SQLite
    needs one before ON CONFLICT."""
    return (f"INSERT INTO bank_entry_days ({_KEY}, amount_minor, entries) "
            f"SELECT {row}.company_id, {row}.currency, {_kind(row)}, {_day(row)}, {sign}{row}.amount_minor, {sign}1 "
            f"WHERE {_kind(row)} IS NOT NULL "
            f"ON CONFLICT ({_KEY}) DO UPDATE SET amount_minor = bank_entry_days.amount_minor + excluded.amount_minor, "
            f"entries = bank_entry_days.entries + excluded.entries;")


_TRIGGERS = (
    ("bank_entries_days_insert", "INSERT", [_move("NEW", "")]),
    ("bank_entries_days_delete", "DELETE", [_move("OLD", "-")]),
    ("bank_entries_days_update", f"UPDATE OF {', '.join(_COUNTED)}", [_move("OLD", "-"), _move("NEW", "")]),
)


def _moved(tables: tuple[tuple[str, str], ...]) -> str:
    """PostgreSQL, once per statement: the rows of the transition tables summed per key, then one
    upsert per key. Row by row, an import of 50,000 entries would update one row (the day's) 50,000
    times in one transaction, each time past all its earlier versions."""
    rows = " UNION ALL ".join(
        f"SELECT t.company_id, t.currency, {_kind('t')} AS kind, {_day('t')} AS day, "
        f"{sign}t.amount_minor AS amount_minor, {sign}1 AS entries FROM {table} t" for table, sign in tables)
    return (f"INSERT INTO bank_entry_days ({_KEY}, amount_minor, entries) "
            f"SELECT {_KEY}, SUM(amount_minor), SUM(entries) FROM ({rows}) moved WHERE kind IS NOT NULL "
            f"GROUP BY {_KEY} HAVING SUM(amount_minor) <> 0 OR SUM(entries) <> 0 "
            f"ON CONFLICT ({_KEY}) DO UPDATE SET amount_minor = bank_entry_days.amount_minor + excluded.amount_minor, "
            f"entries = bank_entry_days.entries + excluded.entries;")


# PostgreSQL: (name, event, transition tables, body); a trigger with transition tables takes one
# event and no column list.
_STATEMENT_TRIGGERS = (
    ("bank_entries_days_insert", "INSERT", "NEW TABLE AS new_rows", _moved((("new_rows", ""),))),
    ("bank_entries_days_delete", "DELETE", "OLD TABLE AS old_rows", _moved((("old_rows", "-"),))),
    ("bank_entries_days_update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows",
     _moved((("old_rows", "-"), ("new_rows", "")))),
)


def upgrade() -> None:
    with op.batch_alter_table("bank_entries") as batch_op:
        batch_op.add_column(sa.Column("matched_by", sa.String(length=8), nullable=True))
    op.create_table(
        "bank_entry_days",
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("entries", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("company_id", "currency", "kind", "day", name=op.f("pk_bank_entry_days")),
    )
    # The queue's open entries newest first, a page after a page, from this index alone.
    op.create_index("ix_bank_entries_open", "bank_entries", ["id"], unique=False,
                    sqlite_where=sa.text(_OPEN), postgresql_where=sa.text(_OPEN))
    # Existing books: who matched each matched entry, from its confirmed match; then each total
    # counted once from the rows, before the triggers keep it.
    op.execute("""UPDATE bank_entries SET matched_by = CASE WHEN EXISTS (
            SELECT 1 FROM bank_matches m WHERE m.entry_id = bank_entries.id AND m.state = 'confirmed'
            AND m.decided_by_user_id IS NOT NULL) THEN 'person' ELSE 'rule' END
        WHERE state = 'matched'""")
    op.execute(f"""INSERT INTO bank_entry_days ({_KEY}, amount_minor, entries)
        SELECT company_id, currency, kind, day, SUM(amount_minor), COUNT(*) FROM (
            SELECT e.company_id, e.currency, {_kind('e')} AS kind, {_day('e')} AS day, e.amount_minor
            FROM bank_entries e) counted
        WHERE kind IS NOT NULL GROUP BY company_id, currency, kind, day""")
    if op.get_bind().dialect.name == "sqlite":
        for name, event, body in _TRIGGERS:
            op.execute(f"CREATE TRIGGER tr_{name} AFTER {event} ON bank_entries BEGIN {' '.join(body)} END")
        return
    for name, event, tables, statement in _STATEMENT_TRIGGERS:
        op.execute(f"CREATE FUNCTION encours_{name}() RETURNS trigger AS $$ BEGIN {statement} "
                   f"RETURN NULL; END $$ LANGUAGE plpgsql")
        op.execute(f"CREATE TRIGGER tr_{name} AFTER {event} ON bank_entries REFERENCING {tables} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION encours_{name}()")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name, _event, _body in _TRIGGERS:
        if sqlite:
            op.execute(f"DROP TRIGGER IF EXISTS tr_{name}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS tr_{name} ON bank_entries")
            op.execute(f"DROP FUNCTION IF EXISTS encours_{name}()")
    op.drop_table("bank_entry_days")
    op.drop_index("ix_bank_entries_open", table_name="bank_entries")
    with op.batch_alter_table("bank_entries") as batch_op:
        batch_op.drop_column("matched_by")
