"""What the staff queue of bank entries does: list, confirm a suggestion, match by hand, set an
entry aside, undo a match.

Routes check roles (who may act); these functions scope every look-up to the companies the user
may see (an admin sees every company), so an entry of another company is "not found".
Each function works in the caller's transaction and audits what it changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy import Select, and_, or_, select, text
from sqlalchemy.orm import Session

from kernel.i18n import N_
from kernel.paging import Page, ids_by_cursor
from kernel.user_error import UserError
from kernel.settings import Settings
from ledger import audit
from ledger.models import (
    BankEntry,
    BankEntryState,
    BankMatch,
    BankMatchState,
    Company,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Role,
    User,
)
from ledger.money import Money, decimals
from reconciliation import booking
from reconciliation.matching import Evidence

PAGE_SIZE = 50
STATES = tuple(state.value for state in BankEntryState)
OPEN_STATES = (BankEntryState.unmatched.value, BankEntryState.suggested.value)
# Written out, not bound: SQLite uses the partial index ix_bank_entries_open only for a WHERE that
# says what the index says, values included.
_OPEN = text("bank_entries.state IN ('unmatched', 'suggested')")


class EntryNotFound(UserError):
    """No such entry among the companies the user may see."""


@dataclass(frozen=True)
class EntryRow:
    entry: BankEntry
    company_code: str
    matches: list[BankMatch]  # suggested and confirmed, best first

    @property
    def suggestion(self) -> BankMatch | None:
        return next((m for m in self.matches if m.state == BankMatchState.suggested.value), None)


def _entry_id(row: EntryRow) -> int:
    return row.entry.id


def companies_of(user: User) -> list[int] | None:
    """The company ids the user may see; None for every company (an admin)."""
    if user.role == Role.admin.value:
        return None
    return [company.id for company in user.companies]


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_entries(
    session: Session,
    company_ids: Iterable[int] | None,
    state: str | None = None,
    search: str | None = None,
    page: int = 1,
    *,
    after: int | None = None,
    before: int | None = None,
) -> Page[EntryRow]:
    """Entries of these companies (None: all), newest first; `state` one of STATES, or "open" for
    unmatched and suggested together; `search` finds a payer, a text, a reference or an amount.

    `after` (the last entry id of the page before) or `before` (the first id of the page after)
    find the page from where the reader is, in one index range whatever its depth; a bare `page`
    number counts its way there."""
    query = select(BankEntry.id)
    if company_ids is not None:
        query = query.where(BankEntry.company_id.in_(list(company_ids)))
    if state == "open":
        query = query.where(_OPEN)
    elif state:
        if state not in STATES:
            raise UserError(N_("Unknown entry state %(state)s."), state=state)
        query = query.where(BankEntry.state == state)
    term = (search or "").strip()[:100]
    if term:
        conditions = [BankEntry.payer_name.ilike(_like(term), escape="\\"),
                      BankEntry.remittance_text.ilike(_like(term), escape="\\"),
                      BankEntry.structured_reference.ilike(_like(term.replace(" ", "")), escape="\\"),
                      BankEntry.payer_iban == term.replace(" ", "").upper()]
        amount = _amount_term(term)
        if amount is not None:
            conditions.append(_amount_condition(session, amount))
        query = query.where(or_(*conditions))
    return _page_of(session, query, max(1, page), after, before, undone_too=False)


def _page_of(session: Session, ids_query: Select[tuple[int]], page: int, after: int | None, before: int | None,
             undone_too: bool) -> Page[EntryRow]:
    """The page of entries `ids_query` finds, newest first: ids alone first (from an index), then
    those rows with their companies and matches."""
    ids, page, has_next = ids_by_cursor(session, ids_query, BankEntry.id, page, after, before, PAGE_SIZE)
    rows = session.execute(select(BankEntry, Company.code).join(Company, Company.id == BankEntry.company_id)
                           .where(BankEntry.id.in_(ids)).order_by(BankEntry.id.desc())).all() if ids else []
    matches: dict[int, list[BankMatch]] = {}
    if ids:
        wanted = select(BankMatch).where(BankMatch.entry_id.in_(ids))
        wanted = wanted.where(BankMatch.state != BankMatchState.undone.value) if not undone_too else wanted
        for match in session.scalars(wanted.order_by(BankMatch.score.desc(), BankMatch.id)):
            matches.setdefault(match.entry_id, []).append(match)
    return Page.by_cursor([EntryRow(entry, code, matches.get(entry.id, [])) for entry, code in rows], page, has_next,
                          _entry_id)


def _amount_term(term: str) -> Decimal | None:
    try:
        value = Decimal(term.replace(" ", "").replace("\u00a0", "").replace(",", "."))
    except InvalidOperation:
        return None
    return value if value.is_finite() and value != 0 else None


def _amount_condition(session: Session, amount: Decimal) -> object:
    """Entries of that amount, in each currency the entries use, with that currency's decimals."""
    conditions = []
    for currency in session.scalars(select(BankEntry.currency).distinct()):
        minor = amount.scaleb(decimals(currency))
        if minor == minor.to_integral_value():
            conditions.append(and_(BankEntry.currency == currency, BankEntry.amount_minor.in_((int(minor), -int(minor)))))
    return or_(*conditions) if conditions else BankEntry.id < 0


