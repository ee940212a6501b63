"""worker heartbeats: when each background job last ran, and how (read by /metrics)

Revision ID: 0023_ops_observability
Revises: 0013b_manual_payments
Create Date: 2026-12-05 07:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_ops_observability"
down_revision = "0013b_manual_payments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("job", sa.String(64), primary_key=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_ok_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("runs", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("failures", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
