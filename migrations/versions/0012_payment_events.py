"""payment events: webhook events marked "not ours", partial refunds kept on the payment

Revision ID: 0012_payment_events
Revises: 0010_dashboard_days
Create Date: 2026-12-05 03:50:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0012_payment_events'
down_revision = '0010_dashboard_days'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('webhook_events', sa.Column('outcome', sa.String(length=16), nullable=True))
    op.add_column('webhook_events', sa.Column('note', sa.Text(), nullable=True))
    op.add_column('payments', sa.Column('refunded_minor', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('payments') as batch:
        batch.drop_column('refunded_minor')
    with op.batch_alter_table('webhook_events') as batch:
        batch.drop_column('note')
        batch.drop_column('outcome')
