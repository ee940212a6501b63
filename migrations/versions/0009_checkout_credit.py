"""checkout credit: the customer's credit a checkout applied before charging the rest

Revision ID: 0009_checkout_credit
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_checkout_credit"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credit_minor", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("checkout_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credit_minor", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("checkout_lines", schema=None) as batch_op:
        batch_op.drop_column("credit_minor")
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.drop_column("credit_minor")
