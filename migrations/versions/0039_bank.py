"""bank entries: one foreign key to their statement, with its account and company, instead of three

Revision ID: 0039_bank
Revises: 0036_plan_claim
Create Date: 2026-12-05 16:00:00
"""
from __future__ import annotations

import re

from alembic import op

revision = "0039_bank"
down_revision = "0036_plan_claim"
branch_labels = None
depends_on = None

# An entry's account and company are its statement's (the import writes them from the same
# account): one composite key says so and is checked once per row, where three keys were checked
# three times per row during a bank import — 100,000 foreign-key checks fewer for a 50,000-entry
# file (bench/RESULTS.md, 2026-12-05 bank8). The statement keeps its own keys to the account and
# the company.
_KEYS = "uq_bank_statements_keys"
_NAME = "fk_bank_entries_statement_id_bank_statements"
_SINGLE = (
    ("fk_bank_entries_account_id_bank_accounts", "account_id", "bank_accounts"),
    ("fk_bank_entries_company_id_companies", "company_id", "companies"),
    ("fk_bank_entries_statement_id_bank_statements", "statement_id", "bank_statements"),
)
_COMPOSITE = (f"CONSTRAINT {_NAME} FOREIGN KEY(statement_id, account_id, company_id) "
              "REFERENCES bank_statements (id, account_id, company_id)")


def _sqlite_rebuild(foreign_keys: list[str]) -> None:
    """SQLite cannot change a table's foreign keys: the table is made again with `foreign_keys`
    (SQLite's own recipe: new table, copy, drop, rename), its indexes and triggers as they were."""
    bind = op.get_bind()
    table_sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'bank_entries'").scalar_one()
    kept = bind.exec_driver_sql(
        "SELECT type, sql FROM sqlite_master WHERE tbl_name = 'bank_entries' AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY type").fetchall()
    body = re.sub(r"CONSTRAINT fk_bank_entries_\w+ FOREIGN KEY\s*\([^)]*\) REFERENCES \w+ \([^)]*\),\s*", "",
                  table_sql)
    body = re.sub(r",\s*CONSTRAINT fk_bank_entries_\w+ FOREIGN KEY\s*\([^)]*\) REFERENCES \w+ \([^)]*\)", "", body)
    assert "FOREIGN KEY" not in body, body
    body = body.replace("CONSTRAINT pk_bank_entries PRIMARY KEY (id), ",
                        "CONSTRAINT pk_bank_entries PRIMARY KEY (id), " + "".join(f"{fk}, " for fk in foreign_keys), 1)
    assert body.count("FOREIGN KEY") == len(foreign_keys), body
    columns = ", ".join(row[1] for row in bind.exec_driver_sql("PRAGMA table_info(bank_entries)"))
    # After a rename SQLite keeps the name quoted: CREATE TABLE "bank_entries".
    op.execute(re.sub(r'^CREATE TABLE "?bank_entries"?', "CREATE TABLE bank_entries_rebuilt", body, count=1))
    op.execute(f"INSERT INTO bank_entries_rebuilt ({columns}) SELECT {columns} FROM bank_entries")
    op.execute("DROP TABLE bank_entries")
    op.execute("ALTER TABLE bank_entries_rebuilt RENAME TO bank_entries")
    for _type, sql in kept:
        op.execute(sql)


def upgrade() -> None:
    op.create_index(_KEYS, "bank_statements", ["id", "account_id", "company_id"], unique=True)
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild([_COMPOSITE])
        return
    for name, _column, _table in _SINGLE:
        op.drop_constraint(name, "bank_entries", type_="foreignkey")
    op.create_foreign_key(_NAME, "bank_entries", "bank_statements", ["statement_id", "account_id", "company_id"],
                          ["id", "account_id", "company_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild([f"CONSTRAINT {name} FOREIGN KEY({column}) REFERENCES {table} (id)"
                         for name, column, table in _SINGLE])
    else:
        op.drop_constraint(_NAME, "bank_entries", type_="foreignkey")
        for name, column, table in _SINGLE:
            op.create_foreign_key(name, "bank_entries", table, [column], ["id"])
    op.drop_index(_KEYS, table_name="bank_statements")
