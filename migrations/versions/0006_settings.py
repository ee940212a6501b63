"""settings: staff last login, the company of each audit event

Revision ID: 0006_settings
Revises: 0002
Create Date: 2026-11-25 23:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0006_settings'
down_revision = "0004_fx"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('company_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_audit_events_company_id'), ['company_id'], unique=False)
        batch_op.create_index('ix_audit_events_created', ['created_at'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_audit_events_company_id_companies'), 'companies',
                                    ['company_id'], ['id'])

    # Events written before this revision: their customer tells whose they are.
    op.execute(
        "UPDATE audit_events SET company_id = (SELECT customers.company_id FROM customers "
        "WHERE customers.id = audit_events.customer_id) WHERE customer_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_audit_events_company_id_companies'), type_='foreignkey')
        batch_op.drop_index('ix_audit_events_created')
        batch_op.drop_index(batch_op.f('ix_audit_events_company_id'))
        batch_op.drop_column('company_id')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('last_login_at')
