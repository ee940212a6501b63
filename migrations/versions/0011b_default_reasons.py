"""default dispute reasons for every company that has none

Revision ID: 0011b_default_reasons
Revises: 0010_dashboard_days
Create Date: 2026-12-05 03:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0011b_default_reasons'
down_revision = '0011_session_versions'
branch_labels = None
depends_on = None


# Companies made by `encours company create` before reasons came with every new company had an
# empty list, so their debtors could not dispute anything. A company that already has reasons
# chose them: it is left alone. The list is copied here (not imported) so this migration means
# the same thing whatever ledger.disputes.DEFAULT_REASONS later becomes.
_DEFAULTS = (
    ("wrong_amount", "Montant erroné", "Wrong amount"),
    ("not_received", "Marchandise ou prestation non reçue", "Goods or service not received"),
    ("quality", "Problème de qualité", "Quality problem"),
    ("already_paid", "Déjà payée", "Already paid"),
    ("wrong_customer", "Mauvais client facturé", "Wrong customer"),
    ("missing_po", "Bon de commande manquant", "Missing purchase order"),
    ("other", "Autre", "Other"),
)


def upgrade() -> None:
    connection = op.get_bind()
    companies = sa.table('companies', sa.column('id', sa.Integer))
    reasons = sa.table(
        'dispute_reasons', sa.column('company_id', sa.Integer), sa.column('code', sa.String),
        sa.column('label_fr', sa.String), sa.column('label_en', sa.String), sa.column('active', sa.Boolean),
        sa.column('position', sa.Integer),
    )
    bare = connection.execute(
        sa.select(companies.c.id).where(
            ~sa.exists().where(reasons.c.company_id == companies.c.id)
        ).order_by(companies.c.id)
    ).scalars().all()
    rows = [
        {"company_id": company_id, "code": code, "label_fr": label_fr, "label_en": label_en, "active": True,
         "position": position}
        for company_id in bare
        for position, (code, label_fr, label_en) in enumerate(_DEFAULTS)
    ]
    if rows:
        connection.execute(reasons.insert(), rows)


def downgrade() -> None:
    # Nothing to undo safely: after the upgrade, staff may have renamed these reasons and
    # disputes may carry them; they are the companies' data now.
    pass
