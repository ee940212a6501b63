"""The one plain shape every statement parser produces.

Matching and the database never see XML or MT940 fields: they read these types only. A file
that cannot be read as a whole raises `kernel.user_error.UserError` (one problem) or `UserErrors`
(every bad line), each saying where: `.at(line=...)` for a line, `at_element` for an XML element.

Sign convention: ``ParsedEntry.amount`` is signed from the account holder's side — a credit
(money in) is positive, a debit (money out) negative — and ``credit_debit`` says the same in
words. A reversal keeps the sign of the booking it is (a returned incoming transfer is a
debit, so negative) and sets ``reversal``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from kernel.i18n import N_
from kernel.user_error import UserError
from ledger.money import CurrencyError, Money, check_currency, decimals

# Refused before any parsing: a day's statement of a busy account is a few MB; 50 MB already
# holds about 50,000 camt entries, and parsing must stay in memory and a few seconds.
MAX_FILE_BYTES = 50 * 1024 * 1024


def at_element(problem: UserError, path: str) -> UserError:
    """The problem, said of one element of an XML statement (its path stays in the message, e.g.
    ``/Document/BkToCstmrStmt/Stmt[2]/Ntry[14]/Amt``)."""
    return UserError(N_("%(problem)s (at %(path)s)"), problem=problem, path=path)


class CreditDebit(enum.StrEnum):
    CREDIT = "CRDT"
    DEBIT = "DBIT"


class EntryStatus(enum.StrEnum):
    BOOKED = "BOOK"
    PENDING = "PDNG"
    INFO = "INFO"


@dataclass(frozen=True)
class ParsedEntry:
    """One movement on the account: a booked entry, or one transaction of a batch entry."""

    amount: Money  # signed: credits positive, debits negative (see the module docstring)
    credit_debit: CreditDebit
    value_date: date | None
    booking_date: date | None = None  # None when the bank did not give it (MT940 without entry date)
    reversal: bool = False
    status: EntryStatus | None = None  # None when the format or the bank does not say
    counterparty_name: str | None = None  # the payer for a credit, the payee for a debit
    counterparty_iban: str | None = None
    counterparty_bic: str | None = None
    remittance_text: str | None = None  # unstructured remittance, several lines joined by spaces
    structured_reference: str | None = None  # creditor reference, e.g. RF18539007547034 (normalized)
    structured_reference_type: str | None = None  # "SCOR" for ISO 11649, else the bank's label (e.g. "QRR")
    end_to_end_id: str | None = None
    bank_reference: str | None = None  # the bank's own reference of this movement
    entry_reference: str | None = None  # the booked entry's reference; shared by a batch's transactions
    bank_transaction_code: str | None = None  # "PMNT/RCDT/ESCT", or the bank's proprietary code
    charges: Money | None = None  # charges the bank reported on this entry, positive
    batch_size: int = 1  # how many transactions the booked entry held (1 unless unfolded)
    location: str = ""  # element path or line number, for messages

    @property
    def currency(self) -> str:
        return self.amount.currency

    @property
    def is_credit(self) -> bool:
        return self.credit_debit is CreditDebit.CREDIT


@dataclass(frozen=True)
class ParsedStatement:
    """One statement, report or notification of one account, as read from a file."""

    format: str  # "camt.053.001.02", "camt.054.001.08", "mt940", "csv"
    statement_id: str | None
    account_iban: str | None
    account_id: str | None  # the account as the file names it (IBAN, or a national account number)
    account_currency: str | None
    created_at: datetime | None = None
    from_date: date | None = None
    to_date: date | None = None
    opening_balance: Money | None = None  # signed, as entries are
    closing_balance: Money | None = None
    entries: tuple[ParsedEntry, ...] = ()
    warnings: tuple[str, ...] = field(default=())  # things worth a look that did not stop the import

    def total_credits(self) -> dict[str, int]:
        """Minor units credited, per currency."""
        totals: dict[str, int] = {}
        for entry in self.entries:
            if entry.amount.minor > 0:
                totals[entry.currency] = totals.get(entry.currency, 0) + entry.amount.minor
        return totals


_PLAIN_DECIMAL = re.compile(r"^\d+(\.\d*)?$")


def to_minor(value: Decimal, currency: str) -> int:
    """A Decimal in the currency's minor units, refusing more decimals than it has (never rounded)."""
    places = decimals(currency)
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise UserError(N_("amount %(value)s has more than %(places)s decimals for %(currency)s"), value=str(value),
                        places=str(places), currency=currency)
    return within_range(int(scaled), str(value))


# The ledger stores minor units in 64-bit integers: a larger amount is refused where it is read,
# naming it, rather than failing as a database error once the file is half written.
MAX_MINOR = 2**63 - 1


def within_range(minor: int, text: str) -> int:
    """`minor`, or a clear refusal naming `text` when no ledger column could hold it."""
    if abs(minor) > MAX_MINOR:
        raise UserError(N_("amount %(value)s is too large"), value=text)
    return minor


def money_from_text(text: str | None, currency: str | None, negative: bool = False) -> Money:
    """Money from a plain decimal such as XML carries ("1405.31"): no sign, no grouping."""
    raw = (text or "").strip()
    if not _PLAIN_DECIMAL.match(raw):
        raise UserError(N_("expected an amount such as 1405.31, got %(value)s"), value=repr(raw))
    try:
        code = check_currency(currency or "")
    except CurrencyError:
        raise UserError(N_("expected an ISO 4217 currency code, got %(value)s"), value=repr(currency)) from None
    try:
        value = Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the pattern already guards it
        raise UserError(N_("expected an amount such as 1405.31, got %(value)s"), value=repr(raw)) from None
    minor = to_minor(value, code)
    return Money(-minor if negative else minor, code)
