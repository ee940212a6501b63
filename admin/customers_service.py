"""Back-office reading of the book: the customers list, one customer's timeline, and the staff
actions on a customer (notes, collector, pause). Services only: nothing here sees HTTP.

Amounts are summed in SQL per customer and currency over the open invoices only (a partial
index covers them), never in Python loops; amounts of different currencies are never added.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlencode

from sqlalchemy import Select, and_, case, exists, func, literal, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from kernel.clock import clock
from kernel.i18n import N_
from kernel.paging import Page
from kernel.user_error import UserError
from ledger import audit
from ledger.models import (
    AuditEvent,
    BalanceState,
    Company,
    Contact,
    Customer,
    CustomerBalance,
    CustomerNote,
    Dispute,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    LinkOpen,
    OutboxMessage,
    Reminder,
    Role,
    User,
)
from ledger.money import Money
from links import tokens

PAGE_SIZE = 50
SORTS = ("name", "outstanding", "overdue", "oldest")
CHASED = (InvoiceStatus.open.value, InvoiceStatus.partially_paid.value)
MAX_NOTE_CHARS = 5000
NOTE_KINDS = ("note", "call")
TIMELINE_LIMIT = 300


def param_text(params: Mapping[str, str], name: str, limit: int = 100) -> str:
    return str(params.get(name, "")).strip()[:limit]


def param_flag(params: Mapping[str, str], name: str) -> bool:
    return params.get(name, "") in ("1", "on", "true", "yes")


def page_number(params: Mapping[str, str]) -> int:
    raw = str(params.get("page", "1"))
    return max(1, min(int(raw), 100_000)) if raw.isdigit() else 1


def like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class CustomerFilters:
    q: str = ""
    company: str = ""
    segment: str = ""
    collector: str = ""  # a user id, "none" for unassigned, "" for everyone
    overdue: bool = False
    disputed: bool = False
    sort: str = "name"
    page: int = 1

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> CustomerFilters:
        sort = param_text(params, "sort")
        collector = param_text(params, "collector")
        return cls(
            q=param_text(params, "q"), company=param_text(params, "company"), segment=param_text(params, "segment"),
            collector=collector if collector == "none" or collector.isdigit() else "",
            overdue=param_flag(params, "overdue"), disputed=param_flag(params, "disputed"),
            sort=sort if sort in SORTS else "name", page=page_number(params),
        )

    def query_string(self, **changes: Any) -> str:
        """The URL query of these filters (with `changes`), defaults left out."""
        chosen = replace(self, **changes)
        pairs = [(k, v) for k, v in (("q", chosen.q), ("company", chosen.company), ("segment", chosen.segment),
                                     ("collector", chosen.collector)) if v]
        pairs += [(k, "1") for k, v in (("overdue", chosen.overdue), ("disputed", chosen.disputed)) if v]
        if chosen.sort != "name":
            pairs.append(("sort", chosen.sort))
        if chosen.page > 1:
            pairs.append(("page", str(chosen.page)))
        return urlencode(pairs)


@dataclass(frozen=True)
class CustomerRow:
    id: int
    ref: str
    name: str
    company_code: str
    collector_email: str | None
    outstanding: list[Money]
    overdue: list[Money]
    paused: bool
    disputed: bool
    mandate: bool


def one_page(run: Callable[[Select[Any]], Iterable[Any]], query: Select[Any], page: int) -> tuple[list[Any], bool]:
    """Page `page` of an ordered query (PAGE_SIZE rows, `run` being `session.execute` or
    `session.scalars`) and whether another page follows: one row more is read, nothing counted."""
    found = list(run(query.offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)))
    return found[:PAGE_SIZE], len(found) > PAGE_SIZE


def local_today(session: Session) -> Any:
    """Each company's today: a literal when they agree (the usual case), else a CASE on the company."""
    days = {company_id: clock.today(tz) for company_id, tz in session.execute(select(Company.id, Company.timezone))}
    distinct = set(days.values())
    if len(distinct) <= 1:
        return literal(next(iter(distinct), clock.today("UTC")))
    return case(days, value=Invoice.company_id)


def _open() -> Any:
    # Written exactly as the partial index's predicate, so SQLite uses it.
    return and_(Invoice.open_minor > 0, Invoice.status != InvoiceStatus.void.value)


