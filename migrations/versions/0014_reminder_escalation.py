"""reminder escalation: companies' reminders on/off, approval and gap; skippable steps; failing addresses; held outbox messages

Revision ID: 0014_reminder_escalation
Revises: 0010_dashboard_days
Create Date: 2026-12-05 03:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0014_reminder_escalation'
down_revision = '0010_dashboard_days'
branch_labels = None
depends_on = None

_OLD_STATUSES = "status IN ('queued','sent','failed')"
_NEW_STATUSES = "status IN ('queued','sent','failed','held','cancelled')"


def upgrade() -> None:
    # Companies that exist keep their reminders on (server default true): an upgrade must not
    # silently stop them. New companies are created with them off (the model's default).
    with op.batch_alter_table('companies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminders_enabled', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('reminders_need_approval', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('reminder_gap_days', sa.Integer(), server_default='7', nullable=False))

    with op.batch_alter_table('scenario_steps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('may_skip', sa.Boolean(), server_default=sa.false(), nullable=False))
    # A notice before the due date never fits an overdue invoice: skipping it was always the rule.
    op.execute("UPDATE scenario_steps SET may_skip = true WHERE offset_days <= 0")

    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_failing_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('email_failure', sa.Text(), nullable=True))

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_outbox_status'), type_='check')
        batch_op.create_check_constraint('status', _NEW_STATUSES)


def downgrade() -> None:
    op.execute("UPDATE outbox SET status = 'failed' WHERE status IN ('held', 'cancelled')")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_outbox_status'), type_='check')
        batch_op.create_check_constraint('status', _OLD_STATUSES)

    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('email_failure')
        batch_op.drop_column('email_failing_since')

    with op.batch_alter_table('scenario_steps', schema=None) as batch_op:
        batch_op.drop_column('may_skip')

    with op.batch_alter_table('companies', schema=None) as batch_op:
        batch_op.drop_column('reminder_gap_days')
        batch_op.drop_column('reminders_need_approval')
        batch_op.drop_column('reminders_enabled')
