"""The daily reminder plan: which customer gets which step now, and queueing it exactly once.

Escalation follows what was sent, like a careful collector, not only the days overdue:

- an invoice's next step is the one after the furthest step that listed it (a reminder at
  step D+n sent on day R credits each invoice it lists with min(n, R - due date), so an
  invoice listed early in a more advanced message still gets its own steps later);
- a step fits an invoice's state: one before the due date (offset <= 0) only an invoice not
  yet overdue, one after it only an overdue invoice; and it must have been reached
  (due date + offset <= today);
- an invoice never reminded gets the earliest step that fits (a first reminder, never a
  formal notice); one already reminded moves on to the next fitting step, jumping over the
  steps the scenario marks `may_skip` when it has reached later ones;
- a formal step is sent only for invoices an earlier reminder already listed after their due
  date;
- a customer hears from us at most once every `Company.reminder_gap_days` days.

A customer with pending invoices gets ONE message per run, at the furthest step among them,
listing every pending invoice (and, for a `whole_balance` step, every overdue one too); the
message's texts tell overdue and not yet due invoices apart, and whether each was reminded
before (`dunning.messages`).

- never twice: a Reminder row, UNIQUE(customer, contact, step, invoice ids), is inserted in
  the same transaction (and savepoint) as its outbox message. A run killed half way leaves
  whole customers done or not done; a second run finds the done ones no
  longer pending, and two runs at once collide on the unique key, the second one rolling
  its copy back.
- a company's reminders stay off until someone switches them on (`Company.reminders_enabled`);
  with `reminders_need_approval` the run's messages are queued *held* and wait for a manager
  (`dunning.approval`).

Every contact of the customer that receives reminders (`Contact.receives_reminders`) gets its
own copy, in its language, with its own magic link: one Reminder per (customer, contact,
step, invoices). A customer's copies are queued in one transaction, so a crash never leaves
one contact told and another not. A contact without a valid email, or whose address the
mail server refused for good (`Contact.email_failing_since`), is reported on the run; the
others still get theirs.

When a promise to pay some of the listed invoices was broken, the message can say so
(`{{ broken_promise }}`, in the default texts).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, Callable, cast

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dunning import messages
from dunning.messages import CompanyView, ContactView, CustomerView, InvoiceFacts, PromiseFacts, StepTexts
from kernel.clock import clock
from kernel.db import unit_of_work
from kernel.i18n import N_
from kernel.user_error import UserError
from ledger.disputes import disputed_parts
from ledger.models import (
    AuditEvent,
    Company,
    Contact,
    Customer,
    Dispute,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    OutboxMessage,
    PromiseToPay,
    Reminder,
    reminder_invoice_key,
    ReminderRun,
    Scenario,
    ScenarioStep,
    dispute_invoices,
    promise_invoices,
    reminder_invoices,
)
from ledger.money import Money
from links import tokens

OUTBOX_KIND = "reminder"
EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")
CHASED_STATUSES = (InvoiceStatus.open.value, InvoiceStatus.partially_paid.value)


class UnknownCompany(LookupError):
    pass


@dataclass(frozen=True)
class PlannedMessage:
    """One message to queue: to whom, at which step, for which invoices, and why."""

    company_id: int
    company_code: str
    customer_id: int
    customer_ref: str
    customer_name: str
    contact_id: int
    link_version: int
    to_address: str
    language: str
    step: StepTexts
    invoices: tuple[InvoiceFacts, ...]  # listed in the message
    all_open: tuple[InvoiceFacts, ...]  # every chased-eligible invoice, for the savings on offer
    today: date
    contact_name: str = ""
    broken_promise: PromiseFacts | None = None  # the latest broken promise covering a listed invoice

    @property
    def invoice_ids(self) -> tuple[int, ...]:
        return tuple(sorted(invoice.id for invoice in self.invoices))

    @property
    def invoice_key(self) -> str:
        return reminder_invoice_key(self.invoice_ids)

    @property
    def totals(self) -> dict[str, int]:
        return messages.totals_by_currency(self.invoices)

    def describe(self) -> str:
        totals = ", ".join(str(Money(minor, currency)) for currency, minor in sorted(self.totals.items()))
        numbers = ", ".join(invoice.number for invoice in sorted(self.invoices, key=lambda i: (i.due_date, i.number)))
        return (f"{self.customer_ref} -> {self.to_address} ({self.language}): step {self.step.label} "
                f"[{self.step.tone}], {len(self.invoices)} invoice(s) {numbers}; totals {totals}")


@dataclass(frozen=True)
class Skipped:
    customer_ref: str
    why: UserError

    @property
    def reason(self) -> str:
        """In English, as the command line prints it."""
        return str(self.why)


@dataclass
class CompanyPlan:
    company_id: int
    company_code: str
    today: date
    messages: list[PlannedMessage] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    """One company's run."""

    company_code: str
    run_date: date
    dry_run: bool
    run_id: int | None = None
    planned: int = 0
    queued: int = 0
    already_queued: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    messages: list[PlannedMessage] = field(default_factory=list)
    reminders_off: bool = False
    held: bool = False  # queued messages wait for a manager's approval

    def summary(self) -> str:
        if self.reminders_off and not self.dry_run:
            return (f"{self.company_code} {self.run_date.isoformat()}: reminders are off for this company, nothing "
                    f"planned (switch them on: encours company reminders {self.company_code} on)")
        if self.dry_run:
            return (f"{self.company_code} {self.run_date.isoformat()} (dry run): {self.planned} would be sent, "
                    f"{len(self.skipped)} skipped, nothing queued")
        waiting = " (waiting for approval: encours remind --approve)" if self.held and self.queued else ""
        return (f"{self.company_code} {self.run_date.isoformat()}: {self.planned} planned, {self.queued} queued"
                f"{waiting}, {self.already_queued} already queued, {len(self.skipped)} skipped")


