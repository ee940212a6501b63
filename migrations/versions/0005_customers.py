"""customer notes; indexes for the back-office lists

Revision ID: 0005_customers
Revises: 0002
Create Date: 2026-11-25 23:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005_customers'
down_revision = "0008_scale"
branch_labels = None
depends_on = None


# The customers list sorts 50,000 customers by what they owe without summing a million invoices
# per request: these triggers keep one row of sort keys per customer (ledger.models.CustomerBalance).
# Each recomputes the customer's row from its open invoices (the partial index covers them).
_CHASED = "kind = 'invoice' AND status IN ('open', 'partially_paid')"


def _aggregate(customer: str, far: str) -> str:
    return f"""
        SELECT COALESCE(MAX(s), 0), COALESCE(MAX(o), 0), COALESCE(MIN(d), {far}) FROM (
          SELECT SUM(CASE WHEN kind = 'credit_note' THEN -open_minor ELSE open_minor END) AS s,
                 SUM(CASE WHEN {_CHASED} AND due_date < (SELECT as_of FROM balance_state WHERE id = 1)
                          THEN open_minor ELSE 0 END) AS o,
                 MIN(CASE WHEN {_CHASED} THEN due_date END) AS d
          FROM invoices WHERE customer_id = {customer} AND open_minor > 0 AND status <> 'void'
          GROUP BY currency) AS per_currency"""


def _sqlite_triggers() -> list[str]:
    far = "'9999-12-31'"

    def refresh(customer: str) -> str:
        return (f"UPDATE customer_balances SET (outstanding_minor, overdue_minor, oldest_due) = "
                f"({_aggregate(customer, far)}) WHERE customer_id = {customer};")

    return [
        "CREATE TRIGGER tr_customers_balance AFTER INSERT ON customers BEGIN "
        "INSERT OR IGNORE INTO customer_balances (customer_id, outstanding_minor, overdue_minor, oldest_due) "
        "VALUES (NEW.id, 0, 0, '9999-12-31'); END",
        f"CREATE TRIGGER tr_invoices_balance_insert AFTER INSERT ON invoices BEGIN {refresh('NEW.customer_id')} END",
        f"CREATE TRIGGER tr_invoices_balance_delete AFTER DELETE ON invoices BEGIN {refresh('OLD.customer_id')} END",
        "CREATE TRIGGER tr_invoices_balance_update AFTER UPDATE OF customer_id, currency, kind, status, due_date, "
        f"open_minor ON invoices BEGIN {refresh('OLD.customer_id')} {refresh('NEW.customer_id')} END",
    ]


def _postgresql_triggers() -> list[str]:
    far = "DATE '9999-12-31'"
    return [
        f"""CREATE FUNCTION encours_refresh_customer_balance(cid integer) RETURNS void AS $$
        BEGIN
          -- Lock first, then read in a new statement: under READ COMMITTED it sees what a concurrent
          -- writer of the same customer committed while we waited.
          PERFORM 1 FROM customer_balances WHERE customer_id = cid FOR UPDATE;
          UPDATE customer_balances SET (outstanding_minor, overdue_minor, oldest_due) =
            ({_aggregate('cid', far)}) WHERE customer_id = cid;
        END $$ LANGUAGE plpgsql""",
        """CREATE FUNCTION encours_invoices_balance() RETURNS trigger AS $$
        BEGIN
          IF TG_OP IN ('UPDATE', 'DELETE') THEN PERFORM encours_refresh_customer_balance(OLD.customer_id); END IF;
          IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.customer_id <> OLD.customer_id) THEN
            PERFORM encours_refresh_customer_balance(NEW.customer_id);
          END IF;
          RETURN NULL;
        END $$ LANGUAGE plpgsql""",
        """CREATE FUNCTION encours_customers_balance() RETURNS trigger AS $$
        BEGIN
          INSERT INTO customer_balances (customer_id, outstanding_minor, overdue_minor, oldest_due)
            VALUES (NEW.id, 0, 0, DATE '9999-12-31') ON CONFLICT DO NOTHING;
          RETURN NULL;
        END $$ LANGUAGE plpgsql""",
        "CREATE TRIGGER tr_customers_balance AFTER INSERT ON customers FOR EACH ROW "
        "EXECUTE FUNCTION encours_customers_balance()",
        "CREATE TRIGGER tr_invoices_balance AFTER INSERT OR DELETE OR UPDATE OF customer_id, currency, kind, status, "
        "due_date, open_minor ON invoices FOR EACH ROW EXECUTE FUNCTION encours_invoices_balance()",
    ]


def upgrade() -> None:
    op.create_table('customer_balances',
    sa.Column('customer_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('outstanding_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('overdue_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('oldest_due', sa.Date(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_customer_balances_customer_id_customers'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_customer_balances'))
    )
    op.create_index('ix_customer_balances_outstanding', 'customer_balances', ['outstanding_minor', 'customer_id'])
    op.create_index('ix_customer_balances_overdue', 'customer_balances', ['overdue_minor', 'customer_id'])
    op.create_index('ix_customer_balances_oldest', 'customer_balances', ['oldest_due', 'customer_id'])
    op.create_table('balance_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_balance_state'))
    )
    op.execute("INSERT INTO balance_state (id, as_of) VALUES (1, NULL)")
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
    op.create_index('ix_invoices_open_per_customer', 'invoices',
                    ['customer_id', 'currency', 'kind', 'status', 'due_date', 'open_minor'], unique=False,
                    sqlite_where=sa.text('open_minor > 0'), postgresql_where=sa.text('open_minor > 0'))
    op.create_index('ix_invoices_due_date', 'invoices', ['due_date', 'id'], unique=False)
    op.create_index('ix_customers_name', 'customers', ['name', 'id'], unique=False)
    # ix_customers_collector comes with 0004_fx.
    op.create_index('ix_customers_segment', 'customers', ['company_id', 'segment'], unique=False)
    op.create_index('ix_payments_created', 'payments', ['created_at', 'id'], unique=False)
    op.create_index('ix_webhook_events_received', 'webhook_events', ['received_at', 'id'], unique=False)

    sqlite = op.get_bind().dialect.name == "sqlite"
    far = "'9999-12-31'" if sqlite else "DATE '9999-12-31'"
    op.execute(f"INSERT INTO customer_balances (customer_id, outstanding_minor, overdue_minor, oldest_due) "
               f"SELECT id, 0, 0, {far} FROM customers")
    # Existing books: every customer with open invoices, in one pass over the partial index.
    op.execute(f"""
        UPDATE customer_balances SET outstanding_minor = agg.s, oldest_due = COALESCE(agg.d, {far})
        FROM (SELECT customer_id, MAX(s) AS s, MIN(d) AS d FROM (
                SELECT customer_id, SUM(CASE WHEN kind = 'credit_note' THEN -open_minor ELSE open_minor END) AS s,
                       MIN(CASE WHEN {_CHASED} THEN due_date END) AS d
                FROM invoices WHERE open_minor > 0 AND status <> 'void' GROUP BY customer_id, currency) AS c
              GROUP BY customer_id) AS agg
        WHERE agg.customer_id = customer_balances.customer_id""")
    for statement in _sqlite_triggers() if sqlite else _postgresql_triggers():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("tr_customers_balance", "tr_invoices_balance_insert", "tr_invoices_balance_delete",
                     "tr_invoices_balance_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS tr_invoices_balance ON invoices")
        op.execute("DROP TRIGGER IF EXISTS tr_customers_balance ON customers")
        op.execute("DROP FUNCTION IF EXISTS encours_invoices_balance()")
        op.execute("DROP FUNCTION IF EXISTS encours_customers_balance()")
        op.execute("DROP FUNCTION IF EXISTS encours_refresh_customer_balance(integer)")
    op.drop_table('balance_state')
    op.drop_index('ix_customer_balances_oldest', table_name='customer_balances')
    op.drop_index('ix_customer_balances_overdue', table_name='customer_balances')
    op.drop_index('ix_customer_balances_outstanding', table_name='customer_balances')
    op.drop_table('customer_balances')
    op.drop_index('ix_webhook_events_received', table_name='webhook_events')
    op.drop_index('ix_payments_created', table_name='payments')
    op.drop_index('ix_customers_segment', table_name='customers')
    op.drop_index('ix_customers_name', table_name='customers')
    op.drop_index('ix_invoices_due_date', table_name='invoices')
    op.drop_index('ix_invoices_open_per_customer', table_name='invoices')
    with op.batch_alter_table('customer_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_notes_customer_id'))

    op.drop_table('customer_notes')