def _outstanding_expr() -> Any:
    """The customer's outstanding in one currency, as the dashboard counts it: open invoices neither
    void nor disputed; open credit notes are not deducted (they show on the customer's page and
    in the dashboard's net balance). Kept the same in the sort key (migration 0021_polish)."""
    return func.sum(case((and_(Invoice.kind == InvoiceKind.invoice.value, Invoice.status.in_(CHASED)),
                          Invoice.open_minor), else_=0))


def _is_overdue(today: Any) -> Any:
    return and_(Invoice.kind == InvoiceKind.invoice.value, Invoice.status.in_(CHASED), Invoice.due_date < today)


def _overdue_expr(today: Any) -> Any:
    return func.sum(case((_is_overdue(today), Invoice.open_minor), else_=0))


def collectors_of(session: Session, company_ids: list[int] | None = None) -> list[User]:
    """Active collectors, of these companies when given (a collector belongs to the companies it is given)."""
    query = select(User).where(User.role == Role.collector.value, User.active.is_(True)).order_by(User.email)
    users = list(session.scalars(query))
    if company_ids is None:
        return users
    wanted = set(company_ids)
    return [u for u in users if not u.companies or wanted & {c.id for c in u.companies}]


def contains(session: Session, column: Any, pattern: str) -> Any:
    """Case-insensitive LIKE: SQLite's LIKE already is (for ASCII), and lower() on every row
    would cost a function call per row; PostgreSQL needs ILIKE."""
    if session.get_bind().dialect.name == "sqlite":
        return column.like(pattern, escape="\\")
    return column.ilike(pattern, escape="\\")


def customer_query(session: Session, filters: CustomerFilters,
                    scope: Any) -> Select[Any]:
    query = scope(select(Customer.id))
    if filters.company:
        query = query.where(Customer.company_id == select(Company.id).where(Company.code == filters.company)
                            .scalar_subquery())
    if filters.segment:
        query = query.where(Customer.segment == filters.segment)
    if filters.collector == "none":
        query = query.where(Customer.collector_id.is_(None))
    elif filters.collector:
        query = query.where(Customer.collector_id == int(filters.collector))
    if filters.q:
        pattern = like_pattern(filters.q)
        # One pass over the contacts, not one lookup per customer.
        by_contact = Customer.id.in_(select(Contact.customer_id).where(contains(session, Contact.email, pattern),
                                                                     Contact.removed_at.is_(None)))
        query = query.where(or_(contains(session, Customer.ref, pattern), contains(session, Customer.name, pattern),
                                by_contact))
    if filters.overdue:
        # The oldest due date of an open chased invoice, kept per customer by triggers.
        query = query.where(exists().where(CustomerBalance.customer_id == Customer.id,
                                           CustomerBalance.oldest_due < list_day(session)))
    if filters.disputed:
        query = query.where(exists().where(Dispute.customer_id == Customer.id, Dispute.status == "open",
                                           Dispute.kind == "dispute"))
    return query


def list_day(session: Session) -> date:
    """The day overdue counts from in the list: the earliest of the companies' local dates."""
    days = [clock.today(tz) for tz in session.scalars(select(Company.timezone).distinct())]
    return min(days) if days else clock.today("UTC")


def refresh_overdue(session: Session, as_of: date) -> None:
    """Moves the stored overdue sort keys to `as_of`: once a day, one pass over the open invoices.
    (The triggers keep them right between two days; only the passing of time needs this.)"""
    state = session.get(BalanceState, 1)
    if state is None:
        state = BalanceState(id=1)
        session.add(state)
    if state.as_of == as_of:
        return
    state.as_of = as_of
    session.flush()
    per_currency = (
        select(Invoice.customer_id.label("customer_id"), _overdue_expr(literal(as_of)).label("overdue"))
        .where(_open()).group_by(Invoice.customer_id, Invoice.currency).subquery()
    )
    per_customer = (select(per_currency.c.customer_id, func.max(per_currency.c.overdue).label("overdue"))
                    .group_by(per_currency.c.customer_id).subquery())
    session.execute(update(CustomerBalance).values(overdue_minor=0).where(CustomerBalance.overdue_minor != 0))
    session.execute(
        update(CustomerBalance).values(overdue_minor=per_customer.c.overdue)
        .where(CustomerBalance.customer_id == per_customer.c.customer_id, per_customer.c.overdue != 0)
    )


