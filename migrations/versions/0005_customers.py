"""customer notes; indexes for the back-office lists

Revision ID: 0005_customers
Revises: 0002
Create Date: 2026-11-25 23:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005_customers'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('customer_notes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_customer_notes_author_id_users')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_customer_notes_customer_id_customers'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_notes'))
    )
    with op.batch_alter_table('customer_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_notes_customer_id'), ['customer_id'], unique=False)

    # Plain op.create_index (not batch): batch mode on SQLite would copy the million-row tables.
    op.create_index('ix_invoices_open_by_customer', 'invoices',
                    ['customer_id', 'currency', 'kind', 'status', 'due_date', 'open_minor'], unique=False,
                    sqlite_where=sa.text('open_minor > 0'), postgresql_where=sa.text('open_minor > 0'))
    op.create_index('ix_invoices_due_date', 'invoices', ['due_date', 'id'], unique=False)
    op.create_index('ix_customers_name', 'customers', ['name', 'id'], unique=False)
    op.create_index('ix_customers_collector', 'customers', ['collector_id'], unique=False)
    op.create_index('ix_payments_created', 'payments', ['created_at', 'id'], unique=False)
    op.create_index('ix_webhook_events_received', 'webhook_events', ['received_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_events_received', table_name='webhook_events')
    op.drop_index('ix_payments_created', table_name='payments')
    op.drop_index('ix_customers_collector', table_name='customers')
    op.drop_index('ix_customers_name', table_name='customers')
    op.drop_index('ix_invoices_due_date', table_name='invoices')
    op.drop_index('ix_invoices_open_by_customer', table_name='invoices')
    with op.batch_alter_table('customer_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_notes_customer_id'))

    op.drop_table('customer_notes')
