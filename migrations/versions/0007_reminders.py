"""reminders: which contacts receive reminders

Revision ID: 0007_reminders
Revises: 0002
Create Date: 2026-11-25 23:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0007_reminders'
down_revision = "0006_settings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('receives_reminders', sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('receives_reminders')