def _balance_order(session: Session, sort: str) -> tuple[Any, ...]:
    """The ORDER BY of a sort by the CustomerBalance keys; empty for the sort by name."""
    if sort == "name":
        return ()
    if sort == "oldest":
        return CustomerBalance.oldest_due, CustomerBalance.customer_id
    if sort == "outstanding":
        return CustomerBalance.outstanding_minor.desc(), CustomerBalance.customer_id.desc()
    refresh_overdue(session, list_day(session))
    return CustomerBalance.overdue_minor.desc(), CustomerBalance.customer_id.desc()


def list_customers(session: Session, filters: CustomerFilters, scope: Any) -> Page[CustomerRow]:
    """One page of customers; `scope` restricts a query joining Customer to what the user may see.

    Sorted by amounts, the page walks the CustomerBalance indexes (kept by triggers) instead of
    summing the invoices: the sort key is the customer's largest per-currency figure."""
    today = local_today(session)
    query = customer_query(session, filters, scope)
    if filters.q:
        # A search matches a handful of customers: find them first (one pass over customers and
        # contacts), then sort just those. Walking a sort index would test every customer in turn.
        matched = query.subquery()
        query = select(Customer.id).join(CustomerBalance, CustomerBalance.customer_id == Customer.id) \
            .where(Customer.id.in_(select(matched.c.id)))
        query = query.order_by(*(_balance_order(session, filters.sort) or (Customer.name, Customer.id)))
    elif filters.sort == "name":
        # Same walk on the name index: without it, SQLite would pick the company index for a manager
        # and sort tens of thousands of names for one page.
        listed = aliased(Customer)
        query = (select(listed.id).where(query.where(Customer.id == listed.id).exists())
                 .order_by(listed.name, listed.id))
    else:
        # Walk the sort key's index and keep the customers that pass the filters (one primary-key
        # lookup each), stopping at a page: never a sort of the whole book.
        passes = query.where(Customer.id == CustomerBalance.customer_id).exists()
        query = select(CustomerBalance.customer_id).where(passes).order_by(*_balance_order(session, filters.sort))
    ids, has_next = one_page(session.scalars, query, filters.page)
    return Page(rows=customer_rows(session, ids, today), page=filters.page, has_next=has_next)


def customer_rows(session: Session, ids: list[int], today: Any) -> list[CustomerRow]:
    if not ids:
        return []
    outstanding: dict[int, list[Money]] = {}
    overdue: dict[int, list[Money]] = {}
    for customer_id, currency, owed, late in session.execute(
        select(Invoice.customer_id, Invoice.currency, _outstanding_expr(), _overdue_expr(today))
        .where(Invoice.customer_id.in_(ids), _open())
        .group_by(Invoice.customer_id, Invoice.currency)
        .order_by(Invoice.customer_id, Invoice.currency)
    ):
        if owed:
            outstanding.setdefault(customer_id, []).append(Money(int(owed), currency))
        if late:
            overdue.setdefault(customer_id, []).append(Money(int(late), currency))
    disputed = set(session.scalars(select(Dispute.customer_id).where(
        Dispute.customer_id.in_(ids), Dispute.status == "open", Dispute.kind == "dispute")))
    rows = {
        row.id: row for row in session.execute(
            select(Customer.id, Customer.ref, Customer.name, Company.code, User.email, Customer.reminders_paused,
                   Customer.gocardless_mandate_status)
            .join(Company, Company.id == Customer.company_id)
            .outerjoin(User, User.id == Customer.collector_id)
            .where(Customer.id.in_(ids))
        )
    }
    return [
        CustomerRow(id=cid, ref=rows[cid].ref, name=rows[cid].name, company_code=rows[cid].code,
                    collector_email=rows[cid].email, outstanding=outstanding.get(cid, []),
                    overdue=overdue.get(cid, []), paused=bool(rows[cid].reminders_paused), disputed=cid in disputed,
                    mandate=rows[cid].gocardless_mandate_status == "active")
        for cid in ids
    ]