# --- reading the book -------------------------------------------------------------------------


def _steps_of(scenario: Scenario) -> list[StepTexts]:
    return [
        StepTexts(id=s.id, offset_days=s.offset_days, tone=s.tone, whole_balance=s.whole_balance,
                  subject_fr=s.subject_fr, body_fr=s.body_fr, subject_en=s.subject_en, body_en=s.body_en,
                  may_skip=s.may_skip)
        for s in sorted(scenario.steps, key=lambda s: s.offset_days)
    ]


def _scenarios(session: Session, company_id: int) -> dict[str | None, tuple[Scenario, list[StepTexts]]]:
    """Segment (None: the company default) -> its active scenario and steps."""
    found: dict[str | None, tuple[Scenario, list[StepTexts]]] = {}
    for scenario in session.scalars(
        select(Scenario).where(Scenario.company_id == company_id, Scenario.active.is_(True)).order_by(Scenario.id)
    ):
        found.setdefault(scenario.segment, (scenario, _steps_of(scenario)))
    return found


def _eligible_invoices(session: Session, company: Company, today: date,
                       customer_id: int | None = None) -> dict[int, list[InvoiceFacts]]:
    """Open invoices (not credit notes), not disputed, not under a live promise, per customer."""
    query = (
        select(Invoice.id, Invoice.customer_id, Invoice.number, Invoice.issue_date, Invoice.due_date,
               Invoice.currency, Invoice.open_minor, Invoice.discount_bps, Invoice.discount_until)
        .where(Invoice.company_id == company.id, Invoice.kind == InvoiceKind.invoice.value,
               Invoice.open_minor > 0, Invoice.status.in_(CHASED_STATUSES))
    )
    disputed_query = (
        select(dispute_invoices.c.invoice_id).join(Dispute, Dispute.id == dispute_invoices.c.dispute_id)
        .join(Invoice, Invoice.id == dispute_invoices.c.invoice_id)
        .where(Dispute.status == "open", Invoice.company_id == company.id, Dispute.disputed_minor.is_(None))
    )
    # A pending promise holds the invoices until its date plus the company's grace days.
    promised_query = (
        select(promise_invoices.c.invoice_id).join(PromiseToPay, PromiseToPay.id == promise_invoices.c.promise_id)
        .join(Invoice, Invoice.id == promise_invoices.c.invoice_id)
        .where(PromiseToPay.status == "pending", Invoice.company_id == company.id,
               PromiseToPay.promised_for >= today - timedelta(days=company.promise_grace_days))
    )
    if customer_id is not None:
        query = query.where(Invoice.customer_id == customer_id)
        disputed_query = disputed_query.where(Invoice.customer_id == customer_id)
        promised_query = promised_query.where(Invoice.customer_id == customer_id)
    held = set(session.scalars(disputed_query)) | set(session.scalars(promised_query))
    # An invoice disputed in part is chased for the rest only.
    parts = disputed_parts(session, customer_id=customer_id, company_id=company.id)
    by_customer: dict[int, list[InvoiceFacts]] = defaultdict(list)
    for row in session.execute(query):
        chased = int(row.open_minor) - parts.get(row.id, 0)
        if row.id in held or chased <= 0:
            continue
        by_customer[row.customer_id].append(InvoiceFacts(
            id=row.id, number=row.number, issue_date=row.issue_date, due_date=row.due_date, currency=row.currency,
            open_minor=chased, discount_bps=row.discount_bps, discount_until=row.discount_until,
        ))
    return by_customer


