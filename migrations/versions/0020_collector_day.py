"""a collector's day: contact roles (and removal), notes that are tasks (next action, done), saved views of the customers list

Revision ID: 0020_collector_day
Revises: 0013b_manual_payments (the lead re-chains at merge)
Create Date: 2026-12-05 06:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_collector_day"
down_revision = "0019_bank_perf"
branch_labels = None
depends_on = None

_OPEN_TASKS = "done_at IS NULL AND next_action_on IS NOT NULL"


def upgrade() -> None:
    # The address the customers CSV gives is the one the invoices go to: accounts payable.
    op.add_column("contacts", sa.Column("role", sa.String(length=24), nullable=False,
                                        server_default="accounts_payable"))
    op.add_column("contacts", sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))
    # customer_notes is small and nothing points to it: rebuilt on SQLite for the CHECK.
    with op.batch_alter_table("customer_notes") as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="note"))
        batch_op.add_column(sa.Column("next_action_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("done_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("done_by", sa.String(length=254), nullable=True))
        batch_op.create_check_constraint(batch_op.f("ck_customer_notes_kind"), "kind IN ('note','call')")
    op.create_index(op.f("ix_customer_notes_open_tasks"), "customer_notes", ["next_action_on", "customer_id"],
                    unique=False, sqlite_where=sa.text(_OPEN_TASKS), postgresql_where=sa.text(_OPEN_TASKS))
    op.create_table(
        "saved_views",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("shared", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_saved_views_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_views")),
        sa.UniqueConstraint("user_id", "name", name="uq_saved_views_user_name"),
    )
    op.create_index(op.f("ix_saved_views_user_id"), "saved_views", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_saved_views_user_id"), table_name="saved_views")
    op.drop_table("saved_views")
    op.drop_index(op.f("ix_customer_notes_open_tasks"), table_name="customer_notes")
    with op.batch_alter_table("customer_notes") as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_customer_notes_kind"), type_="check")
        batch_op.drop_column("done_by")
        batch_op.drop_column("done_at")
        batch_op.drop_column("next_action_on")
        batch_op.drop_column("kind")
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.drop_column("removed_at")
        batch_op.drop_column("role")
