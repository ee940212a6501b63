"""checkout reservations: credit reserved until money moves, failure codes, attempts, transfer expiry

Revision ID: 0016_checkout_reservations
Revises: 0010_dashboard_days
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_checkout_reservations"
down_revision = "0012_payment_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transfer_expiry_days", sa.Integer(), server_default="10", nullable=False))
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failure_code", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))
        # Checkouts made before this revision applied their credit when they were made: true for them.
        batch_op.add_column(sa.Column("credit_applied", sa.Boolean(), server_default=sa.true(), nullable=False))
    # Plain ALTERs, no batch copy: SQLite triggers on invoices name the allocations table. No foreign
    # key either (SQLite cannot add one to a table in place); the column only ever holds checkout ids.
    op.add_column("allocations", sa.Column("credit_for_checkout_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("allocations", "credit_for_checkout_id")
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.drop_column("credit_applied")
        batch_op.drop_column("attempt")
        batch_op.drop_column("failure_code")
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.drop_column("transfer_expiry_days")
