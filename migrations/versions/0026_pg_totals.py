"""running totals moved once per statement on PostgreSQL

Revision ID: 0026_pg_totals
Revises: 0032_invoice_pdf
Create Date: 2026-12-05 09:40:00
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0026_pg_totals"
down_revision = "0032_invoice_pdf"
branch_labels = None
depends_on = None

# Every table kept by triggers, besides bank_entry_days (per statement since 0019_bank_perf):
#   open_items_by_due, invoices_issued_by_day (on invoices), payment_days (on payments,
#   allocations, and invoices when an issue date moves): migration 0010_dashboard_days;
#   customer_balances (on customers and invoices): 0005_customers, redefined by 0021_polish.
# On PostgreSQL they were moved row by row: an import that pays 20,000 invoices the same day
# updated the day's payment_days row 40,000 times in one transaction, each update past all its
# earlier versions. Here one trigger per table and event reads the statement's transition
# tables and moves each total once per statement, by the same deltas the row triggers summed
# (AFTER ROW triggers also run at the end of the statement, so both see the same state of the
# other tables). SQLite, whose updates leave no versions behind, keeps its row triggers.


def _migration(name: str) -> ModuleType:
    """An earlier migration of this chain, for its definitions (they must stay word for word)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_encours_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_OPEN_KEY = "company_id, currency, kind, status, due_date"
_ISSUED_KEY = "company_id, currency, issue_date"
_PAY_KEY = "company_id, currency, method, received_on"
_PAY_SUMS = ("collected_minor", "settled_minor", "settled_days_minor")
_FAR = "DATE '9999-12-31'"

# The columns each total reads, per table: an updated row whose columns did not change moves nothing.
_INVOICE_OPEN = ("company_id", "currency", "kind", "status", "due_date", "open_minor")
_INVOICE_ISSUED = ("company_id", "currency", "kind", "status", "issue_date", "total_minor")
_INVOICE_BALANCE = ("customer_id", "currency", "kind", "status", "due_date", "open_minor")
_PAYMENT = ("customer_id", "method", "amount_minor", "currency", "status", "received_on")
_ALLOCATION = ("invoice_id", "payment_id", "amount_minor")


def _upsert(table: str, key: str, sums: tuple[str, ...], rows: list[str]) -> str:
    """Add the rows' sums to the table, one upsert per key, keys in order (two writers lock the
    rows they share in the same order); keys whose sums cancel out are not written."""
    moved = " UNION ALL ".join(rows)
    totals = ", ".join(f"SUM({c})" for c in sums)
    nonzero = " OR ".join(f"SUM({c}) <> 0" for c in sums)
    update = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
    return (f"INSERT INTO {table} ({key}, {', '.join(sums)}) SELECT {key}, {totals} FROM ({moved}) moved "
            f"GROUP BY {key} HAVING {nonzero} ORDER BY {key} ON CONFLICT ({key}) DO UPDATE SET {update};")


def _changed(row: str, other: str, columns: tuple[str, ...]) -> str:
    """A condition on `row` of one transition table: no row of the other with its id has the same
    `columns` (an updated row that moves nothing is left out, as a row trigger `UPDATE OF` those
    columns would have moved nothing)."""
    mine = ", ".join(f"{row}.{c}" for c in columns)
    theirs = ", ".join(f"u.{c}" for c in columns)
    return f"NOT EXISTS (SELECT 1 FROM {other} u WHERE u.id = {row}.id AND ({mine}) IS NOT DISTINCT FROM ({theirs}))"


def _from(table: str, other: str | None, columns: tuple[str, ...]) -> tuple[str, str]:
    """(FROM clause, WHERE condition) over one transition table; `other`: its counterpart of an UPDATE."""
    return f"{table} t", _changed("t", other, columns) if other else "TRUE"


def _open_items(table: str, sign: str, other: str | None = None) -> str:
    source, changed = _from(table, other, _INVOICE_OPEN)
    return (f"SELECT t.company_id, t.currency, t.kind, t.status, t.due_date, {sign}t.open_minor AS open_minor "
            f"FROM {source} WHERE t.open_minor > 0 AND {changed}")


def _issued(table: str, sign: str, other: str | None = None) -> str:
    source, changed = _from(table, other, _INVOICE_ISSUED)
    return (f"SELECT t.company_id, t.currency, t.issue_date, {sign}t.total_minor AS total_minor "
            f"FROM {source} WHERE t.kind = 'invoice' AND t.status <> 'void' AND {changed}")