def _chased_offsets(session: Session, company_id: int, customer_id: int | None = None) -> dict[int, int]:
    """Invoice id -> how far along its own scenario it was last chased.

    A reminder at step D+n sent on day R credits each invoice it lists with
    min(n, R - due date): an invoice listed early in a more advanced message (a not yet due
    one in a whole-balance notice, say) still gets its own steps later.
    """
    query = (
        select(reminder_invoices.c.invoice_id, ScenarioStep.offset_days, ReminderRun.run_date, Reminder.created_at,
               Invoice.due_date)
        .join(Reminder, Reminder.id == reminder_invoices.c.reminder_id)
        .join(ScenarioStep, ScenarioStep.id == Reminder.step_id)
        .outerjoin(ReminderRun, ReminderRun.id == Reminder.run_id)
        .join(Invoice, Invoice.id == reminder_invoices.c.invoice_id)
        .outerjoin(OutboxMessage, OutboxMessage.id == Reminder.outbox_id)
        .where(Invoice.company_id == company_id, _not_cancelled())
    )
    if customer_id is not None:
        query = query.where(Reminder.customer_id == customer_id)
    chased: dict[int, int] = {}
    for invoice_id, offset, run_date, created_at, due_date in session.execute(query):
        # A reminder sent by hand has no run: the day it was written counts.
        credited = min(int(offset), ((run_date or created_at.date()) - due_date).days)
        if credited > chased.get(invoice_id, credited - 1):
            chased[invoice_id] = credited
    return chased


def _not_cancelled() -> Any:
    """A reminder a manager declined to send was never sent: it moves nothing along."""
    return (OutboxMessage.id.is_(None)) | (OutboxMessage.status != "cancelled")


def last_message_days(session: Session, company_id: int, customer_id: int | None = None) -> dict[int, date]:
    """Customer id -> the day of the latest reminder it was sent (or that waits for approval).

    Failed and declined messages do not count: they did not reach the customer.
    """
    query = (
        select(Reminder.customer_id, ReminderRun.run_date, Reminder.created_at)
        .join(Customer, Customer.id == Reminder.customer_id)
        .outerjoin(ReminderRun, ReminderRun.id == Reminder.run_id)
        .outerjoin(OutboxMessage, OutboxMessage.id == Reminder.outbox_id)
        .where(Customer.company_id == company_id,
               (OutboxMessage.id.is_(None)) | OutboxMessage.status.not_in(("cancelled", "failed")))
    )
    if customer_id is not None:
        query = query.where(Reminder.customer_id == customer_id)
    latest: dict[int, date] = {}
    for customer, run_date, created_at in session.execute(query):
        # A reminder sent by hand has no run: the day it was written counts.
        day = run_date or created_at.date()
        if customer not in latest or day > latest[customer]:
            latest[customer] = day
    return latest


