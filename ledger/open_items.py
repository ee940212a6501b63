"""The ERP's open items: what its books still show as owed, applied to ours.

A complete snapshot (`apply_snapshot`) lowers each invoice to the open amount the ERP gives and
settles the invoices it leaves out "outside Encours": a cheque or a set-off the ERP booked. That is
not a payment: no Payment, no allocation; the invoice keeps `settled_outside_minor` and the
snapshot's date, which the ledger invariant counts beside allocations. An open amount above ours is
reported, never applied (money we saw settle does not come back by an export). A snapshot that
would close more than the company's share of its open items is refused unless forced: a truncated
export must never wipe the book.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.i18n import N_
from kernel.user_error import UserError, UserErrors
from ledger import audit
from ledger.allocation import settled_status
from ledger.csv_import import read_table
from ledger.models import Company, Invoice, InvoiceStatus
from ledger.money import AmountError, CurrencyError, Money, check_currency

CSV_COLUMNS = ("number", "open_amount")
CSV_OPTIONAL = ("currency",)


@dataclass(frozen=True)
class OpenItem:
    """One line of a snapshot: `index` is its position (a line number for a file)."""

    index: int
    number: str
    open_amount: str  # a decimal, in the invoice currency's precision
    currency: str | None = None


@dataclass
class SnapshotReport:
    lowered: list[str] = field(default_factory=list)
    settled_outside: list[str] = field(default_factory=list)
    unchanged: int = 0
    # (number, our open amount, the snapshot's) where the snapshot says more is owed
    higher: list[tuple[str, Money, Money]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.lowered)} lowered, {len(self.settled_outside)} settled outside Encours, "
                f"{self.unchanged} unchanged, {len(self.higher)} higher than Encours knows (not applied), "
                f"{len(self.unknown)} unknown")


def open_book(session: Session, company: Company) -> list[Invoice]:
    """The company's open items (invoices and credit notes with something open, not void)."""
    return list(session.scalars(
        select(Invoice).where(Invoice.company_id == company.id, Invoice.open_minor > 0,
                              Invoice.status != InvoiceStatus.void.value).order_by(Invoice.id)))


def lower_open_amount(session: Session, invoice: Invoice, open_minor: int, as_of: date, *, actor_type: str,
                      actor: str) -> bool:
    """Settle outside Encours what the ERP no longer shows as open: lower only, False if nothing moves."""
    if open_minor >= invoice.open_minor or open_minor < 0:
        return False
    before = {"open_minor": invoice.open_minor, "status": invoice.status}
    invoice.settled_outside_minor += invoice.open_minor - open_minor
    invoice.settled_outside_on = as_of
    invoice.open_minor = open_minor
    invoice.status = settled_status(invoice)
    audit.record(session, actor_type=actor_type, actor=actor, action="invoice.settled_outside",
                 entity_type="invoice", entity_id=invoice.id, customer_id=invoice.customer_id,
                 company_id=invoice.company_id, before=before,
                 after={"open_minor": open_minor, "status": invoice.status, "on": as_of.isoformat()})
    return True


def parse_items(items: Sequence[OpenItem], currencies: dict[str, str]) -> tuple[dict[str, int], list[UserError]]:
    """{number: open minor} of a snapshot, with its problems: duplicates, amounts that do not fit
    the invoice's currency, a currency that is not the invoice's. `currencies` maps our numbers to
    their currencies (an unknown number is parsed in its given currency, if any, for the report)."""
    problems: list[UserError] = []
    amounts: dict[str, int] = {}
    first: dict[str, int] = {}
    for item in items:
        number = item.number.strip()
        if not number:
            problems.append(UserError(N_("number is empty")).at(field="number", line=item.index))
            continue
        if number in first:
            problems.append(UserError(N_("%(number)s is already at %(index)s: a snapshot lists each item once"),
                                      number=number, index=first[number]).at(field="number", line=item.index))
            continue
        first[number] = item.index
        ours = currencies.get(number)
        given = item.currency.strip().upper() if item.currency else None
        if given:
            try:
                check_currency(given)
            except CurrencyError:
                problems.append(UserError(N_("unknown currency %(value)s"), value=repr(given)).at(
                    field="currency", line=item.index))
                continue
            if ours is not None and given != ours:
                problems.append(UserError(N_("%(number)s is in %(ours)s, not %(given)s"), number=number, ours=ours,
                                          given=given).at(field="currency", line=item.index))
                continue
        currency = ours or given
        if currency is None:
            continue  # unknown to us and no currency: reported as unknown, nothing to parse it against
        try:
            minor = Money.parse(item.open_amount.strip(), currency).minor
        except AmountError as error:
            problems.append(UserError(N_("%(value)s: %(problem)s"), value=repr(item.open_amount), problem=error).at(
                field="open_amount", line=item.index))
            continue
        if minor < 0:
            problems.append(UserError(N_("open_amount cannot be negative")).at(field="open_amount", line=item.index))
            continue
        amounts[number] = minor
    return amounts, problems


