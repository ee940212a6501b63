"""reminder claims: one worker plans a company's daily reminder run, the others skip it

Revision ID: 0036_plan_claim
Revises: 0026_pg_totals
Create Date: 2026-12-05 12:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0036_plan_claim"
down_revision = "0026_pg_totals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reminder_claims",
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("run_date", sa.Date(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], ondelete="CASCADE",
                                name=op.f("fk_reminder_claims_company_id_companies")),
        sa.PrimaryKeyConstraint("company_id", "run_date", name=op.f("pk_reminder_claims")),
    )


def downgrade() -> None:
    op.drop_table("reminder_claims")