def _contacts(session: Session, company_id: int) -> dict[int, list[Any]]:
    """Customer id -> its contacts as rows, the primary one first."""
    rows = session.execute(
        select(Contact.id, Contact.customer_id, Contact.email, Contact.name, Contact.language, Contact.link_version,
               Contact.receives_reminders, Contact.email_failing_since, Contact.email_failure)
        .join(Customer, Customer.id == Contact.customer_id)
        .where(Customer.company_id == company_id, Contact.removed_at.is_(None))
        .order_by(Contact.customer_id, Contact.is_primary.desc(), Contact.id)
    )
    contacts: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        contacts[row.customer_id].append(row)
    return contacts


def _broken_promises(session: Session, company_id: int, customer_id: int | None = None) -> dict[int, PromiseFacts]:
    """Invoice id -> the latest broken promise to pay it."""
    query = (
        select(promise_invoices.c.invoice_id, PromiseToPay.promised_for, PromiseToPay.currency,
               PromiseToPay.amount_minor)
        .join(PromiseToPay, PromiseToPay.id == promise_invoices.c.promise_id)
        .join(Invoice, Invoice.id == promise_invoices.c.invoice_id)
        .where(PromiseToPay.status == "broken", Invoice.company_id == company_id)
        .order_by(PromiseToPay.promised_for, PromiseToPay.id)
    )
    if customer_id is not None:
        query = query.where(Invoice.customer_id == customer_id)
    return {row.invoice_id: PromiseFacts(row.promised_for, row.currency, int(row.amount_minor))
            for row in session.execute(query)}


def _latest_broken(broken: dict[int, PromiseFacts], invoices: Any) -> PromiseFacts | None:
    found = [broken[invoice.id] for invoice in invoices if invoice.id in broken]
    return max(found, key=lambda p: p.promised_for) if found else None


def _stands_at(steps: list[StepTexts], invoice: InvoiceFacts, today: date) -> StepTexts | None:
    """The latest step the invoice has reached today."""
    reached = None
    for step in steps:
        if invoice.due_date + timedelta(days=step.offset_days) <= today:
            reached = step
    return reached


def _fits(step: StepTexts, invoice: InvoiceFacts, today: date) -> bool:
    """Reached, and right for the invoice's state: a notice before the due date only for an
    invoice not yet overdue, a reminder after it only for an overdue one."""
    overdue = invoice.due_date < today
    return invoice.due_date + timedelta(days=step.offset_days) <= today and (step.offset_days > 0) == overdue


FORMAL_NEEDS_REMINDER = N_("a formal notice needs an earlier reminder, and the scenario has none before it")


def next_step(steps: list[StepTexts], invoice: InvoiceFacts, chased: int | None, today: date
              ) -> StepTexts | str | None:
    """The step this invoice is due for today, a reason it cannot get one, or None (nothing due).

    `chased`: how far along it was last chased (None: never listed in a reminder).
    """
    fitting = [step for step in steps
               if (chased is None or step.offset_days > chased) and _fits(step, invoice, today)]
    if not fitting:
        return None
    chosen = fitting[0]
    if chased is not None:
        # Already reminded: jump over the steps that may be skipped, up to the furthest reached.
        for later in fitting[1:]:
            if not chosen.may_skip:
                break
            chosen = later
    reminded = chased is not None and chased > 0
    if chosen.tone == "formal" and not reminded:
        softer = [step for step in fitting if step.offset_days < chosen.offset_days and step.tone != "formal"]
        if not softer:
            return FORMAL_NEEDS_REMINDER
        chosen = softer[-1]
    return chosen


