"""session versions: logging out ends a session on the server, not only in the browser

Revision ID: 0011_session_versions
Revises: 0010_dashboard_days
Create Date: 2026-12-05 03:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = "0011_session_versions"
down_revision = "0013_bank_reconciliation"
branch_labels = None
depends_on = None


# A session cookie carries the version it was opened under; bumping the version (sign-out,
# password change) makes every copy of the cookie worthless. Contacts get their own counter:
# signing out must not revoke the links a debtor was emailed (that is `link_version`).
def upgrade() -> None:
    for table in ("users", "contacts"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("session_version", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    for table in ("users", "contacts"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("session_version")
