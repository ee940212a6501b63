"""schema_revisions: every revision applied, so older code can tell a newer schema from a foreign one

Revision ID: 0015_ops
Revises: 0010_dashboard_days
Create Date: 2026-12-05 03:40:00
"""
from __future__ import annotations

from alembic import context, op
import sqlalchemy as sa


revision = "0015_ops"
down_revision = "0010_dashboard_days"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "schema_revisions",
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("revision", name=op.f("pk_schema_revisions")),
    )
    # The revisions applied before this table existed: this one's ancestors (env.py records the
    # later ones as they are applied). Walked at run time, so re-chaining at merge keeps it true.
    ancestors = [script.revision for script in context.script.iterate_revisions(revision, "base")]
    op.bulk_insert(table, [{"revision": name} for name in ancestors])


def downgrade() -> None:
    op.drop_table("schema_revisions")