def get_entry(session: Session, entry_id: int, company_ids: Iterable[int] | None, *,
              for_update: bool = False) -> BankEntry:
    query = select(BankEntry).where(BankEntry.id == entry_id)
    if company_ids is not None:
        query = query.where(BankEntry.company_id.in_(list(company_ids)))
    if for_update:
        query = query.with_for_update()
    entry = session.scalar(query)
    if entry is None:
        raise EntryNotFound(N_("No bank entry %(id)s."), id=entry_id)
    return entry


def _open_entry(session: Session, entry_id: int, user: User) -> BankEntry:
    entry = get_entry(session, entry_id, companies_of(user), for_update=True)
    if entry.state not in OPEN_STATES:
        raise UserError(N_("This bank entry is %(state)s already."), state=entry.state)
    return entry


def confirm_suggestion(session: Session, entry_id: int, user: User, match_id: int | None = None,
                       settings: Settings | None = None) -> BankMatch:
    """Apply the entry's best suggestion (or the one named) as proposed."""
    entry = _open_entry(session, entry_id, user)
    query = select(BankMatch).where(BankMatch.entry_id == entry.id,
                                    BankMatch.state == BankMatchState.suggested.value)
    if match_id is not None:
        query = query.where(BankMatch.id == match_id)
    match = session.scalar(query.order_by(BankMatch.score.desc(), BankMatch.id).limit(1))
    if match is None:
        raise UserError(N_("This bank entry has no suggestion to confirm."))
    return booking.confirm(session, match, user, settings)