_SEGMENTS = text("""
    WITH RECURSIVE found(segment) AS (
      SELECT MIN(segment) FROM customers WHERE company_id = :company AND segment IS NOT NULL
      UNION ALL
      SELECT (SELECT MIN(segment) FROM customers WHERE company_id = :company AND segment > found.segment)
      FROM found WHERE found.segment IS NOT NULL
    ) SELECT segment FROM found WHERE segment IS NOT NULL""")


def segments(session: Session, company_ids: list[int] | None) -> list[str]:
    """The segments in use: one index seek per segment (a skip scan), not a pass over the customers."""
    if company_ids is None:
        company_ids = list(session.scalars(select(Company.id)))
    found: set[str] = set()
    for company_id in company_ids:
        found.update(session.scalars(_SEGMENTS, {"company": company_id}))
    return sorted(found)


# --- one customer's timeline --------------------------------------------------------------------


@dataclass
class TimelineEntry:
    at: datetime
    kind: str  # reminder, email, link_open, note, event
    actor: str | None = None
    action: str | None = None
    entity_type: str | None = None
    entity_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    message: OutboxMessage | None = None
    manual: bool = False
    body: str | None = None

    @property
    def failed(self) -> bool:
        return self.message is not None and self.message.status == "failed"

    @property
    def content(self) -> str:
        """The message's text as staff may read it: without a usable magic link."""
        return tokens.mask_links(self.message.body_text) if self.message is not None else ""

    @property
    def link(self) -> str | None:
        if self.entity_type == "payment" and self.entity_id:
            return f"/admin/payments/{self.entity_id}"
        if self.entity_type == "dispute" and self.entity_id:
            return f"/admin/disputes/{self.entity_id}"
        return None


# Shown as their own entries (with content) rather than as audit lines.
_OWN_ENTRIES = ("reminder.queued", "note.added", "link.opened")  # link opens: from link_opens


def timeline(session: Session, customer: Customer) -> list[TimelineEntry]:
    """Everything that happened to this customer, newest first."""
    entries: list[TimelineEntry] = []
    reminder_outbox: set[int] = set()
    reminders = session.execute(
        select(Reminder, OutboxMessage).outerjoin(OutboxMessage, OutboxMessage.id == Reminder.outbox_id)
        .where(Reminder.customer_id == customer.id).order_by(Reminder.created_at.desc()).limit(TIMELINE_LIMIT)
    ).all()
    queued_events = {
        event.entity_id: event for event in session.scalars(
            select(AuditEvent).where(AuditEvent.customer_id == customer.id, AuditEvent.action == "reminder.queued"))
    }
    for reminder, message in reminders:
        if message is not None:
            reminder_outbox.add(message.id)
        event = queued_events.get(reminder.id)
        details = dict(event.after or {}) if event is not None else {}
        entries.append(TimelineEntry(
            at=reminder.created_at, kind="reminder", actor=event.actor if event is not None else None,
            entity_type="reminder", entity_id=reminder.id, details=details, message=message,
            manual=reminder.run_id is None))
    for message in session.scalars(
        select(OutboxMessage).where(OutboxMessage.customer_id == customer.id)
        .order_by(OutboxMessage.created_at.desc()).limit(TIMELINE_LIMIT)
    ):
        if message.id not in reminder_outbox:
            entries.append(TimelineEntry(at=message.created_at, kind="email", message=message,
                                         details={"kind": message.kind}))
    # Removed contacts too: what they opened stays on the timeline.
    emails = dict(session.execute(select(Contact.id, Contact.email).where(Contact.customer_id == customer.id)).all())
    contact_ids = list(emails)
    for link_open in session.scalars(
        select(LinkOpen).where(LinkOpen.contact_id.in_(contact_ids or [-1]))
        .order_by(LinkOpen.opened_at.desc()).limit(TIMELINE_LIMIT)
    ):
        entries.append(TimelineEntry(at=link_open.opened_at, kind="link_open", actor=emails.get(link_open.contact_id)))
    for note in session.scalars(
        select(CustomerNote).where(CustomerNote.customer_id == customer.id)
        .order_by(CustomerNote.created_at.desc()).limit(TIMELINE_LIMIT)
    ):
        entries.append(TimelineEntry(at=note.created_at, kind="note", actor=note.author.email if note.author else None,
                                     entity_type="note", entity_id=note.id, body=note.body,
                                     details={"kind": note.kind, "next_action_on": note.next_action_on,
                                              "done_at": note.done_at, "done_by": note.done_by}))
    for event in session.scalars(
        select(AuditEvent).where(AuditEvent.customer_id == customer.id, AuditEvent.action.not_in(_OWN_ENTRIES))
        .order_by(AuditEvent.created_at.desc()).limit(TIMELINE_LIMIT)
    ):
        entries.append(TimelineEntry(at=event.created_at, kind="event", actor=event.actor, action=event.action,
                                     entity_type=event.entity_type, entity_id=event.entity_id,
                                     details={"before": event.before or {}, "after": event.after or {}}))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:TIMELINE_LIMIT]