def apply_snapshot(session: Session, company: Company, items: Sequence[OpenItem], *, as_of: date,
                   force: bool = False, actor_type: str, actor: str) -> SnapshotReport:
    """Apply the company's complete list of open items, all or nothing (raises UserErrors, each naming its item's index as `line`)."""
    book = {invoice.number: invoice for invoice in open_book(session, company)}
    listed_numbers = [item.number.strip() for item in items]
    known = _all_currencies(session, company)
    amounts, problems = parse_items(items, known)
    listed = set(listed_numbers)
    missing = [number for number in book if number not in listed]
    closing = len(missing) + sum(1 for number, minor in amounts.items() if number in book and minor == 0)
    limit_bps = company.snapshot_max_close_bps
    if not force and book and closing * 10_000 > len(book) * limit_bps:
        problems.append(UserError(
            N_("this snapshot would close %(closing)s of the %(total)s open items, more than %(limit)s %% of the "
               "book; check the export is complete, or force it"), closing=closing, total=len(book),
            limit=f"{limit_bps / 100:g}").at(field="items"))
    if problems:
        raise UserErrors(problems)

    report = SnapshotReport()
    for number, minor in amounts.items():
        invoice = book.get(number)
        if invoice is None:
            if number not in known:
                report.unknown.append(number)
            elif minor > 0:
                # Settled (or void) here, open there: say so, change nothing.
                report.higher.append((number, Money(0, known[number]), Money(minor, known[number])))
            else:
                report.unchanged += 1
            continue
        if minor > invoice.open_minor:
            report.higher.append((number, invoice.open, Money(minor, invoice.currency)))
        elif lower_open_amount(session, invoice, minor, as_of, actor_type=actor_type, actor=actor):
            (report.settled_outside if minor == 0 else report.lowered).append(number)
        else:
            report.unchanged += 1
    for number in listed_numbers:
        if number and number not in amounts and number not in known and number not in report.unknown:
            report.unknown.append(number)
    for number in missing:
        lower_open_amount(session, book[number], 0, as_of, actor_type=actor_type, actor=actor)
        report.settled_outside.append(number)
    audit.record(session, actor_type=actor_type, actor=actor, action="import.open_items", entity_type="company",
                 entity_id=company.id, company_id=company.id,
                 after={"lowered": len(report.lowered), "settled_outside": len(report.settled_outside),
                        "unchanged": report.unchanged, "higher": len(report.higher), "unknown": len(report.unknown),
                        "forced": force})
    session.flush()
    return report


def _all_currencies(session: Session, company: Company) -> dict[str, str]:
    return dict(session.execute(select(Invoice.number, Invoice.currency).where(Invoice.company_id == company.id)).all())


def read_snapshot_csv(raw: bytes) -> list[OpenItem]:
    """A snapshot file's items (`number,open_amount[,currency]`); UserErrors, each at its line, when unreadable."""
    rows, problems = read_table(raw, CSV_COLUMNS, CSV_OPTIONAL)
    problems.raise_if_any()
    return [OpenItem(row.line, row.get("number"), row.get("open_amount"), row.get("currency") or None)
            for row in rows]

