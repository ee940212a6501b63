"""api ops: the webhook delivery log paged newest first within one state, from an index; the
API's list of disputed invoices (a rare status) from a partial index instead of a scan of the book

Revision ID: 0027_api_ops
Revises: 0031_reminder_key
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027_api_ops"
down_revision = "0031_reminder_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webhook_deliveries_status", "webhook_deliveries", ["status", "id"])
    op.create_index("ix_invoices_disputed", "invoices", ["company_id", "id"],
                    sqlite_where=sa.text("status = 'disputed'"), postgresql_where=sa.text("status = 'disputed'"))


def downgrade() -> None:
    op.drop_index("ix_invoices_disputed", table_name="invoices")
    op.drop_index("ix_webhook_deliveries_status", table_name="webhook_deliveries")