def plan_company(session: Session, company: Company, today: date) -> CompanyPlan:
    result = CompanyPlan(company_id=company.id, company_code=company.code, today=today)
    scenarios = _scenarios(session, company.id)
    if not scenarios:
        result.problems.append(f"company {company.code} has no active reminder scenario")
        return result
    invoices = _eligible_invoices(session, company, today)
    if not invoices:
        return result
    chased = _chased_offsets(session, company.id)
    last_sent = last_message_days(session, company.id)
    contacts = _contacts(session, company.id)
    broken = _broken_promises(session, company.id)
    customers = session.execute(
        select(Customer.id, Customer.ref, Customer.name, Customer.language, Customer.segment,
               Customer.reminders_paused, Customer.gocardless_mandate_status)
        .where(Customer.company_id == company.id)
        .order_by(Customer.ref)
    )
    for customer in customers:
        open_invoices = invoices.get(customer.id)
        if not open_invoices:
            continue
        chosen = scenarios.get(customer.segment) or scenarios.get(None)
        if chosen is None:
            result.problems.append(f"{customer.ref}: no active scenario for segment {customer.segment!r} "
                                   "and no company default")
            continue
        scenario, steps = chosen
        decision = _decide(steps, open_invoices, chased, today, scenario.minimums or {})
        if decision is None:
            continue
        if isinstance(decision, UserError):
            result.skipped.append(Skipped(customer.ref, decision))
            continue
        step, listed = decision
        if customer.reminders_paused:
            result.skipped.append(Skipped(customer.ref, UserError(N_("reminders paused by staff"))))
            continue
        if customer.gocardless_mandate_status == "active":
            result.skipped.append(Skipped(customer.ref, UserError(N_("collected by an active direct-debit mandate"))))
            continue
        previous = last_sent.get(customer.id)
        if previous is not None and (today - previous).days < company.reminder_gap_days:
            result.skipped.append(Skipped(customer.ref, UserError(
                N_("last reminder %(days)s day(s) ago; the company waits %(gap)s days"), days=(today - previous).days,
                gap=company.reminder_gap_days)))
            continue
        everyone = contacts.get(customer.id, [])
        receiving = [contact for contact in everyone if contact.receives_reminders]
        if not receiving:
            why = UserError(N_("has no contact") if not everyone else N_("no contact receives reminders"))
            result.skipped.append(Skipped(customer.ref, why))
            if not everyone:
                result.problems.append(f"{customer.ref}: {why}; step {step.label} not sent")
            continue
        valid = [contact for contact in receiving
                 if EMAIL.match(contact.email or "") and contact.email_failing_since is None]
        for contact in receiving:
            if contact not in valid:
                problem = (UserError(N_("contact email %(email)s is not valid"), email=repr(contact.email))
                           if contact.email_failing_since is None
                           else UserError(N_("contact email %(email)s is failing (%(failure)s)"),
                                          email=repr(contact.email), failure=contact.email_failure or "refused"))
                result.problems.append(f"{customer.ref}: {problem}; step {step.label} not sent")
                if not valid:
                    result.skipped.append(Skipped(customer.ref, problem))
        promise = _latest_broken(broken, listed)
        for contact in valid:
            result.messages.append(PlannedMessage(
                company_id=company.id, company_code=company.code, customer_id=customer.id, customer_ref=customer.ref,
                customer_name=customer.name, contact_id=contact.id, link_version=contact.link_version,
                to_address=contact.email, language=contact.language or customer.language, step=step,
                invoices=tuple(listed), all_open=tuple(open_invoices), today=today,
                contact_name=contact.name or "", broken_promise=promise,
            ))
    return result


def _decide(steps: list[StepTexts], open_invoices: list[InvoiceFacts], chased: dict[int, int], today: date,
            minimums: dict[str, int]) -> tuple[StepTexts, list[InvoiceFacts]] | UserError | None:
    """(step, invoices to list), a reason to skip, or None when nothing is due."""
    pending: list[tuple[StepTexts, InvoiceFacts]] = []
    reasons: list[str] = []
    for invoice in open_invoices:
        step = next_step(steps, invoice, chased.get(invoice.id), today)
        if isinstance(step, str):
            reasons.append(step)
        elif step is not None:
            pending.append((step, invoice))
    if not pending:
        return UserError(reasons[0]) if reasons else None
    totals = messages.totals_by_currency(invoice for _, invoice in pending)
    under = {currency for currency, minor in totals.items() if minor < int(minimums.get(currency, 0))}
    pending = [(step, invoice) for step, invoice in pending if invoice.currency not in under]
    if not pending:
        return UserError(N_("under the scenario's minimum (%(detail)s)"), detail=", ".join(
            f"{currency} {totals[currency]} < {minimums[currency]}" for currency in sorted(under)))
    step = max((step for step, _ in pending), key=lambda s: s.offset_days)
    listed = {invoice.id: invoice for _, invoice in pending}
    if step.whole_balance:
        for invoice in open_invoices:
            if invoice.due_date < today and invoice.currency not in under:
                listed.setdefault(invoice.id, invoice)
    # Whether an earlier reminder listed each one after its due date: the texts say so only then.
    marked = [replace(invoice, reminded=chased.get(invoice.id, 0) > 0) for invoice in listed.values()]
    return step, sorted(marked, key=lambda i: (i.currency, i.due_date, i.number))