def match_manually(
    session: Session,
    entry_id: int,
    allocations: Sequence[tuple[int, Money]],
    user: User,
    write_off: bool = False,
    settings: Settings | None = None,
) -> BankMatch:
    """Staff's own match: these amounts of the entry to these invoices (of one or several
    customers of the entry's company). The early-payment discount is granted when an amount is
    the invoice's open amount less the discount valid on the entry's value date; with `write_off`,
    an invoice short by no more than the company's tolerance is settled in full; what the entry
    brought beyond the amounts is the first customer's unapplied credit. Every problem is named
    and nothing is applied."""
    entry = _open_entry(session, entry_id, user)
    if entry.amount_minor <= 0 or entry.reversal:
        raise UserError(N_("Only money received can be matched to invoices."))
    if not allocations:
        raise UserError(N_("Choose at least one invoice."))
    company = session.get_one(Company, entry.company_id)
    day = booking.received_on(entry)
    problems: list[UserError] = []
    lines: list[tuple[int, int | None, int, int, int]] = []
    seen: set[int] = set()
    ids = [invoice_id for invoice_id, _amount in allocations]
    invoices = {invoice.id: invoice for invoice in session.scalars(
        select(Invoice).where(Invoice.id.in_(ids), Invoice.company_id == entry.company_id))}
    for invoice_id, amount in allocations:
        invoice = invoices.get(invoice_id)
        if invoice is None:
            problems.append(UserError(N_("invoice %(id)s is not an invoice of %(company)s"), id=str(invoice_id),
                                      company=company.code))
            continue
        if invoice_id in seen:
            problems.append(UserError(N_("%(number)s is chosen twice"), number=invoice.number))
            continue
        seen.add(invoice_id)
        if invoice.kind != InvoiceKind.invoice.value or invoice.status == InvoiceStatus.void.value:
            problems.append(UserError(N_("%(number)s is not an invoice that can be paid"), number=invoice.number))
            continue
        if amount.currency != entry.currency or invoice.currency != entry.currency:
            problems.append(UserError(N_("%(number)s is in %(currency)s, the entry in %(entry_currency)s"),
                                      number=invoice.number, currency=invoice.currency, entry_currency=entry.currency))
            continue
        if amount.minor <= 0:
            problems.append(UserError(N_("%(number)s: the amount must be more than zero"), number=invoice.number))
            continue
        discount = _discount(invoice, day)
        if discount and amount.minor == invoice.open_minor - discount:
            lines.append((invoice.customer_id, invoice.id, amount.minor, discount, 0))
            continue
        if amount.minor > invoice.open_minor:
            problems.append(UserError(N_("%(number)s: %(amount)s is more than its open %(open)s"), number=invoice.number,
                                      amount=amount, open=invoice.open))
            continue
        short = invoice.open_minor - amount.minor
        written_off = 0
        if write_off and short:
            if short > company.write_off_tolerance_minor:
                problems.append(UserError(N_("%(number)s: %(short)s short is more than the %(tolerance)s that may be "
                                             "written off"), number=invoice.number, short=Money(short, entry.currency),
                                          tolerance=Money(company.write_off_tolerance_minor, entry.currency)))
                continue
            written_off = short
        lines.append((invoice.customer_id, invoice.id, amount.minor, 0, written_off))
    total = sum(line[2] for line in lines) if not problems else sum(amount.minor for _id, amount in allocations)
    if total > entry.amount_minor:
        problems.append(UserError(N_("the amounts add up to %(total)s, more than the %(amount)s the entry brought"),
                                  total=Money(total, entry.currency), amount=entry.amount))
    if problems:
        raise UserError(N_("Nothing was matched: %(problems)s."), problems=tuple(problems))
    if total < entry.amount_minor:
        lines.append((lines[0][0], None, entry.amount_minor - total, 0, 0))
    for other in session.scalars(select(BankMatch).where(BankMatch.entry_id == entry.id,
                                                         BankMatch.state == BankMatchState.suggested.value)):
        session.delete(other)
    session.flush()
    numbers = ", ".join(invoices[line[1]].number for line in lines if line[1] is not None)
    match = booking.new_match(session, entry, evidence=Evidence.manual.value,
                              reason=f"matched by {user.email} to {numbers}", score=100, lines=lines,
                              details={"reason_message": N_("Matched by %(user)s to %(numbers)s."),
                                       "reason_values": {"user": user.email, "numbers": numbers}})
    return booking.confirm(session, match, user, settings)


def _discount(invoice: Invoice, day: object) -> int:
    if (not invoice.discount_bps or invoice.discount_until is None or day is None or day > invoice.discount_until
            or invoice.open_minor != invoice.total_minor):
        return 0
    return invoice.open.percent_bps(invoice.discount_bps).minor


def mark_not_customer_payment(session: Session, entry_id: int, user: User) -> BankEntry:
    """Set the entry aside: not money a customer paid (a refund from a supplier, a transfer between
    the company's own accounts). Its suggestions go."""
    entry = _open_entry(session, entry_id, user)
    for match in session.scalars(select(BankMatch).where(BankMatch.entry_id == entry.id,
                                                         BankMatch.state == BankMatchState.suggested.value)):
        session.delete(match)
    before = entry.state
    entry.state = BankEntryState.ignored.value
    session.flush()
    audit.record(session, actor_type="user", actor=user.email, action="bank_entry.ignored", entity_type="bank_entry",
                 entity_id=entry.id, company_id=entry.company_id, before={"state": before},
                 after={"state": entry.state})
    return entry


