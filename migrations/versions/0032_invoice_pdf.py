"""invoice pdf: the original invoice PDF an ERP sent through the API, kept in the file storage
and recorded on its invoice (the portal serves it instead of the summary PDF)

Revision ID: 0032_invoice_pdf
Revises: 0027_api_ops
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032_invoice_pdf"
down_revision = "0027_api_ops"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without defaults: a plain ALTER TABLE on both engines, no rewrite of the book.
    op.add_column("invoices", sa.Column("pdf_key", sa.String(32), nullable=True))
    op.add_column("invoices", sa.Column("pdf_size", sa.Integer(), nullable=True))
    op.add_column("invoices", sa.Column("pdf_sha256", sa.String(64), nullable=True))
    op.add_column("invoices", sa.Column("pdf_uploaded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("pdf_uploaded_at")
        batch.drop_column("pdf_sha256")
        batch.drop_column("pdf_size")
        batch.drop_column("pdf_key")
