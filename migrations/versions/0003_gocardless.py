"""gocardless: the mandate's scheme on the customer, the debtor's instant-first-payment choice

Revision ID: 0003_gocardless
Revises: 0002
Create Date: 2026-11-25 23:50:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003_gocardless'
down_revision = "0007_reminders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gocardless_mandate_scheme', sa.String(length=32), nullable=True))

    with op.batch_alter_table('checkouts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('instant_first_payment', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('checkouts', schema=None) as batch_op:
        batch_op.drop_column('instant_first_payment')

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_column('gocardless_mandate_scheme')
