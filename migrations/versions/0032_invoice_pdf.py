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
    # Plain DROP COLUMN (SQLite 3.35+): a batch copy of invoices would trip the triggers that name it.
    for column in ("pdf_uploaded_at", "pdf_sha256", "pdf_size", "pdf_key"):
        op.drop_column("invoices", column)
