"""payment events: webhook events marked "not ours", partial refunds kept on the payment

Revision ID: 0012_payment_events
Revises: 0010_dashboard_days
Create Date: 2026-12-05 03:50:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0012_payment_events'
down_revision = '0014_reminder_escalation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('webhook_events', sa.Column('outcome', sa.String(length=16), nullable=True))
    op.add_column('webhook_events', sa.Column('note', sa.Text(), nullable=True))
    op.add_column('payments', sa.Column('refunded_minor', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    # Not a batch (copy-and-rename) on SQLite: triggers on invoices name the payments table and
    # refuse its renaming; SQLite drops a plain column in place (3.35+), as PostgreSQL does.
    for table, column in (("payments", "refunded_minor"), ("webhook_events", "note"), ("webhook_events", "outcome")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
