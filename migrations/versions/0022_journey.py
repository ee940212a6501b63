"""journey: receipt numbers per company, how each payment was made (card brand and last four, mandate), the disputed part of an invoice

Revision ID: 0022_journey
Revises: 0013b_manual_payments
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_journey"
down_revision = "0021_polish"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTERs, no batch copy: SQLite triggers (dashboard day totals) name the payments table.
    op.add_column("companies", sa.Column("receipts_issued", sa.Integer(), server_default="0", nullable=False))
    op.add_column("payments", sa.Column("card_brand", sa.String(length=20), nullable=True))
    op.add_column("payments", sa.Column("card_last4", sa.String(length=4), nullable=True))
    op.add_column("payments", sa.Column("mandate_ref", sa.String(length=64), nullable=True))
    op.add_column("payments", sa.Column("receipt_number", sa.String(length=48), nullable=True))
    op.create_index("uq_payments_receipt_number", "payments", ["receipt_number"], unique=True)
    op.add_column("disputes", sa.Column("disputed_minor", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("disputes", "disputed_minor")
    op.drop_index("uq_payments_receipt_number", table_name="payments")
    for column in ("receipt_number", "mandate_ref", "card_last4", "card_brand"):
        op.drop_column("payments", column)
    op.drop_column("companies", "receipts_issued")
