"""the ERP API: keys, idempotent replies, invoices settled outside Encours, the snapshot guard

Revision ID: 0017_api
Revises: 0015_ops
Create Date: 2026-12-05 04:50:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = "0017_api"
down_revision = "0016_checkout_reservations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=20), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=254), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name=op.f("fk_api_keys_company_id_companies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("company_id", "name", name="uq_api_keys_company_name"),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_company_id"), "api_keys", ["company_id"])
    op.create_table(
        "api_idempotency",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], ondelete="CASCADE",
                                name=op.f("fk_api_idempotency_api_key_id_api_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_idempotency")),
        sa.UniqueConstraint("api_key_id", "key", name="uq_api_idempotency_key"),
    )
    # Plain ADD COLUMNs: a batch (copy) of invoices on SQLite would drop the dashboard triggers.
    op.add_column("invoices", sa.Column("settled_outside_minor", sa.BigInteger(), nullable=False,
                                        server_default="0"))
    op.add_column("invoices", sa.Column("settled_outside_on", sa.Date(), nullable=True))
    op.create_index("ix_invoices_company_updated", "invoices", ["company_id", "updated_at", "id"])
    op.add_column("companies", sa.Column("snapshot_max_close_bps", sa.Integer(), nullable=False,
                                         server_default="2000"))


def downgrade() -> None:
    op.drop_column("companies", "snapshot_max_close_bps")
    op.drop_index("ix_invoices_company_updated", table_name="invoices")
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+) keeps the table and so its triggers.
    op.drop_column("invoices", "settled_outside_on")
    op.drop_column("invoices", "settled_outside_minor")
    op.drop_table("api_idempotency")
    op.drop_index(op.f("ix_api_keys_company_id"), table_name="api_keys")
    op.drop_table("api_keys")
