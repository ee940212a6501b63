"""bank reconciliation: bank accounts, statements, entries, matches; staff payment methods

Revision ID: 0013_bank_reconciliation
Revises: 0010_dashboard_days
Create Date: 2026-12-05 03:30:00
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0013_bank_reconciliation"
down_revision = "0010_dashboard_days"
branch_labels = None
depends_on = None

_OLD_METHODS = ("card", "instant_transfer", "direct_debit", "bank_transfer")
_NEW_METHODS = _OLD_METHODS + ("cheque", "bill_of_exchange", "cash", "set_off")


def _in(methods: tuple[str, ...]) -> str:
    return f"method IN ({', '.join(repr(m) for m in methods)})"


def _dashboard_days() -> ModuleType:
    """Migration 0010, for its payments triggers: SQLite rebuilds the table to change a CHECK,
    and a rebuilt table has lost its triggers."""
    path = Path(__file__).with_name("0010_dashboard_days.py")
    spec = importlib.util.spec_from_file_location("_encours_0010_dashboard_days", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _payment_methods(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_payments_method"), "payments", type_="check")
        op.create_check_constraint(op.f("ck_payments_method"), "payments", _in(new))
        return
    # Triggers naming payments (on payments, allocations, invoices) block the table's rebuild:
    # dropped around it and created again as migration 0010 wrote them.
    days = _dashboard_days()
    for name, _table, _event in days._TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS tr_{name}")
    with op.batch_alter_table("payments", recreate="always") as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_payments_method"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_payments_method"), _in(new))
    days._create_triggers(sqlite=True)


def upgrade() -> None:
    with op.batch_alter_table("companies") as batch_op:
        batch_op.add_column(sa.Column("auto_match_level", sa.String(length=16), server_default="invoice_number",
                                      nullable=False))
        batch_op.add_column(sa.Column("write_off_tolerance_minor", sa.BigInteger(), server_default="0",
                                      nullable=False))
    _payment_methods(_OLD_METHODS, _NEW_METHODS)

    op.create_table(
        "bank_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("iban", sa.String(length=34), nullable=False),
        sa.Column("bic", sa.String(length=11), nullable=True),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name=op.f("fk_bank_accounts_company_id_companies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_accounts")),
        sa.UniqueConstraint("iban", name=op.f("uq_bank_accounts_iban")),
    )
    op.create_index(op.f("ix_bank_accounts_company_id"), "bank_accounts", ["company_id"], unique=False)

    op.create_table(
        "bank_statements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("statement_ref", sa.String(length=64), nullable=True),
        sa.Column("from_date", sa.Date(), nullable=True),
        sa.Column("to_date", sa.Date(), nullable=True),
        sa.Column("currency", sa.CHAR(length=3), nullable=True),
        sa.Column("opening_balance_minor", sa.BigInteger(), nullable=True),
        sa.Column("closing_balance_minor", sa.BigInteger(), nullable=True),
        sa.Column("entries_read", sa.Integer(), nullable=False),
        sa.Column("entries_new", sa.Integer(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("imported_by", sa.String(length=254), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["bank_accounts.id"],
                                name=op.f("fk_bank_statements_account_id_bank_accounts")),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name=op.f("fk_bank_statements_company_id_companies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_statements")),
    )
    op.create_index(op.f("ix_bank_statements_account_id"), "bank_statements", ["account_id"], unique=False)
    op.create_index(op.f("ix_bank_statements_company_id"), "bank_statements", ["company_id"], unique=False)

    op.create_table(
        "bank_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("statement_id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("booking_date", sa.Date(), nullable=True),
        sa.Column("value_date", sa.Date(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("credit_debit", sa.String(length=4), nullable=False),
        sa.Column("reversal", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("payer_name", sa.String(length=200), nullable=True),
        sa.Column("payer_iban", sa.String(length=34), nullable=True),
        sa.Column("payer_bic", sa.String(length=11), nullable=True),
        sa.Column("remittance_text", sa.Text(), nullable=True),
        sa.Column("structured_reference", sa.String(length=35), nullable=True),
        sa.Column("end_to_end_id", sa.String(length=64), nullable=True),
        sa.Column("bank_reference", sa.String(length=64), nullable=True),
        sa.Column("identity_key", sa.String(length=120), nullable=False),
        sa.Column("location", sa.String(length=200), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("credit_debit IN ('CRDT','DBIT')", name=op.f("ck_bank_entries_credit_debit")),
        sa.CheckConstraint("state IN ('unmatched','suggested','matched','ignored','debit')",
                           name=op.f("ck_bank_entries_state")),
        sa.ForeignKeyConstraint(["account_id"], ["bank_accounts.id"],
                                name=op.f("fk_bank_entries_account_id_bank_accounts")),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name=op.f("fk_bank_entries_company_id_companies")),
        sa.ForeignKeyConstraint(["statement_id"], ["bank_statements.id"],
                                name=op.f("fk_bank_entries_statement_id_bank_statements")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_entries")),
        sa.UniqueConstraint("account_id", "identity_key", name="uq_bank_entries_identity"),
    )
    op.create_index("ix_bank_entries_queue", "bank_entries", ["company_id", "state", "id"], unique=False)
    op.create_index(op.f("ix_bank_entries_statement_id"), "bank_entries", ["statement_id"], unique=False)

    op.create_table(
        "bank_matches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("evidence", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("checkout_id", sa.Integer(), nullable=True),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        sa.Column("decided_by_user_id", sa.Integer(), nullable=True),
        sa.Column("undone_by_user_id", sa.Integer(), nullable=True),
        sa.Column("undo_reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('suggested','confirmed','undone')", name=op.f("ck_bank_matches_state")),
        sa.CheckConstraint("score >= 0 AND score <= 100", name=op.f("ck_bank_matches_score")),
        sa.ForeignKeyConstraint(["checkout_id"], ["checkouts.id"], name=op.f("fk_bank_matches_checkout_id_checkouts")),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name=op.f("fk_bank_matches_company_id_companies")),
        sa.ForeignKeyConstraint(["decided_by_user_id"], ["users.id"],
                                name=op.f("fk_bank_matches_decided_by_user_id_users")),
        sa.ForeignKeyConstraint(["entry_id"], ["bank_entries.id"], name=op.f("fk_bank_matches_entry_id_bank_entries")),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"], name=op.f("fk_bank_matches_payment_id_payments")),
        sa.ForeignKeyConstraint(["undone_by_user_id"], ["users.id"],
                                name=op.f("fk_bank_matches_undone_by_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_matches")),
    )
    op.create_index(op.f("ix_bank_matches_company_id"), "bank_matches", ["company_id"], unique=False)
    op.create_index(op.f("ix_bank_matches_entry_id"), "bank_matches", ["entry_id"], unique=False)
    op.create_index(op.f("ix_bank_matches_payment_id"), "bank_matches", ["payment_id"], unique=False)

    op.create_table(
        "bank_match_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("match_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=True),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("discount_minor", sa.BigInteger(), nullable=False),
        sa.Column("write_off_minor", sa.BigInteger(), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("amount_minor >= 0 AND discount_minor >= 0 AND write_off_minor >= 0",
                           name=op.f("ck_bank_match_lines_amounts")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name=op.f("fk_bank_match_lines_customer_id_customers")),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_bank_match_lines_invoice_id_invoices")),
        sa.ForeignKeyConstraint(["match_id"], ["bank_matches.id"], ondelete="CASCADE",
                                name=op.f("fk_bank_match_lines_match_id_bank_matches")),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"], name=op.f("fk_bank_match_lines_payment_id_payments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_match_lines")),
    )
    op.create_index(op.f("ix_bank_match_lines_customer_id"), "bank_match_lines", ["customer_id"], unique=False)
    op.create_index(op.f("ix_bank_match_lines_invoice_id"), "bank_match_lines", ["invoice_id"], unique=False)
    op.create_index(op.f("ix_bank_match_lines_match_id"), "bank_match_lines", ["match_id"], unique=False)

    op.create_table(
        "payer_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("iban", sa.String(length=34), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("times_seen", sa.Integer(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name=op.f("fk_payer_accounts_company_id_companies")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name=op.f("fk_payer_accounts_customer_id_customers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payer_accounts")),
        sa.UniqueConstraint("company_id", "iban", "customer_id", name="uq_payer_accounts_customer"),
    )
    op.create_index(op.f("ix_payer_accounts_customer_id"), "payer_accounts", ["customer_id"], unique=False)


def downgrade() -> None:
    op.drop_table("payer_accounts")
    op.drop_table("bank_match_lines")
    op.drop_table("bank_matches")
    op.drop_table("bank_entries")
    op.drop_table("bank_statements")
    op.drop_table("bank_accounts")
    # Payments recorded by staff with the new methods cannot stay under the old CHECK.
    op.execute(f"DELETE FROM payments WHERE NOT ({_in(_OLD_METHODS)})")
    _payment_methods(_NEW_METHODS, _OLD_METHODS)
    with op.batch_alter_table("companies") as batch_op:
        batch_op.drop_column("write_off_tolerance_minor")
        batch_op.drop_column("auto_match_level")
