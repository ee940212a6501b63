"""Reminder runs as staff see them: per run how many were planned, queued, sent and failed.

Reporting only: counts come from each run's Reminders joined to their outbox messages, so a
message that failed after the run is counted as failed on the run that queued it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ledger.models import (
    Company,
    Contact,
    Customer,
    Invoice,
    OutboxMessage,
    Reminder,
    ReminderRun,
    ScenarioStep,
    reminder_invoices,
)


@dataclass
class RunRow:
    run: ReminderRun
    company: Company | None
    reminders: int = 0
    queued: int = 0  # still waiting in the outbox (or being retried)
    sent: int = 0
    failed: int = 0


@dataclass
class ReminderLine:
    reminder: Reminder
    customer: Customer
    contact: Contact | None
    step_label: str
    invoices: list[str] = field(default_factory=list)
    status: str | None = None
    attempts: int = 0
    error: str | None = None
    to_address: str | None = None


def _counts(session: Session, run_ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {}
    if not run_ids:
        return counts
    rows = session.execute(
        select(Reminder.run_id, OutboxMessage.status, func.count())
        .outerjoin(OutboxMessage, OutboxMessage.id == Reminder.outbox_id)
        .where(Reminder.run_id.in_(run_ids))
        .group_by(Reminder.run_id, OutboxMessage.status)
    )
    for run_id, status, count in rows:
        counts.setdefault(run_id, {})[status or "none"] = int(count)
    return counts


def runs(session: Session, company_ids: list[int] | None, *, limit: int = 200) -> list[RunRow]:
    """The latest runs of these companies (None: every company), newest first."""
    query: Select[tuple[ReminderRun, Company]] = (
        select(ReminderRun, Company).outerjoin(Company, Company.id == ReminderRun.company_id)
        .order_by(ReminderRun.started_at.desc(), ReminderRun.id.desc()).limit(limit)
    )
    if company_ids is not None:
        query = query.where(ReminderRun.company_id.in_(company_ids or [-1]))
    found = session.execute(query).all()
    counts = _counts(session, [run.id for run, _ in found])
    rows = []
    for run, company in found:
        by_status = counts.get(run.id, {})
        rows.append(RunRow(run=run, company=company, reminders=sum(by_status.values()),
                           queued=by_status.get("queued", 0), sent=by_status.get("sent", 0),
                           failed=by_status.get("failed", 0)))
    return rows


def run_row(session: Session, run: ReminderRun) -> RunRow:
    company = session.get(Company, run.company_id) if run.company_id else None
    by_status = _counts(session, [run.id]).get(run.id, {})
    return RunRow(run=run, company=company, reminders=sum(by_status.values()), queued=by_status.get("queued", 0),
                  sent=by_status.get("sent", 0), failed=by_status.get("failed", 0))


def reminder_lines(session: Session, run: ReminderRun, customers: Select[tuple[Customer]] | None = None
                   ) -> list[ReminderLine]:
    """Each reminder of the run: customer, contact, step, invoices, outbox status and error.

    `customers`: a query of the customers the reader may see (None: all).
    """
    query = (
        select(Reminder, Customer, Contact, ScenarioStep.offset_days, OutboxMessage)
        .join(Customer, Customer.id == Reminder.customer_id)
        .outerjoin(Contact, Contact.id == Reminder.contact_id)
        .outerjoin(ScenarioStep, ScenarioStep.id == Reminder.step_id)
        .outerjoin(OutboxMessage, OutboxMessage.id == Reminder.outbox_id)
        .where(Reminder.run_id == run.id)
        .order_by(Customer.ref, Reminder.id)
    )
    if customers is not None:
        query = query.where(Customer.id.in_(customers.with_only_columns(Customer.id)))
    lines = []
    for reminder, customer, contact, offset, message in session.execute(query).all():
        label = "—" if offset is None else (f"D{offset:+d}" if offset else "D")
        lines.append(ReminderLine(
            reminder=reminder, customer=customer, contact=contact, step_label=label,
            status=message.status if message else None, attempts=message.attempts if message else 0,
            error=message.last_error if message else None, to_address=message.to_address if message else None,
        ))
    numbers: dict[int, list[str]] = {}
    if lines:
        for reminder_id, number in session.execute(
            select(reminder_invoices.c.reminder_id, Invoice.number)
            .join(Invoice, Invoice.id == reminder_invoices.c.invoice_id)
            .where(reminder_invoices.c.reminder_id.in_([line.reminder.id for line in lines]))
            .order_by(Invoice.due_date, Invoice.number)
        ):
            numbers.setdefault(reminder_id, []).append(number)
    for line in lines:
        line.invoices = numbers.get(line.reminder.id, [])
    return lines

