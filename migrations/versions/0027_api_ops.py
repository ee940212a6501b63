"""api ops: the webhook delivery log paged newest first within one state, from an index

Revision ID: 0027_api_ops
Revises: 0022_journey
"""
from __future__ import annotations

from alembic import op

revision = "0027_api_ops"
down_revision = "0022_journey"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webhook_deliveries_status", "webhook_deliveries", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_status", table_name="webhook_deliveries")