# --- actions ------------------------------------------------------------------------------------


def add_note(session: Session, customer: Customer, user: User, body: str, *, kind: str = "note",
             next_action_on: date | None = None) -> CustomerNote:
    """A note (or the record of a call); with `next_action_on`, also a task from that day."""
    body = body.strip()
    if not body:
        raise UserError(N_("Write the note first."))
    if len(body) > MAX_NOTE_CHARS:
        raise UserError(N_("A note is at most %(count)s characters."), count=MAX_NOTE_CHARS)
    if kind not in NOTE_KINDS:
        raise ValueError(f"unknown note kind {kind!r}")
    if next_action_on is not None and next_action_on < today_for(customer):
        raise UserError(N_("The next action date %(value)s is in the past."),
                        value=next_action_on.isoformat())
    note = CustomerNote(customer_id=customer.id, author_id=user.id, body=body, kind=kind,
                        next_action_on=next_action_on)
    session.add(note)
    session.flush()
    audit.record(session, actor_type="user", actor=user.email, action="note.added", entity_type="note",
                 entity_id=note.id, customer_id=customer.id,
                 after={"kind": kind, "next_action_on": next_action_on.isoformat()} if next_action_on else
                 {"kind": kind})
    return note


def open_tasks(session: Session, customer: Customer) -> list[CustomerNote]:
    """The customer's notes whose next action is not done yet, soonest first."""
    return list(session.scalars(
        select(CustomerNote).where(CustomerNote.customer_id == customer.id, CustomerNote.done_at.is_(None),
                                   CustomerNote.next_action_on.is_not(None))
        .order_by(CustomerNote.next_action_on, CustomerNote.id)))


def mark_task_done(session: Session, customer: Customer, user: User, note_id: int) -> CustomerNote:
    note = session.get(CustomerNote, note_id)
    if note is None or note.customer_id != customer.id or note.next_action_on is None:
        raise UserError(N_("Choose a task of this customer."))
    if note.done_at is not None:
        return note
    note.done_at = clock.now()
    note.done_by = user.email
    audit.record(session, actor_type="user", actor=user.email, action="task.done", entity_type="note",
                 entity_id=note.id, customer_id=customer.id,
                 after={"next_action_on": note.next_action_on.isoformat()})
    return note


def assign_collector(session: Session, customer: Customer, user: User, collector_id: int | None) -> None:
    """Only an active collector of the customer's company, or nobody."""
    if collector_id is not None:
        allowed = {c.id for c in collectors_of(session, [customer.company_id])}
        if collector_id not in allowed:
            raise UserError(N_("Choose a collector of this company."))
    if collector_id == customer.collector_id:
        return
    before = {"collector_id": customer.collector_id}
    customer.collector_id = collector_id
    audit.record(session, actor_type="user", actor=user.email, action="customer.collector_assigned",
                 entity_type="customer", entity_id=customer.id, customer_id=customer.id, before=before,
                 after={"collector_id": collector_id,
                        "collector": session.get_one(User, collector_id).email if collector_id else None})


def set_paused(session: Session, customer: Customer, user: User, paused: bool) -> None:
    if customer.reminders_paused == paused:
        return
    customer.reminders_paused = paused
    audit.record(session, actor_type="user", actor=user.email,
                 action="reminders.paused" if paused else "reminders.resumed", entity_type="customer",
                 entity_id=customer.id, customer_id=customer.id, before={"reminders_paused": not paused},
                 after={"reminders_paused": paused})


def today_for(customer: Customer) -> date:
    return clock.today(customer.company.timezone)
