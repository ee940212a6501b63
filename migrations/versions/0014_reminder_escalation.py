"""reminder escalation: companies' reminders on/off, approval and gap; skippable steps; failing addresses; held outbox messages

Revision ID: 0014_reminder_escalation
Revises: 0010_dashboard_days
Create Date: 2026-12-05 03:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0014_reminder_escalation'
down_revision = '0011b_default_reasons'
branch_labels = None
depends_on = None

# The standard formal notice cited the French law in its own words; it now reads the sentence of
# the company's country (France or the UK) from {{ late_charges.law }}, so that a UK company's
# notice no longer cites French law.
_OLD_LAW_SENTENCES = (
    "Conformément à l'article L441-10 du Code de commerce, ce retard rend exigibles de plein droit des pénalités "
    "de retard au taux annuel de {{ late_charges.rate }} ainsi qu'une indemnité forfaitaire pour frais de "
    "recouvrement de {{ late_charges.indemnity }} par facture, soit à ce jour :",
    "Under article L441-10 of the French Commercial Code, late payment makes due, by operation of law, late-payment "
    "interest at the annual rate of {{ late_charges.rate }} and a fixed recovery indemnity of "
    "{{ late_charges.indemnity }} per invoice, that is, as of today:",
)
_LAW_PLACEHOLDER = "{{ late_charges.law }}"

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

    for old in _OLD_LAW_SENTENCES:
        for column in ('body_fr', 'body_en'):
            op.get_bind().execute(sa.text(f"UPDATE scenario_steps SET {column} = REPLACE({column}, :old, :new)"),
                                  {"old": old, "new": _LAW_PLACEHOLDER})

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