def _payment(table: str, sign: str, other: str | None = None) -> str:
    """A payment's collected amount, and what its allocations settled (as they stand now)."""
    source, changed = _from(table, other, _PAYMENT)
    return (f"SELECT c.company_id, t.currency, t.method, t.received_on, {sign}t.amount_minor AS collected_minor, "
            f"{sign}COALESCE(s.settled, 0) AS settled_minor, {sign}COALESCE(s.days, 0) AS settled_days_minor "
            f"FROM {source} JOIN customers c ON c.id = t.customer_id "
            f"LEFT JOIN LATERAL (SELECT SUM(a.amount_minor) AS settled, "
            f"SUM(a.amount_minor * (t.received_on - i.issue_date)) AS days "
            f"FROM allocations a JOIN invoices i ON i.id = a.invoice_id WHERE a.payment_id = t.id) s ON TRUE "
            f"WHERE t.status = 'succeeded' AND t.received_on IS NOT NULL AND {changed}")


def _allocation(table: str, sign: str, other: str | None = None) -> str:
    source, changed = _from(table, other, _ALLOCATION)
    return (f"SELECT c.company_id, p.currency, p.method, p.received_on, 0 AS collected_minor, "
            f"{sign}t.amount_minor AS settled_minor, "
            f"{sign}t.amount_minor * (p.received_on - i.issue_date) AS settled_days_minor "
            f"FROM {source} JOIN payments p ON p.id = t.payment_id JOIN customers c ON c.id = p.customer_id "
            f"JOIN invoices i ON i.id = t.invoice_id "
            f"WHERE p.status = 'succeeded' AND p.received_on IS NOT NULL AND {changed}")


# An invoice's issue date moved: the days its succeeded payments took to settle it move too.
_REISSUED = ("SELECT c.company_id, p.currency, p.method, p.received_on, 0 AS collected_minor, 0 AS settled_minor, "
             "a.amount_minor * ((p.received_on - n.issue_date) - (p.received_on - o.issue_date)) "
             "AS settled_days_minor "
             "FROM new_rows n JOIN old_rows o ON o.id = n.id AND o.issue_date <> n.issue_date "
             "JOIN allocations a ON a.invoice_id = n.id JOIN payments p ON p.id = a.payment_id "
             "JOIN customers c ON c.id = p.customer_id "
             "WHERE p.status = 'succeeded' AND p.received_on IS NOT NULL")


def _balances(touched: str) -> list[str]:
    """customer_balances of the `touched` customers (a SELECT of customer ids) recounted from their
    open invoices, as migration 0021_polish defines them. Rows locked first, in id order, then read
    in a new statement: under READ COMMITTED it sees what a concurrent writer of the same customer
    committed while we waited."""
    polish = _migration("0021_polish")
    chased = polish._CHASED
    return [
        f"PERFORM 1 FROM customer_balances WHERE customer_id IN ({touched}) ORDER BY customer_id FOR UPDATE;",
        f"""UPDATE customer_balances SET (outstanding_minor, overdue_minor, oldest_due) =
              (COALESCE(agg.s, 0), COALESCE(agg.o, 0), COALESCE(agg.d, {_FAR}))
            FROM (SELECT touched.customer_id, MAX(pc.s) AS s, MAX(pc.o) AS o, MIN(pc.d) AS d
                  FROM (SELECT DISTINCT customer_id FROM ({touched}) t) touched LEFT JOIN (
                    SELECT customer_id, {polish._OUTSTANDING} AS s,
                           SUM(CASE WHEN {chased} AND due_date < (SELECT as_of FROM balance_state WHERE id = 1)
                                    THEN open_minor ELSE 0 END) AS o,
                           MIN(CASE WHEN {chased} THEN due_date END) AS d
                    FROM invoices WHERE customer_id IN ({touched}) AND open_minor > 0 AND status <> 'void'
                    GROUP BY customer_id, currency) pc ON pc.customer_id = touched.customer_id
                  GROUP BY touched.customer_id) agg
            WHERE customer_balances.customer_id = agg.customer_id;""",
    ]


_TOUCHED_BY_UPDATE = (f"SELECT o.customer_id FROM old_rows o WHERE {_changed('o', 'new_rows', _INVOICE_BALANCE)} "
                      f"UNION SELECT n.customer_id FROM new_rows n WHERE {_changed('n', 'old_rows', _INVOICE_BALANCE)}")


