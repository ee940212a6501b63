"""dashboard aggregates: open items by due date, invoices issued by day, payments by day

Revision ID: 0010_dashboard_days
Revises: 0005_customers
Create Date: 2026-11-26 02:45:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0010_dashboard_days'
down_revision = '0005_customers'
branch_labels = None
depends_on = None


# The dashboard sums a million invoices and every payment of 90 days per request without these:
# three small tables of running totals (ledger.models.OpenItemsByDue, InvoicesIssuedByDay,
# PaymentDay), each row moved by the exact delta of the row that changed (no recount), by
# triggers on invoices, payments and allocations. One row per company, currency and day.

_OPEN_KEY = "company_id, currency, kind, status, due_date"
_ISSUED_KEY = "company_id, currency, issue_date"
_PAY_KEY = "company_id, currency, method, received_on"


def _upsert(table: str, key: str, sums: tuple[str, ...], select: str) -> str:
    """INSERT ... SELECT (always with a WHERE: SQLite needs one before ON CONFLICT) that adds to the row."""
    columns = ", ".join((key, *sums))
    update = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
    return f"INSERT INTO {table} ({columns}) {select} ON CONFLICT ({key}) DO UPDATE SET {update};"


def _statements(days: callable) -> dict[str, list[str]]:
    """The trigger bodies, by (table, event), in SQL both dialects read; `days(later, earlier)` is
    the whole days between two DATE expressions."""

    def open_items(row: str, sign: str) -> str:
        return _upsert("open_items_by_due", _OPEN_KEY, ("open_minor",),
                       f"SELECT {row}.company_id, {row}.currency, {row}.kind, {row}.status, {row}.due_date, "
                       f"{sign}{row}.open_minor WHERE {row}.open_minor > 0")

    def issued(row: str, sign: str) -> str:
        return _upsert("invoices_issued_by_day", _ISSUED_KEY, ("total_minor",),
                       f"SELECT {row}.company_id, {row}.currency, {row}.issue_date, {sign}{row}.total_minor "
                       f"WHERE {row}.kind = 'invoice' AND {row}.status <> 'void'")

    pay_sums = ("collected_minor", "settled_minor", "settled_days_minor")

    def payment(row: str, sign: str) -> str:
        settled = f"(SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a WHERE a.payment_id = {row}.id)"
        settled_days = (f"(SELECT COALESCE(SUM(a.amount_minor * {days(f'{row}.received_on', 'i.issue_date')}), 0) "
                        f"FROM allocations a JOIN invoices i ON i.id = a.invoice_id WHERE a.payment_id = {row}.id)")
        return _upsert("payment_days", _PAY_KEY, pay_sums,
                       f"SELECT c.company_id, {row}.currency, {row}.method, {row}.received_on, "
                       f"{sign}{row}.amount_minor, {sign}{settled}, {sign}{settled_days} "
                       f"FROM customers c WHERE c.id = {row}.customer_id AND {row}.status = 'succeeded' "
                       f"AND {row}.received_on IS NOT NULL")

    def allocation(row: str, sign: str) -> str:
        return _upsert("payment_days", _PAY_KEY, pay_sums,
                       f"SELECT c.company_id, p.currency, p.method, p.received_on, 0, {sign}{row}.amount_minor, "
                       f"{sign}{row}.amount_minor * {days('p.received_on', 'i.issue_date')} "
                       f"FROM payments p JOIN customers c ON c.id = p.customer_id "
                       f"JOIN invoices i ON i.id = {row}.invoice_id "
                       f"WHERE p.id = {row}.payment_id AND p.status = 'succeeded' AND p.received_on IS NOT NULL")

    # An invoice's issue date moved: the days its succeeded payments took to settle it move too.
    reissued = _upsert(
        "payment_days", _PAY_KEY, pay_sums,
        f"SELECT c.company_id, p.currency, p.method, p.received_on, 0, 0, "
        f"SUM(a.amount_minor * ({days('p.received_on', 'NEW.issue_date')} - {days('p.received_on', 'OLD.issue_date')})) "
        f"FROM allocations a JOIN payments p ON p.id = a.payment_id JOIN customers c ON c.id = p.customer_id "
        f"WHERE a.invoice_id = NEW.id AND p.status = 'succeeded' AND p.received_on IS NOT NULL "
        f"GROUP BY c.company_id, p.currency, p.method, p.received_on")
    return {
        "invoices_open_insert": [open_items("NEW", "")],
        "invoices_open_delete": [open_items("OLD", "-")],
        "invoices_open_update": [open_items("OLD", "-"), open_items("NEW", "")],
        "invoices_issued_insert": [issued("NEW", "")],
        "invoices_issued_delete": [issued("OLD", "-")],
        "invoices_issued_update": [issued("OLD", "-"), issued("NEW", "")],
        "invoices_reissued": [reissued],
        "payments_days_insert": [payment("NEW", "")],
        "payments_days_delete": [payment("OLD", "-")],
        "payments_days_update": [payment("OLD", "-"), payment("NEW", "")],
        "allocations_days_insert": [allocation("NEW", "")],
        "allocations_days_delete": [allocation("OLD", "-")],
        "allocations_days_update": [allocation("OLD", "-"), allocation("NEW", "")],
    }


# (name, table, event) for each trigger; UPDATE triggers fire only when a column that counts changed.
_TRIGGERS = (
    ("invoices_open_insert", "invoices", "INSERT"),
    ("invoices_open_delete", "invoices", "DELETE"),
    ("invoices_open_update", "invoices", "UPDATE OF company_id, currency, kind, status, due_date, open_minor"),
    ("invoices_issued_insert", "invoices", "INSERT"),
    ("invoices_issued_delete", "invoices", "DELETE"),
    ("invoices_issued_update", "invoices", "UPDATE OF company_id, currency, kind, status, issue_date, total_minor"),
    ("invoices_reissued", "invoices", "UPDATE OF issue_date"),
    ("payments_days_insert", "payments", "INSERT"),
    ("payments_days_delete", "payments", "DELETE"),
    ("payments_days_update", "payments", "UPDATE OF customer_id, method, amount_minor, currency, status, received_on"),
    ("allocations_days_insert", "allocations", "INSERT"),
    ("allocations_days_delete", "allocations", "DELETE"),
    ("allocations_days_update", "allocations", "UPDATE OF invoice_id, payment_id, amount_minor"),
)


def _sqlite_days(later: str, earlier: str) -> str:
    return f"CAST(julianday({later}) - julianday({earlier}) AS INTEGER)"


def _postgresql_days(later: str, earlier: str) -> str:
    return f"({later} - {earlier})"


def _create_triggers(sqlite: bool) -> None:
    bodies = _statements(_sqlite_days if sqlite else _postgresql_days)
    for name, table, event in _TRIGGERS:
        body = " ".join(bodies[name])
        if sqlite:
            op.execute(f"CREATE TRIGGER tr_{name} AFTER {event} ON {table} BEGIN {body} END")
        else:
            op.execute(f"CREATE FUNCTION encours_{name}() RETURNS trigger AS $$ BEGIN {body} RETURN NULL; END $$ "
                       f"LANGUAGE plpgsql")
            op.execute(f"CREATE TRIGGER tr_{name} AFTER {event} ON {table} FOR EACH ROW "
                       f"EXECUTE FUNCTION encours_{name}()")


def upgrade() -> None:
    op.create_table('open_items_by_due',
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.CHAR(length=3), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('open_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('company_id', 'currency', 'kind', 'status', 'due_date', name=op.f('pk_open_items_by_due'))
    )
    op.create_table('invoices_issued_by_day',
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.CHAR(length=3), nullable=False),
    sa.Column('issue_date', sa.Date(), nullable=False),
    sa.Column('total_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('company_id', 'currency', 'issue_date', name=op.f('pk_invoices_issued_by_day'))
    )
    op.create_table('payment_days',
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.CHAR(length=3), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('received_on', sa.Date(), nullable=False),
    sa.Column('collected_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('settled_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('settled_days_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('company_id', 'currency', 'method', 'received_on', name=op.f('pk_payment_days'))
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    days = _sqlite_days if sqlite else _postgresql_days
    # Existing books: each total counted once from the rows, before the triggers keep it.
    op.execute(f"""INSERT INTO open_items_by_due ({_OPEN_KEY}, open_minor)
        SELECT {_OPEN_KEY}, SUM(open_minor) FROM invoices WHERE open_minor > 0 GROUP BY {_OPEN_KEY}""")
    op.execute(f"""INSERT INTO invoices_issued_by_day ({_ISSUED_KEY}, total_minor)
        SELECT {_ISSUED_KEY}, SUM(total_minor) FROM invoices WHERE kind = 'invoice' AND status <> 'void'
        GROUP BY {_ISSUED_KEY}""")
    op.execute(f"""INSERT INTO payment_days ({_PAY_KEY}, collected_minor, settled_minor, settled_days_minor)
        SELECT c.company_id, p.currency, p.method, p.received_on, SUM(p.amount_minor),
               COALESCE(SUM(s.settled), 0), COALESCE(SUM(s.settled_days), 0)
        FROM payments p JOIN customers c ON c.id = p.customer_id
        LEFT JOIN (SELECT a.payment_id, SUM(a.amount_minor) AS settled,
                          SUM(a.amount_minor * {days('q.received_on', 'i.issue_date')}) AS settled_days
                   FROM allocations a JOIN invoices i ON i.id = a.invoice_id JOIN payments q ON q.id = a.payment_id
                   GROUP BY a.payment_id) s ON s.payment_id = p.id
        WHERE p.status = 'succeeded' AND p.received_on IS NOT NULL
        GROUP BY c.company_id, p.currency, p.method, p.received_on""")
    _create_triggers(sqlite)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name, table, _event in _TRIGGERS:
        if sqlite:
            op.execute(f"DROP TRIGGER IF EXISTS tr_{name}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS tr_{name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS encours_{name}()")
    op.drop_table('payment_days')
    op.drop_table('invoices_issued_by_day')
    op.drop_table('open_items_by_due')
