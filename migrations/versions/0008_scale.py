"""link opens indexed by contact and time

Revision ID: 0008_scale
Revises: 0002
Create Date: 2026-11-25 23:50:00

Checking whether an open was already recorded (links.tokens.check_link) reads a
contact's opens of the last minutes: by (contact_id, opened_at) that is a short range, where
the index on contact_id alone made it read every open the contact ever had. The new index
also serves everything the old one did (contact_id is its first column).
"""
from __future__ import annotations

from alembic import op


revision = '0008_scale'
down_revision = "0003_gocardless"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('link_opens', schema=None) as batch_op:
        batch_op.create_index('ix_link_opens_contact_opened', ['contact_id', 'opened_at'], unique=False)
        batch_op.drop_index(batch_op.f('ix_link_opens_contact_id'))


def downgrade() -> None:
    with op.batch_alter_table('link_opens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_opens_contact_id'), ['contact_id'], unique=False)
        batch_op.drop_index('ix_link_opens_contact_opened')