def _statement_triggers() -> list[tuple[str, str, str, str, list[str]]]:
    """(name, table, event, transition tables, body) of each PostgreSQL trigger; a trigger with
    transition tables takes one event and no column list."""
    new, old, both = "NEW TABLE AS new_rows", "OLD TABLE AS old_rows", "OLD TABLE AS old_rows NEW TABLE AS new_rows"
    return [
        ("customers_totals_insert", "customers", "INSERT", new, [
            f"INSERT INTO customer_balances (customer_id, outstanding_minor, overdue_minor, oldest_due) "
            f"SELECT id, 0, 0, {_FAR} FROM new_rows ORDER BY id ON CONFLICT DO NOTHING;"]),
        ("invoices_totals_insert", "invoices", "INSERT", new, [
            _upsert("open_items_by_due", _OPEN_KEY, ("open_minor",), [_open_items("new_rows", "")]),
            _upsert("invoices_issued_by_day", _ISSUED_KEY, ("total_minor",), [_issued("new_rows", "")]),
            *_balances("SELECT customer_id FROM new_rows")]),
        ("invoices_totals_delete", "invoices", "DELETE", old, [
            _upsert("open_items_by_due", _OPEN_KEY, ("open_minor",), [_open_items("old_rows", "-")]),
            _upsert("invoices_issued_by_day", _ISSUED_KEY, ("total_minor",), [_issued("old_rows", "-")]),
            *_balances("SELECT customer_id FROM old_rows")]),
        ("invoices_totals_update", "invoices", "UPDATE", both, [
            _upsert("open_items_by_due", _OPEN_KEY, ("open_minor",),
                    [_open_items("old_rows", "-", "new_rows"), _open_items("new_rows", "", "old_rows")]),
            _upsert("invoices_issued_by_day", _ISSUED_KEY, ("total_minor",),
                    [_issued("old_rows", "-", "new_rows"), _issued("new_rows", "", "old_rows")]),
            _upsert("payment_days", _PAY_KEY, _PAY_SUMS, [_REISSUED]),
            *_balances(_TOUCHED_BY_UPDATE)]),
        ("payments_totals_insert", "payments", "INSERT", new, [
            _upsert("payment_days", _PAY_KEY, _PAY_SUMS, [_payment("new_rows", "")])]),
        ("payments_totals_delete", "payments", "DELETE", old, [
            _upsert("payment_days", _PAY_KEY, _PAY_SUMS, [_payment("old_rows", "-")])]),
        ("payments_totals_update", "payments", "UPDATE", both, [
            _upsert("payment_days", _PAY_KEY, _PAY_SUMS,
                    [_payment("old_rows", "-", "new_rows"), _payment("new_rows", "", "old_rows")])]),
        ("allocations_totals_insert", "allocations", "INSERT", new, [
            _upsert("payment_days", _PAY_KEY, _PAY_SUMS, [_allocation("new_rows", "")])]),
        ("allocations_totals_delete", "allocations", "DELETE", old, [
            _upsert("payment_days", _PAY_KEY, _PAY_SUMS, [_allocation("old_rows", "-")])]),
        ("allocations_totals_update", "allocations", "UPDATE", both, [
            _upsert("payment_days", _PAY_KEY, _PAY_SUMS,
                    [_allocation("old_rows", "-", "new_rows"), _allocation("new_rows", "", "old_rows")])]),
    ]


# The row triggers replaced: migration 0010's (tr_<name>, function encours_<name>), and 0005's.
_ROW_BALANCE = (("tr_customers_balance", "customers", "encours_customers_balance"),
                ("tr_invoices_balance", "invoices", "encours_invoices_balance"))


def _drop_row_triggers() -> None:
    for name, table, _event in _migration("0010_dashboard_days")._TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS tr_{name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS encours_{name}()")
    for trigger, table, function in _ROW_BALANCE:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    _drop_row_triggers()
    for name, table, event, tables, body in _statement_triggers():
        op.execute(f"CREATE FUNCTION encours_{name}() RETURNS trigger AS $$ BEGIN {' '.join(body)} "
                   f"RETURN NULL; END $$ LANGUAGE plpgsql")
        op.execute(f"CREATE TRIGGER tr_{name} AFTER {event} ON {table} REFERENCING {tables} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION encours_{name}()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for name, table, _event, _tables, _body in _statement_triggers():
        op.execute(f"DROP TRIGGER IF EXISTS tr_{name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS encours_{name}()")
    # The row triggers as 0010 and 0005 wrote them; encours_refresh_customer_balance(cid), which
    # 0005's call and 0021 redefined, was never dropped.
    _migration("0010_dashboard_days")._create_triggers(sqlite=False)
    for statement in _migration("0005_customers")._postgresql_triggers():
        if "encours_refresh_customer_balance(cid integer)" not in statement:
            op.execute(statement)
