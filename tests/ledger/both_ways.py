"""An import applied two ways from the same start: once with one function of `ledger.csv_import`
replaced by the behaviour it replaced (kept in the test as the reference), once as it is; each
run rolled back, the book it left compared. Serves test_csv_import_creates.py and
test_csv_import_updates.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import pytest
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from ledger import csv_import
from ledger.allocation import invariant_violations
from ledger.csv_import import ImportReport
from ledger.day_totals import drift, stored
from ledger.models import AuditEvent, Invoice, WebhookDelivery

HEADER = "company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until,type\n"
ISSUE = date(2026, 10, 1)
DUE = date(2026, 11, 15)


def line(number: str, customer: str, issue: date, due: date, amount: str, percent: str = "", until: str = "",
         kind: str = "invoice") -> str:
    """One line of an invoices file of the company ACME."""
    return f"ACME,{customer},{number},{issue.isoformat()},{due.isoformat()},EUR,{amount},{percent},{until},{kind}\n"


def state(session: Session, extra: Sequence[Table] = ()) -> dict[str, object]:
    """The invoices and audit rows (every column but the id), the webhook deliveries, the running
    totals, and every row of each `extra` table in the order of its primary key."""
    session.flush()
    session.expire_all()
    invoice_columns = [c for c in Invoice.__table__.columns if c.name != "id"]
    audit_columns = [c for c in AuditEvent.__table__.columns if c.name != "id"]
    found: dict[str, object] = {
        "invoices": [tuple(row) for row in session.execute(select(*invoice_columns).order_by(Invoice.number))],
        # In the order written (ids differ between runs on PostgreSQL: a rollback keeps its sequences).
        "audit": [tuple(row) for row in session.execute(select(*audit_columns).order_by(AuditEvent.id))],
        "deliveries": [tuple(row) for row in session.execute(
            select(AuditEvent.action, WebhookDelivery.status, WebhookDelivery.next_attempt_at)
            .join(AuditEvent, AuditEvent.id == WebhookDelivery.audit_event_id).order_by(WebhookDelivery.id))],
        "running_totals": stored(session),
    }
    for table in extra:
        found[table.name] = [tuple(row) for row in session.execute(
            select(*table.columns).order_by(*table.primary_key.columns))]
    return found


def both_ways(session: Session, monkeypatch: pytest.MonkeyPatch, apply: Callable[[], ImportReport], *,
              replaced: str, reference: Callable[..., Any],
              extra: Sequence[Table] = ()) -> list[tuple[ImportReport, dict[str, object]]]:
    """`apply` run first with `csv_import.<replaced>` set to `reference`, then as it is: each run's
    report and `state`, the book's invariants and running totals checked after each."""
    found = []
    for patched_run in (True, False):
        nested = session.begin_nested()
        try:
            with monkeypatch.context() as patched:
                if patched_run:
                    patched.setattr(csv_import, replaced, reference)
                report = apply()
            assert invariant_violations(session) == [] and drift(session) == []
            found.append((report, state(session, extra)))
        finally:
            nested.rollback()
            session.expire_all()
    return found