def _companies(session: Session, company_code: str | None) -> list[Company]:
    query = select(Company).order_by(Company.code)
    if company_code is not None:
        query = query.where(Company.code == company_code)
    companies = list(session.scalars(query))
    if company_code is not None and not companies:
        raise UnknownCompany(f"unknown company {company_code!r}")
    return companies


def plan(session: Session, today: date | None, company: Company | None = None) -> list[PlannedMessage]:
    """Messages due `today` (None: each company's local today), for one company or all."""
    planned: list[PlannedMessage] = []
    for each in [company] if company is not None else _companies(session, None):
        planned.extend(plan_company(session, each, today or clock.today(each.timezone)).messages)
    return planned


# --- rendering and queueing -------------------------------------------------------------------


@dataclass(frozen=True)
class _CompanyFacts:
    view: CompanyView
    country: str
    base_currency: str
    brand_color: str


def render_planned(message: PlannedMessage, company: _CompanyFacts, secret: str, base_url: str,
                   customer_name: str | None = None, contact_name: str = "") -> messages.RenderedMessage:
    token = tokens.make_token(secret, cast(Contact, _TokenSubject(message.contact_id, message.link_version)))
    context = messages.build_context(
        language=message.language, today=message.today, company=company.view, country=company.country,
        base_currency=company.base_currency,
        customer=CustomerView(name=customer_name or message.customer_name, ref=message.customer_ref),
        contact=ContactView(name=contact_name or message.contact_name, email=message.to_address),
        invoices=list(message.invoices), all_open=list(message.all_open),
        link=tokens.link_url(base_url, token),
        needed=messages.placeholders_used(*message.step.texts(message.language)),
        broken_promise=message.broken_promise,
    )
    return messages.render(message.step, message.language, context, brand_color=company.brand_color)


@dataclass(frozen=True)
class _TokenSubject:
    """What tokens.make_token reads of a contact, without loading it."""

    id: int
    link_version: int


# Core statements built once: a run inserts thousands of rows.
_INSERT_OUTBOX = insert(OutboxMessage.__table__).returning(OutboxMessage.__table__.c.id, sort_by_parameter_order=True)
_INSERT_REMINDER = insert(Reminder.__table__).returning(Reminder.__table__.c.id, sort_by_parameter_order=True)


QUEUE_BATCH = 200  # messages per transaction (a customer's copies are never split)


def _by_customer(planned: list[PlannedMessage]) -> list[list[PlannedMessage]]:
    """The messages grouped per customer, in plan order: each group is queued all or nothing."""
    groups: list[list[PlannedMessage]] = []
    for message in planned:
        if groups and groups[-1][0].customer_id == message.customer_id:
            groups[-1].append(message)
        else:
            groups.append([message])
    return groups


def _batches(planned: list[PlannedMessage]) -> list[list[list[PlannedMessage]]]:
    batches: list[list[list[PlannedMessage]]] = []
    size = QUEUE_BATCH
    for group in _by_customer(planned):
        if size + len(group) > QUEUE_BATCH:
            batches.append([])
            size = 0
        batches[-1].append(group)
        size += len(group)
    return batches


