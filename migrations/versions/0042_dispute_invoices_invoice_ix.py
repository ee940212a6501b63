"""dispute_invoices indexed by invoice: its primary key (dispute_id, invoice_id) serves reads by
dispute only, so a read by invoice scanned the table (the revision id is at most 32 characters:
alembic_version's column)

Revision ID: 0042_dispute_invoices_invoice_ix
Revises: 0041_payment_moves
Create Date: 2026-12-06 09:40:00
"""
from __future__ import annotations

from alembic import op

revision = "0042_dispute_invoices_invoice_ix"
down_revision = "0041_payment_moves"
branch_labels = None
depends_on = None

_INDEX = "ix_dispute_invoices_invoice_id"


def upgrade() -> None:
    op.create_index(_INDEX, "dispute_invoices", ["invoice_id"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="dispute_invoices")
