"""Loading a bank statement file: parse, book each statement to its company's account, keep
the entries not seen before, match the credits.

All or nothing per file: any refusal raises `UserError` before the caller commits, and
nothing of the file stays. Loading a file again changes nothing: an entry is known by its
identity within its account (`entry_identity`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, String, any_, cast, literal, select, text, update
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.collector import collection_paused
from kernel.db import background_writes, insert_rows, reserve_ids
from kernel.i18n import N_
from kernel.user_error import Count, UserError, UserErrors
from kernel.settings import Settings
from ledger import audit
from ledger.banking import BankDetailsError, normalize_iban
from ledger.models import (
    BankAccount,
    BankEntry,
    PaymentMethod,
    BankEntryState,
    BankMatch,
    BankMatchState,
    BankMatchLine,
    BankStatement,
    Checkout,
    CheckoutLine,
    Company,
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    PayerAccount,
    User,
)
from reconciliation import booking
from reconciliation.accounts import account_for_iban, company_by_code
from reconciliation.entries import EntryStatus, ParsedEntry, ParsedStatement
from reconciliation.matching import (
    Book,
    CheckoutFacts,
    CustomerFacts,
    EntryFacts,
    Evidence,
    OpenInvoice,
    Proposal,
    match_entry,
)
from reconciliation.parsers import parse_statement_file
from reconciliation.references import find_rf_references

_CHUNK = 500  # ids per IN (...) list
_BATCH = 2000  # automatic matches applied together


@dataclass
class StatementSummary:
    file_name: str
    statement_ref: str | None
    account: str
    company_code: str
    format: str
    entries_read: int = 0
    matched: int = 0  # credits matched automatically
    suggested: int = 0
    unmatched: int = 0
    debits: int = 0  # money out, not matched
    already_imported: int = 0
    warnings: list[str] = field(default_factory=list)
    statement_id: int | None = None

    def line(self) -> str:
        text = (f"{self.file_name}: statement {self.statement_ref or '-'} of {self.account} ({self.company_code}): "
                f"{self.entries_read} entries read, {self.matched} credits matched automatically, "
                f"{self.suggested} suggested, {self.unmatched} left unmatched, {self.debits} debits ignored, "
                f"{self.already_imported} already imported")
        if self.warnings:
            text += f", {len(self.warnings)} warning(s)"
        return text


@dataclass
class ImportReport:
    statements: list[StatementSummary] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [summary.line() for summary in self.statements]


def entry_identity(entry: ParsedEntry, occurrence: int) -> str:
    """Who the entry is within its account: the bank's own reference with the booking day and the
    amount when the bank gives one; else a digest of everything the entry says plus how many
    identical entries came before it in the file, so two identical entries in one file are two."""
    day = (entry.booking_date or entry.value_date)
    if entry.bank_reference:
        key = f"R|{day}|{entry.amount.minor}|{entry.amount.currency}|{entry.bank_reference}"
        if len(key) <= 110 and occurrence == 0:
            return key
    parts = (day, entry.value_date, entry.amount.minor, entry.amount.currency, entry.credit_debit.value,
             entry.reversal, entry.counterparty_name, entry.counterparty_iban, entry.remittance_text,
             entry.structured_reference, entry.end_to_end_id, entry.entry_reference, entry.bank_reference)
    digest = hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:40]
    return f"H|{digest}|{occurrence}"


SHOWN_BAD_LINES = 20


def _at_line(problem: UserError) -> UserError:
    return UserError(N_("line %(line)s: %(problem)s"), line=problem.line, problem=problem)


def _unreadable(filename: str, error: UserError | UserErrors) -> UserError:
    """Why the file could not be read, with where: its line, or the XML element its message names."""
    if isinstance(error, UserError):
        where: object = "" if error.line is None else UserError(N_(" (at line %(line)s)"), line=error.line)
        return UserError(N_("%(file)s: nothing imported: %(problem)s%(where)s"), file=filename, problem=error,
                         where=where)
    shown = [_at_line(problem) for problem in error.errors[:SHOWN_BAD_LINES]]
    if len(error) > SHOWN_BAD_LINES:
        shown.append(UserError(N_("and %(count)s more"), count=Count(len(error) - SHOWN_BAD_LINES)))
    problem = UserError(N_("%(count)s bad line(s): %(problems)s"), count=Count(len(error)), problems=tuple(shown))
    return UserError(N_("%(file)s: nothing imported: %(problem)s%(where)s"), file=filename, problem=problem, where="")


def import_statement_file(
    session: Session,
    data: bytes,
    filename: str,
    company_code: str | None = None,
    user: User | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
    *,
    bulk: bool = True,
    actor: tuple[str, str] | None = None,
) -> ImportReport:
    """Import every statement of the file (see the module docstring); raises UserError.
    `bulk` applies the automatic matches many at a time (`booking.confirm_many`); without it each
    goes through `booking.confirm` alone, as staff's confirmations do (same ledger either way).
    `actor` (type, name) is who loaded it when not a staff `user`, e.g. ("api", the key's name)."""
    with collection_paused():
        return _import_file(session, data, filename, company_code, user, now or clock.now(), settings, bulk, actor)


def _import_file(session: Session, data: bytes, filename: str, company_code: str | None, user: User | None,
                 now: datetime, settings: Settings | None, bulk: bool, actor: tuple[str, str] | None) -> ImportReport:
    try:
        statements = parse_statement_file(data)
    except (UserError, UserErrors) as error:
        raise _unreadable(filename, error) from None
    if not statements:
        raise UserError(N_("%(file)s: nothing imported: the file holds no statement."), file=filename)
    if session.get_bind().dialect.name == "postgresql":
        # The entries table grows by thousands of rows inside this one transaction: a generic
        # plan the driver prepared while it was small (the duplicate check runs first) would stay
        # a sequential scan for every later look-up by identity key (bench/RESULTS.md).
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    forced = company_by_code(session, company_code) if company_code else None
    digest = hashlib.sha256(data).hexdigest()
    accounts = [_account_of(session, statement, forced, filename) for statement in statements]
    first_company_id = accounts[0][0].company_id
    report = ImportReport()
    occurrences: dict[int, Counter[str]] = {}
    books: dict[int, Book] = {}
    for statement, (account, account_warnings) in zip(statements, accounts):
        company = session.get_one(Company, account.company_id)
        summary = StatementSummary(file_name=filename, statement_ref=statement.statement_id, account=account.iban,
                                   company_code=company.code, format=statement.format,
                                   entries_read=len(statement.entries),
                                   warnings=[*statement.warnings, *account_warnings])
        _import_statement(session, statement, account, company, summary, digest,
                          occurrences.setdefault(account.id, Counter()), books, user, now, settings, bulk,
                          f"{actor[0]}:{actor[1]}"[:254] if actor and not user else None)
        report.statements.append(summary)
    actor_type, actor_name = ("user", user.email) if user else actor or ("system", "cli")
    audit.record(session, actor_type=actor_type, actor=actor_name,
                 action="import.bank_statement", entity_type="company", entity_id=first_company_id,
                 after={"file": filename, "statements": [s.line() for s in report.statements]})
    return report


def _account_of(session: Session, statement: ParsedStatement, forced: Company | None,
                filename: str) -> tuple[BankAccount, list[str]]:
    named = statement.account_iban or statement.account_id
    if not named and forced is not None:
        return _only_account_of(session, forced, statement, filename)
    if not named:
        raise UserError(N_("%(file)s: nothing imported: statement %(statement)s names no account."),
                            file=filename, statement=statement.statement_id or "-")
    try:
        identifier = normalize_iban(named) if statement.account_iban else named.strip().replace(" ", "").upper()
    except BankDetailsError as error:
        raise UserError(N_("%(file)s: nothing imported: the statement's account %(account)s: %(problem)s"),
                            file=filename, account=named, problem=error) from None
    account = account_for_iban(session, identifier)
    if account is not None:
        if forced is not None and account.company_id != forced.id:
            owner = session.get_one(Company, account.company_id)
            raise UserError(
                N_("%(file)s: nothing imported: the account %(account)s is registered to company %(owner)s, "
                   "not %(code)s."), file=filename, account=identifier, owner=owner.code, code=forced.code)
        return account, []
    if forced is None:
        raise UserError(
            N_("%(file)s: nothing imported: the account %(account)s belongs to no company. Register it with "
               "`encours company account add CODE --iban %(account)s`, or name the company with --company."),
            file=filename, account=identifier)
    account = BankAccount(company_id=forced.id, iban=identifier, currency=statement.account_currency
                          or forced.base_currency, label=f"added by the import of {filename}"[:100], active=True)
    session.add(account)
    session.flush()
    return account, [f"the account {identifier} was not registered: it is now an account of {forced.code}"]


def _only_account_of(session: Session, company: Company, statement: ParsedStatement,
                     filename: str) -> tuple[BankAccount, list[str]]:
    """The account of a file that names none (a CSV exported without an account column), booked with
    --company: the company's one active account in the statement's currency, never a guess among several."""
    currency = statement.account_currency or company.base_currency
    candidates = session.scalars(select(BankAccount).where(
        BankAccount.company_id == company.id, BankAccount.active.is_(True), BankAccount.currency == currency)).all()
    if len(candidates) != 1:
        raise UserError(N_("%(file)s: nothing imported: the file names no account, and company %(code)s has "
                           "%(count)s active %(currency)s accounts: add an account_iban column to the file."),
                        file=filename, code=company.code, count=str(len(candidates)), currency=currency)
    return candidates[0], [f"the file names no account: booked to {company.code}'s {currency} account "
                           f"{candidates[0].iban}"]


def _import_statement(session: Session, statement: ParsedStatement, account: BankAccount, company: Company,
                      summary: StatementSummary, digest: str, occurrences: Counter[str], books: dict[int, Book],
                      user: User | None, now: datetime, settings: Settings | None, bulk: bool,
                      imported_by: str | None = None) -> None:
    """Entries are written in bulk and matched on plain values; the automatic matches go onto the
    ledger in batches (`booking.confirm_many`), those of a checkout's RF reference one by one
    through the settlement (receipt email and all), as staff's confirmations do."""
    keyed: list[tuple[str, ParsedEntry]] = []
    for parsed in statement.entries:
        base = entry_identity(parsed, 0)
        keyed.append((entry_identity(parsed, occurrences[base]), parsed))
        occurrences[base] += 1
    known = _known_keys(session, account.id, [key for key, _ in keyed])
    fresh = [(key, parsed) for key, parsed in keyed if key not in known]
    summary.already_imported = len(keyed) - len(fresh)
    if not fresh and _statement_seen(session, account.id, digest, statement.statement_id):
        return
    company_id, auto_level = company.id, company.auto_match_level
    row = BankStatement(
        company_id=company_id, account_id=account.id, file_name=summary.file_name[:255], file_sha256=digest,
        format=statement.format, statement_ref=(statement.statement_id or None) and statement.statement_id[:64],
        from_date=statement.from_date, to_date=statement.to_date,
        currency=statement.account_currency or account.currency,
        opening_balance_minor=statement.opening_balance.minor if statement.opening_balance else None,
        closing_balance_minor=statement.closing_balance.minor if statement.closing_balance else None,
        entries_read=len(keyed), entries_new=len(fresh), imported_at=now,
        imported_by=user.email if user else imported_by, warnings=list(summary.warnings))
    session.add(row)
    session.flush()
    statement_id = summary.statement_id = row.id
    values = [_entry_values(statement_id, account, key, parsed, now) for key, parsed in fresh]

    book = books.get(company_id)
    if book is None:
        book = books[company_id] = load_book(session, company_id)
    _load_checkouts(session, book, company_id, values)
    if bulk and not book.checkouts_by_reference and not any(_returned(entry) for entry in values):
        _match_and_write_in_bulk(session, values, company_id, book, auto_level)
        _summarize(session, summary, values, statement_id)
        return
    # Matched on plain values first: the book is settled as each automatic match is decided, so
    # a later entry never counts on money an earlier one took.
    proposals = _match(values, 0, company_id, book, auto_level, bulk)
    ids = _insert_entries(session, values)
    match_ids = _insert_suggestions(session, ids, values, proposals, company_id, bulk)

    # Then, in file order, what moves money: automatic matches (in bulk, or one by one) and
    # returned transfers (each after the matches before it, whose credits it may return).
    pending: list[_Pending] = []
    for done, (entry_id, entry, proposal, match_id) in enumerate(zip(ids, values, proposals, match_ids)):
        if proposal is not None and proposal.auto:
            if bulk and proposal.checkout_id is None:
                pending.append((done, entry_id, proposal))
                if len(pending) >= _BATCH:
                    _confirm_pending(session, pending, values, book)
            else:
                _confirm_pending(session, pending, values, book)
                _confirm_automatic(session, entry_id, entry, book, user, settings)
        elif entry["reversal"] and entry["amount_minor"] < 0:
            _confirm_pending(session, pending, values, book)
            _reverse_returned(session, session.get_one(BankEntry, entry_id), user, settings)
            entry["state"] = session.get_one(BankEntry, entry_id).state
            entry["warnings"] = session.get_one(BankEntry, entry_id).warnings
        if not bulk and done % 200 == 199:
            session.flush()
            session.expunge_all()  # what was written stays written; the session stays small
    _confirm_pending(session, pending, values, book)
    session.flush()
    _summarize(session, summary, values, statement_id)


def _match(values: list[dict[str, Any]], first: int, company_id: int, book: Book, auto_level: str,
           bulk: bool) -> list[Proposal | None]:
    """The proposal for each entry (`first`: the index of the first in its file), in order; an
    automatic match settles its invoices in the book at once."""
    proposals: list[Proposal | None] = []
    for index, entry in enumerate(values, start=first):
        proposal = None
        if entry["state"] == BankEntryState.unmatched.value and entry["amount_minor"] > 0 and not entry["reversal"] \
                and not entry["warnings"]:
            outcome = match_entry(_facts(index, entry, company_id), book, auto_level)
            entry["warnings"] = [*entry["warnings"], *outcome.warnings]
            proposal = outcome.proposal
            if proposal is not None:
                entry["state"] = BankEntryState.suggested.value
                if proposal.auto:
                    for line in proposal.lines:
                        if line.invoice_id is not None:
                            book.settle(line.invoice_id, line.amount_minor + line.discount_minor)
                    if bulk and proposal.checkout_id is None:
                        # Written matched by the rule; `confirm_many` writes its match, and the rare
                        # one the ledger refuses turns back into a suggestion (_confirm_pending).
                        entry["state"], entry["matched_by"] = BankEntryState.matched.value, "rule"
        proposals.append(proposal)
    return proposals


def _returned(entry: dict[str, Any]) -> bool:
    """A transfer the bank returned: undone in file order, after the matches before it."""
    return bool(entry["reversal"]) and entry["amount_minor"] < 0


_PIPELINE = 5000  # entries matched, then written while the next ones are matched


def _match_and_write_in_bulk(session: Session, values: list[dict[str, Any]], company_id: int, book: Book,
                             auto_level: str) -> None:
    """A statement with nothing to apply one by one (no checkout's RF reference, no returned
    transfer), matched and written 5,000 entries at a time: a part's automatic matches go onto
    the ledger together, then its rows are written once, in their final state (a match the ledger
    refuses is written a suggestion, its entry suggested). Every read of a part comes before its
    first write, and the writes are sent in the background (`kernel.db.background_writes`) while
    the next part is matched: one transaction all the same, nothing half written stays. The book
    takes back what refused matches took only at the end, as on the other paths, so every entry
    is matched against the same book whichever path it takes."""
    ids = reserve_ids(session, BankEntry.__table__, len(values))
    refused: list[booking.SuggestedMatch] = []
    with background_writes(session):
        for start in range(0, len(values), _PIPELINE):
            part, part_ids = values[start:start + _PIPELINE], ids[start:start + _PIPELINE]
            proposals = _match(part, start, company_id, book, auto_level, True)
            autos = [index for index, proposal in enumerate(proposals) if proposal is not None and proposal.auto]
            suggested = sum(1 for proposal in proposals if proposal is not None) - len(autos)
            match_ids = reserve_ids(session, BankMatch.__table__, suggested + len(autos))
            matches = [_suggested(match_id, part_ids[index], part[index], proposals[index])  # type: ignore[arg-type]
                       for match_id, index in zip(match_ids[suggested:], autos)]
            confirmation = booking.apply_many(session, matches)
            for index, match, problem in zip(autos, matches, confirmation.results):
                if problem is not None:
                    entry = part[index]
                    entry["state"], entry["matched_by"] = BankEntryState.suggested.value, None
                    entry["warnings"] = [*entry["warnings"], f"not matched automatically: {problem}"]
                    refused.append(match)
            _insert_entries(session, part, part_ids)
            _insert_suggestions(session, part_ids, part, proposals, company_id, True, match_ids[:suggested])
            booking.write_confirmed(session, confirmation)
        _reopen(session, book, refused)
    session.expire_all()  # rows the session holds were written around it


def _reopen(session: Session, book: Book, refused: list[booking.SuggestedMatch]) -> None:
    """The invoices of matches the ledger refused, in the book as they stand."""
    invoice_ids = sorted({line.invoice_id for match in refused for line in match.lines
                          if line.invoice_id is not None})
    for start in range(0, len(invoice_ids), _CHUNK):
        for invoice_id, open_minor in session.execute(select(Invoice.id, Invoice.open_minor).where(
                Invoice.id.in_(invoice_ids[start:start + _CHUNK]))):
            book.reopen(invoice_id, open_minor)


def _summarize(session: Session, summary: StatementSummary, values: list[dict[str, Any]],
               statement_id: int) -> None:
    for entry in values:
        state = entry["state"]
        if state == BankEntryState.matched.value:
            summary.matched += 1
        elif state == BankEntryState.suggested.value:
            summary.suggested += 1
        elif state == BankEntryState.unmatched.value:
            summary.unmatched += 1
        elif state == BankEntryState.debit.value:
            summary.debits += 1
        summary.warnings.extend(f"{entry['location'] or 'entry'}: {warning}" for warning in entry["warnings"])
    session.execute(update(BankStatement).where(BankStatement.id == statement_id)
                    .values(warnings=list(summary.warnings)))


def _entry_values(statement_id: int, account: BankAccount, key: str, parsed: ParsedEntry,
                  now: datetime) -> dict[str, Any]:
    warnings: list[str] = []
    state = BankEntryState.unmatched.value
    if parsed.amount.minor < 0 and not parsed.reversal:
        state = BankEntryState.debit.value
    elif parsed.currency != account.currency:
        warnings.append(f"the entry is in {parsed.currency}, the account in {account.currency}: left for staff")
    elif parsed.status in (EntryStatus.PENDING, EntryStatus.INFO):
        warnings.append("the bank has not booked this entry yet: left for staff")
    elif parsed.reversal and parsed.amount.minor > 0:
        warnings.append("a returned outgoing payment: not a customer payment")
    return dict(
        statement_id=statement_id, company_id=account.company_id, account_id=account.id, matched_by=None,
        booking_date=parsed.booking_date, value_date=parsed.value_date, amount_minor=parsed.amount.minor,
        currency=parsed.currency, credit_debit=parsed.credit_debit.value, reversal=parsed.reversal, state=state,
        payer_name=_cut(parsed.counterparty_name, 200), payer_iban=_cut(parsed.counterparty_iban, 34),
        payer_bic=_cut(parsed.counterparty_bic, 11), remittance_text=parsed.remittance_text,
        structured_reference=_cut(parsed.structured_reference, 35), end_to_end_id=_cut(parsed.end_to_end_id, 64),
        bank_reference=_cut(parsed.bank_reference, 64), identity_key=key, location=_cut(parsed.location, 200),
        warnings=warnings, created_at=now, updated_at=now)


def _facts(index: int, entry: dict[str, Any], company_id: int) -> EntryFacts:
    return EntryFacts(key=index, company_id=company_id, amount_minor=entry["amount_minor"],
                      currency=entry["currency"], value_date=entry["value_date"] or entry["booking_date"],
                      payer_name=entry["payer_name"], payer_iban=entry["payer_iban"],
                      remittance_text=entry["remittance_text"], structured_reference=entry["structured_reference"])


def _insert_entries(session: Session, values: list[dict[str, Any]], ids: list[int] | None = None) -> list[int]:
    """The rows in bulk on ids reserved for them (`kernel.db.reserve_ids`, here unless given):
    nothing to read back."""
    if ids is None:
        ids = reserve_ids(session, BankEntry.__table__, len(values))
    for start in range(0, len(values), _CHUNK * 4):
        insert_rows(session, BankEntry.__table__, [  # Core: no ORM bookkeeping per row
            dict(entry, id=entry_id) for entry_id, entry in zip(ids[start:start + _CHUNK * 4],
                                                                values[start:start + _CHUNK * 4])])
    return ids


def _insert_suggestions(session: Session, ids: list[int], values: list[dict[str, Any]],
                        proposals: list[Proposal | None], company_id: int, bulk: bool,
                        match_ids: list[int] | None = None) -> list[int | None]:
    """Every proposal as a suggested match, but those applied in bulk (written by `confirm_many`);
    the other automatic ones are confirmed next. The match ids in the entries' order (None: no
    match written); reserved here unless given."""
    wanted = [(entry_id, entry, proposal) for entry_id, entry, proposal in zip(ids, values, proposals)
              if proposal is not None and not (bulk and proposal.auto and proposal.checkout_id is None)]
    if match_ids is None:
        match_ids = reserve_ids(session, BankMatch.__table__, len(wanted))
    found = dict(zip((entry_id for entry_id, _entry, _proposal in wanted), match_ids))
    for start in range(0, len(wanted), _CHUNK * 4):
        chunk = wanted[start:start + _CHUNK * 4]
        insert_rows(session, BankMatch.__table__, [
            dict(id=found[entry_id], entry_id=entry_id, company_id=company_id, state=BankMatchState.suggested.value,
                 evidence=proposal.evidence.value, reason=proposal.reason, score=proposal.score,
                 method=PaymentMethod.bank_transfer.value, checkout_id=proposal.checkout_id,
                 details={"reason_message": proposal.reason_message, "reason_values": proposal.reason_values},
                 created_at=entry["created_at"])
            for entry_id, entry, proposal in chunk])
        lines = [dict(match_id=found[entry_id], customer_id=line.customer_id, invoice_id=line.invoice_id,
                      currency=entry["currency"], amount_minor=line.amount_minor, discount_minor=line.discount_minor,
                      write_off_minor=0)
                 for entry_id, entry, proposal in chunk for line in proposal.lines]
        if lines:
            insert_rows(session, BankMatchLine.__table__, lines)
    return [found.get(entry_id) for entry_id in ids]


_Pending = tuple[int, int, Proposal]  # (index in the file, entry id, proposal): an automatic match to write


def _suggested(match_id: int, entry_id: int, entry: dict[str, Any], proposal: Proposal) -> booking.SuggestedMatch:
    return booking.SuggestedMatch(
        match_id=match_id, entry_id=entry_id, company_id=entry["company_id"], account_id=entry["account_id"],
        identity_key=entry["identity_key"], amount_minor=entry["amount_minor"], currency=entry["currency"],
        received_on=entry["value_date"] or entry["booking_date"] or clock.today("UTC"),
        payer_iban=entry["payer_iban"], evidence=proposal.evidence.value,
        details={"reason_message": proposal.reason_message, "reason_values": proposal.reason_values},
        lines=proposal.lines, reason=proposal.reason, score=proposal.score, created_at=entry["created_at"])


def _confirm_pending(session: Session, pending: list[_Pending], values: list[dict[str, Any]], book: Book) -> None:
    """The automatic matches waiting, applied and written together; emptied. A match the ledger
    refuses (its invoices changed meanwhile) stays a suggestion for staff, as on the one-by-one path."""
    if not pending:
        return
    match_ids = reserve_ids(session, BankMatch.__table__, len(pending))
    matches = [_suggested(match_id, entry_id, values[index], proposal)
               for match_id, (index, entry_id, proposal) in zip(match_ids, pending)]
    results = booking.confirm_many(session, matches)
    refused: list[tuple[dict[str, Any], booking.SuggestedMatch, UserError]] = []
    for (index, _entry_id, _proposal), match, problem in zip(pending, matches, results):
        if problem is not None:
            refused.append((values[index], match, problem))
    if refused:
        entries = BankEntry.__table__
        for entry, match, problem in refused:
            entry["state"], entry["matched_by"] = BankEntryState.suggested.value, None
            entry["warnings"] = [*entry["warnings"], f"not matched automatically: {problem}"]
            session.execute(update(entries).where(entries.c.id == match.entry_id)
                            .values(state=entry["state"], matched_by=None, warnings=entry["warnings"]))
        invoice_ids = sorted({line.invoice_id for _entry, match, _problem in refused for line in match.lines
                              if line.invoice_id is not None})
        for start in range(0, len(invoice_ids), _CHUNK):
            for invoice_id, open_minor in session.execute(select(Invoice.id, Invoice.open_minor).where(
                    Invoice.id.in_(invoice_ids[start:start + _CHUNK]))):
                book.reopen(invoice_id, open_minor)
    pending.clear()
    session.expire_all()  # rows the session holds were written around it


def _confirm_automatic(session: Session, entry_id: int, entry: dict[str, Any], book: Book, user: User | None,
                       settings: Settings | None) -> None:
    match = session.scalar(select(BankMatch).where(BankMatch.entry_id == entry_id,
                                                   BankMatch.state == BankMatchState.suggested.value))
    assert match is not None
    try:
        booking.confirm(session, match, None, settings)
    except UserError as error:
        # The book said it fitted, the ledger says otherwise (it changed meanwhile): staff decide.
        row = session.get_one(BankEntry, entry_id)
        row.warnings = entry["warnings"] = [*entry["warnings"], f"not matched automatically: {error}"]
        for line in match.lines:
            if line.invoice_id is not None:
                invoice = session.get(Invoice, line.invoice_id)
                if invoice is not None:
                    book.reopen(invoice.id, invoice.open_minor)
        return
    entry["state"] = BankEntryState.matched.value


def _cut(text: str | None, size: int) -> str | None:
    return text[:size] if text else None


def _known_keys(session: Session, account_id: int, keys: list[str]) -> set[str]:
    if session.get_bind().dialect.name == "postgresql":
        # One statement with the keys as one array parameter: a list of 500 bound values per
        # statement cost 100 round trips and their compilation for a 50,000-entry file.
        return set(session.scalars(select(BankEntry.identity_key).where(
            BankEntry.account_id == account_id,
            BankEntry.identity_key == any_(cast(literal(keys, ARRAY(String)), ARRAY(String))))))
    known: set[str] = set()
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        known.update(session.scalars(select(BankEntry.identity_key).where(BankEntry.account_id == account_id,
                                                                          BankEntry.identity_key.in_(chunk))))
    return known


def _statement_seen(session: Session, account_id: int, digest: str, statement_ref: str | None) -> bool:
    query = select(BankStatement.id).where(BankStatement.account_id == account_id,
                                           BankStatement.file_sha256 == digest)
    if statement_ref:
        query = query.where(BankStatement.statement_ref == statement_ref[:64])
    return session.scalar(query.limit(1)) is not None


def load_book(session: Session, company_id: int) -> Book:
    """The company's open invoices, customers and learned payer IBANs, as plain values."""
    invoices = [OpenInvoice(*row) for row in session.execute(
        select(Invoice.id, Invoice.company_id, Invoice.customer_id, Invoice.number, Invoice.currency,
               Invoice.due_date, Invoice.total_minor, Invoice.open_minor, Invoice.discount_bps,
               Invoice.discount_until)
        .where(Invoice.company_id == company_id, Invoice.kind == InvoiceKind.invoice.value,
               Invoice.open_minor > 0, Invoice.status != InvoiceStatus.void.value))]
    customers = [CustomerFacts(*row) for row in session.execute(
        select(Customer.id, Customer.company_id, Customer.name).where(Customer.company_id == company_id))]
    payers = session.execute(select(PayerAccount.company_id, PayerAccount.iban, PayerAccount.customer_id)
                             .where(PayerAccount.company_id == company_id)).all()
    return Book.of(invoices, customers, payer_ibans=[tuple(row) for row in payers])


def _load_checkouts(session: Session, book: Book, company_id: int, entries: list[dict[str, Any]]) -> None:
    """The checkouts whose RF references the entries name (of any company: another company's are
    remembered so as never to be matched here)."""
    references: set[str] = set()
    for entry in entries:
        if entry["amount_minor"] > 0:
            references.update(find_rf_references(entry["structured_reference"]))
            references.update(find_rf_references(entry["remittance_text"]))
    references -= set(book.checkouts_by_reference) | book.foreign_references
    found = list(references)
    for start in range(0, len(found), _CHUNK):
        rows = session.execute(
            select(Checkout.id, Customer.company_id, Checkout.customer_id, Checkout.reference, Checkout.currency,
                   Checkout.amount_minor, Checkout.status)
            .join(Customer, Customer.id == Checkout.customer_id)
            .where(Checkout.reference.in_(found[start:start + _CHUNK]))).all()
        ids = [row[0] for row in rows]
        lines: dict[int, list[int]] = {}
        for checkout_id, invoice_id in session.execute(
                select(CheckoutLine.checkout_id, CheckoutLine.invoice_id).where(CheckoutLine.checkout_id.in_(ids))
                .order_by(CheckoutLine.id)):
            lines.setdefault(checkout_id, []).append(invoice_id)
        for checkout_id, owner, customer_id, reference, currency, amount, status in rows:
            if owner != company_id:
                book.foreign_references.add(reference)
                continue
            book.checkouts_by_reference[reference] = CheckoutFacts(checkout_id, owner, customer_id, reference,
                                                                   currency, amount, status,
                                                                   tuple(lines.get(checkout_id, ())))
            for invoice_id in lines.get(checkout_id, ()):
                if invoice_id not in book.invoices:
                    invoice = session.get(Invoice, invoice_id)
                    if invoice is not None and invoice.open_minor > 0:
                        book.add_invoice(OpenInvoice(invoice.id, invoice.company_id, invoice.customer_id,
                                                     invoice.number, invoice.currency, invoice.due_date,
                                                     invoice.total_minor, invoice.open_minor, invoice.discount_bps,
                                                     invoice.discount_until))


def _reverse_returned(session: Session, entry: BankEntry, user: User | None, settings: Settings | None) -> None:
    """A transfer the bank returned (a reversal booked as a debit): the match of the credit it
    returns is undone, and the invoices reopen. Found by amount and the payment's own references."""
    candidates = select(BankEntry).where(
        BankEntry.account_id == entry.account_id, BankEntry.id != entry.id,
        BankEntry.amount_minor == -entry.amount_minor, BankEntry.state == BankEntryState.matched.value,
        BankEntry.reversal.is_(False))
    same = [e for e in session.scalars(candidates) if _same_payment(e, entry)]
    if len(same) != 1:
        entry.warnings = [*entry.warnings, "a returned payment whose original credit was not found for sure: "
                                           "left for staff"]
        return
    original = same[0]
    match = session.scalar(select(BankMatch).where(BankMatch.entry_id == original.id,
                                                   BankMatch.state == BankMatchState.confirmed.value))
    if match is None:
        entry.warnings = [*entry.warnings, "the returned payment's credit has no confirmed match: left for staff"]
        return
    booking.undo(session, match, user, reason="returned by the bank", returned=True, settings=settings)
    record = booking.new_match(session, entry, evidence=Evidence.reversal.value,
                               reason=f"returns the credit of {original.value_date} (entry {original.id})",
                               score=100, lines=[],
                               details={"returns_entry": original.id, "undid_match": match.id,
                                        "reason_message": N_("Returns the credit of %(day)s (bank entry %(entry)s)."),
                                        "reason_values": {"day": str(original.value_date), "entry": str(original.id)}})
    record.state = BankMatchState.confirmed.value
    record.payment_id = match.payment_id
    record.confirmed_at = clock.now()
    entry.state = BankEntryState.matched.value
    entry.matched_by = "rule"


def _same_payment(original: BankEntry, returned: BankEntry) -> bool:
    for name in ("end_to_end_id", "structured_reference", "bank_reference"):
        value = getattr(returned, name)
        if value and value == getattr(original, name):
            return True
    return bool(returned.payer_iban and returned.payer_iban == original.payer_iban
                and returned.remittance_text and returned.remittance_text == original.remittance_text)