def _insert(session: Session, batch: list[tuple[PlannedMessage, messages.RenderedMessage]], run_id: int,
            status: str = "queued") -> None:
    """Outbox messages, their Reminders, the invoices they list and the timeline events: multi-row inserts."""
    connection = session.connection()
    now = clock.now()
    outbox_ids = connection.execute(_INSERT_OUTBOX, [
        {"customer_id": message.customer_id, "contact_id": message.contact_id, "kind": OUTBOX_KIND,
         "to_address": message.to_address, "subject": rendered.subject[:300], "body_text": rendered.text,
         "body_html": rendered.html, "status": status, "attempts": 0, "next_attempt_at": now, "created_at": now}
        for message, rendered in batch
    ]).scalars().all()
    reminder_ids = connection.execute(_INSERT_REMINDER, [
        {"customer_id": message.customer_id, "contact_id": message.contact_id, "step_id": message.step.id,
         "run_id": run_id, "invoice_key": message.invoice_key, "outbox_id": outbox_id, "created_at": now}
        for (message, _), outbox_id in zip(batch, outbox_ids, strict=True)
    ]).scalars().all()
    connection.execute(insert(reminder_invoices), [
        {"reminder_id": reminder_id, "invoice_id": invoice_id}
        for (message, _), reminder_id in zip(batch, reminder_ids, strict=True)
        for invoice_id in message.invoice_ids
    ])
    # The customer's timeline: what was queued, to whom, at which step, for which invoices.
    connection.execute(insert(AuditEvent.__table__), [
        {"actor_type": "system", "actor": "reminders", "action": "reminder.queued", "entity_type": "reminder",
         "entity_id": reminder_id, "customer_id": message.customer_id, "company_id": message.company_id,
         "before": None, "created_at": now,
         "after": {"step": message.step.label, "to": message.to_address, "outbox_id": outbox_id,
                   "subject": rendered.subject, "invoices": [i.number for i in message.invoices],
                   "totals": message.totals, **({"held": True} if status == "held" else {})}}
        for (message, rendered), reminder_id, outbox_id in zip(batch, reminder_ids, outbox_ids, strict=True)
    ])


Rendered = list[tuple[PlannedMessage, messages.RenderedMessage]]


def _queue_batch(session_factory: sessionmaker[Session], groups: list[Rendered], run_id: int,
                 status: str = "queued") -> tuple[int, int]:
    """Queue a batch; (queued, already queued by another run).

    Each customer's Reminder and outbox message are written in the same transaction, so a
    crash loses whole customers, never half of one. When another run queued some of them
    first, the batch is redone one customer (all its contacts) per savepoint, keeping the
    others. A transaction here starts with a write, so on SQLite it waits for the write lock
    instead of failing on a stale read.
    """
    batch = [item for group in groups for item in group]
    try:
        with unit_of_work(session_factory) as session:
            _insert(session, batch, run_id, status)
        return len(batch), 0
    except IntegrityError:
        pass
    queued = already = 0
    with unit_of_work(session_factory) as session:
        for group in groups:
            try:
                with session.begin_nested():
                    _insert(session, group, run_id, status)
            except IntegrityError:
                already += len(group)  # another run queued this customer's (contact, step, invoices)
            else:
                queued += len(group)
    return queued, already


def run(session_factory: sessionmaker[Session], settings: Any, today: date | None = None,
        company_code: str | None = None, dry_run: bool = False) -> list[RunReport]:
    """Plan and queue reminders, one ReminderRun per company; `today` None: each company's local date.

    Raises UnknownCompany for an unknown `company_code`.
    """
    with session_factory() as session:
        companies = [(c.id, c.code, c.timezone) for c in _companies(session, company_code)]
    return [run_company(session_factory, settings, company_id, today or clock.today(tz), dry_run)
            for company_id, _code, tz in companies]


