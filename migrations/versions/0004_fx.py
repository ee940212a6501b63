"""Exchange rates (fx_rates) and the indexes the dashboard's aggregates read

Revision ID: 0004_fx
Revises: 0002
Create Date: 2026-11-25 23:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0004_fx'
down_revision = "0009_checkout_credit"
branch_labels = None
depends_on = None

_OPEN = sa.text("open_minor > 0")


def upgrade() -> None:
    op.create_table('fx_rates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('base', sa.CHAR(length=3), nullable=False),
    sa.Column('quote', sa.CHAR(length=3), nullable=False),
    sa.Column('rate', sa.String(length=32), nullable=False),
    sa.Column('valid_on', sa.Date(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('base <> quote', name=op.f('ck_fx_rates_pair')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fx_rates')),
    sa.UniqueConstraint('base', 'quote', 'valid_on', name='uq_fx_rates_pair_day')
    )
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index('ix_customers_collector', ['collector_id'], unique=False)
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.create_index('ix_invoices_open_items',
                              ['company_id', 'currency', 'kind', 'status', 'due_date', 'open_minor', 'customer_id'],
                              unique=False, sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.create_index('ix_invoices_open_by_customer',
                              ['company_id', 'currency', 'customer_id', 'kind', 'status', 'due_date', 'open_minor'],
                              unique=False, sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.create_index('ix_invoices_issued',
                              ['issue_date', 'company_id', 'currency', 'kind', 'status', 'total_minor', 'customer_id'],
                              unique=False)
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index('ix_payments_received',
                              ['status', 'received_on', 'currency', 'method', 'amount_minor', 'customer_id'],
                              unique=False)
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.create_index('ix_allocations_payment_invoice', ['payment_id', 'invoice_id', 'currency', 'amount_minor'],
                              unique=False)
    with op.batch_alter_table('link_opens', schema=None) as batch_op:
        batch_op.create_index('ix_link_opens_opened_at', ['opened_at'], unique=False)
    with op.batch_alter_table('reminders', schema=None) as batch_op:
        batch_op.create_index('ix_reminders_outbox', ['outbox_id'], unique=False)
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_sent', ['status', 'sent_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_sent')
    with op.batch_alter_table('reminders', schema=None) as batch_op:
        batch_op.drop_index('ix_reminders_outbox')
    with op.batch_alter_table('link_opens', schema=None) as batch_op:
        batch_op.drop_index('ix_link_opens_opened_at')
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.drop_index('ix_allocations_payment_invoice')
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('ix_payments_received')
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_index('ix_invoices_issued')
        batch_op.drop_index('ix_invoices_open_by_customer')
        batch_op.drop_index('ix_invoices_open_items')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index('ix_customers_collector')
    op.drop_table('fx_rates')
