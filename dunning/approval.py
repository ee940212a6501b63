"""The review queue: a company that approves its reminders before they go gets its day's run
queued *held* (`OutboxMessage.status == "held"`, see `dunning.planner`); a manager sends all,
some or none of them.

Sending one moves its message to the outbox queue as it was written (its preview is what goes).
Declining one cancels its message and forgets its Reminder, so the next run may propose it
again; both are on the customer's timeline. The Reminder row of a held message keeps the
never-twice guarantee meanwhile: a second run finds those invoices already chased.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from kernel.clock import clock
from ledger import audit
from links import tokens
from ledger.models import (
    Company,
    Customer,
    Invoice,
    OutboxMessage,
    Reminder,
    ReminderRun,
    ScenarioStep,
    reminder_invoices,
)

HELD = "held"


@dataclass
class HeldReminder:
    """One message waiting for approval: to whom, at which step, for which invoices, and its text."""

    reminder_id: int
    outbox_id: int
    run_id: int | None
    run_date: date | None
    company_code: str
    customer_id: int
    customer_ref: str
    customer_name: str
    step_label: str
    to_address: str
    subject: str
    body_text: str
    body_html: str | None
    invoices: list[str] = field(default_factory=list)


def held(session: Session, company_ids: list[int] | None = None, reminder_ids: list[int] | None = None
         ) -> list[HeldReminder]:
    """The messages waiting for approval (of these companies, or these reminders), by customer."""
    query = (
        select(Reminder, OutboxMessage, Customer, Company.code, ScenarioStep.offset_days, ReminderRun.run_date)
        .join(OutboxMessage, OutboxMessage.id == Reminder.outbox_id)
        .join(Customer, Customer.id == Reminder.customer_id)
        .join(Company, Company.id == Customer.company_id)
        .outerjoin(ScenarioStep, ScenarioStep.id == Reminder.step_id)
        .outerjoin(ReminderRun, ReminderRun.id == Reminder.run_id)
        .where(OutboxMessage.status == HELD)
        .order_by(Company.code, Customer.ref, Reminder.id)
    )
    if company_ids is not None:
        query = query.where(Customer.company_id.in_(company_ids or [-1]))
    if reminder_ids is not None:
        query = query.where(Reminder.id.in_(reminder_ids or [-1]))
    found = []
    for reminder, message, customer, code, offset, run_date in session.execute(query):
        label = "—" if offset is None else (f"D{offset:+d}" if offset else "D")
        found.append(HeldReminder(
            reminder_id=reminder.id, outbox_id=message.id, run_id=reminder.run_id, run_date=run_date,
            company_code=code, customer_id=customer.id, customer_ref=customer.ref, customer_name=customer.name,
            step_label=label, to_address=message.to_address, subject=message.subject,
            # What staff review: the stored message with its magic link masked.
            body_text=tokens.mask_links(message.body_text),
            body_html=tokens.mask_links(message.body_html) if message.body_html else None))
    if found:
        numbers: dict[int, list[str]] = {}
        for reminder_id, number in session.execute(
            select(reminder_invoices.c.reminder_id, Invoice.number)
            .join(Invoice, Invoice.id == reminder_invoices.c.invoice_id)
            .where(reminder_invoices.c.reminder_id.in_([h.reminder_id for h in found]))
            .order_by(Invoice.due_date, Invoice.number)
        ):
            numbers.setdefault(reminder_id, []).append(number)
        for item in found:
            item.invoices = numbers.get(item.reminder_id, [])
    return found


def approve(session: Session, items: list[HeldReminder], *, actor_type: str = "user", actor: str | None = None
            ) -> int:
    """Send these held messages (to the outbox queue, due now); how many were still held."""
    sent = 0
    now = clock.now()
    for item in items:
        moved = session.execute(
            update(OutboxMessage).where(OutboxMessage.id == item.outbox_id, OutboxMessage.status == HELD)
            .values(status="queued", next_attempt_at=now)
        ).rowcount
        if moved:
            sent += 1
            audit.record(session, actor_type=actor_type, actor=actor, action="reminder.approved",
                         entity_type="reminder", entity_id=item.reminder_id, customer_id=item.customer_id,
                         after={"step": item.step_label, "to": item.to_address, "outbox_id": item.outbox_id,
                                "invoices": item.invoices})
    session.flush()
    return sent


def decline(session: Session, items: list[HeldReminder], *, actor_type: str = "user", actor: str | None = None
            ) -> int:
    """Do not send these held messages: cancelled, and their reminders forgotten (a later run
    may propose them again); how many were still held."""
    declined = 0
    for item in items:
        moved = session.execute(
            update(OutboxMessage).where(OutboxMessage.id == item.outbox_id, OutboxMessage.status == HELD)
            .values(status="cancelled")
        ).rowcount
        if not moved:
            continue
        declined += 1
        session.execute(delete(reminder_invoices).where(reminder_invoices.c.reminder_id == item.reminder_id))
        session.execute(delete(Reminder).where(Reminder.id == item.reminder_id))
        audit.record(session, actor_type=actor_type, actor=actor, action="reminder.declined",
                     entity_type="reminder", entity_id=item.reminder_id, customer_id=item.customer_id,
                     before={"step": item.step_label, "to": item.to_address, "outbox_id": item.outbox_id,
                             "invoices": item.invoices})
    session.flush()
    return declined
