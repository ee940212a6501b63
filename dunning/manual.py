"""A reminder sent by hand from the customer page: previewed, then confirmed.

`prepare` says what would go now: the step (by default the one the daily run would send next,
else the earliest that fits the invoices; staff may choose another step of the customer's
scenario), the invoices it lists (overdue ones for a step after the due date, not yet due ones
for a step before it), to whom, the message itself, and warnings worth a second thought
(reminders paused, a message sent recently, a formal notice to a customer never reminded).
Nothing is queued until `queue_manual_reminder`.

A reminder sent by hand is recorded with its step, like the run's: escalation follows what was
sent, whoever sent it. The same step for the same invoices is never sent twice to a contact
(the planner's unique key): a double submit, or a second click, is refused with a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dunning import planner
from links import tokens
from dunning.messages import CompanyView, InvoiceFacts, RenderedMessage, StepTexts
from kernel.clock import clock
from kernel.i18n import N_
from kernel.user_error import UserError
from ledger import audit
from ledger.models import Customer, Invoice, OutboxMessage, Reminder, Scenario


@dataclass(frozen=True)
class Caution:
    """Something staff should know before confirming: an English msgid and its values."""

    message: str
    values: dict[str, object] = field(default_factory=dict)


@dataclass
class ManualPreview:
    message: planner.PlannedMessage
    rendered: RenderedMessage
    steps: list[StepTexts]  # the customer's scenario, to choose from
    warnings: list[Caution]


def _steps(session: Session, customer: Customer) -> list[StepTexts]:
    company = customer.company
    if not session.scalar(select(Scenario.id).where(Scenario.company_id == company.id).limit(1)):
        from dunning.scenarios import ensure_default_scenario

        ensure_default_scenario(session, company)
    scenarios = planner._scenarios(session, company.id)
    chosen = scenarios.get(customer.segment) or scenarios.get(None)
    if chosen is None or not chosen[1]:
        raise UserError(N_("This customer's segment has no active reminder scenario."))
    return chosen[1]


def _listed(step: StepTexts, open_invoices: list[InvoiceFacts], today: date) -> list[InvoiceFacts]:
    """What a step sent by hand lists: the overdue invoices after the due date, the others before it."""
    if step.offset_days > 0:
        return [invoice for invoice in open_invoices if invoice.due_date < today]
    return [invoice for invoice in open_invoices if invoice.due_date >= today]


def current_message(session: Session, customer: Customer, today: date, step_id: int | None = None
                    ) -> tuple[planner.PlannedMessage, list[StepTexts]]:
    """What a reminder sent now would say, to whom, and the steps to choose from;
    UserError when there is nothing to send."""
    company = customer.company
    steps = _steps(session, customer)
    open_invoices = planner._eligible_invoices(session, company, today, customer_id=customer.id).get(customer.id, [])
    if not open_invoices:
        raise UserError(N_("Nothing to chase: no open invoice outside disputes and promises."))
    chased = planner._chased_offsets(session, company.id, customer.id)
    if step_id is not None:
        step = next((s for s in steps if s.id == step_id), None)
        if step is None:
            raise UserError(N_("Choose a step of this customer's scenario."))
    else:
        decision = planner._decide(steps, open_invoices, chased, today, {})
        if isinstance(decision, tuple):
            step = decision[0]
        else:
            # Nothing due by the scenario: the earliest step that fits the invoices' state.
            overdue = any(invoice.due_date < today for invoice in open_invoices)
            step = next((s for s in steps if (s.offset_days > 0) == overdue), steps[0])
    invoices = _listed(step, open_invoices, today)
    if not invoices:
        raise UserError(N_("No invoice fits step %(step)s: it is for overdue invoices.")
                                  if step.offset_days > 0 else
                                  N_("No invoice fits step %(step)s: it is for invoices not yet due."),
                                  step=step.label)
    marked = sorted((replace(i, reminded=chased.get(i.id, 0) > 0) for i in invoices),
                    key=lambda i: (i.currency, i.due_date, i.number))
    contact = customer.primary_contact
    if contact is None:
        raise UserError(N_("This customer has no contact to write to."))
    if not planner.EMAIL.match(contact.email or ""):
        raise UserError(N_("The contact's email %(email)s is not valid."), email=contact.email)
    broken = planner._latest_broken(planner._broken_promises(session, company.id, customer.id), marked)
    message = planner.PlannedMessage(
        company_id=company.id, company_code=company.code, customer_id=customer.id, customer_ref=customer.ref,
        customer_name=customer.name, contact_id=contact.id, link_version=contact.link_version,
        to_address=contact.email, language=contact.language or customer.language, step=step,
        invoices=tuple(marked), all_open=tuple(open_invoices), today=today, contact_name=contact.name or "",
        broken_promise=broken,
    )
    return message, steps


def _facts(customer: Customer) -> planner._CompanyFacts:
    company = customer.company
    return planner._CompanyFacts(
        view=CompanyView(company.name, company.support_email or "", company.address or ""),
        country=company.country, base_currency=company.base_currency, brand_color=company.brand_color)


def warnings(session: Session, customer: Customer, message: planner.PlannedMessage, today: date) -> list[Caution]:
    found = []
    if customer.reminders_paused:
        found.append(Caution(N_("Reminders are paused for this customer.")))
    if not customer.company.reminders_enabled:
        found.append(Caution(N_("The company's reminders are switched off.")))
    last = planner.last_message_days(session, customer.company_id, customer.id).get(customer.id)
    if last is not None and (today - last).days < customer.company.reminder_gap_days:
        found.append(Caution(N_("A reminder went out %(days)s day(s) ago (the company waits %(gap)s days between "
                                "two)."), {"days": (today - last).days, "gap": customer.company.reminder_gap_days}))
    if message.step.tone == "formal" and not any(invoice.reminded for invoice in message.invoices):
        found.append(Caution(N_("This customer was never reminded of these invoices: a formal notice would be "
                                "the first message.")))
    contact = customer.primary_contact
    if contact is not None and contact.email_failing_since is not None:
        found.append(Caution(N_("The mail server refused %(email)s: %(error)s"),
                             {"email": contact.email, "error": contact.email_failure or ""}))
    return found


def prepare(session: Session, customer: Customer, *, secret: str, base_url: str, step_id: int | None = None,
            today: date | None = None) -> ManualPreview:
    """The preview of a reminder sent now; queues nothing."""
    today = today or clock.today(customer.company.timezone)
    message, steps = current_message(session, customer, today, step_id)
    rendered = planner.render_planned(message, _facts(customer), secret, base_url)
    # Staff read the preview: its link is masked (a working one would let them act as the debtor).
    rendered = RenderedMessage(subject=rendered.subject, text=tokens.mask_links(rendered.text),
                               html=tokens.mask_links(rendered.html))
    return ManualPreview(message=message, rendered=rendered, steps=steps,
                         warnings=warnings(session, customer, message, today))


def queue_manual_reminder(session: Session, customer: Customer, *, actor: str, secret: str, base_url: str,
                          step_id: int | None = None, today: date | None = None) -> Reminder:
    today = today or clock.today(customer.company.timezone)
    message, _ = current_message(session, customer, today, step_id)
    rendered = planner.render_planned(message, _facts(customer), secret, base_url)
    try:
        with session.begin_nested():
            outbox = OutboxMessage(customer_id=customer.id, contact_id=message.contact_id, kind=planner.OUTBOX_KIND,
                                   to_address=message.to_address, subject=rendered.subject[:300],
                                   body_text=rendered.text, body_html=rendered.html)
            session.add(outbox)
            session.flush()
            reminder = Reminder(customer_id=customer.id, contact_id=message.contact_id, step_id=message.step.id,
                                run_id=None, invoice_key=message.invoice_key, outbox_id=outbox.id,
                                invoices=list(session.scalars(select(Invoice)
                                                              .where(Invoice.id.in_(message.invoice_ids)))))
            session.add(reminder)
            session.flush()
    except IntegrityError:
        raise UserError(N_("Step %(step)s was already sent to %(email)s for these invoices; it is not "
                                     "sent twice."), step=message.step.label, email=message.to_address) from None
    audit.record(session, actor_type="user", actor=actor, action="reminder.queued", entity_type="reminder",
                 entity_id=reminder.id, customer_id=customer.id,
                 after={"step": message.step.label, "to": message.to_address, "outbox_id": outbox.id,
                        "subject": rendered.subject, "invoices": [i.number for i in message.invoices],
                        "totals": message.totals, "manual": True})
    return reminder
