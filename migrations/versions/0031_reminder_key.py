"""reminder key: the identity of a reminder's invoices as a fixed-length digest

PostgreSQL refused a reminder for a customer with a few hundred overdue invoices: the joined ids
made an index row of `uq_reminders_once` larger than its 2,704-byte limit.

Revision ID: 0031_reminder_key
Revises: 0022_journey
"""
from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0031_reminder_key"
down_revision = "0022_journey"
branch_labels = None
depends_on = None

BATCH = 5_000
reminders = sa.table("reminders", sa.column("id", sa.Integer), sa.column("invoice_key", sa.Text))
reminder_invoices = sa.table("reminder_invoices", sa.column("reminder_id", sa.Integer),
                             sa.column("invoice_id", sa.Integer))


def _digest(joined: str) -> str:
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


def upgrade() -> None:
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.select(reminders.c.id, reminders.c.invoice_key).where(reminders.c.id > last)
            .order_by(reminders.c.id).limit(BATCH)).all()
        if not rows:
            return
        # Keys written by hand-made rows (not joined ids) are digested too: only equality matters.
        connection.execute(reminders.update().where(reminders.c.id == sa.bindparam("rid"))
                           .values(invoice_key=sa.bindparam("key")),
                           [{"rid": row.id, "key": _digest(row.invoice_key)} for row in rows])
        last = rows[-1].id


def downgrade() -> None:
    # The joined ids again, from the reminder's invoices (the digest cannot be undone).
    connection = op.get_bind()
    last = 0
    while True:
        ids = connection.scalars(sa.select(reminders.c.id).where(reminders.c.id > last)
                                 .order_by(reminders.c.id).limit(BATCH)).all()
        if not ids:
            return
        invoices: dict[int, list[int]] = {rid: [] for rid in ids}
        for rid, invoice_id in connection.execute(
                sa.select(reminder_invoices.c.reminder_id, reminder_invoices.c.invoice_id)
                .where(reminder_invoices.c.reminder_id.in_(ids))):
            invoices[rid].append(invoice_id)
        connection.execute(reminders.update().where(reminders.c.id == sa.bindparam("rid"))
                           .values(invoice_key=sa.bindparam("key")),
                           [{"rid": rid, "key": ",".join(str(i) for i in sorted(found))}
                            for rid, found in invoices.items()])
        last = ids[-1]
