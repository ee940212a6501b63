"""api key reveals: a new API key, sealed, waits for the one page that shows it (post/redirect/get)

Revision ID: 0040_mend
Revises: 0036_plan_claim
Create Date: 2026-12-05 15:45:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0040_mend"
down_revision = "0039_bank"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_key_reveals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], ondelete="CASCADE",
                                name=op.f("fk_api_key_reveals_api_key_id_api_keys")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_api_key_reveals_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key_reveals")),
    )


def downgrade() -> None:
    op.drop_table("api_key_reveals")
