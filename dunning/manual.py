"""A reminder sent by hand from the customer page: the customer's current step, now, once.

It is the message the daily run would send at the step the customer's invoices stand at
today (the first step when none has reached one yet), in the same words, with a fresh link.
It is recorded as a Reminder without a step (by hand), so it never counts as the scenario's
step: the daily run still sends that step when it is due. A second click within a few
minutes for the same invoices is refused, so a double submit queues one message.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dunning import planner
from dunning.messages import CompanyView
from kernel.clock import clock
from kernel.i18n import N_
from ledger import audit
from ledger.models import Customer, Invoice, OutboxMessage, Reminder, Scenario

DOUBLE_SUBMIT_WINDOW = timedelta(minutes=10)


class ManualReminderError(ValueError):
    """Why no reminder was queued; `message` is an English msgid for the page to translate."""

    def __init__(self, message: str, **values: object) -> None:
        super().__init__(message)
        self.message = message
        self.values = values


def current_message(session: Session, customer: Customer, today: date) -> planner.PlannedMessage:
    """What a reminder sent now would say, to whom; ManualReminderError when there is nothing to send."""
    company = customer.company
    if not session.scalar(select(Scenario.id).where(Scenario.company_id == company.id).limit(1)):
        from dunning.scenarios import ensure_default_scenario

        ensure_default_scenario(session, company)
    scenarios = planner._scenarios(session, company.id)
    chosen = scenarios.get(customer.segment) or scenarios.get(None)
    if chosen is None or not chosen[1]:
        raise ManualReminderError(N_("This customer's segment has no active reminder scenario."))
    _scenario, steps = chosen
    open_invoices = planner._eligible_invoices(session, company, today, customer_id=customer.id).get(customer.id, [])
    if not open_invoices:
        raise ManualReminderError(N_("Nothing to chase: no open invoice outside disputes and promises."))
    reached = [(step, invoice) for invoice in open_invoices
               if (step := planner._stands_at(steps, invoice, today)) is not None]
    if reached:
        step = max((s for s, _ in reached), key=lambda s: s.offset_days)
        listed = {invoice.id: invoice for _, invoice in reached}
        if step.whole_balance:
            listed.update({i.id: i for i in open_invoices if i.due_date < today})
        invoices = sorted(listed.values(), key=lambda i: (i.currency, i.due_date, i.number))
    else:
        step, invoices = steps[0], sorted(open_invoices, key=lambda i: (i.currency, i.due_date, i.number))
    contact = customer.primary_contact
    if contact is None:
        raise ManualReminderError(N_("This customer has no contact to write to."))
    if not planner.EMAIL.match(contact.email or ""):
        raise ManualReminderError(N_("The contact's email %(email)s is not valid."), email=contact.email)
    return planner.PlannedMessage(
        company_id=company.id, company_code=company.code, customer_id=customer.id, customer_ref=customer.ref,
        customer_name=customer.name, contact_id=contact.id, link_version=contact.link_version,
        to_address=contact.email, language=contact.language or customer.language, step=step,
        invoices=tuple(invoices), all_open=tuple(open_invoices), today=today,
    )


def queue_manual_reminder(session: Session, customer: Customer, *, actor: str, secret: str, base_url: str,
                          today: date | None = None) -> Reminder:
    company = customer.company
    today = today or clock.today(company.timezone)
    message = current_message(session, customer, today)
    recent = session.scalar(
        select(Reminder.id).where(
            Reminder.customer_id == customer.id, Reminder.contact_id == message.contact_id,
            Reminder.step_id.is_(None), Reminder.invoice_key == message.invoice_key,
            Reminder.created_at > clock.now() - DOUBLE_SUBMIT_WINDOW,
        ).limit(1)
    )
    if recent is not None:
        raise ManualReminderError(N_("This reminder was sent by hand a moment ago; it is not sent twice."))
    facts = planner._CompanyFacts(
        view=CompanyView(company.name, company.support_email or "", company.address or ""),
        country=company.country, base_currency=company.base_currency, brand_color=company.brand_color)
    contact = customer.primary_contact
    rendered = planner.render_planned(message, facts, secret, base_url,
                                      contact_name=(contact.name or "") if contact else "")
    outbox = OutboxMessage(customer_id=customer.id, contact_id=message.contact_id, kind=planner.OUTBOX_KIND,
                           to_address=message.to_address, subject=rendered.subject[:300], body_text=rendered.text,
                           body_html=rendered.html)
    session.add(outbox)
    session.flush()
    reminder = Reminder(customer_id=customer.id, contact_id=message.contact_id, step_id=None, run_id=None,
                        invoice_key=message.invoice_key, outbox_id=outbox.id,
                        invoices=list(session.scalars(select(Invoice).where(Invoice.id.in_(message.invoice_ids)))))
    session.add(reminder)
    session.flush()
    audit.record(session, actor_type="user", actor=actor, action="reminder.queued", entity_type="reminder",
                 entity_id=reminder.id, customer_id=customer.id,
                 after={"step": message.step.label, "to": message.to_address, "outbox_id": outbox.id,
                        "subject": rendered.subject, "invoices": [i.number for i in message.invoices],
                        "totals": message.totals, "manual": True})
    return reminder