def run_company(session_factory: sessionmaker[Session], settings: Any, company_id: int, today: date,
                dry_run: bool = False, on_progress: Callable[[], object] | None = None) -> RunReport:
    """Plan and queue one company's run. `on_progress` is called once the plan is made and after
    each batch queued (the worker renews its claim on the run there: `dunning.claims`)."""
    with unit_of_work(session_factory) as session:
        company = session.get_one(Company, company_id)
        if session.scalar(select(func.count()).select_from(Scenario).where(Scenario.company_id == company_id)) == 0:
            # Every company starts with the standard scenario; staff adapt it later.
            from dunning.scenarios import ensure_default_scenario

            ensure_default_scenario(session, company)
        facts = _CompanyFacts(
            view=CompanyView(name=company.name, support_email=company.support_email or "",
                             address=company.address or ""),
            country=company.country, base_currency=company.base_currency, brand_color=company.brand_color,
        )
        reminders_off = not company.reminders_enabled
        held = company.reminders_need_approval
        if reminders_off and not dry_run:
            # Nothing is planned, nor recorded as a run: the day stays open for when they are on.
            return RunReport(company_code=company.code, run_date=today, dry_run=dry_run, reminders_off=True)
        planned = plan_company(session, company, today)
    report = RunReport(company_code=planned.company_code, run_date=today, dry_run=dry_run,
                       planned=len(planned.messages), skipped=planned.skipped, problems=planned.problems,
                       messages=planned.messages, reminders_off=reminders_off, held=held)
    with unit_of_work(session_factory) as session:
        reminder_run = ReminderRun(company_id=company_id, run_date=today, dry_run=dry_run, started_at=clock.now(),
                                   planned=report.planned, skipped=len(report.skipped), problems=report.problems)
        session.add(reminder_run)
        session.flush()
        report.run_id = reminder_run.id
    assert report.run_id is not None
    if on_progress is not None:
        on_progress()
    if not dry_run:
        secret = str(settings.secret_key)
        for groups in _batches(planned.messages):
            rendered = [[(message, render_planned(message, facts, secret, settings.base_url)) for message in group]
                        for group in groups]
            queued, already = _queue_batch(session_factory, rendered, report.run_id, "held" if held else "queued")
            report.queued += queued
            report.already_queued += already
            if on_progress is not None:
                on_progress()
    with unit_of_work(session_factory) as session:
        session.execute(
            update(ReminderRun).where(ReminderRun.id == report.run_id)
            .values(queued=report.queued, skipped=len(report.skipped) + report.already_queued,
                    finished_at=clock.now())
        )
    return report


def preview(session: Session, step: ScenarioStep | StepTexts, customer: Customer, *, secret: str, base_url: str,
            today: date | None = None, language: str | None = None) -> messages.RenderedMessage:
    """What `step` (saved, or texts being edited) would send `customer` today, for the scenario
    editor; queues nothing. Raises jinja2.TemplateError when the texts do not render.

    Lists the customer's overdue chased-eligible invoices (all of them if none is overdue).
    """
    company = customer.company
    today = today or clock.today(company.timezone)
    open_invoices = _eligible_invoices(session, company, today, customer_id=customer.id).get(customer.id, [])
    overdue = [invoice for invoice in open_invoices if invoice.due_date < today] or open_invoices
    contact = customer.primary_contact
    texts = step if isinstance(step, StepTexts) else StepTexts(
        id=step.id, offset_days=step.offset_days, tone=step.tone, whole_balance=step.whole_balance,
        subject_fr=step.subject_fr, body_fr=step.body_fr, subject_en=step.subject_en, body_en=step.body_en)
    message = PlannedMessage(
        company_id=company.id, company_code=company.code, customer_id=customer.id, customer_ref=customer.ref,
        customer_name=customer.name, contact_id=contact.id if contact else 0,
        link_version=contact.link_version if contact else 0, to_address=contact.email if contact else "",
        language=language or (contact.language if contact else customer.language), step=texts,
        invoices=tuple(overdue), all_open=tuple(open_invoices), today=today,
        broken_promise=_latest_broken(_broken_promises(session, company.id, customer.id), overdue),
    )
    facts = _CompanyFacts(view=CompanyView(company.name, company.support_email or "", company.address or ""),
                          country=company.country, base_currency=company.base_currency,
                          brand_color=company.brand_color)
    return render_planned(message, facts, secret, base_url, contact_name=(contact.name or "") if contact else "")
