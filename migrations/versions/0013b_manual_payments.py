"""payments recorded by hand: their reference (cheque number...) and the cancelled status

Revision ID: 0013b_manual_payments
Revises: 0013_bank_reconciliation (the lead re-chains at merge; it needs only 0010_dashboard_days)
Create Date: 2026-12-05 03:50:00
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0013b_manual_payments"
down_revision = "0017_api"
branch_labels = None
depends_on = None

_OLD_STATUSES = ("pending", "processing", "succeeded", "failed", "refunded", "charged_back")
_NEW_STATUSES = _OLD_STATUSES + ("cancelled",)


def _in(statuses: tuple[str, ...]) -> str:
    return f"status IN ({','.join(repr(s) for s in statuses)})"


def _dashboard_days() -> ModuleType:
    """Migration 0010, for its triggers: SQLite rebuilds a table to change a CHECK, and a rebuilt
    table has lost its triggers."""
    path = Path(__file__).with_name("0010_dashboard_days.py")
    spec = importlib.util.spec_from_file_location("_encours_0010_dashboard_days", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _payment_statuses(new: tuple[str, ...], *, drop_reference: bool = False) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_payments_status"), "payments", type_="check")
        op.create_check_constraint(op.f("ck_payments_status"), "payments", _in(new))
        if drop_reference:
            op.drop_column("payments", "reference")
        return
    # Triggers naming payments (on payments, allocations, invoices) block the table's rebuild:
    # dropped around it and created again as migration 0010 wrote them.
    days = _dashboard_days()
    for name, _table, _event in days._TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS tr_{name}")
    with op.batch_alter_table("payments", recreate="always") as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_payments_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_payments_status"), _in(new))
        if drop_reference:
            batch_op.drop_column("reference")
    days._create_triggers(sqlite=True)


def upgrade() -> None:
    # A new nullable column: no rebuild of the table, on SQLite either.
    op.add_column("payments", sa.Column("reference", sa.String(length=64), nullable=True))
    _payment_statuses(_NEW_STATUSES)


def downgrade() -> None:
    # A cancelled payment settles nothing, as a failed one.
    op.execute("UPDATE payments SET status = 'failed' WHERE status = 'cancelled'")
    _payment_statuses(_OLD_STATUSES, drop_reference=True)