def restore_entry(session: Session, entry_id: int, user: User) -> BankEntry:
    """An entry set aside by mistake goes back to the queue, unmatched."""
    entry = get_entry(session, entry_id, companies_of(user), for_update=True)
    if entry.state != BankEntryState.ignored.value:
        raise UserError(N_("Only an entry set aside can be put back; this one is %(state)s."),
                                  state=entry.state)
    entry.state = BankEntryState.unmatched.value
    session.flush()
    audit.record(session, actor_type="user", actor=user.email, action="bank_entry.restored",
                 entity_type="bank_entry", entity_id=entry.id, company_id=entry.company_id,
                 before={"state": BankEntryState.ignored.value}, after={"state": entry.state})
    return entry


def undo_match(session: Session, match_id: int, user: User, settings: Settings | None = None) -> BankMatch:
    """Take back a confirmed match: its payments fail, invoices reopen exactly, the entry is
    unmatched again."""
    query = select(BankMatch).where(BankMatch.id == match_id)
    scope = companies_of(user)
    if scope is not None:
        query = query.where(BankMatch.company_id.in_(scope))
    match = session.scalar(query.with_for_update())
    if match is None:
        raise EntryNotFound(N_("No bank match %(id)s."), id=match_id)
    if match.evidence == Evidence.reversal.value:
        raise UserError(N_("A payment the bank returned cannot be undone here."))
    return booking.undo(session, match, user, reason=f"undone by {user.email}", settings=settings)


def list_collector_entries(session: Session, collector_id: int, search: str | None = None,
                           page: int = 1, *, after: int | None = None, before: int | None = None) -> Page[EntryRow]:
    """What a collector sees of the bank: entries matched (confirmed) to customers assigned to it,
    newest first; `search` finds a payer or a text."""
    from ledger.models import BankMatchLine, Customer

    mine = (select(BankMatch.entry_id)
            .join(BankMatchLine, BankMatchLine.match_id == BankMatch.id)
            .join(Customer, Customer.id == BankMatchLine.customer_id)
            .where(BankMatch.state == BankMatchState.confirmed.value, Customer.collector_id == collector_id))
    query = select(BankEntry.id).where(BankEntry.id.in_(mine), BankEntry.state == BankEntryState.matched.value)
    term = (search or "").strip()[:100]
    if term:
        query = query.where(or_(BankEntry.payer_name.ilike(_like(term), escape="\\"),
                                BankEntry.remittance_text.ilike(_like(term), escape="\\")))
    found = _page_of(session, query, max(1, page), after, before, undone_too=True)
    # A collector reads the confirmed matches only.
    return Page.by_cursor([EntryRow(row.entry, row.company_code,
                                    [m for m in row.matches if m.state == BankMatchState.confirmed.value])
                           for row in found.rows], found.page, found.has_next, _entry_id)


SEARCH_LIMIT = 20


def invoices_for_match(session: Session, company_id: int, ids: Sequence[int]) -> list[Invoice]:
    """These invoices of the company, in the order given (what staff picked for a match)."""
    if not ids:
        return []
    found = {invoice.id: invoice for invoice in session.scalars(
        select(Invoice).where(Invoice.id.in_(list(ids)), Invoice.company_id == company_id))}
    return [found[i] for i in ids if i in found]


def search_open_invoices(session: Session, company_id: int, currency: str, term: str,
                         exclude: Sequence[int] = ()) -> list[Invoice]:
    """Open invoices of the company in `currency` whose number, or whose customer's name or
    code, contains `term`: oldest due first, at most SEARCH_LIMIT."""
    from ledger.models import Customer

    term = term.strip()[:100]
    if not term:
        return []
    pattern = _like(term)
    customers = select(Customer.id).where(Customer.company_id == company_id, or_(
        Customer.name.ilike(pattern, escape="\\"), Customer.ref.ilike(pattern, escape="\\")))
    query = select(Invoice).where(
        Invoice.company_id == company_id, Invoice.currency == currency,
        Invoice.kind == InvoiceKind.invoice.value, Invoice.open_minor > 0,
        Invoice.status != InvoiceStatus.void.value,
        or_(Invoice.number.ilike(pattern, escape="\\"), Invoice.customer_id.in_(customers)))
    if exclude:
        query = query.where(Invoice.id.not_in(list(exclude)))
    return list(session.scalars(query.order_by(Invoice.due_date, Invoice.id).limit(SEARCH_LIMIT)))
